// Elementwise forward kernels (sigmoid focal, binary focal, varifocal, quality focal, asymmetric: one
// traversal, one point functor per loss). One grid-stride
// pass computes loss and gradient with 128-bit accesses when every pointer is 16-byte aligned; a scalar loop
// takes the tail (and everything, when unaligned). One launch per pass (finish_forward_block).
#include "reduce.cuh"

namespace focal::cuda {

// How an element finds its target and weight: a kernel template argument, so that each instantiation's loop
// holds only its own bookkeeping.
enum class Layout : int {
  kDense = 0,    // dense target; nothing per row or per class
  kGeneral = 1,  // either target, with per-class alpha or a class / element weight: read per element
  kIndex = 2,    // one class-index target per row, with a score and a weight per row at most
  kIndexAligned = 3,  // kIndex with rows of whole vectors (C a multiple of the vector width): one row per access
};

namespace {

// Point functors: (logit or prob x, target t, class col) -> loss, d loss / d x, from focal_math.h. target(t) is the
// target the point takes for a target value t (label smoothing), applied once per row for class-index targets.
// kPoly: Poly-1's epsilon is nonzero (else its terms are left out of the code, not multiplied by 0).
template <int G, bool kPoly, typename T>
struct SigmoidPoint {
  static constexpr bool kClassIndexTargets = true;
  AlphaWeight<T> alpha;
  const T* class_alpha;  // per-class alpha, or null
  T gamma;
  T smoothing;
  T poly;
  template <bool kHasColumn>
  __device__ __forceinline__ void apply(T x, T t, int64_t col, T& loss, T& grad) const {
    AlphaWeight<T> a = alpha;
    if (kHasColumn && class_alpha != nullptr) a = AlphaWeight<T>::of(class_alpha[col]);
    sigmoid_focal_point<G, kPoly>(x, t, a, gamma, loss, grad, poly);
  }
  __device__ __forceinline__ T target(T t) const { return smooth_binary_target(t, smoothing); }
};

template <int G, typename T>
struct BinaryPoint {
  static constexpr bool kClassIndexTargets = false;  // prob and a dense target only
  AlphaWeight<T> alpha;
  T gamma;
  template <bool>
  __device__ __forceinline__ void apply(T p, T t, int64_t, T& loss, T& grad) const {
    // NaN passes (and propagates), as on CPU.
    CUDA_KERNEL_ASSERT(!(p < T(0) || p > T(1)) && "prob: expected values in [0, 1]");
    binary_focal_point<G>(p, t, alpha, gamma, loss, grad);
  }
  __device__ __forceinline__ T target(T t) const { return t; }
};

template <int G, typename T>
struct VarifocalPoint {
  static constexpr bool kClassIndexTargets = true;
  T alpha;
  T gamma;
  bool iou_weighted;
  template <bool>
  __device__ __forceinline__ void apply(T x, T q, int64_t, T& loss, T& grad) const {
    varifocal_point<G>(x, q, alpha, gamma, iou_weighted, loss, grad);
  }
  __device__ __forceinline__ T target(T t) const { return t; }
};

template <int G, typename T>
struct QualityFocalPoint {
  static constexpr bool kClassIndexTargets = true;
  T beta;
  template <bool>
  __device__ __forceinline__ void apply(T x, T y, int64_t, T& loss, T& grad) const {
    quality_focal_point<G>(x, y, beta, loss, grad);
  }
  __device__ __forceinline__ T target(T t) const { return t; }
};

template <bool kClip, bool kDetach, typename T>
struct AsymmetricPoint {
  static constexpr bool kClassIndexTargets = true;
  AsymmetricParams<T> params;
  template <bool>
  __device__ __forceinline__ void apply(T x, T t, int64_t, T& loss, T& grad) const {
    asymmetric_point<kClip, kDetach>(x, t, params, loss, grad);
  }
  __device__ __forceinline__ T target(T t) const { return t; }
};

// Whether a row with class-index target `tgt` counts: not ignored, and 0 <= tgt <= C (C: background).
__device__ __forceinline__ bool sigmoid_row_counted(int64_t tgt, int64_t C, int64_t ignore_index) {
  if (tgt == ignore_index) return false;
  // Traps and kills the CUDA context, as F.cross_entropy does for a bad class index.
  CUDA_KERNEL_ASSERT(tgt >= 0 && tgt <= C && "target: class index out of range [0, C] and not ignore_index");
  return true;
}

// The inputs of one elementwise launch (ElementwiseParams, typed).
template <typename scalar_t>
struct ElementwiseInputs {
  using op_t = opmath_t<scalar_t>;
  const scalar_t* x;
  const scalar_t* dense_target;  // or null
  const int64_t* index_target;   // or null
  const scalar_t* score;         // or null
  const op_t* weight;            // or null
  WeightMode weight_mode;
  int64_t n;
  int64_t C;
  int64_t ignore_index;
  bool vectorized;  // 16-byte aligned pointers, and C >= the vector width unless Layout::kDense
  op_t grad_prescale;  // fp16: the power of two the stored gradient carries (ReductionBuffers::grad_prescale)
};

// The gradient as stored: fp16 carries grad_prescale (gradients below fp16's range survive the loss scale).
template <typename scalar_t>
__device__ __forceinline__ scalar_t stored_grad(opmath_t<scalar_t> g, opmath_t<scalar_t> grad_prescale) {
  if constexpr (std::is_same_v<scalar_t, c10::Half>) g *= grad_prescale;
  return static_cast<scalar_t>(g);
}

// (row, col) of an element of the (rows, C) input, moved forward by a fixed step without a division.
struct RowCursor {
  int64_t row = 0;
  int64_t col = 0;
  int64_t step_rows = 0;
  int64_t step_cols = 0;  // step = step_rows * C + step_cols, 0 <= step_cols < C
  int64_t C = 1;
  __device__ __forceinline__ RowCursor(int64_t element, int64_t step, int64_t classes)
      : row(element / classes), col(element - row * classes), step_rows(step / classes),
        step_cols(step - step_rows * classes), C(classes) {}  // two 64-bit divisions, once per thread
  __device__ __forceinline__ void advance() {
    row += step_rows;
    col += step_cols;
    if (col >= C) {
      col -= C;
      ++row;
    }
  }
};

// What a row contributes to the elements of one access that lie in it. `positive` is the position within
// the access of the row's target class (-1: none there, the background class, or an ignored row).
template <typename op_t>
struct RowTerms {
  int positive = -1;
  op_t q = op_t(1);       // the target class's value: score, or 1
  op_t weight = op_t(1);  // row weight; 0 for an ignored row
  bool counted = true;
};

// Element k of an access that starts at column `first_col` of row `row` (first_col may be negative: the
// access began in the previous row).
template <typename scalar_t>
__device__ __forceinline__ RowTerms<opmath_t<scalar_t>> row_terms(const ElementwiseInputs<scalar_t>& in, int64_t row,
                                                                  int64_t first_col, int width) {
  using op_t = opmath_t<scalar_t>;
  RowTerms<op_t> r;
  if (in.index_target != nullptr) {
    const int64_t tgt = in.index_target[row];
    r.counted = sigmoid_row_counted(tgt, in.C, in.ignore_index);
    const int64_t at = tgt - first_col;
    r.positive = r.counted && tgt < in.C && at >= 0 && at < width ? static_cast<int>(at) : -1;
    if (in.score != nullptr) r.q = static_cast<op_t>(in.score[row]);
  }
  if (in.weight_mode == WeightMode::kRow) r.weight = in.weight[row];
  if (!r.counted) r.weight = op_t(0);
  return r;
}

// Loss and gradient of `W` consecutive elements starting at element `base` = (cur.row, cur.col): W = 1
// (scalar accesses) or the vector width (then C >= W unless kDense, so they span at most two rows).
// Returns the counted elements (class-index targets; dense targets count every element, on the host).
template <Layout L, int W, typename scalar_t, typename Point>
__device__ __forceinline__ int64_t elements_forward(const ElementwiseInputs<scalar_t>& in, const Point& point,
                                                    int64_t base, const RowCursor& cur, const scalar_t* xs,
                                                    const scalar_t* ts, scalar_t* ls, scalar_t* gs,
                                                    opmath_t<scalar_t>& acc) {
  using op_t = opmath_t<scalar_t>;
  if constexpr (L == Layout::kDense) {
#pragma unroll
    for (int k = 0; k < W; ++k) {
      op_t l, g;
      point.template apply<false>(static_cast<op_t>(xs[k]), point.target(static_cast<op_t>(ts[k])), 0, l, g);
      acc += l;
      ls[k] = static_cast<scalar_t>(l);
      gs[k] = stored_grad<scalar_t>(g, in.grad_prescale);
    }
    return 0;
  } else {
    const bool index = L != Layout::kGeneral || in.index_target != nullptr;
    // Elements k >= split lie in the next row.
    const int split =
        W == 1 || L == Layout::kIndexAligned || cur.col + W <= in.C ? W : static_cast<int>(in.C - cur.col);
    const RowTerms<op_t> first = row_terms(in, cur.row, cur.col, W);
    const RowTerms<op_t> second = split < W ? row_terms(in, cur.row + 1, cur.col - in.C, W) : RowTerms<op_t>{};
    // the point's targets of the rows' classes, once per access
    const op_t off = point.target(op_t(0)), first_on = point.target(first.q), second_on = point.target(second.q);
#pragma unroll
    for (int k = 0; k < W; ++k) {
      const bool next_row = k >= split;
      const op_t t = !index                 ? point.target(static_cast<op_t>(ts[k]))
                     : k == first.positive  ? first_on
                     : k == second.positive ? second_on
                                            : off;
      op_t w = next_row ? second.weight : first.weight;
      const bool counted = next_row ? second.counted : first.counted;
      int64_t col = 0;
      if constexpr (L == Layout::kGeneral) {
        col = next_row ? cur.col + k - in.C : cur.col + k;
        // w is 0 for an ignored row, else 1 (no row weight in this mode): ignored rows stay 0 whatever their
        // weights hold.
        if (in.weight_mode == WeightMode::kClass && counted) w *= in.weight[col];
        if (in.weight_mode == WeightMode::kElement && counted) w *= in.weight[base + k];
      }
      // Ignored rows (weight 0): x = 0 keeps their zero-weighted terms finite whatever the logits hold. A user's
      // weight of 0 is an ordinary weight (0 * NaN = NaN, as loss * weight).
      const op_t x = counted ? static_cast<op_t>(xs[k]) : op_t(0);
      op_t l, g;
      point.template apply<L == Layout::kGeneral>(x, t, col, l, g);
      l *= w;
      g *= w;
      acc += l;
      ls[k] = static_cast<scalar_t>(l);
      gs[k] = stored_grad<scalar_t>(g, in.grad_prescale);
    }
    if (!index) return 0;
    return (first.counted ? split : 0) + (second.counted ? W - split : 0);
  }
}

// Vectors each thread loads before computing on any: more 16-byte loads in flight per thread. One for the
// general layout, whose per-element reads already hold more registers.
template <Layout L>
constexpr int kVectorsPerThread = L == Layout::kGeneral ? 1 : 2;

// Element (row, col) of the (rows, C) input. Class-index targets make element (row, col) positive (with the
// row's score, or 1) iff col == target[row]; a row's target, score and weight are read once per access,
// never expanded to full-size tensors. Ignored rows: loss 0, grad 0, not counted. loss / grad may be null.
template <typename scalar_t, typename Point, Layout L>
__global__ void __launch_bounds__(kThreads)
    elementwise_forward_kernel(ElementwiseInputs<scalar_t> in, scalar_t* __restrict__ loss,
                               scalar_t* __restrict__ grad, Point point, ReductionBuffers reduce) {
  using op_t = opmath_t<scalar_t>;
  constexpr int V = vector_width<scalar_t>();
  constexpr int U = kVectorsPerThread<L>;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  op_t acc(0);
  int64_t count = 0;
  const bool store_loss = loss != nullptr, store_grad = grad != nullptr;
  const bool has_dense_target = L == Layout::kDense || (L == Layout::kGeneral && in.dense_target != nullptr);

  int64_t tail_begin = 0;
  if (in.vectorized) {
    const int64_t n_vec = in.n / V;
    RowCursor cur(L == Layout::kDense ? 0 : tid * V, stride * V, in.C);
    for (int64_t v0 = tid; v0 < n_vec; v0 += U * stride) {
      Vector<scalar_t> xv[U], tv[U];
#pragma unroll
      for (int j = 0; j < U; ++j) {
        const int64_t v = v0 + j * stride;
        if (v < n_vec) {
          xv[j] = load_vector(in.x + v * V);
          if (has_dense_target) tv[j] = load_vector(in.dense_target + v * V);
        }
      }
#pragma unroll
      for (int j = 0; j < U; ++j) {
        const int64_t v = v0 + j * stride;
        if (v < n_vec) {
          Vector<scalar_t> lv, gv;
          count += elements_forward<L, V>(in, point, v * V, cur, xv[j].val, tv[j].val, lv.val, gv.val, acc);
          if (store_loss) store_vector(loss + v * V, lv);
          if (store_grad) store_vector(grad + v * V, gv);
        }
        if (L != Layout::kDense) cur.advance();
      }
    }
    tail_begin = n_vec * V;
  }
  if (tail_begin + tid < in.n) {
    RowCursor cur(L == Layout::kDense ? 0 : tail_begin + tid, stride, in.C);
    for (int64_t i = tail_begin + tid; i < in.n; i += stride) {
      const scalar_t tv = has_dense_target ? in.dense_target[i] : scalar_t(0);
      scalar_t lv, gv;
      count += elements_forward<L, 1>(in, point, i, cur, in.x + i, &tv, &lv, &gv, acc);
      if (store_loss) loss[i] = lv;
      if (store_grad) grad[i] = gv;
      if (L != Layout::kDense) cur.advance();
    }
  }
  finish_forward_block<kThreads, scalar_t>(static_cast<double>(acc), static_cast<double>(count), reduce);
}

template <typename scalar_t, Layout L, typename Point>
void launch_with_point(const ElementwiseInputs<scalar_t>& in, scalar_t* loss, scalar_t* grad, const Point& point,
                       const ReductionBuffers& reduce, int device, cudaStream_t stream) {
  constexpr int V = vector_width<scalar_t>();
  const auto kernel = &elementwise_forward_kernel<scalar_t, Point, L>;
  const int grid = grid_for(in.vectorized ? ceil_div(in.n, V * kVectorsPerThread<L>) : in.n, kThreads, device, kernel,
                            kThreads);
  FOCAL_LAUNCH(grid, kThreads, 0, stream, elementwise_forward_kernel<scalar_t, Point, L>)(in, loss, grad, point,
                                                                                          reduce);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

void launch_elementwise_forward(const ElementwiseParams& p, int device, cudaStream_t stream) {
  if (p.numel == 0) return;  // the caller fills the outputs
  dispatch_floating(p.dtype, "focal elementwise forward", [&](auto dtype_tag) {
    using scalar_t = decltype(dtype_tag);
    using op_t = opmath_t<scalar_t>;
    ElementwiseInputs<scalar_t> in;
    in.x = static_cast<const scalar_t*>(p.input);
    in.dense_target = p.index_target ? nullptr : static_cast<const scalar_t*>(p.target);
    in.index_target = p.index_target ? static_cast<const int64_t*>(p.target) : nullptr;
    in.score = static_cast<const scalar_t*>(p.score);
    in.weight = static_cast<const op_t*>(p.weight);
    in.weight_mode = p.weight == nullptr ? WeightMode::kNone : p.weight_mode;
    in.n = p.numel;
    in.C = p.classes < 1 ? 1 : p.classes;
    in.ignore_index = p.ignore_index;
    in.grad_prescale = static_cast<op_t>(p.reduce.grad_prescale);
    const bool per_element_reads =
        p.class_alpha != nullptr || in.weight_mode == WeightMode::kClass || in.weight_mode == WeightMode::kElement;
    const Layout layout = per_element_reads                        ? Layout::kGeneral
                          : p.index_target && in.C % vector_width<scalar_t>() == 0 ? Layout::kIndexAligned
                          : p.index_target                                   ? Layout::kIndex
                          : in.weight_mode == WeightMode::kNone              ? Layout::kDense
                                                                             : Layout::kGeneral;
    auto* loss = static_cast<scalar_t*>(p.loss);
    auto* grad = static_cast<scalar_t*>(p.grad);
    // An access spans at most two rows (elements_forward) unless the layout has no rows.
    in.vectorized = is_vector_aligned(in.x) && is_vector_aligned(loss) && is_vector_aligned(grad) &&
                    is_vector_aligned(in.dense_target) &&
                    (layout == Layout::kDense || in.C >= vector_width<scalar_t>());
    ReductionBuffers reduce = p.reduce;
    // Dense targets count every element; class-index targets the elements of non-ignored rows.
    reduce.fixed_count = p.index_target ? -1 : p.numel;
    const auto launch = [&](const auto& point) {
      using Point = std::decay_t<decltype(point)>;
      if (layout == Layout::kDense) {
        launch_with_point<scalar_t, Layout::kDense>(in, loss, grad, point, reduce, device, stream);
      } else if (layout == Layout::kGeneral) {
        launch_with_point<scalar_t, Layout::kGeneral>(in, loss, grad, point, reduce, device, stream);
      } else if constexpr (Point::kClassIndexTargets) {
        if (layout == Layout::kIndexAligned) {
          launch_with_point<scalar_t, Layout::kIndexAligned>(in, loss, grad, point, reduce, device, stream);
        } else {
          launch_with_point<scalar_t, Layout::kIndex>(in, loss, grad, point, reduce, device, stream);
        }
      } else {
        TORCH_CHECK(false, "focal elementwise forward: this loss takes no class-index targets");
      }
    };
    const ElementwiseConstants& c = p.constants;
    const op_t gamma = static_cast<op_t>(c.gamma);
    if (p.loss_kind == ElementwiseLoss::kAsymmetric) {
      const AsymmetricParams<op_t> prm{gamma, static_cast<op_t>(c.gamma_neg), static_cast<op_t>(c.clip),
                                       static_cast<op_t>(c.eps), static_cast<op_t>(std::log(c.eps))};
      const auto asymmetric = [&](auto clip_tag, auto detach_tag) {
        launch(AsymmetricPoint<decltype(clip_tag)::value, decltype(detach_tag)::value, op_t>{prm});
      };
      if (c.clip > 0) {
        c.detach_modulation ? asymmetric(std::true_type{}, std::true_type{})
                            : asymmetric(std::true_type{}, std::false_type{});
      } else {
        c.detach_modulation ? asymmetric(std::false_type{}, std::true_type{})
                            : asymmetric(std::false_type{}, std::false_type{});
      }
      return;
    }
    dispatch_gamma(c.gamma, [&](auto gamma_tag) {
      constexpr int G = decltype(gamma_tag)::value;
      switch (p.loss_kind) {
        case ElementwiseLoss::kSigmoidFocal: {
          const auto sigmoid = [&](auto poly_tag) {
            launch(SigmoidPoint<G, decltype(poly_tag)::value, op_t>{
                AlphaWeight<op_t>::from(c.alpha), static_cast<const op_t*>(p.class_alpha), gamma,
                static_cast<op_t>(c.label_smoothing), static_cast<op_t>(c.poly_epsilon)});
          };
          if (c.poly_epsilon != 0.0) {
            sigmoid(std::true_type{});
          } else {
            sigmoid(std::false_type{});
          }
          break;
        }
        case ElementwiseLoss::kBinaryFocal:
          launch(BinaryPoint<G, op_t>{AlphaWeight<op_t>::from(c.alpha), gamma});
          break;
        case ElementwiseLoss::kVarifocal:
          launch(VarifocalPoint<G, op_t>{static_cast<op_t>(c.alpha), gamma, c.iou_weighted});
          break;
        case ElementwiseLoss::kQualityFocal:
          launch(QualityFocalPoint<G, op_t>{gamma});
          break;
        default:
          TORCH_CHECK(false, "focal elementwise forward: unknown loss kind ", static_cast<int>(p.loss_kind));
      }
    });
  });
}

}  // namespace focal::cuda
