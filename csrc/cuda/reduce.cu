// Launch sizing and the final, fixed-order combine of the forward kernels' per-block partial sums.
#include "kernels_common.cuh"

#include <atomic>

namespace focal::cuda {
namespace {

constexpr int kCombineThreads = 256;
constexpr int kMaxCachedDevices = 64;

template <typename out_t>
__global__ void __launch_bounds__(kCombineThreads)
    combine_partials_kernel(const double* __restrict__ partials, int64_t slots, int blocks, int64_t fixed_count,
                            out_t* __restrict__ loss_sum, out_t* __restrict__ count) {
  // Each thread adds a strided subset in order, then one block reduction: the same order on every run.
  SumCount acc{0.0, 0.0};
  for (int b = threadIdx.x; b < blocks; b += kCombineThreads) {
    acc.sum += partials[b];
    acc.count += partials[slots + b];
  }
  using BlockReduce = cub::BlockReduce<SumCount, kCombineThreads>;
  __shared__ typename BlockReduce::TempStorage temp;
  const SumCount total = BlockReduce(temp).Reduce(acc, SumCountAdd{});
  if (threadIdx.x == 0) {
    *loss_sum = static_cast<out_t>(total.sum);
    *count = static_cast<out_t>(fixed_count >= 0 ? static_cast<double>(fixed_count) : total.count);
  }
}

}  // namespace

int sm_count(int device) {
  // cudaDeviceGetAttribute neither synchronises nor breaks graph capture; cache it anyway (per device).
  static std::atomic<int> cache[kMaxCachedDevices] = {};
  if (device >= 0 && device < kMaxCachedDevices) {
    const int cached = cache[device].load(std::memory_order_relaxed);
    if (cached > 0) return cached;
  }
  int count = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
  if (count < 1) count = 1;
  if (device >= 0 && device < kMaxCachedDevices) cache[device].store(count, std::memory_order_relaxed);
  return count;
}

int64_t max_forward_blocks(int device) {
  return static_cast<int64_t>(sm_count(device)) * kBlocksPerSm;
}

void launch_combine_partials(const ReductionBuffers& reduce, int blocks, bool opmath_is_double, int64_t fixed_count,
                             cudaStream_t stream) {
  if (opmath_is_double) {
    combine_partials_kernel<double><<<1, kCombineThreads, 0, stream>>>(
        reduce.partials, reduce.slots, blocks, fixed_count, static_cast<double*>(reduce.loss_sum),
        static_cast<double*>(reduce.count));
  } else {
    combine_partials_kernel<float><<<1, kCombineThreads, 0, stream>>>(
        reduce.partials, reduce.slots, blocks, fixed_count, static_cast<float*>(reduce.loss_sum),
        static_cast<float*>(reduce.count));
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace focal::cuda
