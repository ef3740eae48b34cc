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
  kIndex = 2,    // one class-index target per row, with a score per row at most (row weights: kIndexRowWeighted)
  kIndexAligned = 3,  // kIndex with rows of whole vectors (C a multiple of the vector width): one row per access
  kIndexGrouped = 4,  // kIndexAligned with rows of whole pairs of vectors: two adjacent vectors of a row per access
  kIndexRowWeighted = 5,  // kIndex with a weight per row (kIndex's rows then differ only in their targets)
};

// Whether every access lies in one row (the aligned class-index layouts).
constexpr bool one_row_per_access(Layout L) {
  return L == Layout::kIndexAligned || L == Layout::kIndexGrouped;
}

// Whether an access may span two rows of class-index targets (rows of any length).
constexpr bool two_rows_per_access(Layout L) {
  return L == Layout::kIndex || L == Layout::kIndexRowWeighted;
}

// A logit whose terms are exactly 0 in every point (p = 0, ce = 0, and each factor finite): what kIndex's elements of
// an ignored row compute on, so that their loss and gradient are 0 with no weight of 0 per row (whose pick per
// element between an access's two rows costs more than the select of this input).
constexpr float kIgnoredLogit = -0x1p100f;

namespace {

// Point functors: (logit or prob x, target t, class col) -> loss, d loss / d x, from focal_math.h, at the precision P
// the stored result needs. target(t) is the target the point takes for a target value t (label smoothing), applied
// once per row for class-index targets. kPoly: Poly-1's epsilon is nonzero (else its terms are left out of the
// code, not multiplied by 0).
//
// Class-index targets: Layout::kIndex* call row(q, w) once per row an access touches (q: the target class's value,
// w: the row's weight, 0 when ignored) and indexed(x, on, row) per element (on: the element is its row's target
// class); Layout::kGeneral calls indexed with element_row(q, w, col) (the element's own weight and alpha) when
// index_form() holds, so a class-index target gets one formula in every layout. SoftIndexed gives the points whose
// targets are soft there the general form: t = on ? target(q) : target(0).
// element_row and index_form of a point whose class-index rows read nothing per class: every element takes the row's
// own terms, in every layout.
template <typename T, typename Point>
struct RowTermsEverywhere {
  template <bool>
  __device__ __forceinline__ auto element_row(T q, T w, int64_t) const {
    return static_cast<const Point*>(this)->row(q, w);
  }
  __device__ __forceinline__ bool index_form() const { return true; }
  // Whether a row's target class takes the point's target form (indexed's `on`) for the row's target value q.
  __device__ __forceinline__ bool on_form(T) const { return true; }
};

template <typename T, typename Point>
struct SoftIndexed : RowTermsEverywhere<T, Point> {
  struct Row {
    T t_on;
    T weight;
    // field by field: a select of whole structs puts both in local memory
    __device__ __forceinline__ static Row pick(bool second, const Row& a, const Row& b) {
      return {second ? b.t_on : a.t_on, second ? b.weight : a.weight};
    }
  };
  __device__ __forceinline__ Row row(T q, T w) const {
    return {static_cast<const Point*>(this)->target(q), w};
  }
  template <Precision P>
  __device__ __forceinline__ void indexed(T x, bool on, const Row& r, T& loss, T& grad) const {
    const Point& point = *static_cast<const Point*>(this);
    point.template apply<false, P>(x, on ? r.t_on : point.target(T(0)), 0, loss, grad);
    loss *= r.weight;
    grad *= r.weight;
  }
};

template <int G, bool kPoly, typename T>
struct SigmoidPoint {
  static constexpr bool kClassIndexTargets = true;
  static constexpr bool kChecksRange = false;
  AlphaWeight<T> alpha;
  const T* class_alpha;  // per-class alpha, or null
  T gamma;
  T smoothing;
  T poly;
  template <bool kHasColumn, Precision P>
  __device__ __forceinline__ void apply(T x, T t, int64_t col, T& loss, T& grad) const {
    AlphaWeight<T> a = alpha;
    if (kHasColumn && class_alpha != nullptr) a = AlphaWeight<T>::of(class_alpha[col]);
    sigmoid_focal_point<G, kPoly, P>(x, t, a, gamma, loss, grad, poly);
  }
  __device__ __forceinline__ T target(T t) const { return smooth_binary_target(t, smoothing); }
  // Class-index layouts take hard targets only (the launcher sends label smoothing to Layout::kGeneral): the
  // target class is t = 1, the others t = 0, both through sigmoid_focal_hard_point with the alpha weight a_t times
  // the row's weight (signed: minus for the flipped t = 1).
  struct Row {
    T a_on;
    T a_off;
    __device__ __forceinline__ static Row pick(bool second, const Row& a, const Row& b) {
      return {second ? b.a_on : a.a_on, second ? b.a_off : a.a_off};
    }
  };
  __device__ __forceinline__ Row row(T, T w) const { return {-(alpha.pos * w), alpha.neg * w}; }
  template <bool kHasColumn>
  __device__ __forceinline__ Row element_row(T, T w, int64_t col) const {
    const AlphaWeight<T> a = kHasColumn && class_alpha != nullptr ? AlphaWeight<T>::of(class_alpha[col]) : alpha;
    return {-(a.pos * w), a.neg * w};
  }
  __device__ __forceinline__ bool index_form() const { return smoothing == T(0); }  // hard targets
  __device__ __forceinline__ bool on_form(T) const { return true; }
  template <Precision P>
  __device__ __forceinline__ void indexed(T x, bool on, const Row& r, T& loss, T& grad) const {
    sigmoid_focal_hard_point<G, kPoly, P>(x, on, on ? r.a_on : r.a_off, gamma, loss, grad, poly);
  }
};

template <int G, typename T>
struct BinaryPoint {
  static constexpr bool kClassIndexTargets = false;  // prob and a dense target only
  static constexpr bool kChecksRange = true;         // prob in [0, 1]: apply reports `invalid`
  AlphaWeight<T> alpha;
  T gamma;
  template <bool, Precision P>
  __device__ __forceinline__ void apply(T p, T t, int64_t, T& loss, T& grad, bool& invalid) const {
    binary_focal_point<G, P>(p, t, alpha, gamma, loss, grad, invalid);  // NaN is not invalid: it propagates
  }
  __device__ __forceinline__ T target(T t) const { return t; }
};

template <int G, typename T>
struct VarifocalPoint : RowTermsEverywhere<T, VarifocalPoint<G, T>> {
  static constexpr bool kClassIndexTargets = true;
  static constexpr bool kChecksRange = false;
  T alpha;
  T gamma;
  bool iou_weighted;
  template <bool, Precision P>
  __device__ __forceinline__ void apply(T x, T q, int64_t, T& loss, T& grad) const {
    varifocal_point<G, P>(x, q, alpha, gamma, iou_weighted, loss, grad);
  }
  __device__ __forceinline__ T target(T t) const { return t; }
  // Class-index targets: q = the row's score (or 1) at the target class, 0 elsewhere, through varifocal_index_point
  // (the q = 0 elements in the hard t = 0 form), with the row's weight folded into both weights.
  struct Row {
    T q_on;
    T w_on;
    T a_off;
    __device__ __forceinline__ static Row pick(bool second, const Row& a, const Row& b) {
      return {second ? b.q_on : a.q_on, second ? b.w_on : a.w_on, second ? b.a_off : a.a_off};
    }
  };
  __device__ __forceinline__ Row row(T q, T w) const { return {q, (iou_weighted ? q : T(1)) * w, alpha * w}; }
  // A score of 0 (or below: outside varifocal's [0, 1]) makes the target class one more negative, q = 0; a NaN score
  // takes the target form, whose loss and gradient it makes NaN.
  __device__ __forceinline__ bool on_form(T q) const { return !(q <= T(0)); }
  template <Precision P>
  __device__ __forceinline__ void indexed(T x, bool on, const Row& r, T& loss, T& grad) const {
    varifocal_index_point<G, P>(x, on, r.q_on, r.w_on, r.a_off, gamma, loss, grad);
  }
};

template <int G, typename T>
struct QualityFocalPoint : SoftIndexed<T, QualityFocalPoint<G, T>> {
  static constexpr bool kClassIndexTargets = true;
  static constexpr bool kChecksRange = false;
  T beta;
  template <bool, Precision P>
  __device__ __forceinline__ void apply(T x, T y, int64_t, T& loss, T& grad) const {
    quality_focal_point<G, P>(x, y, beta, loss, grad);
  }
  __device__ __forceinline__ T target(T t) const { return t; }
};

template <bool kClip, bool kDetach, typename T>
struct AsymmetricPoint : SoftIndexed<T, AsymmetricPoint<kClip, kDetach, T>> {
  static constexpr bool kClassIndexTargets = true;
  static constexpr bool kChecksRange = false;
  AsymmetricParams<T> params;
  template <bool, Precision P>
  __device__ __forceinline__ void apply(T x, T t, int64_t, T& loss, T& grad) const {
    asymmetric_point<kClip, kDetach, P>(x, t, params, loss, grad);
  }
  __device__ __forceinline__ T target(T t) const { return t; }
};

// point.apply; a point that checks its input's range reports into `invalid`, so that an access asserts once.
template <bool kHasColumn, Precision P, typename Point, typename T>
__device__ __forceinline__ void apply_point(const Point& point, T x, T t, int64_t col, T& loss, T& grad,
                                            bool& invalid) {
  if constexpr (Point::kChecksRange) {
    bool bad;
    point.template apply<kHasColumn, P>(x, t, col, loss, grad, bad);
    invalid = invalid || bad;
  } else {
    point.template apply<kHasColumn, P>(x, t, col, loss, grad);
  }
}

// Whether a row with class-index target `tgt` counts: not ignored, and 0 <= tgt <= C (C: background).
__device__ __forceinline__ bool sigmoid_row_counted(int64_t tgt, int64_t C, int64_t ignore_index) {
  const bool counted = tgt != ignore_index;
  // 0 <= tgt <= C as one unsigned compare; `|`, not `||`: no branch before the assert's own. Traps and kills the
  // CUDA context, as F.cross_entropy does for a bad class index.
  CUDA_KERNEL_ASSERT((!counted | (static_cast<uint64_t>(tgt) <= static_cast<uint64_t>(C))) &&
                     "target: class index out of range [0, C] and not ignore_index");
  return counted;
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

// The gradients as stored: fp16 carries grad_prescale (gradients below fp16's range survive the loss scale).
template <int W, typename scalar_t>
__device__ __forceinline__ void store_grads(opmath_t<scalar_t>* g, opmath_t<scalar_t> grad_prescale, scalar_t* out) {
  if constexpr (std::is_same_v<scalar_t, c10::Half>) {
#pragma unroll
    for (int k = 0; k < W; ++k) g[k] *= grad_prescale;
  }
  from_opmath<W>(g, out);
}

// (row, col) of an element of the (rows, C) input, moved forward by a fixed step without a division. Col: the
// column's type, int32_t where the launcher knows C <= 2**30 (fewer instructions per step; col + step stays
// below 2**31), else int64_t.
template <typename Col>
struct RowCursor {
  int64_t row = 0;
  Col col = 0;
  int64_t step_rows = 0;
  Col step_cols = 0;  // step = step_rows * C + step_cols, 0 <= step_cols < C
  Col C = 1;
  __device__ __forceinline__ RowCursor(int64_t element, int64_t step, int64_t classes)
      : row(element / classes), col(static_cast<Col>(element - row * classes)), step_rows(step / classes),
        step_cols(static_cast<Col>(step - step_rows * classes)),
        C(static_cast<Col>(classes)) {}  // two 64-bit divisions, once per thread
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
  op_t weight = op_t(1);  // row weight; 0 for an ignored row (kIndex: 1, its elements compute on kIgnoredLogit)
  bool counted = true;
};

// Element k of an access that starts at column `first_col` of row `row` (first_col may be negative: the
// access began in the previous row).
template <Layout L, typename scalar_t, typename Col>
__device__ __forceinline__ RowTerms<opmath_t<scalar_t>> row_terms(const ElementwiseInputs<scalar_t>& in, int64_t row,
                                                                  Col first_col, int width) {
  using op_t = opmath_t<scalar_t>;
  RowTerms<op_t> r;
  if (two_rows_per_access(L) || one_row_per_access(L) || in.index_target != nullptr) {
    const int64_t tgt = in.index_target[row];
    r.counted = sigmoid_row_counted(tgt, in.C, in.ignore_index);
    // 0 <= at < width in one unsigned compare (in Col: a counted tgt is in [0, C])
    using UCol = std::make_unsigned_t<Col>;
    const UCol at = static_cast<UCol>(static_cast<UCol>(tgt) - static_cast<UCol>(first_col));  // wraps, no overflow
    const bool within = at < static_cast<UCol>(width);
    // An aligned access lies in its row and ends at column C at the latest, so `within` excludes the background
    // tgt = C; an ignored row's positive is harmless there (weight 0, logits 0). Otherwise the access may end in
    // the next row, which a background or ignored tgt must not mark.
    r.positive = (one_row_per_access(L) ? within : r.counted && tgt < in.C && within) ? static_cast<int>(at) : -1;
    if (in.score != nullptr) r.q = static_cast<op_t>(in.score[row]);
  }
  if constexpr (L != Layout::kIndex) {  // kIndex: no row weight (the launcher sends them to kIndexRowWeighted)
    if (in.weight_mode == WeightMode::kRow) r.weight = in.weight[row];
    if (!r.counted) r.weight = op_t(0);
  }
  return r;
}

// Loss and gradient of `W` consecutive elements starting at element `base` = (cur.row, cur.col): W = 1
// (scalar accesses) or the vector width (then C >= W unless kDense, so they span at most two rows).
// Returns the counted elements (class-index targets; dense targets count every element, on the host).
template <Layout L, int W, typename scalar_t, typename Point, typename Cursor>
__device__ __forceinline__ int64_t elements_forward(const ElementwiseInputs<scalar_t>& in, const Point& point,
                                                    int64_t base, const Cursor& cur, const scalar_t* xs,
                                                    const scalar_t* ts, scalar_t* ls, scalar_t* gs,
                                                    opmath_t<scalar_t>& acc) {
  using op_t = opmath_t<scalar_t>;
  constexpr Precision P = precision_of<scalar_t>();
  op_t x[W], l[W], g[W];
  int64_t counted_elements = 0;
  bool invalid = false;
  if constexpr (L == Layout::kDense) {
    to_opmath<W>(xs, x);
    op_t t[W];
    to_opmath<W>(ts, t);
#pragma unroll
    for (int k = 0; k < W; ++k) {
      apply_point<false, P>(point, x[k], point.target(t[k]), 0, l[k], g[k], invalid);
      acc += l[k];
    }
  } else {
    const bool index = L != Layout::kGeneral || in.index_target != nullptr;
    // Elements k >= split lie in the next row.
    const int split =
        W == 1 || one_row_per_access(L) || cur.col + W <= in.C ? W : static_cast<int>(in.C - cur.col);
    const RowTerms<op_t> first = row_terms<L>(in, cur.row, cur.col, W);
    const RowTerms<op_t> second = split < W ? row_terms<L>(in, cur.row + 1, cur.col - cur.C, W) : RowTerms<op_t>{};
    if (index) counted_elements = (first.counted ? split : 0) + (second.counted ? W - split : 0);
    // Where the rows' target classes take the point's target form (-1: nowhere in this access).
    int first_on_at = -1, second_on_at = -1;
    if constexpr (Point::kClassIndexTargets) {
      first_on_at = point.on_form(first.q) ? first.positive : -1;
      second_on_at = point.on_form(second.q) ? second.positive : -1;
    }
    // One row per access: an ignored one reaches the math as x = 0 (weight 0), whatever its logits hold.
    to_opmath<W>(xs, x, !one_row_per_access(L) || first.counted);
    if constexpr (L == Layout::kGeneral) {
      op_t t[W];
      if (!index) to_opmath<W>(ts, t);
      // the point's targets of the rows' classes, once per access
      const op_t off = point.target(op_t(0)), first_on = point.target(first.q), second_on = point.target(second.q);
#pragma unroll
      for (int k = 0; k < W; ++k) {
        const bool next_row = k >= split;
        const op_t target = !index                 ? point.target(t[k])
                            : k == first.positive  ? first_on
                            : k == second.positive ? second_on
                                                   : off;
        op_t w = next_row ? second.weight : first.weight;
        const bool counted = next_row ? second.counted : first.counted;
        const int64_t col = next_row ? cur.col + k - in.C : cur.col + k;
        // w is 0 for an ignored row, else 1 (no row weight in this mode): ignored rows stay 0 whatever their
        // weights hold.
        if (in.weight_mode == WeightMode::kClass && counted) w *= in.weight[col];
        if (in.weight_mode == WeightMode::kElement && counted) w *= in.weight[base + k];
        // Ignored rows (weight 0): x = 0 keeps their zero-weighted terms finite whatever the logits hold. A user's
        // weight of 0 is an ordinary weight (0 * NaN = NaN, as loss * weight).
        const op_t xk = counted ? x[k] : op_t(0);
        bool index_form = false;
        if constexpr (Point::kClassIndexTargets) index_form = index && point.index_form();
        if (index_form) {
          if constexpr (Point::kClassIndexTargets) {
            point.template indexed<P>(xk, k == first_on_at || k == second_on_at,
                                      point.template element_row<true>(next_row ? second.q : first.q, w, col), l[k],
                                      g[k]);
          }
        } else {
          apply_point<true, P>(point, xk, target, col, l[k], g[k], invalid);
          l[k] *= w;
          g[k] *= w;
        }
        acc += l[k];
      }
    } else {
      // Class-index layouts: what a row contributes, once per access; per element only whether it is the target.
      const auto first_row = point.row(first.q, first.weight);
      const auto second_row = point.row(second.q, second.weight);
      // Bit k: element k lies in a counted row (one bit test per element, not a select between the rows' flags).
      static_assert(W < 32, "an access's elements are the bits of one 32-bit mask");
      const uint32_t first_row_bits = (1u << split) - 1u;
      const uint32_t counted_bits = (first.counted ? first_row_bits : 0u) | (second.counted ? ~first_row_bits : 0u);
#pragma unroll
      for (int k = 0; k < W; ++k) {
        const bool next_row = k >= split;
        const bool counted = one_row_per_access(L) || (counted_bits & (1u << k)) != 0u;
        // An ignored row's elements compute on kIgnoredLogit (one row per access: x = 0 from to_opmath, weight 0).
        point.template indexed<P>(counted ? x[k] : op_t(kIgnoredLogit), k == first_on_at || k == second_on_at,
                                  Point::Row::pick(next_row, first_row, second_row), l[k], g[k]);
        acc += l[k];
      }
    }
  }
  // Traps and kills the CUDA context, as an out-of-range class index does.
  CUDA_KERNEL_ASSERT(!invalid && "prob: expected values in [0, 1]");
  from_opmath<W>(l, ls);
  store_grads<W>(g, in.grad_prescale, gs);
  return counted_elements;
}

// The cursor's column type: 32-bit for the class-index layouts (the launcher sends C > 2**30 to the general one),
// except in double, whose kernels it would push to a stack frame.
template <Layout L, typename scalar_t>
using CursorFor = RowCursor<std::conditional_t<L != Layout::kDense && L != Layout::kGeneral && sizeof(scalar_t) < 8,
                                               int32_t, int64_t>>;

// Vectors each thread loads before computing on any: more 16-byte loads in flight per thread. One for the
// general layout, whose per-element reads already hold more registers, and for double rows of class-index targets
// (two would push some of them to a stack frame).
template <Layout L, typename scalar_t>
constexpr int kVectorsPerThread =
    L == Layout::kGeneral || (L != Layout::kDense && std::is_same_v<scalar_t, double>) ? 1 : 2;

// Of those, how many are adjacent and make one access: the class-index layouts take a thread's vectors from one row
// (kIndexGrouped) or two (kIndex, whose rows are then at least an access long), so that the rows' targets, weights
// and checks are read once per group. The other layouts stride their vectors a grid apart.
template <Layout L, typename scalar_t>
constexpr int kAdjacentVectors =
    L == Layout::kIndexGrouped || two_rows_per_access(L) ? kVectorsPerThread<L, scalar_t> : 1;

// Element (row, col) of the (rows, C) input. Class-index targets make element (row, col) positive (with the
// row's score, or 1) iff col == target[row]; a row's target, score and weight are read once per access,
// never expanded to full-size tensors. Ignored rows: loss 0, grad 0, not counted. loss / grad may be null.
template <typename scalar_t, typename Point, Layout L>
__global__ void __launch_bounds__(kThreads)
    elementwise_forward_kernel(ElementwiseInputs<scalar_t> in, scalar_t* __restrict__ loss,
                               scalar_t* __restrict__ grad, Point point, ReductionBuffers reduce) {
  using op_t = opmath_t<scalar_t>;
  constexpr int A = kAdjacentVectors<L, scalar_t>;
  constexpr int U = kVectorsPerThread<L, scalar_t> / A;  // accesses per thread and iteration
  constexpr int GW = A * vector_width<scalar_t>();       // elements per access
  using Group = VectorGroup<A, scalar_t>;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  op_t acc(0);
  int64_t count = 0;
  const bool store_loss = loss != nullptr, store_grad = grad != nullptr;
  const bool has_dense_target = L == Layout::kDense || (L == Layout::kGeneral && in.dense_target != nullptr);

  int64_t tail_begin = 0;
  if (in.vectorized) {
    const int64_t n_groups = in.n / GW;
    CursorFor<L, scalar_t> cur(L == Layout::kDense ? 0 : tid * GW, stride * GW, in.C);
    for (int64_t g0 = tid; g0 < n_groups; g0 += U * stride) {
      Group xv[U], tv[U];
#pragma unroll
      for (int j = 0; j < U; ++j) {
        const int64_t g = g0 + j * stride;
        if (g < n_groups) {
          xv[j] = load_group<A>(in.x + g * GW);
          if (has_dense_target) tv[j] = load_group<A>(in.dense_target + g * GW);
        }
      }
#pragma unroll
      for (int j = 0; j < U; ++j) {
        const int64_t g = g0 + j * stride;
        if (g < n_groups) {
          Group lv, gv;
          count += elements_forward<L, GW>(in, point, g * GW, cur, xv[j].val, tv[j].val, lv.val, gv.val, acc);
          if (store_loss) store_group<A>(loss + g * GW, lv);
          if (store_grad) store_group<A>(grad + g * GW, gv);
        }
        if (L != Layout::kDense) cur.advance();
      }
    }
    tail_begin = n_groups * GW;
  }
  if (tail_begin + tid < in.n) {
    CursorFor<L, scalar_t> cur(L == Layout::kDense ? 0 : tail_begin + tid, stride, in.C);
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
  const int grid = grid_for(in.vectorized ? ceil_div(in.n, V * kVectorsPerThread<L, scalar_t>) : in.n, kThreads,
                            device, kernel, kThreads);
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
    // Per-element reads, and label smoothing of sigmoid targets (SigmoidPoint's class-index form takes hard
    // targets), go through the general layout.
    const bool per_element_reads = p.class_alpha != nullptr || in.weight_mode == WeightMode::kClass ||
                                   in.weight_mode == WeightMode::kElement ||
                                   (p.loss_kind == ElementwiseLoss::kSigmoidFocal && p.constants.label_smoothing != 0);
    constexpr int V = vector_width<scalar_t>();
    // Two adjacent vectors per access where rows are whole pairs of them (not double: one vector per thread there).
    constexpr int kGroupVectors = kAdjacentVectors<Layout::kIndexGrouped, scalar_t>;
    // Rows of any other length take kIndex's groups (an access spans two rows at most) when at least that long; shorter
    // ones (V <= C < kGroupVectors V) the general layout's single vectors.
    const bool short_rows = in.C >= V && in.C < kAdjacentVectors<Layout::kIndex, scalar_t> * V;
    // double rows of any length take the row-weighted kernels (one of kIndex's had a stack frame; double is not
    // bandwidth-bound anyway).
    constexpr bool kDouble = std::is_same_v<scalar_t, double>;
    const Layout layout = per_element_reads                        ? Layout::kGeneral
                          : p.index_target && kGroupVectors > 1 && in.C % (kGroupVectors * V) == 0 &&
                                    in.C <= (int64_t{1} << 30)  // col + step < 2C fits the cursor's int32
                              ? Layout::kIndexGrouped
                          : p.index_target && in.C % V == 0 && in.C <= (int64_t{1} << 30)
                              ? Layout::kIndexAligned
                          : p.index_target && !short_rows && in.C <= (int64_t{1} << 30)
                              ? (in.weight_mode == WeightMode::kRow || kDouble ? Layout::kIndexRowWeighted
                                                                               : Layout::kIndex)
                          : in.weight_mode == WeightMode::kNone && !p.index_target ? Layout::kDense
                                                                             : Layout::kGeneral;
    auto* loss = static_cast<scalar_t*>(p.loss);
    auto* grad = static_cast<scalar_t*>(p.grad);
    // An access spans at most two rows (elements_forward) unless the layout has no rows.
    const int access_elements = two_rows_per_access(layout) ? kAdjacentVectors<Layout::kIndex, scalar_t> * V : V;
    in.vectorized = is_vector_aligned(in.x) && is_vector_aligned(loss) && is_vector_aligned(grad) &&
                    is_vector_aligned(in.dense_target) &&
                    (layout == Layout::kDense || in.C >= access_elements);
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
        if (layout == Layout::kIndexGrouped) {
          if constexpr (kGroupVectors > 1) {
            launch_with_point<scalar_t, Layout::kIndexGrouped>(in, loss, grad, point, reduce, device, stream);
          }
        } else if (layout == Layout::kIndexAligned) {
          launch_with_point<scalar_t, Layout::kIndexAligned>(in, loss, grad, point, reduce, device, stream);
        } else if (layout == Layout::kIndexRowWeighted || kDouble) {
          launch_with_point<scalar_t, Layout::kIndexRowWeighted>(in, loss, grad, point, reduce, device, stream);
        } else if constexpr (!kDouble) {
          launch_with_point<scalar_t, Layout::kIndex>(in, loss, grad, point, reduce, device, stream);
        }
      } else {
        TORCH_CHECK(false, "focal elementwise forward: this loss takes no class-index targets");
      }
    };
    const ElementwiseConstants& c = p.constants;
    const op_t gamma = static_cast<op_t>(c.gamma);
    if (p.loss_kind == ElementwiseLoss::kAsymmetric) {
      const auto prm = AsymmetricParams<op_t>::template make<op_t>(c.gamma, c.gamma_neg, c.clip, c.eps);
      const auto asymmetric = [&](auto clip_tag, auto detach_tag) {
        launch(AsymmetricPoint<decltype(clip_tag)::value, decltype(detach_tag)::value, op_t>{{}, prm});
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
          launch(VarifocalPoint<G, op_t>{{}, static_cast<op_t>(c.alpha), gamma, c.iou_weighted});
          break;
        case ElementwiseLoss::kQualityFocal:
          launch(QualityFocalPoint<G, op_t>{{}, gamma});
          break;
        default:
          TORCH_CHECK(false, "focal elementwise forward: unknown loss kind ", static_cast<int>(p.loss_kind));
      }
    });
  });
}

}  // namespace focal::cuda
