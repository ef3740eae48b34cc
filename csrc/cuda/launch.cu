// Launch bookkeeping shared by the launchers: the device's SM count, the partials bound, the launch counter.
#include "kernels_common.cuh"

#include <atomic>

namespace focal::cuda {
namespace {

constexpr int kMaxCachedDevices = 64;
std::atomic<int64_t> g_kernel_launches{0};

}  // namespace

int sm_count(int device) {
  int count = 0;
#ifdef FOCAL_CUDA_EMULATE
  // No cache: focal_cuda.testing.emulated_cuda(sm_count=...) changes it between launches.
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
  return count < 1 ? 1 : count;
#else
  // cudaDeviceGetAttribute neither synchronises nor breaks graph capture; cache it anyway (per device).
  static std::atomic<int> cache[kMaxCachedDevices] = {};
  if (device >= 0 && device < kMaxCachedDevices) {
    const int cached = cache[device].load(std::memory_order_relaxed);
    if (cached > 0) return cached;
  }
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
  if (count < 1) count = 1;
  if (device >= 0 && device < kMaxCachedDevices) cache[device].store(count, std::memory_order_relaxed);
  return count;
#endif
}

int64_t max_forward_blocks(int device) {
  return static_cast<int64_t>(sm_count(device)) * kMaxBlocksPerSm;
}

void count_launch() {
  g_kernel_launches.fetch_add(1, std::memory_order_relaxed);
}

int64_t kernel_launches() {
  return g_kernel_launches.load(std::memory_order_relaxed);
}

}  // namespace focal::cuda
