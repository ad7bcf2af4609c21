// Copyright (c) egeunet-monai contributors. Apache-2.0.
//
// The training loss's CPU kernels (egeunet_monai/losses/dice_ce_kernel.py).

#include "common.h"

namespace {

using egeunet::check_nchw;
using egeunet::parallel_chunks;

// Dice + binary cross-entropy on logits x against targets y (MONAI's DiceCELoss(sigmoid=True) on one channel), in
// two passes where the PyTorch operators make a dozen: per element
//   bce = max(x, 0) - x y + log1p(exp(-|x|)),  p = sigmoid(x)
// and per (sample, channel) plane the sums of bce, p y, p and y, from which Python forms the loss; the backward
// pass computes dL/dx = A (p - y) + p (1 - p) (B y + C) with A, B, C of each plane given. The sums are made per
// block of kLossBlock elements and added in a fixed order: the result does not depend on the thread count.

constexpr int64_t kLossBlock = 4096;

// bce + x y (the caller subtracts x y), p = sigmoid(x) and q = 1 - p, each without cancellation: with
// e = exp(-|x|) and r = 1 / (1 + e), sigmoid(|x|) = r and sigmoid(-|x|) = e r
template <typename T>
inline void bce_and_sigmoid(T x, T& bce, T& p, T& q) {
  const T e = std::exp(-std::abs(x)), r = T(1) / (T(1) + e);
  bce = std::max(x, T(0)) + std::log1p(e);
  p = x >= T(0) ? r : e * r;
  q = x >= T(0) ? e * r : r;
}

// dL/dx = A (p - y) + p q (B y + C); p - y taken as (1 - y) - q where p is near 1 (x >= 0), so that a confident,
// correct prediction keeps the relative precision of its small gradient
template <typename T>
inline T dice_bce_grad(T x, T y, T p, T q, T A, T B, T C) {
  const T error = x >= T(0) ? (T(1) - y) - q : p - y;
  return A * error + p * q * (B * y + C);
}

// sums[0..3] += bce, p y, p, y over elements [begin, n)
template <typename T>
void dice_bce_sums_scalar(const T* x, const T* y, int64_t begin, int64_t n, double* sums) {
  for (int64_t i = begin; i < n; ++i) {
    T bce, p, q;
    bce_and_sigmoid(x[i], bce, p, q);
    sums[0] += bce - x[i] * y[i];
    sums[1] += p * y[i];
    sums[2] += p;
    sums[3] += y[i];
  }
}

template <typename T>
void dice_bce_grad_scalar(const T* x, const T* y, T* g, int64_t begin, int64_t n, T A, T B, T C) {
  for (int64_t i = begin; i < n; ++i) {
    T bce, p, q;
    bce_and_sigmoid(x[i], bce, p, q);
    g[i] = dice_bce_grad(x[i], y[i], p, q, A, B, C);
  }
}

// the block functions the kernels call: the scalar loops, or AVX2 for float32 below
template <typename T>
void dice_bce_block(const T* x, const T* y, int64_t n, double* sums) {
  dice_bce_sums_scalar(x, y, 0, n, sums);
}

template <typename T>
void dice_bce_grad_block(const T* x, const T* y, T* g, int64_t n, T A, T B, T C) {
  dice_bce_grad_scalar(x, y, g, 0, n, A, B, C);
}

#if defined(__AVX2__) && defined(__FMA__)
// exp(x) for x <= 0 (Cephes' expf: range reduction by ln 2, degree-6 polynomial; within 2 ulp), 0 below -87
inline __m256 exp_nonpositive(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 q = _mm256_set1_ps(1.9875691500e-4f);
  q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(1.3981999507e-3f));
  q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(8.3334519073e-3f));
  q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(4.1665795894e-2f));
  q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(1.6666665459e-1f));
  q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(5.0000001201e-1f));
  q = _mm256_fmadd_ps(_mm256_mul_ps(q, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i scale = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(q, _mm256_castsi256_ps(scale));
}

// log1p(e) for e in [0, 1] as 2 atanh(s), s = e / (2 + e) <= 1/3: the odd series to s^13 (relative error < 2e-8)
inline __m256 log1p_unit(__m256 e) {
  const __m256 s = _mm256_div_ps(e, _mm256_add_ps(e, _mm256_set1_ps(2.0f))), s2 = _mm256_mul_ps(s, s);
  __m256 q = _mm256_set1_ps(1.0f / 13);
  for (const float c : {1.0f / 11, 1.0f / 9, 1.0f / 7, 1.0f / 5, 1.0f / 3, 1.0f}) q = _mm256_fmadd_ps(q, s2, _mm256_set1_ps(c));
  return _mm256_mul_ps(_mm256_add_ps(s, s), q);
}

// the scalar bce_and_sigmoid of 8 logits
inline void bce_and_sigmoid(__m256 x, __m256& bce, __m256& p, __m256& q) {
  const __m256 negative_abs = _mm256_or_ps(x, _mm256_set1_ps(-0.0f));
  const __m256 e = exp_nonpositive(negative_abs);
  const __m256 r = _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_add_ps(_mm256_set1_ps(1.0f), e)), er = _mm256_mul_ps(e, r);
  bce = _mm256_add_ps(_mm256_max_ps(x, _mm256_setzero_ps()), log1p_unit(e));
  p = _mm256_blendv_ps(r, er, x);  // the sign bit of x picks e r where x < 0 (and -0)
  q = _mm256_blendv_ps(er, r, x);
}

inline void add_to_double(__m256 v, double& total) {
  const __m256d wide = _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
  double lanes[4];
  _mm256_storeu_pd(lanes, wide);
  total += (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
}

template <>
void dice_bce_block<float>(const float* x, const float* y, int64_t n, double* sums) {
  int64_t i = 0;
  while (i + 8 <= n) {  // float partial sums of at most 16 vectors each, then added in double
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int k = 0; k < 16 && i + 8 <= n; ++k, i += 8) {
      const __m256 xv = _mm256_loadu_ps(x + i), yv = _mm256_loadu_ps(y + i);
      __m256 bce, p, q;
      bce_and_sigmoid(xv, bce, p, q);
      acc[0] = _mm256_add_ps(acc[0], _mm256_fnmadd_ps(xv, yv, bce));
      acc[1] = _mm256_fmadd_ps(p, yv, acc[1]);
      acc[2] = _mm256_add_ps(acc[2], p);
      acc[3] = _mm256_add_ps(acc[3], yv);
    }
    for (int j = 0; j < 4; ++j) add_to_double(acc[j], sums[j]);
  }
  dice_bce_sums_scalar(x, y, i, n, sums);
}

template <>
void dice_bce_grad_block<float>(const float* x, const float* y, float* g, int64_t n, float A, float B, float C) {
  const __m256 a = _mm256_set1_ps(A), b = _mm256_set1_ps(B), c = _mm256_set1_ps(C), one = _mm256_set1_ps(1.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 xv = _mm256_loadu_ps(x + i), yv = _mm256_loadu_ps(y + i);
    __m256 bce, p, q;
    bce_and_sigmoid(xv, bce, p, q);
    const __m256 error = _mm256_blendv_ps(_mm256_sub_ps(_mm256_sub_ps(one, yv), q), _mm256_sub_ps(p, yv), xv);
    const __m256 dice = _mm256_mul_ps(_mm256_mul_ps(p, q), _mm256_fmadd_ps(b, yv, c));
    _mm256_storeu_ps(g + i, _mm256_fmadd_ps(a, error, dice));
  }
  dice_bce_grad_scalar(x, y, g, i, n, A, B, C);
}
#endif

void check_logits_and_targets(const at::Tensor& x, const at::Tensor& y, const char* op) {
  check_nchw(x, op);
  TORCH_CHECK(y.sizes() == x.sizes(), op, ": targets of shape ", y.sizes(), " for logits of shape ", x.sizes());
}

// N x C x 4 float64: the sums of bce, p y, p and y over each plane
at::Tensor dice_bce_sums(const at::Tensor& logits, const at::Tensor& targets) {
  check_logits_and_targets(logits, targets, "dice_bce_sums");
  const auto x = logits.contiguous(), y = targets.contiguous().to(x.scalar_type());
  const int64_t planes = x.size(0) * x.size(1), P = x.size(2) * x.size(3), blocks = (P + kLossBlock - 1) / kLossBlock;
  auto partial = at::zeros({planes, blocks, 4}, x.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dice_bce_sums", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* yp = y.data_ptr<scalar_t>();
    double* sp = partial.data_ptr<double>();
    parallel_chunks(planes * blocks, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const int64_t offset = (t / blocks) * P + (t % blocks) * kLossBlock;
        dice_bce_block(xp + offset, yp + offset, std::min(kLossBlock, P - (t % blocks) * kLossBlock), sp + 4 * t);
      }
    });
  });
  return partial.sum(1).view({x.size(0), x.size(1), 4});
}

// dL/dx = A (p - y) + p (1 - p) (B y + C), with coefficients N x C x 3 (A, B, C of each plane)
at::Tensor dice_bce_backward(const at::Tensor& logits, const at::Tensor& targets, const at::Tensor& coefficients) {
  check_logits_and_targets(logits, targets, "dice_bce_backward");
  const auto x = logits.contiguous(), y = targets.contiguous().to(x.scalar_type());
  const int64_t planes = x.size(0) * x.size(1), P = x.size(2) * x.size(3), blocks = (P + kLossBlock - 1) / kLossBlock;
  TORCH_CHECK(coefficients.numel() == planes * 3, "dice_bce_backward: coefficients need N x C x 3 values");
  const auto k = coefficients.contiguous().to(at::kDouble);
  auto grad = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dice_bce_backward", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* yp = y.data_ptr<scalar_t>();
    const double* kp = k.data_ptr<double>();
    scalar_t* gp = grad.data_ptr<scalar_t>();
    parallel_chunks(planes * blocks, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const int64_t plane = t / blocks, offset = plane * P + (t % blocks) * kLossBlock;
        const double* c = kp + 3 * plane;
        dice_bce_grad_block(xp + offset, yp + offset, gp + offset, std::min(kLossBlock, P - (t % blocks) * kLossBlock),
                            static_cast<scalar_t>(c[0]), static_cast<scalar_t>(c[1]), static_cast<scalar_t>(c[2]));
      }
    });
  });
  return grad;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(egeunet_cpu, m) {
  m.def("dice_bce_sums(Tensor logits, Tensor targets) -> Tensor", &dice_bce_sums);
  m.def("dice_bce_backward(Tensor logits, Tensor targets, Tensor coefficients) -> Tensor", &dice_bce_backward);
}
