// Copyright (c) egeunet-monai contributors. Apache-2.0.
//
// What the C++ CPU kernels share: the thread split of their loops and the check of their N x C x H x W inputs.
// accel/kernels.py compiles network_cpu.cpp, loss_cpu.cpp and augment_cpu.cpp into one library (egeunet_cpu).

#pragma once

#include <ATen/Dispatch.h>
#include <ATen/Functions.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <tuple>
#if defined(__AVX2__)
#include <immintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

namespace egeunet {

// f(begin, end) over [0, n) in contiguous chunks, one per thread. Not at::parallel_for: its header-inline code keeps
// its own per-thread "initialised" flag in this library and, on a thread's first call, resets that thread's OpenMP
// thread count to the process-wide one, undoing the one-thread workers of accel/split.py (measured: 1.6x slower).
// at::get_num_threads() is PyTorch's exported function and reads the calling thread's count.
template <typename F>
inline void parallel_chunks(int64_t n, const F& f) {
  const int threads = static_cast<int>(std::min<int64_t>(at::get_num_threads(), n));
  if (threads <= 1) {
    f(0, n);
    return;
  }
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
  {
    const int64_t t = omp_get_thread_num(), chunk = (n + threads - 1) / threads;
    const int64_t begin = std::min(n, t * chunk), end = std::min(n, begin + chunk);
    if (begin < end) f(begin, end);
  }
#else
  f(0, n);
#endif
}

inline void check_nchw(const at::Tensor& x, const char* op) {
  TORCH_CHECK(x.device().is_cpu(), op, ": expected a CPU tensor, got one on ", x.device());
  TORCH_CHECK(x.dim() == 4, op, ": expected an N x C x H x W tensor, got shape ", x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op,
              ": expected float32 or float64, got ", x.scalar_type());
}

}  // namespace egeunet
