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

namespace egeunet {

// f(begin, end) over [0, n) in contiguous chunks, one per intra-op thread.
template <typename F>
inline void parallel_chunks(int64_t n, const F& f) {
  at::parallel_for(0, n, 1, f);
}

inline void check_nchw(const at::Tensor& x, const char* op) {
  TORCH_CHECK(x.device().is_cpu(), op, ": expected a CPU tensor, got one on ", x.device());
  TORCH_CHECK(x.dim() == 4, op, ": expected an N x C x H x W tensor, got shape ", x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op,
              ": expected float32 or float64, got ", x.scalar_type());
}

}  // namespace egeunet
