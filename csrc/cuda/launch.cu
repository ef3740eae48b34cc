// Launch bookkeeping shared by the launchers: the device's SM count, the kernels' occupancy (cached), the
// partials bound, the launch and occupancy-query counters.
#include "kernels_common.cuh"

#include <atomic>
#include <map>
#include <mutex>
#include <tuple>

namespace focal::cuda {
namespace {

constexpr int kMaxCachedDevices = 64;
std::atomic<int64_t> g_kernel_launches{0};
std::atomic<int64_t> g_occupancy_queries{0};

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

int occupancy_blocks_per_sm(const void* kernel, int block_threads, int device) {
  using Key = std::tuple<const void*, int, int>;
  static std::mutex mutex;
  static std::map<Key, int> cache;  // one entry per kernel instantiation, block size and device
  const Key key{kernel, block_threads, device};
  {
    const std::lock_guard<std::mutex> lock(mutex);
    const auto found = cache.find(key);
    if (found != cache.end()) return found->second;
  }
  int per_sm = 0;
  C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, block_threads, 0));
  g_occupancy_queries.fetch_add(1, std::memory_order_relaxed);
  const std::lock_guard<std::mutex> lock(mutex);
  cache.emplace(key, per_sm);
  return per_sm;
}

int64_t occupancy_queries() {
  return g_occupancy_queries.load(std::memory_order_relaxed);
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
