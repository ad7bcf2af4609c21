// Copyright (c) egeunet-monai contributors. Apache-2.0.
//
// CPU kernels for the network operators that dominate an EGE-UNet training step (egeunet_monai/accel/network.py
// calls them; accel/kernels.py builds this file, loss_cpu.cpp and augment_cpu.cpp on first use with
// torch.utils.cpp_extension, as MONAI builds its own C++ extensions). Each kernel
// makes one pass over a block that stays in cache, where the PyTorch composition makes a pass over the whole
// N x C x H x W tensor per operator:
//
//   channel_layer_norm_*   LayerNorm over the channel axis of N x C x H x W (the original's formula)
//   depthwise3x3_*         3x3 depth-wise convolution, zero padding = dilation, any dilation
//   max_pool2x2_*          2x2/stride-2 max-pooling; the gradient goes where max_pool2d sends it
//
// Tensors are contiguous N x C x H x W, float32 or float64. Threads: as many as at::get_num_threads() says for the
// calling thread (built with -fopenmp, PyTorch's own OpenMP runtime).

#include "common.h"

namespace {

using egeunet::check_nchw;
using egeunet::parallel_chunks;

constexpr int64_t kBlock = 512;  // pixels normalised together: C x kBlock values stay in L1/L2 between passes
constexpr int kLanes = 16;       // independent partial sums, so that the compiler vectorises the reductions

// sum of a[i] * b[i], in kLanes partial sums
template <typename T>
T dot(const T* a, const T* b, int64_t n) {
  T acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int k = 0; k < kLanes; ++k) acc[k] += a[i + k] * b[i + k];
  T total = 0;
  for (; i < n; ++i) total += a[i] * b[i];
  for (int k = 0; k < kLanes; ++k) total += acc[k];
  return total;
}

template <typename T>
T sum(const T* a, int64_t n) {
  T acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int k = 0; k < kLanes; ++k) acc[k] += a[i + k];
  T total = 0;
  for (; i < n; ++i) total += a[i];
  for (int k = 0; k < kLanes; ++k) total += acc[k];
  return total;
}

// ---------------------------------------------------------------------------------------------------------------
// channel LayerNorm: mean = x.mean(1); std = sqrt(((x - mean)^2).mean(1) + eps); y = w * (x - mean) / std + b

std::tuple<at::Tensor, at::Tensor, at::Tensor> channel_layer_norm_forward(const at::Tensor& input,
                                                                         const at::Tensor& weight,
                                                                         const at::Tensor& bias, double eps) {
  check_nchw(input, "channel_layer_norm");
  const auto x = input.contiguous();
  const int64_t N = x.size(0), C = x.size(1), P = x.size(2) * x.size(3);
  TORCH_CHECK(weight.numel() == C && bias.numel() == C, "channel_layer_norm: weight and bias need ", C, " values");
  auto out = at::empty_like(x);
  auto mean = at::empty({N, 1, x.size(2), x.size(3)}, x.options());
  auto stdev = at::empty_like(mean);
  const auto w = weight.contiguous().to(x.scalar_type()), b = bias.contiguous().to(x.scalar_type());
  const int64_t blocks = (P + kBlock - 1) / kBlock;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "channel_layer_norm_forward", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* wp = w.data_ptr<scalar_t>();
    const scalar_t* bp = b.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    scalar_t* mp = mean.data_ptr<scalar_t>();
    scalar_t* sp = stdev.data_ptr<scalar_t>();
    const scalar_t e = static_cast<scalar_t>(eps);
    parallel_chunks(N * blocks, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const int64_t n = t / blocks, p0 = (t % blocks) * kBlock, len = std::min(kBlock, P - p0);
        const scalar_t* xs = xp + n * C * P + p0;
        scalar_t* os = op + n * C * P + p0;
        scalar_t* m = mp + n * P + p0;
        scalar_t* s = sp + n * P + p0;
        std::fill(m, m + len, scalar_t(0));
        for (int64_t c = 0; c < C; ++c)
          for (int64_t p = 0; p < len; ++p) m[p] += xs[c * P + p];
        for (int64_t p = 0; p < len; ++p) m[p] /= static_cast<scalar_t>(C);
        std::fill(s, s + len, scalar_t(0));
        for (int64_t c = 0; c < C; ++c)
          for (int64_t p = 0; p < len; ++p) {
            const scalar_t d = xs[c * P + p] - m[p];
            s[p] += d * d;
          }
        for (int64_t p = 0; p < len; ++p) s[p] = std::sqrt(s[p] / static_cast<scalar_t>(C) + e);
        for (int64_t c = 0; c < C; ++c)
          for (int64_t p = 0; p < len; ++p) os[c * P + p] = wp[c] * ((xs[c * P + p] - m[p]) / s[p]) + bp[c];
      }
    });
  });
  return {out, mean, stdev};
}

// grad_x = (g*w - mean_c(g*w) - n * mean_c(g*w*n)) / std with n = (x - mean) / std; grad_w = sum g*n; grad_b = sum g
std::tuple<at::Tensor, at::Tensor, at::Tensor> channel_layer_norm_backward(const at::Tensor& grad_out,
                                                                          const at::Tensor& input,
                                                                          const at::Tensor& mean,
                                                                          const at::Tensor& stdev,
                                                                          const at::Tensor& weight) {
  check_nchw(input, "channel_layer_norm_backward");
  const auto x = input.contiguous(), g = grad_out.contiguous().to(x.scalar_type());
  const auto m_ = mean.contiguous(), s_ = stdev.contiguous(), w = weight.contiguous().to(x.scalar_type());
  const int64_t N = x.size(0), C = x.size(1), P = x.size(2) * x.size(3);
  TORCH_CHECK(g.sizes() == x.sizes(), "channel_layer_norm_backward: gradient shape ", g.sizes(), " != ", x.sizes());
  auto grad_x = at::empty_like(x);
  const int64_t blocks = (P + kBlock - 1) / kBlock;
  // per-block partial sums of grad_w and grad_b, added up after the parallel loop (no shared accumulators)
  auto partial = at::empty({N * blocks, 2 * C}, x.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "channel_layer_norm_backward", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* gp = g.data_ptr<scalar_t>();
    const scalar_t* mp = m_.data_ptr<scalar_t>();
    const scalar_t* sp = s_.data_ptr<scalar_t>();
    const scalar_t* wp = w.data_ptr<scalar_t>();
    scalar_t* gxp = grad_x.data_ptr<scalar_t>();
    double* pp = partial.data_ptr<double>();
    parallel_chunks(N * blocks, [&](int64_t begin, int64_t end) {
      scalar_t a[kBlock], bsum[kBlock], nrm[kBlock];
      for (int64_t t = begin; t < end; ++t) {
        const int64_t n = t / blocks, p0 = (t % blocks) * kBlock, len = std::min(kBlock, P - p0);
        const scalar_t* xs = xp + n * C * P + p0;
        const scalar_t* gs = gp + n * C * P + p0;
        scalar_t* gx = gxp + n * C * P + p0;
        const scalar_t* m = mp + n * P + p0;
        const scalar_t* s = sp + n * P + p0;
        double* part = pp + t * 2 * C;
        std::fill(a, a + len, scalar_t(0));
        std::fill(bsum, bsum + len, scalar_t(0));
        for (int64_t c = 0; c < C; ++c) {
          for (int64_t p = 0; p < len; ++p) nrm[p] = (xs[c * P + p] - m[p]) / s[p];
          part[c] = static_cast<double>(dot(gs + c * P, nrm, len));
          part[C + c] = static_cast<double>(sum(gs + c * P, len));
          for (int64_t p = 0; p < len; ++p) {
            const scalar_t gw = gs[c * P + p] * wp[c];
            a[p] += gw;
            bsum[p] += gw * nrm[p];
          }
        }
        const scalar_t inv_c = scalar_t(1) / static_cast<scalar_t>(C);
        for (int64_t c = 0; c < C; ++c)
          for (int64_t p = 0; p < len; ++p) {
            const scalar_t nv = (xs[c * P + p] - m[p]) / s[p];
            gx[c * P + p] = (gs[c * P + p] * wp[c] - a[p] * inv_c - nv * (bsum[p] * inv_c)) / s[p];
          }
      }
    });
  });
  const auto totals = partial.sum(0).to(x.scalar_type());
  return {grad_x, totals.slice(0, 0, C).clone(), totals.slice(0, C, 2 * C).clone()};
}

// ---------------------------------------------------------------------------------------------------------------
// 3x3 depth-wise convolution with dilation d and zero padding d (output the input's size)

template <typename T>
void depthwise_plane(const T* in, T* out, const T* w9, T bias, int64_t H, int64_t W, int64_t d) {
  for (int64_t h = 0; h < H; ++h) {
    T* o = out + h * W;
    std::fill(o, o + W, bias);
    for (int i = 0; i < 3; ++i) {
      const int64_t hs = h + (i - 1) * d;
      if (hs < 0 || hs >= H) continue;
      const T* r = in + hs * W;
      for (int j = 0; j < 3; ++j) {
        const int64_t off = (j - 1) * d;
        const T wv = w9[i * 3 + j];
        const int64_t lo = std::max<int64_t>(0, -off), hi = std::min<int64_t>(W, W - off);
        for (int64_t x = lo; x < hi; ++x) o[x] += wv * r[x + off];
      }
    }
  }
}

at::Tensor depthwise3x3_forward(const at::Tensor& input, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                                int64_t dilation) {
  check_nchw(input, "depthwise3x3");
  const auto x = input.contiguous();
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(weight.numel() == C * 9, "depthwise3x3: expected a ", C, " x 1 x 3 x 3 weight, got ", weight.sizes());
  TORCH_CHECK(dilation >= 1, "depthwise3x3: dilation must be >= 1, got ", dilation);
  const auto w = weight.contiguous().to(x.scalar_type());
  const bool has_bias = bias.has_value() && bias->defined();
  const auto b = has_bias ? bias->contiguous().to(x.scalar_type()) : at::zeros({C}, x.options());
  auto out = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "depthwise3x3_forward", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* wp = w.data_ptr<scalar_t>();
    const scalar_t* bp = b.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    parallel_chunks(N * C, [&](int64_t begin, int64_t end) {
      for (int64_t plane = begin; plane < end; ++plane) {
        const int64_t c = plane % C;
        depthwise_plane(xp + plane * H * W, op + plane * H * W, wp + c * 9, bp[c], H, W, dilation);
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> depthwise3x3_backward(const at::Tensor& grad_out, const at::Tensor& input,
                                                                    const at::Tensor& weight, int64_t dilation,
                                                                    bool need_input, bool need_weight, bool need_bias) {
  check_nchw(input, "depthwise3x3_backward");
  const auto x = input.contiguous(), g = grad_out.contiguous().to(x.scalar_type());
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), d = dilation;
  at::Tensor grad_x, grad_w, grad_b;
  if (need_input) {
    // the adjoint of a zero-padded correlation is the correlation with the kernel rotated by 180 degrees
    grad_x = depthwise3x3_forward(g, weight.flip({2, 3}), c10::nullopt, d);
  }
  if (need_weight || need_bias) {
    auto taps = at::empty({C, 10}, x.options().dtype(at::kDouble));  // nine taps and the bias, per channel
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "depthwise3x3_backward", [&] {
      const scalar_t* xp = x.data_ptr<scalar_t>();
      const scalar_t* gp = g.data_ptr<scalar_t>();
      double* tp = taps.data_ptr<double>();
      parallel_chunks(C, [&](int64_t begin, int64_t end) {
        for (int64_t c = begin; c < end; ++c) {
          double acc[10] = {};
          for (int64_t n = 0; n < N; ++n) {
            const scalar_t* in = xp + (n * C + c) * H * W;
            const scalar_t* gr = gp + (n * C + c) * H * W;
            for (int64_t h = 0; h < H; ++h) {
              const scalar_t* grow = gr + h * W;
              acc[9] += static_cast<double>(sum(grow, W));
              for (int i = 0; i < 3; ++i) {
                const int64_t hs = h + (i - 1) * d;
                if (hs < 0 || hs >= H) continue;
                const scalar_t* r = in + hs * W;
                for (int j = 0; j < 3; ++j) {
                  const int64_t off = (j - 1) * d;
                  const int64_t lo = std::max<int64_t>(0, -off), hi = std::min<int64_t>(W, W - off);
                  if (hi > lo) acc[i * 3 + j] += static_cast<double>(dot(grow + lo, r + lo + off, hi - lo));
                }
              }
            }
          }
          std::copy(acc, acc + 10, tp + c * 10);
        }
      });
    });
    const auto t = taps.to(x.scalar_type());
    if (need_weight) grad_w = t.slice(1, 0, 9).reshape(weight.sizes()).contiguous();
    if (need_bias) grad_b = t.select(1, 9).contiguous();
  }
  return {grad_x, grad_w, grad_b};
}

// ---------------------------------------------------------------------------------------------------------------
// 2x2 max-pooling, stride 2: the maximum and which of the four (scan order: top-left, top-right, bottom-left,
// bottom-right) it came from; ties go to the first, a NaN propagates and the last NaN takes the gradient, as in
// max_pool2d. One output row at a time, from input rows r0 and r1; AVX2 for float32 where the build has it (the
// compiler does not vectorise the stride-2 loads and the index select: 4x slower), the scalar loop for the rest.

template <typename T>
void pool_row_scalar(const T* r0, const T* r1, T* o, uint8_t* k, int64_t begin, int64_t Wo) {
  for (int64_t ow = begin; ow < Wo; ++ow) {
    const T v[4] = {r0[2 * ow], r0[2 * ow + 1], r1[2 * ow], r1[2 * ow + 1]};
    T best = v[0];
    uint8_t at = 0;
    for (uint8_t q = 1; q < 4; ++q)
      if (v[q] > best || std::isnan(v[q])) {
        best = v[q];
        at = q;
      }
    o[ow] = best;
    k[ow] = at;
  }
}

template <typename T>
void unpool_row_scalar(const T* g, const uint8_t* k, T* r0, T* r1, int64_t begin, int64_t Wo) {
  for (int64_t ow = begin; ow < Wo; ++ow) {
    const T v = g[ow];
    const uint8_t q = k[ow];
    r0[2 * ow] = q == 0 ? v : T(0);
    r0[2 * ow + 1] = q == 1 ? v : T(0);
    r1[2 * ow] = q == 2 ? v : T(0);
    r1[2 * ow + 1] = q == 3 ? v : T(0);
  }
}

template <typename T>
void pool_row(const T* r0, const T* r1, T* o, uint8_t* k, int64_t begin, int64_t Wo) {
  pool_row_scalar(r0, r1, o, k, begin, Wo);
}

template <typename T>
void unpool_row(const T* g, const uint8_t* k, T* r0, T* r1, int64_t begin, int64_t Wo) {
  unpool_row_scalar(g, k, r0, r1, begin, Wo);
}

#if defined(__AVX2__)
// the even- and odd-indexed of 16 consecutive floats, each in order
inline void deinterleave(const float* p, __m256& even, __m256& odd) {
  const __m256 lo = _mm256_loadu_ps(p), hi = _mm256_loadu_ps(p + 8);
  even = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(lo, hi, 0x88)), 0xD8));
  odd = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(lo, hi, 0xDD)), 0xD8));
}

// best, at = v, q where v > best or v is NaN
inline void take_if_larger(__m256 v, float q, __m256& best, __m256& at) {
  const __m256 take = _mm256_or_ps(_mm256_cmp_ps(v, best, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  best = _mm256_blendv_ps(best, v, take);
  at = _mm256_blendv_ps(at, _mm256_set1_ps(q), take);
}

// even, odd floats interleaved into 16 consecutive ones at p
inline void interleave(__m256 even, __m256 odd, float* p) {
  const __m256 l = _mm256_unpacklo_ps(even, odd), h = _mm256_unpackhi_ps(even, odd);
  _mm256_storeu_ps(p, _mm256_permute2f128_ps(l, h, 0x20));
  _mm256_storeu_ps(p + 8, _mm256_permute2f128_ps(l, h, 0x31));
}

inline void pool_row(const float* r0, const float* r1, float* o, uint8_t* k, int64_t begin, int64_t Wo) {
  int64_t ow = begin;
  for (; ow + 8 <= Wo; ow += 8) {
    __m256 a, b, c, d;
    deinterleave(r0 + 2 * ow, a, b);
    deinterleave(r1 + 2 * ow, c, d);
    __m256 best = a, at = _mm256_setzero_ps();
    take_if_larger(b, 1.f, best, at);
    take_if_larger(c, 2.f, best, at);
    take_if_larger(d, 3.f, best, at);
    _mm256_storeu_ps(o + ow, best);
    const __m256i i32 = _mm256_cvtps_epi32(at);
    const __m128i i16 = _mm_packus_epi32(_mm256_castsi256_si128(i32), _mm256_extracti128_si256(i32, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(k + ow), _mm_packus_epi16(i16, i16));
  }
  pool_row_scalar(r0, r1, o, k, ow, Wo);
}

inline void unpool_row(const float* g, const uint8_t* k, float* r0, float* r1, int64_t begin, int64_t Wo) {
  int64_t ow = begin;
  for (; ow + 8 <= Wo; ow += 8) {
    const __m256 v = _mm256_loadu_ps(g + ow);
    const __m256i q = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(k + ow)));
    auto where = [&](int j) { return _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_cmpeq_epi32(q, _mm256_set1_epi32(j)))); };
    interleave(where(0), where(1), r0 + 2 * ow);
    interleave(where(2), where(3), r1 + 2 * ow);
  }
  unpool_row_scalar(g, k, r0, r1, ow, Wo);
}
#endif

std::tuple<at::Tensor, at::Tensor> max_pool2x2_forward(const at::Tensor& input) {
  check_nchw(input, "max_pool2x2");
  const auto x = input.contiguous();
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(H % 2 == 0 && W % 2 == 0, "max_pool2x2: H and W must be even, got ", H, "x", W);
  const int64_t Ho = H / 2, Wo = W / 2;
  auto out = at::empty({N, C, Ho, Wo}, x.options());
  auto index = at::empty({N, C, Ho, Wo}, x.options().dtype(at::kByte));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "max_pool2x2_forward", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    uint8_t* ip = index.data_ptr<uint8_t>();
    parallel_chunks(N * C * Ho, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const scalar_t* r0 = xp + (row / Ho) * H * W + 2 * (row % Ho) * W;
        pool_row(r0, r0 + W, op + row * Wo, ip + row * Wo, 0, Wo);
      }
    });
  });
  return {out, index};
}

at::Tensor max_pool2x2_backward(const at::Tensor& grad_out, const at::Tensor& index) {
  TORCH_CHECK(grad_out.dim() == 4 && index.sizes() == grad_out.sizes(), "max_pool2x2_backward: shape mismatch");
  const auto g = grad_out.contiguous(), k_ = index.contiguous();
  const int64_t N = g.size(0), C = g.size(1), Ho = g.size(2), Wo = g.size(3), W = 2 * Wo;
  auto grad_x = at::empty({N, C, 2 * Ho, W}, g.options());
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "max_pool2x2_backward", [&] {
    const scalar_t* gp = g.data_ptr<scalar_t>();
    const uint8_t* kp = k_.data_ptr<uint8_t>();
    scalar_t* xp = grad_x.data_ptr<scalar_t>();
    parallel_chunks(N * C * Ho, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        scalar_t* r0 = xp + (row / Ho) * 4 * Ho * Wo + 2 * (row % Ho) * W;
        unpool_row(gp + row * Wo, kp + row * Wo, r0, r0 + W, 0, Wo);
      }
    });
  });
  return grad_x;
}

}  // namespace

TORCH_LIBRARY(egeunet_cpu, m) {
  m.def("channel_layer_norm_forward(Tensor x, Tensor weight, Tensor bias, float eps) -> (Tensor, Tensor, Tensor)",
        &channel_layer_norm_forward);
  m.def("channel_layer_norm_backward(Tensor grad, Tensor x, Tensor mean, Tensor std, Tensor weight)"
        " -> (Tensor, Tensor, Tensor)",
        &channel_layer_norm_backward);
  m.def("depthwise3x3_forward(Tensor x, Tensor weight, Tensor? bias, int dilation) -> Tensor", &depthwise3x3_forward);
  m.def("depthwise3x3_backward(Tensor grad, Tensor x, Tensor weight, int dilation, bool need_input, bool need_weight,"
        " bool need_bias) -> (Tensor, Tensor, Tensor)",
        &depthwise3x3_backward);
  m.def("max_pool2x2_forward(Tensor x) -> (Tensor, Tensor)", &max_pool2x2_forward);
  m.def("max_pool2x2_backward(Tensor grad, Tensor index) -> Tensor", &max_pool2x2_backward);
}
