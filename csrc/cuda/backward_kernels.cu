// The backward kernel of every loss (focal_bwd / focal_bwd_): out = grad * grad_output * grad_scale in one
// vectorised grid-stride pass, reading grad_output in the layout of the loss it came from, with no division per
// element (a row cursor, as the forward kernels have).
#include "kernels_common.cuh"

#if defined(__CUDA_ARCH__)
#include <cuda_bf16.h>
#endif

namespace focal::cuda {
namespace {

// bf16 'none' (no scale to apply): a * b per pair in one bf16x2 multiply on the device. The exact product of two
// bf16 fits a float, so rounding it once to bf16 gives what the float path (convert, multiply, round) gives, in
// a quarter of the instructions; elsewhere (the emulator) the float path itself.
__device__ __forceinline__ Vector<c10::BFloat16> bf16_products(const Vector<c10::BFloat16>& a,
                                                               const Vector<c10::BFloat16>& b) {
  Vector<c10::BFloat16> r;
#if defined(__CUDA_ARCH__)
  const auto* a2 = reinterpret_cast<const __nv_bfloat162*>(a.val);
  const auto* b2 = reinterpret_cast<const __nv_bfloat162*>(b.val);
  auto* r2 = reinterpret_cast<__nv_bfloat162*>(r.val);
#pragma unroll
  for (int k = 0; k < vector_width<c10::BFloat16>() / 2; ++k) r2[k] = __hmul2(a2[k], b2[k]);
#else
#pragma unroll
  for (int k = 0; k < vector_width<c10::BFloat16>(); ++k) {
    r.val[k] = static_cast<c10::BFloat16>(static_cast<float>(a.val[k]) * static_cast<float>(b.val[k]));
  }
#endif
  return r;
}

// How the backward reads grad_output: one scalar (a reduced loss), the gradient's own shape (the elementwise
// 'none' loss), or per row of a softmax 'none' loss over (N, C, S): element i takes grad_output[row * S + i % S]
// with row = i / (C S). kRowVector: S == 1 and C % V == 0, so a vector lies in one row (one grad_output value);
// kSpatialVector: S % V == 0, so a vector's S-neighbours share row and class (a vector of grad_output);
// kRowsAny: any C and S, element by element (misaligned or odd sizes).
enum class GradOutputLayout { kScalar, kSame, kRowVector, kSpatialVector, kRowsAny };

// The row of element i and i % S for i stepping by a fixed `step`: the divisions happen once, at the start.
struct GradOutputCursor {
  int64_t row, within_row, s;         // i / (C S), i % (C S), i % S
  int64_t row_step, within_step, s_step;
  int64_t row_elements, spatial;
  __device__ __forceinline__ GradOutputCursor(int64_t first, int64_t step, int64_t classes, int64_t S)
      : row_elements(classes * S), spatial(S) {
    row = first / row_elements;
    within_row = first - row * row_elements;
    s = first % S;
    row_step = step / row_elements;
    within_step = step - row_step * row_elements;
    s_step = step % S;
  }
  __device__ __forceinline__ int64_t grad_output_index() const { return row * spatial + s; }
  __device__ __forceinline__ void advance() {
    within_row += within_step;
    row += row_step;
    if (within_row >= row_elements) {
      within_row -= row_elements;
      ++row;
    }
    s += s_step;
    if (s >= spatial) s -= spatial;
  }
};

// out = grad * grad_output (* grad_scale), in opmath; out may be grad itself (backward in place). grad_scale
// is the mean's 1 / denominator for a reduced loss, and 1 / the fp16 gradient's prescale for 'none' (exactly 1
// for the other dtypes, so only fp16 multiplies by it there).
template <typename scalar_t, GradOutputLayout L>
__global__ void __launch_bounds__(kThreads)
    apply_grad_output_kernel(const scalar_t* grad, const scalar_t* __restrict__ grad_output,
                             const opmath_t<scalar_t>* __restrict__ grad_scale, scalar_t* out, int64_t n,
                             bool vectorized, int64_t classes, int64_t spatial) {
  using op_t = opmath_t<scalar_t>;
  constexpr int V = vector_width<scalar_t>();
  constexpr bool kScaleNone = std::is_same_v<scalar_t, c10::Half>;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  // The scale is applied in opmath: 1/count rounded to fp16 would be subnormal or 0 for large means.
  const op_t factor = L == GradOutputLayout::kScalar ? static_cast<op_t>(grad_output[0]) * *grad_scale
                      : kScaleNone                   ? *grad_scale
                                                     : op_t(1);
  if constexpr (L == GradOutputLayout::kRowsAny) {
    GradOutputCursor cursor(tid, stride, classes, spatial);
    for (int64_t i = tid; i < n; i += stride, cursor.advance()) {
      const op_t go = static_cast<op_t>(grad_output[cursor.grad_output_index()]);
      out[i] = static_cast<scalar_t>(static_cast<op_t>(grad[i]) * (go * factor));
    }
    return;
  } else {
    const int64_t n_vec = vectorized ? n / V : 0;
    const bool rows = L == GradOutputLayout::kRowVector || L == GradOutputLayout::kSpatialVector;
    GradOutputCursor cursor(rows ? tid * V : 0, rows ? stride * V : 1, rows ? classes : 1, rows ? spatial : 1);
    constexpr bool kBf16Products = std::is_same_v<scalar_t, c10::BFloat16> && L != GradOutputLayout::kScalar;
    for (int64_t v = tid; v < n_vec; v += stride) {
      const Vector<scalar_t> gv = load_vector(grad + v * V);
      if constexpr (kBf16Products) {
        Vector<scalar_t> ov;
        if constexpr (L == GradOutputLayout::kRowVector) {
          const scalar_t row_go = grad_output[cursor.grad_output_index()];
#pragma unroll
          for (int k = 0; k < V; ++k) ov.val[k] = row_go;
        } else {
          ov = load_vector(grad_output + (L == GradOutputLayout::kSame ? v * V : cursor.grad_output_index()));
        }
        store_vector(out + v * V, bf16_products(gv, ov));
      } else {
        op_t go[V];
        if constexpr (L == GradOutputLayout::kSame || L == GradOutputLayout::kSpatialVector) {
          const Vector<scalar_t> ov =
              load_vector(grad_output + (L == GradOutputLayout::kSame ? v * V : cursor.grad_output_index()));
#pragma unroll
          for (int k = 0; k < V; ++k) go[k] = static_cast<op_t>(ov.val[k]) * factor;
        } else {
          const op_t row_go = L == GradOutputLayout::kRowVector
                                  ? static_cast<op_t>(grad_output[cursor.grad_output_index()]) * factor
                                  : factor;
#pragma unroll
          for (int k = 0; k < V; ++k) go[k] = row_go;
        }
        Vector<scalar_t> result;
#pragma unroll
        for (int k = 0; k < V; ++k) result.val[k] = static_cast<scalar_t>(static_cast<op_t>(gv.val[k]) * go[k]);
        store_vector(out + v * V, result);
      }
      if constexpr (L == GradOutputLayout::kRowVector || L == GradOutputLayout::kSpatialVector) cursor.advance();
    }
    // The tail (and everything when not vectorized): the row layouts never have one (the host picks kRowsAny).
    for (int64_t i = n_vec * V + tid; i < n; i += stride) {
      const op_t go = L == GradOutputLayout::kSame ? static_cast<op_t>(grad_output[i]) * factor : factor;
      out[i] = static_cast<scalar_t>(static_cast<op_t>(grad[i]) * go);
    }
  }
}

}  // namespace

void launch_apply_grad_output(const BackwardParams& p, int device, cudaStream_t stream) {
  if (p.numel == 0) return;
  dispatch_floating(p.dtype, "focal_bwd", [&](auto dtype_tag) {
    using scalar_t = decltype(dtype_tag);
    constexpr int V = vector_width<scalar_t>();
    const bool aligned = is_vector_aligned(p.grad) && is_vector_aligned(p.out);
    using GO = GradOutputLayout;
    GO layout = GO::kRowsAny;
    if (p.reduced) {
      layout = GO::kScalar;
    } else if (p.classes == 0) {
      layout = GO::kSame;
    } else if (aligned && p.spatial == 1 && p.classes % V == 0) {
      layout = GO::kRowVector;
    } else if (aligned && p.spatial % V == 0 && is_vector_aligned(p.grad_output)) {
      layout = GO::kSpatialVector;
    }
    const bool vectorized = aligned && (layout != GO::kSame || is_vector_aligned(p.grad_output));
    const auto launch = [&](auto layout_tag) {
      constexpr GO L = decltype(layout_tag)::value;
      const auto kernel = &apply_grad_output_kernel<scalar_t, L>;
      const int64_t items = L == GO::kRowsAny || !vectorized ? p.numel : ceil_div(p.numel, V);
      const int grid = grid_for(items, kThreads, device, kernel, kThreads);
      FOCAL_LAUNCH(grid, kThreads, 0, stream, apply_grad_output_kernel<scalar_t, L>)(
          static_cast<const scalar_t*>(p.grad), static_cast<const scalar_t*>(p.grad_output),
          static_cast<const opmath_t<scalar_t>*>(p.grad_scale), static_cast<scalar_t*>(p.out), p.numel, vectorized,
          p.classes, p.spatial);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    switch (layout) {
      case GO::kScalar: launch(std::integral_constant<GO, GO::kScalar>{}); break;
      case GO::kSame: launch(std::integral_constant<GO, GO::kSame>{}); break;
      case GO::kRowVector: launch(std::integral_constant<GO, GO::kRowVector>{}); break;
      case GO::kSpatialVector: launch(std::integral_constant<GO, GO::kSpatialVector>{}); break;
      case GO::kRowsAny: launch(std::integral_constant<GO, GO::kRowsAny>{}); break;
    }
  });
}

}  // namespace focal::cuda
