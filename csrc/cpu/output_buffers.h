// Output buffers of the CPU kernels (gradient, per-element loss) from a small cache of recently freed ones.
#pragma once

#include <ATen/core/Tensor.h>

namespace focal::cpu {

// at::empty(sizes, options) on CPU, except that buffers of kMinCachedBytes or more come from a small cache
// of freed buffers of the same byte size. A fresh multi-megabyte allocation comes from mmap, and the kernel
// then page-faults every 4 KiB page in and has it zeroed on first write: that doubled the time of a
// one-pass kernel (torch.exp into a fresh 20 MiB tensor: 6.7 ms; into a reused one: 3.3 ms).
// The cache holds at most kMaxCachedBuffers buffers; the profiler sees allocations as torch's own.
at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options);

}  // namespace focal::cpu
