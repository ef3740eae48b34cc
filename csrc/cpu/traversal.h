// The CPU traversals every loss shares: opmath loads and stores, fixed-size reduction blocks added in order
// (so the sum does not depend on the thread count), the dense elementwise traversal and the rows-of-C traversal
// with class-index targets. Part of focal_cpu_kernels_impl.h (one copy per instruction set).
#pragma once

#ifndef FOCAL_CPU_NS
#error "define FOCAL_CPU_NS before including traversal.h (through focal_cpu_kernels_impl.h)"
#endif

#include "focal_cpu_kernels.h"
#include "vec_math.h"
#include "../focal_math.h"
#include "../gamma_dispatch.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <limits>
#include <type_traits>
#include <vector>

namespace focal::cpu::FOCAL_CPU_NS {
namespace {

using at::vec::Vectorized;

// Elements per reduction block: fixed, so partial sums (and the result) do not depend on thread count.
constexpr int64_t kBlock = 8192;
// Elements of one softmax row group or spatial chunk: its exp(x - max), kept for the gradient pass, stays in
// L1/L2 (one exp per element, not two).
constexpr int64_t kGroupElements = 8192;
// Most spatial positions in one work unit of the spatial softmax.
constexpr int64_t kSpatialChunkMax = 256;

template <typename scalar_t>
using opmath_t = at::opmath_type<scalar_t>;

// Load `count` (1..size) elements as an opmath vector; lanes past count are zero.
template <typename scalar_t>
inline Vectorized<opmath_t<scalar_t>> load_opmath(const scalar_t* p, int64_t count) {
  using Vec = Vectorized<opmath_t<scalar_t>>;
  if (count == Vec::size()) return load_full(p);
  if constexpr (std::is_same_v<scalar_t, opmath_t<scalar_t>>) {
    return Vec::loadu(p, count);
  } else {
    opmath_t<scalar_t> buf[Vec::size()] = {};
    for (int64_t k = 0; k < count; ++k) buf[k] = static_cast<opmath_t<scalar_t>>(p[k]);
    return Vec::loadu(buf);
  }
}

template <typename scalar_t>
inline void store_opmath(const Vectorized<opmath_t<scalar_t>>& v, scalar_t* p, int64_t count) {
  using Vec = Vectorized<opmath_t<scalar_t>>;
  if (count == Vec::size()) return store_full(v, p);
  if constexpr (std::is_same_v<scalar_t, opmath_t<scalar_t>>) {
    v.store(p, count);
  } else {
    opmath_t<scalar_t> buf[Vec::size()];
    v.store(buf);
    for (int64_t k = 0; k < count; ++k) p[k] = static_cast<scalar_t>(buf[k]);
  }
}

template <typename Vec>
inline typename Vec::value_type sum_lanes(const Vec& v) {
  return at::vec::vec_reduce_all([](Vec& a, Vec& b) { return a + b; }, v);
}

// Lane indices base, base+1, ... as an opmath vector (class ids for one-hot comparisons).
template <typename Vec>
inline Vec lane_ids(int64_t base) {
  using T = typename Vec::value_type;
  return Vec::arange(static_cast<T>(base), static_cast<T>(1));
}

template <typename Vec>
inline Vec onehot(const Vec& class_ids, const Vec& target_id) {
  return Vec::blendv(Vec(0), Vec(1), class_ids == target_id);
}

// One-hot of target_id over classes j, j+1, ...: lane k compares k with target_id - j, so the lane indices
// are built once (Vec::arange assembles them lane by lane).
template <typename Vec>
inline Vec onehot_from(int64_t j, const Vec& target_id) {
  static const Vec lanes = lane_ids<Vec>(0);
  return onehot(lanes, target_id - Vec(static_cast<typename Vec::value_type>(j)));
}

// A per-thread scratch array of at least n elements (slot: several may be live at once), reused across calls.
template <typename T, int slot>
inline T* scratch(int64_t n) {
  thread_local std::vector<T> buffer;
  if (static_cast<int64_t>(buffer.size()) < n) buffer.resize(n);
  return buffer.data();
}

// Blocks b0..b1-1 of fn, out of line: at::parallel_for inlines its body twice (the serial path and the OpenMP
// region), and g++ may contract a * b + c into an FMA differently in each copy; one copy keeps the results
// bitwise independent of the thread count.
template <typename BlockFn>
C10_NOINLINE void run_blocks(const BlockFn& fn, int64_t b0, int64_t b1, ForwardSums* partial) {
  for (int64_t b = b0; b < b1; ++b) partial[b] = fn(b);
}

// Runs fn over `num_blocks` blocks in parallel, each returning ForwardSums, and adds them in block order.
template <typename BlockFn>
ForwardSums reduce_blocks(int64_t num_blocks, const BlockFn& fn) {
  std::vector<ForwardSums> partial(static_cast<size_t>(num_blocks));
  at::parallel_for(0, num_blocks, 1, [&](int64_t b0, int64_t b1) { run_blocks(fn, b0, b1, partial.data()); });
  ForwardSums total;
  for (const auto& s : partial) {
    total.loss_sum += s.loss_sum;
    total.count += s.count;
  }
  return total;
}

// No weight: pointwise_segment skips the multiply at compile time.
struct NoWeight {};

// Applies point(x, t, j, cnt, loss, grad) to a contiguous segment (j: the lanes' offset in the segment, the
// class of the first lane for a row), t given by target_at(j, cnt), then multiplies loss and gradient by
// weight_at(j, cnt) unless it is NoWeight. Writes per-element loss and grad * grad_scale when the pointers are
// set; adds the losses to loss_acc (one horizontal sum per block, not per segment).
template <typename scalar_t, typename TargetAt, typename Point, typename WeightAt = NoWeight>
inline void pointwise_segment(const scalar_t* x, int64_t len, const TargetAt& target_at, const Point& point,
                              scalar_t* loss, scalar_t* grad, const Vectorized<opmath_t<scalar_t>>& grad_scale,
                              Vectorized<opmath_t<scalar_t>>& loss_acc, const WeightAt& weight_at = {}) {
  using Vec = Vectorized<opmath_t<scalar_t>>;
  const auto compute = [&](const Vec& xv, int64_t j, int64_t cnt, Vec& l, Vec& g) {
    point(xv, target_at(j, cnt), j, cnt, l, g);
    if constexpr (!std::is_same_v<WeightAt, NoWeight>) {
      const Vec w = weight_at(j, cnt);
      l = l * w;
      g = g * w;
    }
  };
  int64_t j = 0;
  for (; j + Vec::size() <= len; j += Vec::size()) {
    prefetch_ahead(x + j);
    if (grad != nullptr) prefetch_ahead(grad + j, /*write=*/true);
    Vec l, g;
    compute(load_full(x + j), j, Vec::size(), l, g);
    if (loss != nullptr) store_full(l, loss + j);
    if (grad != nullptr) store_full(g * grad_scale, grad + j);
    loss_acc += l;
  }
  if (j < len) {
    const int64_t cnt = len - j;
    Vec l, g;
    compute(load_opmath(x + j, cnt), j, cnt, l, g);
    if (loss != nullptr) store_opmath(l, loss + j, cnt);
    if (grad != nullptr) store_opmath(g * grad_scale, grad + j, cnt);
    loss_acc += Vec::set(Vec(0), l, cnt);  // padded lanes are not data
  }
}

template <typename scalar_t>
inline scalar_t* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<scalar_t>() : nullptr;
}

// Elementwise losses with a dense target of the input's shape in flat blocks (no per-row or per-class
// inputs); `weight`: per element, or null.
template <typename scalar_t, typename Point>
ForwardSums dense_pointwise_forward(const ForwardArgs& args, const Point& point, const opmath_t<scalar_t>* weight) {
  using Vec = Vectorized<opmath_t<scalar_t>>;
  const int64_t n = args.input.numel();
  const scalar_t* x = args.input.data_ptr<scalar_t>();
  const scalar_t* t = args.target.data_ptr<scalar_t>();
  scalar_t* loss = data_or_null<scalar_t>(args.loss_none);
  scalar_t* grad = data_or_null<scalar_t>(args.grad);
  const Vec grad_scale(static_cast<opmath_t<scalar_t>>(args.grad_scale));
  ForwardSums sums = reduce_blocks(at::divup(n, kBlock), [&](int64_t b) {
    const int64_t begin = b * kBlock;
    const int64_t len = std::min(kBlock, n - begin);
    const auto target_at = [&](int64_t j, int64_t cnt) {
      prefetch_ahead(t + begin + j);
      return load_opmath(t + begin + j, cnt);
    };
    Vec acc(0);
    scalar_t* loss_block = loss ? loss + begin : nullptr;
    scalar_t* grad_block = grad ? grad + begin : nullptr;
    if (weight == nullptr) {
      pointwise_segment(x + begin, len, target_at, point, loss_block, grad_block, grad_scale, acc);
    } else {
      const auto weight_at = [&](int64_t j, int64_t cnt) { return Vec::loadu(weight + begin + j, cnt); };
      pointwise_segment(x + begin, len, target_at, point, loss_block, grad_block, grad_scale, acc, weight_at);
    }
    return ForwardSums{static_cast<double>(sum_lanes(acc)), 0};
  });
  sums.count = n;
  return sums;
}

// Rows of C contiguous classes, one integer target per row, in blocks of whole row groups. Targets are
// checked first; then group_fn(first_row, rows, targets) handles each group of up to group_rows rows and
// returns its loss sum, giving ignored rows (target == ignore_index) zero loss and gradient.
// Returns the sum and the number of counted rows.
template <typename GroupFn>
ForwardSums class_rows_forward(const ForwardArgs& args, int64_t rows, int64_t C, int64_t max_target,
                               int64_t group_rows, const GroupFn& group_fn) {
  const int64_t* target = args.target.data_ptr<int64_t>();
  const int64_t groups_per_block = std::max<int64_t>(1, kBlock / std::max<int64_t>(C * group_rows, 1));
  const int64_t rows_per_block = groups_per_block * group_rows;
  return reduce_blocks(at::divup(rows, rows_per_block), [&](int64_t b) {
    ForwardSums s;
    const int64_t r_begin = b * rows_per_block;
    const int64_t r_end = std::min(rows, r_begin + rows_per_block);
    for (int64_t r = r_begin; r < r_end; ++r) {
      const int64_t tgt = target[r];
      if (tgt == args.ignore_index) continue;
      TORCH_CHECK(tgt >= 0 && tgt <= max_target, "target: class index ", tgt, " at position ", r,
                  " is out of range; expected 0 <= target <= ", max_target, " or ignore_index (", args.ignore_index,
                  ")");
      s.count += 1;
    }
    for (int64_t r0 = r_begin; r0 < r_end; r0 += group_rows) {
      s.loss_sum += group_fn(r0, std::min(group_rows, r_end - r0), target + r0);
    }
    return s;
  });
}

}  // namespace
}  // namespace focal::cpu::FOCAL_CPU_NS
