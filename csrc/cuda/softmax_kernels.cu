// Softmax focal loss forward kernels. One row = the C class logits of one sample (and spatial position).
// Each thread keeps its share of the row in registers: one read of the row, one exp per element (the
// exp(x - local max) values serve both the log-sum-exp and the gradient), one combined (max, sum) reduction per
// row. One row routine (softmax_row) for three ways of mapping rows to threads:
//   * warp kernel: `lanes` (power of two) consecutive lanes per row, `slots` 16-byte vectors per lane, chosen so
//     that lanes * slots just covers the row (C = 80 bf16: 2 lanes of 5 vectors), for C <= 1024;
//   * block kernel: a group of 64..512 threads of a 512-thread block per row, for large C (32000 bf16 stays in
//     registers; longer rows go in chunks, re-read for the gradient);
//   * spatial kernel: (N, C, S) tiles of positions x class groups, loads coalesced along S, classes split
//     between the threads of a column (one thread per position for small C).
// Contiguous rows are read in aligned 16-byte vectors whatever C: the misaligned head and the tail of a row go
#include "softmax_row.cuh"

namespace focal::cuda {
namespace {

// ---- kernels ------------------------------------------------------------------------------------------------

// Blocks per SM the warp kernel asks ptxas to fit (0: ptxas's own choice, best for plain float rows: 46-80
// registers, where the 72-97 of 4-8 vectors a lane pay for the vectors in flight). Left to itself ptxas caps some
// kernels below their live values and spills a few: double (its exp / log sequences need many temporaries) and
// smoothed rows of 16 values or more get 2 blocks (up to 128 registers), smaller smoothed rows 4 (64). Plain fp16 /
// bf16 rows (up to 5 vectors a lane) get 3 (80 registers): left alone, ptxas takes 123 for the branch-free 16-bit
// math and 2 blocks.
template <typename scalar_t, bool kSmooth, int kSlots>
constexpr int warp_kernel_min_blocks() {
  if (sizeof(scalar_t) == 8 || (kSmooth && kSlots * vector_width<scalar_t>() >= 16)) return 2;
  if (kSmooth) return 4;
  return sizeof(scalar_t) == 2 ? 3 : 0;
}

// Rows of (rows, C); each warp takes 32 / lanes_per_row rows at a time, kSlots vectors per lane.
template <int G, bool kSmooth, int kSlots, typename scalar_t>
__global__ void __launch_bounds__(kThreads, warp_kernel_min_blocks<scalar_t, kSmooth, kSlots>())
    softmax_rows_warp_kernel(const scalar_t* __restrict__ x, const int64_t* __restrict__ target,
                             scalar_t* __restrict__ loss, scalar_t* __restrict__ grad, int64_t rows, int64_t C,
                             int64_t ignore_index, int lanes_per_row, bool grad_aligned,
                             SoftmaxConsts<opmath_t<scalar_t>> k, ReductionBuffers reduce) {
  using op_t = opmath_t<scalar_t>;
  constexpr int kWarpsPerBlock = kThreads / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const WarpLanes group{lane % lanes_per_row, lanes_per_row};
  const int64_t rows_per_warp = kWarpSize / lanes_per_row;
  const int64_t warp = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  const int64_t rows_per_sweep = static_cast<int64_t>(gridDim.x) * kWarpsPerBlock * rows_per_warp;
  op_t acc(0);
  int64_t count = 0;
  // The loop bound is the same for the whole warp, so every lane reaches every shuffle.
  for (int64_t first = warp * rows_per_warp; first < rows; first += rows_per_sweep) {
    const int64_t row = first + lane / lanes_per_row;
    const bool in_range = row < rows;
    const int64_t offset = in_range ? row * C : 0;
    const ContiguousRow<scalar_t, int> access(x + offset, in_range && grad != nullptr ? grad + offset : nullptr,
                                              static_cast<int>(C), grad_aligned);
    softmax_row_with_target<G, kSmooth, kSlots, false>(access, group, row, in_range, target, loss, ignore_index, k,
                                                       acc, count);
  }
  finish_forward_block<kThreads, scalar_t>(static_cast<double>(acc), static_cast<double>(count), reduce);
}

// Vectors per thread of the block kernel, as many as fit 128 registers without a stack frame: a row of 32768
// half/bf16 (64 values a thread), 16384 float or 4096 double classes stays in registers.
template <typename scalar_t>
constexpr int block_row_slots() {
  return sizeof(scalar_t) == 2 ? 8 : sizeof(scalar_t) == 4 ? 8 : 4;
}

// Rows of (rows, C) with large C: threads_per_row (64..512) threads of the block per row.
template <int G, bool kSmooth, typename scalar_t>
__global__ void __launch_bounds__(kRowBlockThreads)
    softmax_rows_block_kernel(const scalar_t* __restrict__ x, const int64_t* __restrict__ target,
                              scalar_t* __restrict__ loss, scalar_t* __restrict__ grad, int64_t rows, int64_t C,
                              int64_t ignore_index, int threads_per_row, bool grad_aligned,
                              SoftmaxConsts<opmath_t<scalar_t>> k, ReductionBuffers reduce) {
  using op_t = opmath_t<scalar_t>;
  const BlockThreads<kRowBlockThreads> group{threads_per_row};
  const int64_t rows_per_block = kRowBlockThreads / threads_per_row;
  op_t acc(0);
  int64_t count = 0;
  // The loop bound is the same for the whole block, so every thread reaches every barrier.
  for (int64_t first = blockIdx.x * rows_per_block; first < rows; first += gridDim.x * rows_per_block) {
    const int64_t row = first + threadIdx.x / threads_per_row;
    const bool in_range = row < rows;
    const int64_t offset = in_range ? row * C : 0;
    const ContiguousRow<scalar_t, int64_t> access(x + offset, in_range && grad != nullptr ? grad + offset : nullptr,
                                                  C, grad_aligned);
    softmax_row_with_target<G, kSmooth, block_row_slots<scalar_t>(), true>(access, group, row, in_range, target,
                                                                          loss, ignore_index, k, acc, count);
  }
  finish_forward_block<kRowBlockThreads, scalar_t>(static_cast<double>(acc), static_cast<double>(count), reduce);
}

// Classes per thread and chunk of the spatial kernel: 8, or 4 double (half the registers per class).
template <typename scalar_t>
constexpr int spatial_slots() {
  return sizeof(scalar_t) == 8 ? 4 : 8;
}
constexpr int kSpatialMaxClassGroups = 32;

// (N, C, S): a block takes positions_per_block consecutive positions (n, s) (flat n * S + s); the
// kThreads / positions_per_block threads of a column share a position's classes. Class c of position (n, s) is
// at n*C*S + c*S + s; target and loss at n*S + s. Neighbouring threads read neighbouring s.
// Registers: 57-64 (73-75 smoothed with gamma 0, which a 64 cap would spill); double is asked for 2 blocks
// (up to 128), where ptxas alone spills.
template <int G, bool kSmooth, typename scalar_t>
__global__ void __launch_bounds__(kThreads, sizeof(scalar_t) == 8 ? 2 : 0)
    softmax_spatial_kernel(const scalar_t* __restrict__ x, const int64_t* __restrict__ target,
                           scalar_t* __restrict__ loss, scalar_t* __restrict__ grad, int64_t N, int64_t C, int64_t S,
                           int64_t ignore_index, int positions_per_block, SoftmaxConsts<opmath_t<scalar_t>> k,
                           ReductionBuffers reduce) {
  using op_t = opmath_t<scalar_t>;
  const BlockColumn<kThreads> group{positions_per_block};
  const int64_t positions = N * S;
  op_t acc(0);
  int64_t count = 0;
  for (int64_t first = static_cast<int64_t>(blockIdx.x) * positions_per_block; first < positions;
       first += static_cast<int64_t>(gridDim.x) * positions_per_block) {
    const int64_t pos = first + threadIdx.x % positions_per_block;
    const bool in_range = pos < positions;
    const int64_t n = in_range ? pos / S : 0;
    const int64_t offset = in_range ? n * C * S + (pos - n * S) : 0;
    const StridedRow<scalar_t> access{x + offset, in_range && grad != nullptr ? grad + offset : nullptr, S,
                                      static_cast<int>(C)};
    softmax_row_with_target<G, kSmooth, spatial_slots<scalar_t>(), true>(access, group, pos, in_range, target,
                                                                         loss, ignore_index, k, acc, count);
  }
  finish_forward_block<kThreads, scalar_t>(static_cast<double>(acc), static_cast<double>(count), reduce);
}

// ---- layouts (host) -------------------------------------------------------------------------------------------

// Slots per lane the warp kernel is built for: at most 40 values a lane in registers. Smoothed rows and double
// (V = 2, compute-bound: idle lanes cost little) take powers of two up to 4 double / 8 others, which
// halves their instantiations; double rows over 256 classes go to the block kernel.
constexpr int kWarpSlotChoices[] = {1, 2, 3, 4, 5, 8};
template <int V, bool kSmooth>
constexpr bool warp_slots_built(int slots) {
  const bool power_of_two = slots == 1 || slots == 2 || slots == 4 || slots == 8;
  if (V == 2) return power_of_two && slots <= 4;
  return slots * V <= 40 && (!kSmooth || power_of_two);
}

struct WarpLayout {
  int lanes = 0;  // 0: a row does not fit one warp's registers
  int slots = 0;
};

// The smallest lanes x slots that covers `units` vectors (ties: fewer lanes, so fewer shuffles per element).
template <int V, bool kSmooth>
WarpLayout choose_warp_layout(int64_t units) {
  WarpLayout best;
  for (const int slots : kWarpSlotChoices) {
    if (!warp_slots_built<V, kSmooth>(slots)) continue;
    int lanes = 1;
    while (lanes * slots < units && lanes < kWarpSize) lanes *= 2;
    if (lanes * slots < units) continue;
    if (best.lanes == 0 || lanes * slots < best.lanes * best.slots ||
        (lanes * slots == best.lanes * best.slots && lanes < best.lanes)) {
      best = {lanes, slots};
    }
  }
  return best;
}

template <int V, bool kSmooth, typename Body>
void dispatch_warp_slots(int slots, const Body& body) {
  const auto call = [&](auto slots_tag) {
    if constexpr (warp_slots_built<V, kSmooth>(decltype(slots_tag)::value)) body(slots_tag);
  };
  switch (slots) {
    case 1: call(std::integral_constant<int, 1>{}); break;
    case 2: call(std::integral_constant<int, 2>{}); break;
    case 3: call(std::integral_constant<int, 3>{}); break;
    case 4: call(std::integral_constant<int, 4>{}); break;
    case 5: call(std::integral_constant<int, 5>{}); break;
    case 8: call(std::integral_constant<int, 8>{}); break;
    default: TORCH_CHECK(false, "softmax_focal_fwd: no warp kernel with ", slots, " slots");
  }
}

int64_t next_power_of_two(int64_t n) {
  int64_t p = 1;
  while (p < n) p *= 2;
  return p;
}

}  // namespace

void launch_softmax_forward(const SoftmaxParams& p, int device, cudaStream_t stream) {
  const int64_t rows = p.batch * p.spatial;
  if (rows == 0 || p.classes == 0) return;  // the caller fills the outputs
  dispatch_floating(p.dtype, "softmax_focal_fwd", [&](auto dtype_tag) {
    using scalar_t = decltype(dtype_tag);
    using op_t = opmath_t<scalar_t>;
    constexpr int V = vector_width<scalar_t>();
    const auto* x = static_cast<const scalar_t*>(p.input);
    auto* loss = static_cast<scalar_t*>(p.loss);
    auto* grad = static_cast<scalar_t*>(p.grad);
    const int64_t C = p.classes;
    const double s = p.label_smoothing;
    const SoftmaxConsts<op_t> k{static_cast<op_t>(p.gamma), static_cast<op_t>(1.0 - s + s / C),
                                static_cast<op_t>(s / C), static_cast<const op_t*>(p.alpha),
                                static_cast<op_t>(p.poly_epsilon), static_cast<const op_t*>(p.row_weight),
                                static_cast<op_t>(p.reduce.grad_prescale)};
    // Vectors a row spans: C / V when every row starts aligned, else up to one more (misaligned head).
    const bool rows_aligned = C % V == 0 && is_vector_aligned(x);
    const int64_t units = rows_aligned ? C / V : ceil_div(C + V - 1, V);
    // Gradient vectors line up with the input's when both bases have the same offset from 16 bytes.
    const bool grad_aligned =
        grad == nullptr || reinterpret_cast<uintptr_t>(x) % kVectorBytes == reinterpret_cast<uintptr_t>(grad) % kVectorBytes;
    const auto launch = [&](auto gamma_tag, auto smooth_tag) {
      constexpr int G = decltype(gamma_tag)::value;
      constexpr bool kSmooth = decltype(smooth_tag)::value;
      if (p.spatial > 1) {
        // The spatial kernel counts a position's classes in int (fewer registers per slot), with room for a
        // chunk past the last class.
        TORCH_CHECK(C <= (int64_t{1} << 30), "softmax_focal_fwd: at most 2**30 classes with spatial dimensions, got ",
                    C);
        // Class groups per position: enough to hold C in registers, while a warp still reads 32 consecutive s
        // (or all of a short S), at most kSpatialMaxClassGroups.
        const int64_t min_positions = std::max<int64_t>(kThreads / kSpatialMaxClassGroups,
                                                        std::min<int64_t>(kWarpSize, next_power_of_two(p.spatial)));
        int64_t groups = 1;
        while (groups * spatial_slots<scalar_t>() < C && kThreads / (2 * groups) >= min_positions) groups *= 2;
        const int positions_per_block = static_cast<int>(kThreads / groups);
        const auto kernel = &softmax_spatial_kernel<G, kSmooth, scalar_t>;
        const int grid = grid_for(rows, positions_per_block, device, kernel, kThreads);
        FOCAL_LAUNCH(grid, kThreads, 0, stream, softmax_spatial_kernel<G, kSmooth, scalar_t>)(
            x, p.target, loss, grad, p.batch, C, p.spatial, p.ignore_index, positions_per_block, k, p.reduce);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        return;
      }
      const WarpLayout layout = choose_warp_layout<V, kSmooth>(units);
      if (C <= 1024 && layout.lanes > 0) {
        dispatch_warp_slots<V, kSmooth>(layout.slots, [&](auto slots_tag) {
          constexpr int G = decltype(gamma_tag)::value;  // again: g++ wants constexpr locals captured
          constexpr bool kSmooth = decltype(smooth_tag)::value;
          constexpr int kSlots = decltype(slots_tag)::value;
          const auto kernel = &softmax_rows_warp_kernel<G, kSmooth, kSlots, scalar_t>;
          const int64_t warps = ceil_div(rows, kWarpSize / layout.lanes);
          const int grid = grid_for(warps, kThreads / kWarpSize, device, kernel, kThreads);
          FOCAL_LAUNCH(grid, kThreads, 0, stream, softmax_rows_warp_kernel<G, kSmooth, kSlots, scalar_t>)(
              x, p.target, loss, grad, rows, C, p.ignore_index, layout.lanes, grad_aligned, k, p.reduce);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
        return;
      }
      // Threads per row: the fewest (>= 64) whose registers hold the row, at most the block (then in chunks).
      constexpr int kSlots = block_row_slots<scalar_t>();
      int threads_per_row = 64;
      while (threads_per_row * kSlots < units && threads_per_row < kRowBlockThreads) threads_per_row *= 2;
      const auto kernel = &softmax_rows_block_kernel<G, kSmooth, scalar_t>;
      const int grid = grid_for(rows, kRowBlockThreads / threads_per_row, device, kernel, kRowBlockThreads);
      FOCAL_LAUNCH(grid, kRowBlockThreads, 0, stream, softmax_rows_block_kernel<G, kSmooth, scalar_t>)(
          x, p.target, loss, grad, rows, C, p.ignore_index, threads_per_row, grad_aligned, k, p.reduce);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    dispatch_gamma(p.gamma, [&](auto gamma_tag) {
      if (s > 0) {
        launch(gamma_tag, std::true_type{});
      } else {
        launch(gamma_tag, std::false_type{});
      }
    });
  });
}

}  // namespace focal::cuda

