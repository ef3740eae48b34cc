#include "output_buffers.h"

#include <ATen/EmptyTensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>

#include <atomic>
#include <deque>
#include <mutex>
#include <utility>

namespace focal::cpu {
namespace {

constexpr size_t kMinCachedBytes = size_t(1) << 20;
constexpr size_t kMaxCachedBuffers = 4;

// A c10::Allocator whose frees go back to a bounded cache of (bytes, pointer) pairs, most recent last.
class ReusingAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t bytes) override {
    void* ptr = take_cached(bytes);
    if (ptr == nullptr) ptr = c10::alloc_cpu(bytes);
    in_use_ += bytes;
    c10::reportMemoryUsageToProfiler(ptr, static_cast<int64_t>(bytes), in_use_.load(), in_use_.load(),
                                     c10::Device(c10::DeviceType::CPU));
    return {ptr, new Block{ptr, bytes}, &release, c10::Device(c10::DeviceType::CPU)};
  }

  c10::DeleterFnPtr raw_deleter() const override { return nullptr; }

  void copy_data(void* dest, const void* src, std::size_t count) const override { default_copy_data(dest, src, count); }

  static ReusingAllocator& get() {
    static ReusingAllocator* allocator = new ReusingAllocator();  // never destroyed: tensors may outlive statics
    return *allocator;
  }

 private:
  struct Block {
    void* ptr;
    size_t bytes;
  };

  static void release(void* context) {
    Block* block = static_cast<Block*>(context);
    get().give_back(block->ptr, block->bytes);
    delete block;
  }

  void* take_cached(size_t bytes) {
    const std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = free_.rbegin(); it != free_.rend(); ++it) {
      if (it->first == bytes) {
        void* ptr = it->second;
        free_.erase(std::next(it).base());
        return ptr;
      }
    }
    return nullptr;
  }

  void give_back(void* ptr, size_t bytes) {
    in_use_ -= bytes;
    c10::reportMemoryUsageToProfiler(ptr, -static_cast<int64_t>(bytes), in_use_.load(), in_use_.load(),
                                     c10::Device(c10::DeviceType::CPU));
    void* evicted = nullptr;
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      free_.emplace_back(bytes, ptr);
      if (free_.size() > kMaxCachedBuffers) {
        evicted = free_.front().second;
        free_.pop_front();
      }
    }
    if (evicted != nullptr) c10::free_cpu(evicted);
  }

  std::mutex mutex_;
  std::deque<std::pair<size_t, void*>> free_;
  std::atomic<size_t> in_use_{0};
};

}  // namespace

at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  const size_t bytes = static_cast<size_t>(c10::multiply_integers(sizes)) * options.dtype().itemsize();
  if (bytes < kMinCachedBytes) return at::empty(sizes, options);
  return at::Tensor(at::detail::empty_generic(sizes, &ReusingAllocator::get(), c10::DispatchKeySet(c10::DispatchKey::CPU),
                                   c10::typeMetaToScalarType(options.dtype()), std::nullopt));
}

}  // namespace focal::cpu
