// Fused CPU forward and backward-through-time for every rnnkit cell, one layer at a time.
// The design note, the contract and the Python side are in fused.py; the equations of each
// cell are in rnnkit/cells/*.py and the textbook BPTT it mirrors in rnnkit/reference/*.py.
//
// Shapes: T time, B batch, D input, H hidden, G = gates * H, N tokens (sum of lengths). The
// states live in hbuf [T+1, B, H] where, for the forward direction, hbuf[t] is the state
// entering step t and hbuf[t+1] the one leaving it; the reverse direction walks the same
// buffer downwards (enters at t+1, leaves at t).
//
// Variable lengths cost only their tokens: the rows are taken longest first (as packing
// sorts them), so the rows still running at time t are the first rows[t], and every step's
// GEMM and gate loop covers only those. The per-token buffers (the input projection and
// saved gates gx, the gate gradients dG, the GRU's U_n h) are packed time after time: row b
// of time t sits at offs[t] + b, so the big products before and after the loop run over
// the N real tokens only. A row's initial state enters at the step it starts and its final
// state leaves at the step it ends (in original batch order); padded outputs are 0. With
// every row full, rows[t] = B, offs[t] = t B and the order is the batch's own.

#include <ATen/ATen.h>
#include <torch/csrc/utils/pybind.h>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <dlfcn.h>
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace {

using at::Tensor;

enum CellKind : int64_t {
  RNN_TANH = 0,
  RNN_RELU = 1,
  GRU = 2,
  GRU_RESET_BEFORE = 3,
  LSTM = 4,
  MINGRU = 5,   // Feng et al. 2024: gates from x_t only, no W_hh (rnnkit/nn/cells/minimal.py)
  MINLSTM = 6,
  LSTM_LN = 7,  // Ba et al. 2016 in haste's placement (rnnkit/nn/cells/layer_norm.py)
  GRU_LN = 8,
  // The LSTM with a projection (proj_size; Sak et al. 2014, rnnkit/nn/cells/lstm.py): not a
  // code the caller passes but the kind the entry points run for LSTM when the layer's extra
  // argument holds W_hr [R, H] per direction (see projection_args).
  LSTM_PROJ = 9,
};

// The minimal cells have no recurrent weight: the layer passes a [0, H] placeholder for
// W_hh, so H is read from it as for the other cells, and no per-step product runs.
constexpr bool has_recurrent_weight(int64_t cell) { return cell != MINGRU && cell != MINLSTM; }
constexpr bool layer_normed(int64_t cell) { return cell == LSTM_LN || cell == GRU_LN; }
constexpr bool two_states(int64_t cell) {
  return cell == LSTM || cell == LSTM_LN || cell == LSTM_PROJ;
}

// ---------------------------------------------------------------------------------------
// Vectorisable math. exp by Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, a Taylor
// polynomial for e^r (degree 7 in float, 13 in double: truncation below half an ulp) and
// 2^n built in the exponent bits. Branch-free, so `#pragma omp simd` loops compile to
// AVX2/FMA code instead of scalar libm calls. sigmoid and tanh are built from it.
// ---------------------------------------------------------------------------------------

inline float fast_exp(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);  // by value: if-converts to blends
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float t = x * 1.44269504088896341f + magic;
  const float n = t - magic;
  float r = x - n * 0.693145751953125f;  // ln2, high part (exact product)
  r = r - n * 1.428606765330187e-06f;    // ln2, low part
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t k = __builtin_bit_cast(int32_t, t) - 0x4B400000;  // n as an integer
  return p * __builtin_bit_cast(float, (k + 127) << 23);
}

inline double fast_exp(double x) {
  x = x < -708.0 ? -708.0 : (x > 709.0 ? 709.0 : x);
  const double magic = 6755399441055744.0;  // 1.5 * 2^52
  const double t = x * 1.4426950408889634 + magic;
  const double n = t - magic;
  double r = x - n * 6.93147180369123816490e-01;  // ln2, high part
  r = r - n * 1.90821492927058770002e-10;        // ln2, low part
  double p = 1.0 / 6227020800.0;                 // 1/13!
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  const int64_t k = __builtin_bit_cast(int64_t, t) - 0x4338000000000000LL;
  return p * __builtin_bit_cast(double, (k + 1023) << 52);
}

template <typename S>
inline S sigmoid(S x) {
  return S(1) / (S(1) + fast_exp(-x));
}

// tanh x = 1 - 2 / (e^2x + 1) has only absolute accuracy near 0, where tanh x ~ x, so
// |x| < 1/8 takes the Taylor series (odd terms to x^7 in float, x^15 in double: the next
// term is below half an ulp there). Both are computed and blended: no branch.
template <typename S>
inline S tanh_(S x) {
  const S x2 = x * x;
  S p;
  if constexpr (std::is_same_v<S, float>) {
    p = S(-17.0 / 315.0);
  } else {
    p = S(-929569.0 / 638512875.0);
    p = p * x2 + S(21844.0 / 6081075.0);
    p = p * x2 + S(-1382.0 / 155925.0);
    p = p * x2 + S(62.0 / 2835.0);
    p = p * x2 + S(-17.0 / 315.0);
  }
  p = p * x2 + S(2.0 / 15.0);
  p = p * x2 + S(-1.0 / 3.0);
  const S small = x + x * x2 * p;
  const S large = S(1) - S(2) / (fast_exp(S(2) * x) + S(1));
  return (x < S(0.125) && x > S(-0.125)) ? small : large;
}

template <typename S>
inline S act(S a, bool relu) {
  return relu ? (a > S(0) ? a : S(0)) : tanh_(a);
}

// The LSTM's gates at unit j of one row a [4H] (gate order i, f, g, o, as torch.nn): the
// pre-activations plus b_hh are overwritten with the activations, which the backward reads;
// returns c' = f c + i g, and o through `o`. The LSTM and the projected LSTM share it.
template <typename S>
inline S lstm_gates(S* a, const S* b_hh, int64_t H, int64_t j, S c, S& o) {
  const S i = sigmoid(a[j] + b_hh[j]), f = sigmoid(a[H + j] + b_hh[H + j]);
  const S g = tanh_(a[2 * H + j] + b_hh[2 * H + j]);
  o = sigmoid(a[3 * H + j] + b_hh[3 * H + j]);
  a[j] = i, a[H + j] = f, a[2 * H + j] = g, a[3 * H + j] = o;
  return f * c + i * g;
}

// Its backward at unit j: from the saved activations `gates` [4H], c (the entering cell),
// c_new (c' before zoneout), dh = dL/d(o tanh c') and dc = dL/dc' carried, writes
// dL/d(pre-activations) into da [4H] and returns dL/dc' in all:
// do = dh tanh(c'); dc += dh o (1 - tanh(c')^2); di = dc g; df = dc c; dg = dc i.
template <typename S>
inline S lstm_gates_grad(const S* gates, S* da, int64_t H, int64_t j, S c, S c_new, S dh, S dc) {
  const S i = gates[j], f = gates[H + j], g = gates[2 * H + j], o = gates[3 * H + j];
  const S tc = tanh_(c_new);
  dc += dh * o * (S(1) - tc * tc);
  da[j] = dc * g * i * (S(1) - i);
  da[H + j] = dc * c * f * (S(1) - f);
  da[2 * H + j] = dc * i * (S(1) - g * g);
  da[3 * H + j] = dh * tc * o * (S(1) - o);
  return dc;
}

// Layer norm of one row a [N] (rnnkit/nn/cells/layer_norm.py: biased variance, eps inside
// the root, as torch.nn.LayerNorm): hat = (a - mean) rstd, returns rstd = 1/sqrt(var + eps).
// Two passes over the row (the mean, then the centred squares), each a vector reduction.
constexpr double kLayerNormEps = 1e-5;

template <typename S>
inline S normalise_row(const S* a, S* hat, int64_t N) {
  S mean = S(0), var = S(0);
#pragma omp simd reduction(+ : mean)
  for (int64_t j = 0; j < N; ++j) mean += a[j];
  mean /= S(N);
#pragma omp simd reduction(+ : var)
  for (int64_t j = 0; j < N; ++j) var += (a[j] - mean) * (a[j] - mean);
  const S rstd = S(1) / std::sqrt(var / S(N) + S(kLayerNormEps));
#pragma omp simd
  for (int64_t j = 0; j < N; ++j) hat[j] = (a[j] - mean) * rstd;
  return rstd;
}

// Its backward: dhat = dL/dhat (the output's gradient times the gain) -> dL/da =
// rstd (dhat - mean(dhat) - hat mean(dhat hat)); da may be dhat (each j reads its own).
template <typename S>
inline void normalise_row_grad(const S* dhat, const S* hat, S rstd, int64_t N, S* da) {
  S m1 = S(0), m2 = S(0);
#pragma omp simd reduction(+ : m1, m2)
  for (int64_t j = 0; j < N; ++j) {
    m1 += dhat[j];
    m2 += dhat[j] * hat[j];
  }
  m1 /= S(N);
  m2 /= S(N);
#pragma omp simd
  for (int64_t j = 0; j < N; ++j) da[j] = rstd * (dhat[j] - m1 - hat[j] * m2);
}

// The minimal cells' positive candidate g(k) = k + 1/2 for k >= 0, sigmoid(k) below (Feng
// et al. 2024, appendix), and its derivative from k.
template <typename S>
inline S min_candidate(S k) {
  return k >= S(0) ? k + S(0.5) : sigmoid(k);
}
template <typename S>
inline S min_candidate_grad(S k) {
  const S s = sigmoid(k);
  return k >= S(0) ? S(1) : s * (S(1) - s);
}

// ---------------------------------------------------------------------------------------
// Row-major GEMM C[M, N] = op(A) op(B) + beta C on raw pointers: MKL's sgemm_/dgemm_ as
// exported by libtorch_cpu (no dispatcher cost per step, which matters at B = 1), else
// ATen's addmm on views of the same memory.
// ---------------------------------------------------------------------------------------

using sgemm_t = void (*)(const char*, const char*, const int*, const int*, const int*,
                         const float*, const float*, const int*, const float*, const int*,
                         const float*, float*, const int*);
using dgemm_t = void (*)(const char*, const char*, const int*, const int*, const int*,
                         const double*, const double*, const int*, const double*, const int*,
                         const double*, double*, const int*);

template <typename F>
F blas_symbol(const char* name) {
  void* lib = dlopen("libtorch_cpu.so", RTLD_LAZY | RTLD_NOLOAD);
  void* sym = lib ? dlsym(lib, name) : nullptr;
  return reinterpret_cast<F>(sym);
}

const sgemm_t kSgemm = blas_symbol<sgemm_t>("sgemm_");
const dgemm_t kDgemm = blas_symbol<dgemm_t>("dgemm_");

template <typename S>
Tensor view(const S* p, int64_t rows, int64_t cols, int64_t ld, bool transposed) {
  auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<S>::value);
  Tensor v = at::from_blob(const_cast<S*>(p), {rows, cols}, {ld, 1}, opts);
  return transposed ? v.t() : v;
}

// Which library runs the fp32 products (set from Python, rnnkit/nn/kernels/gemm.py, which
// chooses by timing them on this machine; docs/kernels.md). fp64 always takes dgemm_.
//   mkl     MKL's sgemm_ as exported by libtorch_cpu (the default); big products at::mm.
//   onednn  oneDNN's matmul through ATen's mkldnn::_linear_pointwise: the per-step products
//           on a copy of the recurrent weights packed once per layer call (PackGuard), the
//           input projection and dx unpacked (the weight gradients are at::mm under every
//           backend, see mm_products). (The
//           streaming step() has matrix-vector products of its own.)
//   aten    at::addmm on views of the same memory (the dispatcher picks the library).
enum GemmBackend : int { GEMM_MKL = 0, GEMM_ONEDNN = 1, GEMM_ATEN = 2 };
const char* const kGemmNames[] = {"mkl", "onednn", "aten"};
std::atomic<int> g_gemm{GEMM_MKL};
thread_local int tl_gemm = -1;  // a per-thread override, for the probe (gemm_time)

struct GemmOverride {  // sets this thread's backend for a scope
  explicit GemmOverride(int code) { tl_gemm = code; }
  ~GemmOverride() { tl_gemm = -1; }
};

int gemm_backend_now() { return tl_gemm >= 0 ? tl_gemm : g_gemm.load(std::memory_order_relaxed); }

// ATen's oneDNN linear, X [M, K] @ W^T + b with W [N, K] plain or packed by
// _reorder_linear_weight; looked up once, boxed (its unboxed signature varies by release).
const c10::OperatorHandle* onednn_op(const char* name) {
  auto op = c10::Dispatcher::singleton().findSchema({name, ""});
  return op ? new c10::OperatorHandle(*op) : nullptr;
}

const c10::OperatorHandle* onednn_linear_op() {
  static const c10::OperatorHandle* op = onednn_op("mkldnn::_linear_pointwise");
  return op;
}

const c10::OperatorHandle* onednn_reorder_op() {
  static const c10::OperatorHandle* op = onednn_op("mkldnn::_reorder_linear_weight");
  return op;
}

bool onednn_available() {
  return at::hasMKLDNN() && onednn_linear_op() != nullptr && onednn_reorder_op() != nullptr;
}

Tensor onednn_linear(const Tensor& x, const Tensor& w, const Tensor& b) {
  torch::jit::Stack stack{x, w, b.defined() && b.numel() ? c10::IValue(b) : c10::IValue(),
                          std::string("none"), c10::List<std::optional<c10::Scalar>>(),
                          std::string("")};
  onednn_linear_op()->callBoxed(stack);
  return stack[0].toTensor();
}

Tensor onednn_pack(const Tensor& w, int64_t batch) {  // w [N, K] -> packed for M = batch
  torch::jit::Stack stack{w.contiguous(), batch};
  onednn_reorder_op()->callBoxed(stack);
  return stack[0].toTensor();
}

// Under the onednn backend a direction's fp32 recurrent weights are announced to the thread
// running it; a product whose B lies in them runs on a packed copy of exactly that block
// (op(B) as [N, K]), made at its first use in the scope and reused by every later step. It
// is packed for the rows of that first use; with variable lengths later steps have fewer
// (or, backward, more) rows, which oneDNN takes on the same copy (one packing per block and
// call, not one per row count).
struct PackedBlock {
  const float* b;
  int64_t N, K, ldb;
  bool tb;
  Tensor packed;
};
struct PackScope {
  const float* base = nullptr;
  int64_t numel = 0;
  std::vector<PackedBlock> blocks;
};
thread_local PackScope tl_pack;

struct PackGuard {  // announces w for a scope when the onednn backend runs fp32 products
  explicit PackGuard(const Tensor& w) {
    if (w.scalar_type() == at::kFloat && gemm_backend_now() == GEMM_ONEDNN)
      tl_pack.base = w.data_ptr<float>(), tl_pack.numel = w.numel();
  }
  ~PackGuard() { tl_pack = {}; }
};

const Tensor* packed_block(const float* B, bool tb, int64_t M, int64_t N, int64_t K,
                           int64_t ldb) {
  PackScope& p = tl_pack;
  if (p.base == nullptr || B < p.base || B >= p.base + p.numel) return nullptr;
  for (const PackedBlock& e : p.blocks)
    if (e.b == B && e.tb == tb && e.N == N && e.K == K && e.ldb == ldb) return &e.packed;
  const Tensor w = tb ? view(B, N, K, ldb, false) : view(B, K, N, ldb, true);  // [N, K]
  p.blocks.push_back({B, N, K, ldb, tb, onednn_pack(w, M)});
  return &p.blocks.back().packed;
}

// How a call's products run under bf16 autocast (the bf16 argument of forward and backward,
// chosen by rnnkit/nn/kernels/precision.py): not at all, natively (bf16 operands through
// oneDNN's bf16 kernels, fp32 accumulation), or emulated, where the CPU has no bf16
// instructions: the operands rounded to bf16 and kept as fp32, multiplied by the fp32
// library. A product of two bf16 values is exact in fp32 and the sums accumulate in fp32
// either way, so both compute the same products; emulated results are not rounded to bf16
// at the end, and run at the fp32 library's speed, where torch's own bf16 matmul on such a
// CPU falls far behind (docs/kernels.md, "A CPU without bf16 instructions").
enum Bf16Mode : int64_t { BF16_OFF = 0, BF16_NATIVE = 1, BF16_EMULATED = 2 };

// t's values rounded to the nearest bf16 (ties to even, as torch rounds), kept in a new
// contiguous fp32 tensor: one pass, in integer arithmetic so that it vectorises; NaN stays
// NaN. (No bf16 temporary: fewer passes and allocations than t.to(bf16).to(float).)
Tensor rounded_fp32(const Tensor& t) {
  const Tensor src = (t.scalar_type() == at::kFloat ? t : t.to(at::kFloat)).contiguous();
  Tensor out = at::empty(src.sizes(), src.options());
  const uint32_t* in = reinterpret_cast<const uint32_t*>(src.data_ptr<float>());
  uint32_t* o = reinterpret_cast<uint32_t*>(out.data_ptr<float>());
  at::parallel_for(0, src.numel(), 1 << 15, [&](int64_t i0, int64_t i1) {
#pragma omp simd
    for (int64_t i = i0; i < i1; ++i) {
      const uint32_t u = in[i];
      const bool nan = (u & 0x7FFFFFFFu) > 0x7F800000u;
      o[i] = nan ? (u | 0x00400000u) & 0xFFFF0000u : (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
    }
  });
  return out;
}

// t rounded to bf16: a bf16 tensor, or, emulated, an fp32 tensor of the same values.
Tensor round_bf16(const Tensor& t, int64_t mode) {
  return mode == BF16_EMULATED ? rounded_fp32(t) : t.to(at::kBFloat16);
}

// Under bf16 autocast a direction's recurrent weights get a rounded copy (round_bf16),
// announced to the thread running that direction: a product whose B lies in the fp32
// weights then runs on the copy with A rounded to bf16. Natively, through oneDNN's bf16
// matmul on a copy of that block packed at its first use in the scope (or at::mm where
// ATen has no oneDNN), the bf16 result widened and added in fp32 (add_bf16); emulated, as
// an fp32 product on the copy's fp32 values.
struct Bf16Mirror {
  const float* fp32 = nullptr;
  int64_t numel = 0;
  const at::BFloat16* bf16 = nullptr;  // the copy, native
  const float* rounded = nullptr;      // the copy, emulated
  std::vector<PackedBlock> blocks;     // packed bf16 blocks of the copy, as PackScope's
};
thread_local Bf16Mirror tl_mirror;

struct MirrorGuard {  // sets the thread's mirror for a scope (none when low is undefined)
  explicit MirrorGuard(const Tensor& w, const Tensor& low) {
    if (!low.defined()) return;
    if (low.scalar_type() == at::kBFloat16)
      tl_mirror = {w.data_ptr<float>(), w.numel(), low.data_ptr<at::BFloat16>(), nullptr, {}};
    else
      tl_mirror = {w.data_ptr<float>(), w.numel(), nullptr, low.data_ptr<float>(), {}};
  }
  ~MirrorGuard() { tl_mirror = {}; }
};

inline float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// C [M, N] (row stride ldc) = beta * C + r, r a contiguous bf16 [M, N]: the widening is a
// 16-bit shift, so the loop vectorises (ATen's mixed-dtype add_ was slower: docs/kernels.md).
void add_bf16(const Tensor& r, float* C, int64_t M, int64_t N, int64_t ldc, float beta) {
  const uint16_t* src = reinterpret_cast<const uint16_t*>(r.data_ptr<at::BFloat16>());
  for (int64_t i = 0; i < M; ++i) {
    float* c = C + i * ldc;
    const uint16_t* q = src + i * N;
    if (beta == 0.f) {
#pragma omp simd
      for (int64_t j = 0; j < N; ++j) c[j] = bits_to_float(uint32_t(q[j]) << 16);
    } else {
#pragma omp simd
      for (int64_t j = 0; j < N; ++j) c[j] += bits_to_float(uint32_t(q[j]) << 16);
    }
  }
}

template <typename S>
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const S* A, int64_t lda,
          const S* B, int64_t ldb, S beta, S* C, int64_t ldc);

// The bf16 product of gemm() for B in the mirrored weights (m.fp32 <= B < m.fp32 + numel).
void gemm_mirrored(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* A,
                   int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  Bf16Mirror& m = tl_mirror;
  if (m.rounded != nullptr) {  // emulated: op(A) rounded into a row-major [M, K], fp32 product
    const Tensor a = rounded_fp32(view(A, ta ? K : M, ta ? M : K, lda, ta));  // [M, K]
    return gemm<float>(false, tb, M, N, K, a.data_ptr<float>(), K, m.rounded + (B - m.fp32),
                       ldb, beta, C, ldc);
  }
  const Tensor a = view(A, ta ? K : M, ta ? M : K, lda, ta).to(at::kBFloat16);
  const at::BFloat16* b = m.bf16 + (B - m.fp32);
  Tensor r;
  if (!ta && onednn_available()) {
    const PackedBlock* hit = nullptr;
    for (const PackedBlock& e : m.blocks)
      if (e.b == B && e.tb == tb && e.N == N && e.K == K && e.ldb == ldb) hit = &e;
    if (hit == nullptr) {
      const Tensor w = tb ? view(b, N, K, ldb, false) : view(b, K, N, ldb, true);  // [N, K]
      m.blocks.push_back({B, N, K, ldb, tb, onednn_pack(w, M)});
      hit = &m.blocks.back();
    }
    r = onednn_linear(a, hit->packed, Tensor());  // [M, N] bf16, fp32 accumulation inside
  } else {
    r = at::mm(a, view(b, tb ? N : K, tb ? K : N, ldb, tb));
  }
  add_bf16(r.contiguous(), C, M, N, ldc, beta);
}

// ta: A is stored [K, M] (op(A) = A^T); tb: B is stored [N, K].
template <typename S>
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const S* A, int64_t lda,
          const S* B, int64_t ldb, S beta, S* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if constexpr (std::is_same_v<S, float>) {
    const Bf16Mirror& m = tl_mirror;
    if (m.fp32 != nullptr && K > 0 && B >= m.fp32 && B < m.fp32 + m.numel)
      return gemm_mirrored(ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc);
  }
  if constexpr (std::is_same_v<S, float>) {
    const int backend = gemm_backend_now();
    const Tensor* packed = backend == GEMM_ONEDNN && K > 0 && !ta
                               ? packed_block(B, tb, M, N, K, ldb)
                               : nullptr;
    if (packed != nullptr) {
      const Tensor r = onednn_linear(view(A, M, K, lda, false), *packed, Tensor());  // [M, N]
      Tensor c = view(C, M, N, ldc, false);
      if (beta == S(0)) {
        c.copy_(r);
      } else {
        c.add_(r);
      }
      return;
    }
    if (backend == GEMM_ATEN && K > 0) {
      view(C, M, N, ldc, false)
          .addmm_(view(A, ta ? K : M, ta ? M : K, lda, ta),
                  view(B, tb ? N : K, tb ? K : N, ldb, tb), beta, 1);
      return;
    }
  }
  if (K == 0) {
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == S(0) ? S(0) : beta * C[i * ldc + j];
    return;
  }
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T.
  const char opb = tb ? 'T' : 'N', opa = ta ? 'T' : 'N';
  const int m = int(N), n = int(M), k = int(K), la = int(lda), lb = int(ldb), lc = int(ldc);
  const S one = S(1);
  if constexpr (std::is_same_v<S, float>) {
    if (kSgemm) return kSgemm(&opb, &opa, &m, &n, &k, &one, B, &lb, A, &la, &beta, C, &lc);
  } else {
    if (kDgemm) return kDgemm(&opb, &opa, &m, &n, &k, &one, B, &lb, A, &la, &beta, C, &lc);
  }
  Tensor c = view(C, M, N, ldc, false);
  c.addmm_(view(A, ta ? K : M, ta ? M : K, lda, ta), view(B, tb ? N : K, tb ? K : N, ldb, tb),
           beta, 1);
}

// The input projection over all T*B rows, x [R, D] @ w^T (+ b) with w [G, D]: oneDNN under
// the onednn backend (fp32; the weight unpacked: one product does not repay a packing),
// else at::addmm.
Tensor project(const Tensor& x, const Tensor& w, const Tensor& b) {
  if (x.scalar_type() == at::kFloat && gemm_backend_now() == GEMM_ONEDNN)
    return onednn_linear(x, w.contiguous(), b);
  return b.numel() ? at::addmm(b, x, w.t()) : at::mm(x, w.t());
}

// The weight gradients over all T*B rows, a [G, R] (a transposed view) @ b [R, K]: at::mm
// (MKL here) under every backend: oneDNN's matmul through ATen wants a contiguous [G, R]
// and [K, R], so it would pay two transposing copies first (measured: docs/kernels.md).
Tensor mm_products(const Tensor& a, const Tensor& b) { return at::mm(a, b); }

void mm_products_into(Tensor out, const Tensor& a, const Tensor& b) { at::mm_out(out, a, b); }

int gemm_backend_code(const std::string& name) {
  for (int i = 0; i < int(std::size(kGemmNames)); ++i)
    if (name == kGemmNames[i]) return i;
  TORCH_CHECK(false, "unknown GEMM backend '", name, "'; expected mkl, onednn or aten");
  return -1;
}

bool gemm_available(const std::string& name) {
  switch (gemm_backend_code(name)) {
    case GEMM_MKL: return kSgemm != nullptr && at::hasMKL();
    case GEMM_ONEDNN: return onednn_available();
    default: return true;
  }
}

void set_gemm_backend(const std::string& name) {
  const int code = gemm_backend_code(name);
  TORCH_CHECK(gemm_available(name), "GEMM backend '", name, "' is not available here");
  g_gemm.store(code);
}

std::string gemm_backend() { return kGemmNames[g_gemm.load()]; }

// gemm_time(name, M, N, K, steps) -> seconds of each product of one round under that backend,
// for the probe: what one direction of a training layer call of `steps` steps does with
// W [N, K] = W_ih = W_hh (D = H): the input projection gx [steps*M, N] = x W^T + b, per step
// gx[s] += x[s] W^T (the first with the packing, under onednn), then a weight gradient
// gx^T x [N, K]; steps + 2 times in that order.
std::vector<double> gemm_time(const std::string& name, int64_t M, int64_t N, int64_t K,
                              int64_t steps) {
  TORCH_CHECK(gemm_available(name), "GEMM backend '", name, "' is not available here");
  // A generator of its own: a probe at a layer's first call must not move torch's RNG.
  const at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(0);
  const Tensor x = at::randn({steps * M, K}, gen);
  const Tensor w = at::randn({N, K}, gen) / std::sqrt(double(K));
  const Tensor b = at::zeros({N});
  const GemmOverride backend(gemm_backend_code(name));
  std::vector<double> seconds;
  auto last = std::chrono::steady_clock::now();
  const auto lap = [&] {
    const auto now = std::chrono::steady_clock::now();
    seconds.push_back(std::chrono::duration<double>(now - last).count());
    last = now;
  };
  Tensor gx = project(x, w, b);  // [steps*M, N]
  lap();
  {
    const PackGuard pack(w);
    for (int64_t s = 0; s < steps; ++s) {
      gemm<float>(false, true, M, N, K, x.data_ptr<float>() + s * M * K, K,
                  w.data_ptr<float>(), K, 1.0f, gx.data_ptr<float>() + s * M * N, N);
      lap();
    }
  }
  mm_products(gx.t(), x);
  lap();
  return seconds;
}

// ---------------------------------------------------------------------------------------
// Which rows run at each time (see the note at the top), and one direction of one layer:
// where its buffers live and which step comes next.
// ---------------------------------------------------------------------------------------

struct Schedule {
  int64_t T = 0, B = 0, N = 0;   // N = tokens
  std::vector<int64_t> order;    // [B] original batch row of each sorted row; empty: identity
  std::vector<int64_t> rows;     // [T] rows running at time t; empty: B at every t
  std::vector<int64_t> offs;     // [T] first packed row of time t; empty: t B
  bool full() const { return rows.empty(); }
  // [N] int64: for each packed row, its row in a [T*B] (or, with slot_shift, a [(T+1)*B]
  // state buffer at time t + slot_shift) layout, sorted rows; original rows if original.
  Tensor index(int64_t slot_shift, bool original) const {
    Tensor idx = at::empty({N}, at::TensorOptions().dtype(at::kLong));
    int64_t* p = idx.data_ptr<int64_t>();
    for (int64_t t = 0; t < T; ++t)
      for (int64_t b = 0; b < rows[t]; ++b)
        *p++ = (t + slot_shift) * B + (original ? order[b] : b);
    return idx;
  }
};

// lengths [B] int64 (empty: every row full) -> the schedule; lengths all equal to T is full.
Schedule schedule(const Tensor& lengths, int64_t T, int64_t B) {
  Schedule sc;
  sc.T = T, sc.B = B, sc.N = T * B;
  if (lengths.numel() == 0) return sc;
  TORCH_CHECK(lengths.scalar_type() == at::kLong && lengths.numel() == B && lengths.is_contiguous(),
              "rnnkit fused: lengths must be contiguous int64 [B]");
  const int64_t* len = lengths.data_ptr<int64_t>();
  if (std::all_of(len, len + B, [&](int64_t l) { return l == T; })) return sc;
  sc.order.resize(B);
  for (int64_t b = 0; b < B; ++b) sc.order[b] = b;
  std::stable_sort(sc.order.begin(), sc.order.end(),
                   [&](int64_t i, int64_t j) { return len[i] > len[j]; });
  sc.rows.assign(T, 0);
  sc.offs.assign(T, 0);
  int64_t n = B;
  sc.N = 0;
  for (int64_t t = 0; t < T; ++t) {
    while (n > 0 && len[sc.order[n - 1]] <= t) --n;
    sc.rows[t] = n;
    sc.offs[t] = sc.N;
    sc.N += n;
  }
  return sc;
}

// The element-wise gate loops of one step: rows b < n, split over torch's threads when the
// step has enough of them to repay waking the second (the rows are independent, each row's
// arithmetic is the same either way, so results do not depend on the split). Inside a
// parallel region (the two directions on their own threads) it runs inline.
constexpr int64_t kRowGrain = 4096;  // elements (rows * H) per thread, at least

template <typename F>
void for_rows(int64_t n, int64_t H, const F& body) {
  at::parallel_for(0, n, std::max<int64_t>(1, kRowGrain / std::max<int64_t>(H, 1)),
                   [&](int64_t b0, int64_t b1) {
                     for (int64_t b = b0; b < b1; ++b) body(b);
                   });
}

template <typename S>
struct Dir {
  int64_t T, B, H;
  int64_t R;  // h's width: H, or the projection's P (LSTM_PROJ); c stays H wide
  bool reverse, training;
  const Schedule* sc;
  S* gx;       // [N, G] packed: x W_ih^T + b_ih; training: overwritten by saved activations
  S* ghn;      // GRU reset-after: [N, H] saved U_n h + b_hn (a [B, H] scratch in inference)
  S* hbuf;     // [T+1, B, R] (training) or [2, B, R] (inference, ping-pong), sorted rows
  S* cbuf;     // LSTM cell states, [T+1 or 2, B, H] like hbuf
  S* out;      // this direction's first column of the layer output [T, B, dirs*R]
  int64_t ldo;  // dirs * R
  S* scratch;  // [B, 3H]
  // Per-step regulariser noise (rnnkit/nn/noise.py, StepNoise), original batch order;
  // null when off. Recurrent dropout: the recurrent products read h * rmask, written to hm
  // ([N, R] packed like gx in training, where dW_hh reads it; [B, R] in inference).
  // Zoneout: a state leaves step t as s_new + k (s_prev - s_new), k the keep-mask row of
  // that state at (t, b): [T, B, R] for h, [T, B, H] for c, or one row for every step
  // (evaluation: k = p); a state without zoneout reads the zero row.
  const S* rmask = nullptr;
  S* hm = nullptr;
  const S* zh = nullptr;
  const S* zc = nullptr;
  bool z_const = false;
  const S* zero = nullptr;  // [H] zeros
  // Layer-normalised cells: per packed token, ln holds [x^ (G) | h^ (G) | c^ (H, LSTM_LN
  // only) | rstd_x, rstd_h, rstd_c] (row stride ldn, the statistics at column stats): the
  // normalised x W_ih^T (from the pre-pass, input_norm), U h and c' and their
  // 1/sqrt(var + eps), which backward reads. Gains g_hh [G] and g_c [H] with the bias b_c
  // [H] (zeros when the layer has none); LN(U h)'s bias is the step's b_hh argument.
  S* ln = nullptr;
  int64_t ldn = 0, stats = 0;
  const S* g_hh = nullptr;
  const S* g_c = nullptr;
  const S* b_c = nullptr;
  // LSTM_PROJ: h' = r W_hr^T with W_hr [R, H] and r = o tanh(c') kept in rbuf ([N, H] packed
  // like gx in training, where backward reads it; [B, H] in inference).
  const S* w_hr = nullptr;
  S* rbuf = nullptr;

  int64_t time(int64_t s) const { return reverse ? T - 1 - s : s; }
  int64_t rows(int64_t t) const { return sc->full() ? B : sc->rows[t]; }
  int64_t off(int64_t t) const { return sc->full() ? t * B : sc->offs[t]; }
  int64_t orig(int64_t b) const { return sc->full() ? b : sc->order[b]; }
  // Rows running at processing step s (0 outside [0, T)).
  int64_t rows_at(int64_t s) const { return s < 0 || s >= T ? 0 : rows(time(s)); }
  // Slots of the states entering and leaving processing step s (at time t).
  int64_t in_slot(int64_t s, int64_t t) const {
    return training ? (reverse ? t + 1 : t) : s % 2;
  }
  int64_t out_slot(int64_t s, int64_t t) const {
    return training ? (reverse ? t : t + 1) : (s + 1) % 2;
  }
  // Zoneout keep-mask row of state k (zh: [R], zc: [H]) for sorted row b at time t.
  const S* keep(const S* k, int64_t t, int64_t b) const {
    return !k ? zero : z_const ? k : k + (t * B + orig(b)) * (k == zh ? R : H);
  }
  // The h the recurrent products read at time t, rows b < n: hp, or hp * rmask into hm.
  const S* recurrent_input(const S* hp, int64_t t, int64_t n) const {
    if (!rmask) return hp;
    S* out = training ? hm + off(t) * R : hm;
    for_rows(n, R, [&](int64_t b) {
      const S *hb = hp + b * R, *mb = rmask + orig(b) * R;
      S* ob = out + b * R;
#pragma omp simd
      for (int64_t j = 0; j < R; ++j) ob[j] = hb[j] * mb[j];
    });
    return out;
  }
  // Backward: the h the recurrent products read at time t (saved hm, or hp).
  const S* recurrent_saved(const S* hp, int64_t t) const { return rmask ? hm + off(t) * R : hp; }
};

// Rows [b0, b1) (sorted) of a [B, w] buffer from / to their original rows of another (w: R
// for h and its gradient, H for c and its).
template <typename S>
void gather_rows(const Dir<S>& d, int64_t w, const S* from, S* to, int64_t b0, int64_t b1) {
  for (int64_t b = b0; b < b1; ++b) std::memcpy(to + b * w, from + d.orig(b) * w, sizeof(S) * w);
}
template <typename S>
void scatter_rows(const Dir<S>& d, int64_t w, const S* from, S* to, int64_t b0, int64_t b1) {
  for (int64_t b = b0; b < b1; ++b) std::memcpy(to + d.orig(b) * w, from + b * w, sizeof(S) * w);
}

// ---- Forward of one step, per cell. gx (= x W_ih^T + b_ih) arrives in d.gx[t]; the recurrent
// GEMM adds h U^T; the element-wise loop adds b_hh, applies the gates and writes the new state
// and the output. (b_hh is added there rather than folded into the projection so that a
// one-step streaming call allocates nothing extra.)

// ZONE: some state has zoneout (the keep-masks in d.zh/d.zc); the plain loops otherwise.
// Under recurrent dropout the products read d.recurrent_input's hr instead of hp.
template <typename S, int64_t CELL, bool ZONE>
void forward_step(const Dir<S>& d, int64_t s, const S* w_hh, const S* b_hh) {
  const int64_t B = d.B, H = d.H, R = d.R, t = d.time(s), n = d.rows(t);  // rows b < n run
  const S* hp = d.hbuf + d.in_slot(s, t) * B * R;  // [n, R] state entering
  S* hn = d.hbuf + d.out_slot(s, t) * B * R;        // [n, R] state leaving
  const S* hr = d.recurrent_input(hp, t, n);        // [n, R] what the products read
  auto y = [&](int64_t b) { return d.out + (t * B + d.orig(b)) * d.ldo; };  // [R] output row
  if constexpr (CELL == RNN_TANH || CELL == RNN_RELU) {
    // a = gx + h U^T; h' = act(a) (zoned: h' + k (h - h'), act(a) saved over a for backward)
    S* a = d.gx + d.off(t) * H;
    gemm<S>(false, true, n, H, H, hr, H, w_hh, H, S(1), a, H);  // [n,H] += [n,H] @ [H,H]^T
    for_rows(n, H, [&](int64_t b) {
      S* ab = a + b * H;
      const S *hpb = hp + b * H, *kh = ZONE ? d.keep(d.zh, t, b) : nullptr;
      S *hb = hn + b * H, *yb = y(b);
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        S v = act(ab[j] + b_hh[j], CELL == RNN_RELU);
        if constexpr (ZONE) {
          ab[j] = v;
          v = kh[j] * hpb[j] + (S(1) - kh[j]) * v;  // exact at k = 0 and 1
        }
        hb[j] = v;
        yb[j] = v;
      }
    });
  } else if constexpr (CELL == LSTM) {
    // a = gx + h U^T [n, 4H] -> i, f, g, o; c' = f c + i g; h' = o tanh(c')
    S* a = d.gx + d.off(t) * 4 * H;
    gemm<S>(false, true, n, 4 * H, H, hr, H, w_hh, H, S(1), a, 4 * H);
    const S* cp = d.cbuf + d.in_slot(s, t) * B * H;
    S* cn = d.cbuf + d.out_slot(s, t) * B * H;
    for_rows(n, H, [&](int64_t b) {
      S* ab = a + b * 4 * H;  // overwritten with the activations i, f, g, o (saved)
      const S *cpb = cp + b * H, *hpb = hp + b * H;
      const S *kh = ZONE ? d.keep(d.zh, t, b) : nullptr, *kc = ZONE ? d.keep(d.zc, t, b) : nullptr;
      S *cnb = cn + b * H, *hb = hn + b * H, *yb = y(b);
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        S o;
        S c = lstm_gates(ab, b_hh, H, j, cpb[j], o);
        S h = o * tanh_(c);  // of the new c, before zoneout (Krueger et al. 2016, eq. 3-4)
        if constexpr (ZONE) {
          c = kc[j] * cpb[j] + (S(1) - kc[j]) * c;
          h = kh[j] * hpb[j] + (S(1) - kh[j]) * h;
        }
        cnb[j] = c, hb[j] = h, yb[j] = h;
      }
    });
  } else if constexpr (CELL == LSTM_PROJ) {
    // The LSTM's gates and c' from a = gx + h U^T [n, 4H] (U [4H, R]); r = o tanh(c') [n, H]
    // (of the new c, before zoneout, as above); h' = r W_hr^T [n, R], then zoned.
    S* a = d.gx + d.off(t) * 4 * H;
    gemm<S>(false, true, n, 4 * H, R, hr, R, w_hh, R, S(1), a, 4 * H);
    const S* cp = d.cbuf + d.in_slot(s, t) * B * H;
    S* cn = d.cbuf + d.out_slot(s, t) * B * H;
    S* r = d.training ? d.rbuf + d.off(t) * H : d.rbuf;
    for_rows(n, H, [&](int64_t b) {
      S *ab = a + b * 4 * H, *rb = r + b * H, *cnb = cn + b * H;
      const S* cpb = cp + b * H;
      const S* kc = ZONE ? d.keep(d.zc, t, b) : nullptr;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        S o;
        S c = lstm_gates(ab, b_hh, H, j, cpb[j], o);
        rb[j] = o * tanh_(c);
        if constexpr (ZONE) c = kc[j] * cpb[j] + (S(1) - kc[j]) * c;
        cnb[j] = c;
      }
    });
    gemm<S>(false, true, n, R, H, r, H, d.w_hr, H, S(0), hn, R);  // [n,H] @ [R,H]^T
    for_rows(n, R, [&](int64_t b) {
      S *hb = hn + b * R, *yb = y(b);
      const S *hpb = hp + b * R, *kh = ZONE ? d.keep(d.zh, t, b) : nullptr;
#pragma omp simd
      for (int64_t j = 0; j < R; ++j) {
        if constexpr (ZONE) hb[j] = kh[j] * hpb[j] + (S(1) - kh[j]) * hb[j];
        yb[j] = hb[j];
      }
    });
  } else if constexpr (CELL == GRU) {
    // gh = h U^T [n, 3H] in one GEMM; r, z = sigmoid(gx + gh); n = tanh(gx_n + r (gh_n + b_hn))
    S* gh = d.scratch;
    gemm<S>(false, true, n, 3 * H, H, hr, H, w_hh, H, S(0), gh, 3 * H);
    S* a = d.gx + d.off(t) * 3 * H;
    S* ghn = d.training ? d.ghn + d.off(t) * H : d.ghn;
    for_rows(n, H, [&](int64_t b) {
      S* ab = a + b * 3 * H;  // overwritten with r, z, n (saved)
      const S *ghb = gh + b * 3 * H, *hpb = hp + b * H;
      const S* kh = ZONE ? d.keep(d.zh, t, b) : nullptr;
      S *ghnb = ghn + b * H, *hb = hn + b * H, *yb = y(b);
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const S r = sigmoid(ab[j] + ghb[j] + b_hh[j]);
        const S z = sigmoid(ab[H + j] + ghb[H + j] + b_hh[H + j]);
        const S hn_ = ghb[2 * H + j] + b_hh[2 * H + j];
        const S n_ = tanh_(ab[2 * H + j] + r * hn_);
        S h = n_ + z * (hpb[j] - n_);  // (1 - z) n + z h
        if constexpr (ZONE) h = kh[j] * hpb[j] + (S(1) - kh[j]) * h;
        ab[j] = r, ab[H + j] = z, ab[2 * H + j] = n_;
        ghnb[j] = hn_, hb[j] = h, yb[j] = h;
      }
    });
  } else if constexpr (CELL == LSTM_LN) {
    // v = px + LN(h U^T; g_hh, b_hh) [n, 4H] -> i, f, g, o; c' = f c + i g (carried
    // unnormalised); h' = o tanh(LN(c'; g_c, b_c)). a arrives holding px = LN(x W_ih^T;
    // g_ih, b_ih) (input_norm) and leaves holding i, f, g, o (saved); ln keeps h^, c^.
    const int64_t G = 4 * H;
    S* a = d.gx + d.off(t) * G;
    S* uh = d.scratch;  // [n, 4H]
    gemm<S>(false, true, n, G, H, hr, H, w_hh, H, S(0), uh, G);
    const S* cp = d.cbuf + d.in_slot(s, t) * B * H;
    S* cn = d.cbuf + d.out_slot(s, t) * B * H;
    const S *gh = d.g_hh, *gc = d.g_c, *bc = d.b_c;
    for_rows(n, H, [&](int64_t b) {
      S *ab = a + b * G, *lb = d.ln + (d.off(t) + b) * d.ldn;
      S *hh = lb + G, *ch = lb + 2 * G, *st = lb + d.stats;
      st[1] = normalise_row(uh + b * G, hh, G);
      const S *cpb = cp + b * H, *hpb = hp + b * H;
      const S *kh = ZONE ? d.keep(d.zh, t, b) : nullptr, *kc = ZONE ? d.keep(d.zc, t, b) : nullptr;
      S *cnb = cn + b * H, *hb = hn + b * H, *yb = y(b);
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const S i = sigmoid(ab[j] + hh[j] * gh[j] + b_hh[j]);
        const S f = sigmoid(ab[H + j] + hh[H + j] * gh[H + j] + b_hh[H + j]);
        const S g = tanh_(ab[2 * H + j] + hh[2 * H + j] * gh[2 * H + j] + b_hh[2 * H + j]);
        const S o = sigmoid(ab[3 * H + j] + hh[3 * H + j] * gh[3 * H + j] + b_hh[3 * H + j]);
        ab[j] = i, ab[H + j] = f, ab[2 * H + j] = g, ab[3 * H + j] = o;
        cnb[j] = f * cpb[j] + i * g;
      }
      st[2] = normalise_row(cnb, ch, H);
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        S h = ab[3 * H + j] * tanh_(ch[j] * gc[j] + bc[j]);  // of the new c, before zoneout
        S c = cnb[j];
        if constexpr (ZONE) {
          c = kc[j] * cpb[j] + (S(1) - kc[j]) * c;
          h = kh[j] * hpb[j] + (S(1) - kh[j]) * h;
        }
        cnb[j] = c, hb[j] = h, yb[j] = h;
      }
    });
  } else if constexpr (CELL == GRU_LN) {
    // ph = LN(h U^T; g_hh, b_hh) [n, 3H]; r, z = sigmoid(px + ph); n = tanh(px_n + r ph_n);
    // h' = (1 - z) n + z h. a: px in, r, z, n out (saved); ghn keeps ph_n, ln h^.
    const int64_t G = 3 * H;
    S* a = d.gx + d.off(t) * G;
    S* uh = d.scratch;  // [n, 3H]
    gemm<S>(false, true, n, G, H, hr, H, w_hh, H, S(0), uh, G);
    S* ghn = d.training ? d.ghn + d.off(t) * H : d.ghn;
    const S* gh = d.g_hh;
    for_rows(n, H, [&](int64_t b) {
      S *ab = a + b * G, *lb = d.ln + (d.off(t) + b) * d.ldn, *hh = lb + G;
      lb[d.stats + 1] = normalise_row(uh + b * G, hh, G);
      const S *hpb = hp + b * H, *kh = ZONE ? d.keep(d.zh, t, b) : nullptr;
      S *ghnb = ghn + b * H, *hb = hn + b * H, *yb = y(b);
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const S r = sigmoid(ab[j] + hh[j] * gh[j] + b_hh[j]);
        const S z = sigmoid(ab[H + j] + hh[H + j] * gh[H + j] + b_hh[H + j]);
        const S phn = hh[2 * H + j] * gh[2 * H + j] + b_hh[2 * H + j];
        const S n_ = tanh_(ab[2 * H + j] + r * phn);
        S h = n_ + z * (hpb[j] - n_);
        if constexpr (ZONE) h = kh[j] * hpb[j] + (S(1) - kh[j]) * h;
        ab[j] = r, ab[H + j] = z, ab[2 * H + j] = n_;
        ghnb[j] = phn, hb[j] = h, yb[j] = h;
      }
    });
  } else if constexpr (CELL == MINGRU) {
    // no product: z = sigmoid(k_z), h~ = g(k_h), h' = (1 - z) h + z h~; a keeps z, k_h
    S* a = d.gx + d.off(t) * 2 * H;
    for_rows(n, H, [&](int64_t b) {
      S* ab = a + b * 2 * H;
      const S *hpb = hp + b * H, *kh = ZONE ? d.keep(d.zh, t, b) : nullptr;
      S *hb = hn + b * H, *yb = y(b);
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const S z = sigmoid(ab[j]), ht = min_candidate(ab[H + j]);
        S h = hpb[j] + z * (ht - hpb[j]);  // as the composite step writes it
        if constexpr (ZONE) h = kh[j] * hpb[j] + (S(1) - kh[j]) * h;
        ab[j] = z;
        hb[j] = h, yb[j] = h;
      }
    });
  } else if constexpr (CELL == MINLSTM) {
    // no product: i, f = sigmoid(k_i, k_f), h~ = g(k_h), h' = (f h + i h~) / (f + i);
    // a keeps i, f, k_h
    S* a = d.gx + d.off(t) * 3 * H;
    for_rows(n, H, [&](int64_t b) {
      S* ab = a + b * 3 * H;
      const S *hpb = hp + b * H, *kh = ZONE ? d.keep(d.zh, t, b) : nullptr;
      S *hb = hn + b * H, *yb = y(b);
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const S i = sigmoid(ab[j]), f = sigmoid(ab[H + j]), ht = min_candidate(ab[2 * H + j]);
        S h = (f * hpb[j] + i * ht) / (f + i);
        if constexpr (ZONE) h = kh[j] * hpb[j] + (S(1) - kh[j]) * h;
        ab[j] = i, ab[H + j] = f;
        hb[j] = h, yb[j] = h;
      }
    });
  } else {  // GRU_RESET_BEFORE: two dependent GEMMs, r must exist before U_n (r h)
    S* a = d.gx + d.off(t) * 3 * H;
    gemm<S>(false, true, n, 2 * H, H, hr, H, w_hh, H, S(1), a, 3 * H);  // a_rz += h U_rz^T
    S* rh = d.scratch;                                                  // [n, H]
    for_rows(n, H, [&](int64_t b) {
      S* ab = a + b * 3 * H;
      const S* hrb = hr + b * H;
      S* rhb = rh + b * H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const S r = sigmoid(ab[j] + b_hh[j]), z = sigmoid(ab[H + j] + b_hh[H + j]);
        ab[j] = r, ab[H + j] = z;
        rhb[j] = r * hrb[j];
      }
    });
    gemm<S>(false, true, n, H, H, rh, H, w_hh + 2 * H * H, H, S(1), a + 2 * H, 3 * H);
    for_rows(n, H, [&](int64_t b) {
      S* ab = a + b * 3 * H;
      const S *hpb = hp + b * H, *kh = ZONE ? d.keep(d.zh, t, b) : nullptr;
      S *hb = hn + b * H, *yb = y(b);
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const S n_ = tanh_(ab[2 * H + j] + b_hh[2 * H + j]);
        S h = n_ + ab[H + j] * (hpb[j] - n_);
        if constexpr (ZONE) h = kh[j] * hpb[j] + (S(1) - kh[j]) * h;
        ab[2 * H + j] = n_;
        hb[j] = h, yb[j] = h;
      }
    });
  }
}

// ---- Backward of one step, per cell (mirrors rnnkit/reference/<cell>.py). dh is dL/dh
// leaving the step (from later steps), dy the output gradient; the step writes the gate
// pre-activation gradients dG (packed like gx) and dL/dh entering the step into dhp (and
// carries dc). Only the rows running at the step take part (the forward's schedule).

template <typename S>
struct Back {
  S* dG;         // [N, Gs] packed: RNN/LSTM/reset-before = d(gx); GRU = [dar, daz, dan, dghn];
                 // LSTM_LN = [dv (4H) | d(U h) (4H) | dL/d(LN(c') output) (H)];
                 // GRU_LN = [dpx (3H) | dph_n (H) | d(U h) (3H)] (see the steps)
  const S* dy;   // this direction's first column of dout [T, B, dirs*R]
  int64_t ldo;
  S* dh;         // [B, R] dL/dh leaving the step, sorted rows
  S* dhp;        // [B, R] dL/dh entering the step (written)
  S* dc;         // LSTM: [B, H] carried dL/dc, sorted rows, updated in place
  S* scratch;    // [B, 4H]
  S* tmp;        // [B, R]: under recurrent dropout, the products' share of dL/dh before the mask
  S* dhr = nullptr;  // LSTM_PROJ: [N, R] packed dL/d(r W_hr^T), which dW_hr reads
};

// The recurrent products' share of dL/dh entering the step: product(out, beta) adds
// op @ U into out. Straight into dhp; under recurrent dropout into tmp (beta 0, or 1 when
// tmp already holds a share) and then dhp += tmp * rmask, the mask the forward applied.
template <typename S, typename P>
void recurrent_grad(const Dir<S>& d, const Back<S>& k, int64_t nr, bool tmp_started,
                    const P& product) {
  if (!d.rmask) return product(k.dhp, S(1));
  product(k.tmp, tmp_started ? S(1) : S(0));
  const int64_t R = d.R;
  for_rows(nr, R, [&](int64_t b) {
    const S *tb = k.tmp + b * R, *mb = d.rmask + d.orig(b) * R;
    S* db = k.dhp + b * R;
#pragma omp simd
    for (int64_t j = 0; j < R; ++j) db[j] += tb[j] * mb[j];
  });
}

// Under zoneout (ZONE) the gradient g of the state leaving the step splits: (1 - k) g
// reaches the cell's new state (gn below) and k g the state entering it (dhp's start).
template <typename S, int64_t CELL, bool ZONE>
void backward_step(const Dir<S>& d, const Back<S>& k, int64_t s, const S* w_hh) {
  const int64_t B = d.B, H = d.H, R = d.R, t = d.time(s), nr = d.rows(t);  // rows b < nr run
  const S* hp = d.hbuf + d.in_slot(s, t) * B * R;
  const S* hn = d.hbuf + d.out_slot(s, t) * B * R;
  auto dy = [&](int64_t b) { return k.dy + (t * B + d.orig(b)) * k.ldo; };  // [R]
  if constexpr (CELL == RNN_TANH || CELL == RNN_RELU) {
    // da = (dh + dy) act'(a); dh_prev = da U (act(a) is the output, or saved under ZONE)
    S* da = k.dG + d.off(t) * H;
    const S* v = ZONE ? d.gx + d.off(t) * H : hn;
    for_rows(nr, H, [&](int64_t b) {
      S *dab = da + b * H, *dhpb = k.dhp + b * H;
      const S *dhb = k.dh + b * H, *dyb = dy(b), *yb = v + b * H;
      const S* kh = ZONE ? d.keep(d.zh, t, b) : nullptr;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        S g = dhb[j] + dyb[j];
        S direct = S(0);
        if constexpr (ZONE) {
          direct = kh[j] * g;
          g *= S(1) - kh[j];
        }
        dab[j] = CELL == RNN_RELU ? (yb[j] > S(0) ? g : S(0)) : g * (S(1) - yb[j] * yb[j]);
        dhpb[j] = direct;
      }
    });
    recurrent_grad(d, k, nr, false, [&](S* out, S beta) {
      gemm<S>(false, false, nr, H, H, da, H, w_hh, H, beta, out, H);  // [nr,H] @ [H,H]
    });
  } else if constexpr (CELL == LSTM) {
    // lstm_gates_grad with dh = dL/dh' (+ output) (ZONE: c' the new cell before zoneout,
    // f c + i g, recomputed; the carried dc is of the zoned one, which passes kc dc to the
    // previous cell directly)
    const S* gates = d.gx + d.off(t) * 4 * H;  // i, f, g, o
    const S* cp = d.cbuf + d.in_slot(s, t) * B * H;
    const S* cn = d.cbuf + d.out_slot(s, t) * B * H;
    S* da = k.dG + d.off(t) * 4 * H;
    for_rows(nr, H, [&](int64_t b) {
      S *dab = da + b * 4 * H, *dhpb = k.dhp + b * H, *dcb = k.dc + b * H;
      const S *dhb = k.dh + b * H, *dyb = dy(b), *gb = gates + b * 4 * H;
      const S *cpb = cp + b * H, *cnb = cn + b * H;
      const S *kh = ZONE ? d.keep(d.zh, t, b) : nullptr, *kc = ZONE ? d.keep(d.zc, t, b) : nullptr;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        S gh = dhb[j] + dyb[j], dcz = dcb[j], direct = S(0), c_direct = S(0), c_new = cnb[j];
        if constexpr (ZONE) {
          direct = kh[j] * gh;
          gh *= S(1) - kh[j];
          c_direct = kc[j] * dcz;
          dcz *= S(1) - kc[j];
          c_new = gb[H + j] * cpb[j] + gb[j] * gb[2 * H + j];
        }
        const S dc = lstm_gates_grad(gb, dab, H, j, cpb[j], c_new, gh, dcz);
        dcb[j] = dc * gb[H + j] + c_direct;
        dhpb[j] = direct;
      }
    });
    recurrent_grad(d, k, nr, false, [&](S* out, S beta) {
      gemm<S>(false, false, nr, H, 4 * H, da, 4 * H, w_hh, H, beta, out, H);  // [nr,4H] @ [4H,H]
    });
  } else if constexpr (CELL == LSTM_PROJ) {
    // gp = dh + dy of the projected h' (ZONE: kh gp to the entering h, (1 - kh) gp on), kept
    // in dhr; dr = gp W_hr [nr, H], then the LSTM's step with dr in place of dL/dh
    S* gp = k.dhr + d.off(t) * R;
    for_rows(nr, R, [&](int64_t b) {
      S *gb = gp + b * R, *dhpb = k.dhp + b * R;
      const S *dhb = k.dh + b * R, *dyb = dy(b), *kh = ZONE ? d.keep(d.zh, t, b) : nullptr;
#pragma omp simd
      for (int64_t j = 0; j < R; ++j) {
        S g = dhb[j] + dyb[j], direct = S(0);
        if constexpr (ZONE) {
          direct = kh[j] * g;
          g *= S(1) - kh[j];
        }
        gb[j] = g;
        dhpb[j] = direct;
      }
    });
    S* dr = k.scratch;  // [nr, H]
    gemm<S>(false, false, nr, H, R, gp, R, d.w_hr, H, S(0), dr, H);  // [nr,R] @ [R,H]
    const S* gates = d.gx + d.off(t) * 4 * H;  // i, f, g, o
    const S* cp = d.cbuf + d.in_slot(s, t) * B * H;
    const S* cn = d.cbuf + d.out_slot(s, t) * B * H;
    S* da = k.dG + d.off(t) * 4 * H;
    for_rows(nr, H, [&](int64_t b) {
      S *dab = da + b * 4 * H, *dcb = k.dc + b * H;
      const S *drb = dr + b * H, *gb = gates + b * 4 * H, *cpb = cp + b * H, *cnb = cn + b * H;
      const S* kc = ZONE ? d.keep(d.zc, t, b) : nullptr;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        S dcz = dcb[j], c_direct = S(0), c_new = cnb[j];
        if constexpr (ZONE) {
          c_direct = kc[j] * dcz;
          dcz *= S(1) - kc[j];
          c_new = gb[H + j] * cpb[j] + gb[j] * gb[2 * H + j];
        }
        const S dc = lstm_gates_grad(gb, dab, H, j, cpb[j], c_new, drb[j], dcz);
        dcb[j] = dc * gb[H + j] + c_direct;
      }
    });
    recurrent_grad(d, k, nr, false, [&](S* out, S beta) {
      gemm<S>(false, false, nr, R, 4 * H, da, 4 * H, w_hh, R, beta, out, R);  // [nr,4H] @ [4H,R]
    });
  } else if constexpr (CELL == GRU) {
    // dn = dh (1-z); dz = dh (h-n); dan = dn (1-n^2); dr = dan gh_n; dgh_n = dan r
    const S* gates = d.gx + d.off(t) * 3 * H;  // r, z, n
    const S* ghn = d.ghn + d.off(t) * H;
    S* dg = k.dG + d.off(t) * 4 * H;
    S* dgh = k.scratch;  // [nr, 3H] = [dar, daz, dgh_n]: this step's d(h U^T + b_h)
    for_rows(nr, H, [&](int64_t b) {
      S *dgb = dg + b * 4 * H, *dghb = dgh + b * 3 * H, *dhpb = k.dhp + b * H;
      const S *dhb = k.dh + b * H, *dyb = dy(b), *gb = gates + b * 3 * H;
      const S *hpb = hp + b * H, *ghnb = ghn + b * H;
      const S* kh = ZONE ? d.keep(d.zh, t, b) : nullptr;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const S r = gb[j], z = gb[H + j], n = gb[2 * H + j];
        S g = dhb[j] + dyb[j], direct = S(0);
        if constexpr (ZONE) {
          direct = kh[j] * g;
          g *= S(1) - kh[j];
        }
        const S dan = g * (S(1) - z) * (S(1) - n * n);
        const S dar = dan * ghnb[j] * r * (S(1) - r);
        const S daz = g * (hpb[j] - n) * z * (S(1) - z);
        const S dghn = dan * r;
        dgb[j] = dar, dgb[H + j] = daz, dgb[2 * H + j] = dan, dgb[3 * H + j] = dghn;
        dghb[j] = dar, dghb[H + j] = daz, dghb[2 * H + j] = dghn;
        dhpb[j] = g * z + direct;
      }
    });
    recurrent_grad(d, k, nr, false, [&](S* out, S beta) {
      gemm<S>(false, false, nr, H, 3 * H, dgh, 3 * H, w_hh, H, beta, out, H);  // [nr,3H] @ [3H,H]
    });
  } else if constexpr (CELL == LSTM_LN) {
    // From dh (after zoneout's split): the output LN's dyc = dh o (1 - tanh^2) (kept for
    // d g_c, d b_c), through it to dc' (+ the carried dc), the gates' dv as the LSTM's
    // (dv is both dpx and dph), and through LN(U h) to d(U h), whose product with U is
    // the recurrent share of dh_prev.
    const int64_t G = 4 * H, Gs = 9 * H;
    const S* gates = d.gx + d.off(t) * G;  // i, f, g, o
    const S* cp = d.cbuf + d.in_slot(s, t) * B * H;
    S* dg = k.dG + d.off(t) * Gs;
    const S *gh = d.g_hh, *gc = d.g_c, *bc = d.b_c;
    for_rows(nr, H, [&](int64_t b) {
      S *dgb = dg + b * Gs, *du = dgb + G, *dyc = dgb + 2 * G;
      S *dhpb = k.dhp + b * H, *dcb = k.dc + b * H;
      const S *dhb = k.dh + b * H, *dyb = dy(b), *gb = gates + b * G, *cpb = cp + b * H;
      const S* lb = d.ln + (d.off(t) + b) * d.ldn;
      const S *hh = lb + G, *ch = lb + 2 * G, *st = lb + d.stats;
      const S *kh = ZONE ? d.keep(d.zh, t, b) : nullptr, *kc = ZONE ? d.keep(d.zc, t, b) : nullptr;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const S o = gb[3 * H + j];
        S g = dhb[j] + dyb[j], direct = S(0);
        if constexpr (ZONE) {
          direct = kh[j] * g;
          g *= S(1) - kh[j];
        }
        const S ty = tanh_(ch[j] * gc[j] + bc[j]);
        dyc[j] = g * o * (S(1) - ty * ty);
        du[j] = dyc[j] * gc[j];  // dL/dc^, for a moment
        dgb[3 * H + j] = g * ty * o * (S(1) - o);
        dhpb[j] = direct;
      }
      normalise_row_grad(du, ch, st[2], H, du);  // du[0, H) = dL/dc' through h
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        S dcz = dcb[j], c_direct = S(0);
        if constexpr (ZONE) {
          c_direct = kc[j] * dcz;
          dcz *= S(1) - kc[j];
        }
        const S i = gb[j], f = gb[H + j], g = gb[2 * H + j];
        const S dc = dcz + du[j];
        dgb[j] = dc * g * i * (S(1) - i);
        dgb[H + j] = dc * cpb[j] * f * (S(1) - f);
        dgb[2 * H + j] = dc * i * (S(1) - g * g);
        dcb[j] = dc * f + c_direct;
      }
#pragma omp simd
      for (int64_t j = 0; j < G; ++j) du[j] = dgb[j] * gh[j];
      normalise_row_grad(du, hh, st[1], G, du);  // d(U h)
    });
    recurrent_grad(d, k, nr, false, [&](S* out, S beta) {
      gemm<S>(false, false, nr, H, G, dg + G, Gs, w_hh, H, beta, out, H);  // [nr,4H] @ [4H,H]
    });
  } else if constexpr (CELL == GRU_LN) {
    // As the GRU's, with ph = LN(U h) for U h + b_h: dpx = [dar, daz, dan], dph = [dar, daz,
    // dan r], then through LN(U h) to d(U h).
    const int64_t G = 3 * H, Gs = 7 * H;
    const S* gates = d.gx + d.off(t) * G;  // r, z, n
    const S* ghn = d.ghn + d.off(t) * H;   // ph_n
    S* dg = k.dG + d.off(t) * Gs;
    const S* gh = d.g_hh;
    for_rows(nr, H, [&](int64_t b) {
      S *dgb = dg + b * Gs, *du = dgb + 4 * H, *dhpb = k.dhp + b * H;
      const S *dhb = k.dh + b * H, *dyb = dy(b), *gb = gates + b * G;
      const S *hpb = hp + b * H, *ghnb = ghn + b * H;
      const S* lb = d.ln + (d.off(t) + b) * d.ldn;
      const S* kh = ZONE ? d.keep(d.zh, t, b) : nullptr;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const S r = gb[j], z = gb[H + j], n = gb[2 * H + j];
        S g = dhb[j] + dyb[j], direct = S(0);
        if constexpr (ZONE) {
          direct = kh[j] * g;
          g *= S(1) - kh[j];
        }
        const S dan = g * (S(1) - z) * (S(1) - n * n);
        const S dar = dan * ghnb[j] * r * (S(1) - r);
        const S daz = g * (hpb[j] - n) * z * (S(1) - z);
        const S dphn = dan * r;
        dgb[j] = dar, dgb[H + j] = daz, dgb[2 * H + j] = dan, dgb[3 * H + j] = dphn;
        du[j] = dar * gh[j], du[H + j] = daz * gh[H + j], du[2 * H + j] = dphn * gh[2 * H + j];
        dhpb[j] = g * z + direct;
      }
      normalise_row_grad(du, lb + G, lb[d.stats + 1], G, du);  // d(U h)
    });
    recurrent_grad(d, k, nr, false, [&](S* out, S beta) {
      gemm<S>(false, false, nr, H, G, dg + 4 * H, Gs, w_hh, H, beta, out, H);  // [nr,3H] @ [3H,H]
    });
  } else if constexpr (CELL == MINGRU) {
    // dz = g (h~ - h); dk_z = dz z (1 - z); dk_h = g z g'(k_h); dh_prev = g (1 - z)
    S* dg = k.dG + d.off(t) * 2 * H;
    const S* gates = d.gx + d.off(t) * 2 * H;  // z, k_h
    for_rows(nr, H, [&](int64_t b) {
      S *dgb = dg + b * 2 * H, *dhpb = k.dhp + b * H;
      const S *dhb = k.dh + b * H, *dyb = dy(b), *gb = gates + b * 2 * H, *hpb = hp + b * H;
      const S* kh = ZONE ? d.keep(d.zh, t, b) : nullptr;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const S z = gb[j], kc = gb[H + j];
        S g = dhb[j] + dyb[j], direct = S(0);
        if constexpr (ZONE) {
          direct = kh[j] * g;
          g *= S(1) - kh[j];
        }
        dgb[j] = g * (min_candidate(kc) - hpb[j]) * z * (S(1) - z);
        dgb[H + j] = g * z * min_candidate_grad(kc);
        dhpb[j] = g * (S(1) - z) + direct;
      }
    });
  } else if constexpr (CELL == MINLSTM) {
    // h' = (f h + i h~) / s, s = f + i: dh'/df = (h - h') / s, dh'/di = (h~ - h') / s,
    // dh'/dh~ = i / s, dh'/dh = f / s; then through the sigmoids and g
    S* dg = k.dG + d.off(t) * 3 * H;
    const S* gates = d.gx + d.off(t) * 3 * H;  // i, f, k_h
    for_rows(nr, H, [&](int64_t b) {
      S *dgb = dg + b * 3 * H, *dhpb = k.dhp + b * H;
      const S *dhb = k.dh + b * H, *dyb = dy(b), *gb = gates + b * 3 * H, *hpb = hp + b * H;
      const S* kh = ZONE ? d.keep(d.zh, t, b) : nullptr;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const S i = gb[j], f = gb[H + j], kc = gb[2 * H + j], ht = min_candidate(kc);
        S g = dhb[j] + dyb[j], direct = S(0);
        if constexpr (ZONE) {
          direct = kh[j] * g;
          g *= S(1) - kh[j];
        }
        const S s = f + i, gs = g / s, h_new = (f * hpb[j] + i * ht) / s;
        dgb[j] = gs * (ht - h_new) * i * (S(1) - i);
        dgb[H + j] = gs * (hpb[j] - h_new) * f * (S(1) - f);
        dgb[2 * H + j] = gs * i * min_candidate_grad(kc);
        dhpb[j] = gs * f + direct;
      }
    });
  } else {  // GRU_RESET_BEFORE: d(rh) = dan U_n, then dr = d(rh) h, dh += d(rh) r + da_rz U_rz
    const S* gates = d.gx + d.off(t) * 3 * H;
    const S* hr = d.recurrent_saved(hp, t);  // the h of the products (masked)
    S* dg = k.dG + d.off(t) * 3 * H;  // [dar, daz, dan]
    for_rows(nr, H, [&](int64_t b) {
      S *dgb = dg + b * 3 * H, *dhpb = k.dhp + b * H;
      const S *dhb = k.dh + b * H, *dyb = dy(b), *gb = gates + b * 3 * H;
      const S* hpb = hp + b * H;
      const S* kh = ZONE ? d.keep(d.zh, t, b) : nullptr;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const S z = gb[H + j], n = gb[2 * H + j];
        S g = dhb[j] + dyb[j], direct = S(0);
        if constexpr (ZONE) {
          direct = kh[j] * g;
          g *= S(1) - kh[j];
        }
        dgb[2 * H + j] = g * (S(1) - z) * (S(1) - n * n);  // dan
        dgb[H + j] = g * (hpb[j] - n) * z * (S(1) - z);      // daz
        dhpb[j] = g * z + direct;
      }
    });
    S* drh = k.scratch;  // [nr, H] = dan U_n
    gemm<S>(false, false, nr, H, H, dg + 2 * H, 3 * H, w_hh + 2 * H * H, H, S(0), drh, H);
    S* acc = d.rmask ? k.tmp : k.dhp;  // d(rh) r joins the products' share (masked)
    for_rows(nr, H, [&](int64_t b) {
      S *dgb = dg + b * 3 * H, *accb = acc + b * H;
      const S *gb = gates + b * 3 * H, *hrb = hr + b * H, *drhb = drh + b * H;
      const bool fresh = d.rmask != nullptr;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const S r = gb[j];
        dgb[j] = drhb[j] * hrb[j] * r * (S(1) - r);  // dar
        accb[j] = (fresh ? S(0) : accb[j]) + drhb[j] * r;
      }
    });
    recurrent_grad(d, k, nr, true, [&](S* out, S beta) {
      gemm<S>(false, false, nr, H, 2 * H, dg, 3 * H, w_hh, H, beta, out, H);  // [nr,2H] @ [2H,H]
    });
  }
}

// ---------------------------------------------------------------------------------------
// Whole-layer entry points.
// ---------------------------------------------------------------------------------------

int64_t num_gates(int64_t cell) {
  return two_states(cell) ? 4 : cell <= RNN_RELU ? 1 : cell == MINGRU ? 2 : 3;
}

// The packed gate-gradient width of backward's dG (Back::dG).
int64_t grad_width(int64_t cell, int64_t H) {
  return cell == GRU ? 4 * H : cell == LSTM_LN ? 9 * H : cell == GRU_LN ? 7 * H
                                                       : num_gates(cell) * H;
}

// The per-token width of the layer norms' buffer (Dir::ln): x^, h^ (, c^), three statistics.
int64_t norm_width(int64_t cell, int64_t H) {
  return layer_normed(cell) ? 2 * num_gates(cell) * H + (cell == LSTM_LN ? H : 0) + 3 : 0;
}

// Bidirectional layers run both directions on their own thread when one step's GEMM is too
// small to keep both cores busy by itself; MKL then runs single-threaded inside each.
bool overlap_directions(int64_t dirs, int64_t B, int64_t G, int64_t H) {
  return dirs == 2 && at::get_num_threads() > 1 && B * G * H <= (int64_t(1) << 22);
}

template <typename F>
void for_directions(bool overlap, int64_t dirs, const F& body) {
  if (overlap) {
    at::parallel_for(0, dirs, 1, [&](int64_t begin, int64_t end) {
      for (int64_t d = begin; d < end; ++d) body(d);
    });
  } else {
    for (int64_t d = 0; d < dirs; ++d) body(d);
  }
}

// A row's initial state enters at the processing step where it starts, its final state
// leaves at the step where it ends: rows [rows_at(s-1), rows_at(s)) start at step s and rows
// [rows_at(s+1), rows_at(s)) end there (rows of length 0 never run: they keep h0). h0 and hT
// are [B, R], c0 and cT [B, H], in original batch order; c0 and cT are null except for the
// LSTMs.
template <typename S, int64_t CELL, bool ZONE>
void run_forward(Dir<S>& d, const S* w_hh, const S* b_hh, const S* h0, const S* c0, S* hT,
                 S* cT) {
  const int64_t H = d.H, R = d.R, BR = d.B * R, BH = d.B * H;
  for (int64_t s = 0; s < d.T; ++s) {
    const int64_t t = d.time(s), n = d.rows_at(s), in = d.in_slot(s, t), out = d.out_slot(s, t);
    gather_rows(d, R, h0, d.hbuf + in * BR, d.rows_at(s - 1), n);
    if (c0) gather_rows(d, H, c0, d.cbuf + in * BH, d.rows_at(s - 1), n);
    forward_step<S, CELL, ZONE>(d, s, w_hh, b_hh);
    scatter_rows(d, R, d.hbuf + out * BR, hT, d.rows_at(s + 1), n);
    if (cT) scatter_rows(d, H, d.cbuf + out * BH, cT, d.rows_at(s + 1), n);
  }
}

// The mirror image: dL/dh_T (and dL/dc_T) enters where a row's forward ended, dL/dh_0 (and
// dL/dc_0) leaves where it started.
template <typename S, int64_t CELL, bool ZONE>
void run_backward(Dir<S>& d, Back<S> k, const S* w_hh, const S* dhT, const S* dcT, S* dh0,
                  S* dc0) {
  for (int64_t s = d.T - 1; s >= 0; --s) {
    const int64_t n = d.rows_at(s);
    gather_rows(d, d.R, dhT, k.dh, d.rows_at(s + 1), n);
    if (dcT) gather_rows(d, d.H, dcT, k.dc, d.rows_at(s + 1), n);
    backward_step<S, CELL, ZONE>(d, k, s, w_hh);
    scatter_rows(d, d.R, k.dhp, dh0, d.rows_at(s - 1), n);
    if (dc0) scatter_rows(d, d.H, k.dc, dc0, d.rows_at(s - 1), n);
    std::swap(k.dh, k.dhp);
  }
}

template <typename S, typename F>
void dispatch_cell(int64_t cell, const F& f) {
  switch (cell) {
    case RNN_TANH: return f(std::integral_constant<int64_t, RNN_TANH>{});
    case RNN_RELU: return f(std::integral_constant<int64_t, RNN_RELU>{});
    case GRU: return f(std::integral_constant<int64_t, GRU>{});
    case GRU_RESET_BEFORE: return f(std::integral_constant<int64_t, GRU_RESET_BEFORE>{});
    case LSTM: return f(std::integral_constant<int64_t, LSTM>{});
    case MINGRU: return f(std::integral_constant<int64_t, MINGRU>{});
    case MINLSTM: return f(std::integral_constant<int64_t, MINLSTM>{});
    case LSTM_LN: return f(std::integral_constant<int64_t, LSTM_LN>{});
    case GRU_LN: return f(std::integral_constant<int64_t, GRU_LN>{});
    case LSTM_PROJ: return f(std::integral_constant<int64_t, LSTM_PROJ>{});
    default: TORCH_CHECK(false, "rnnkit fused: unknown cell code ", cell);
  }
}

// The per-step noise of a layer call (see Dir), per direction, in the compute dtype;
// undefined tensors where off. From the extension's argument: empty (no noise), or per
// direction rmask [B, R], then the zoneout keep-masks of h [T, B, R] and of c [T, B, H], each
// or a single value (the constant of evaluation), empty where that state has none (R = H
// but for LSTM_PROJ).
struct Noise {
  std::vector<Tensor> rmask, zh, zc;
  Tensor zero;  // [max(H, R)]
  bool zone = false, z_const = false;
};

Noise noise_args(const std::vector<Tensor>& noise, int64_t T, int64_t B, int64_t H, int64_t R,
                 int64_t dirs, const at::TensorOptions& opts) {
  Noise n;
  n.rmask.resize(dirs), n.zh.resize(dirs), n.zc.resize(dirs);
  if (noise.empty()) return n;
  TORCH_CHECK(int64_t(noise.size()) == 3 * dirs, "rnnkit fused: 3 noise tensors per direction");
  bool full = false;
  auto keep = [&](const Tensor& k, int64_t w) -> Tensor {
    if (!k.numel()) return Tensor();
    n.zone = true;
    if (k.numel() == 1) {
      n.z_const = true;
      return at::full({w}, k.item<double>(), opts);
    }
    TORCH_CHECK(k.numel() == T * B * w, "rnnkit fused: zoneout masks must be [T, B, state size]");
    full = true;
    return k.to(opts.dtype()).contiguous();
  };
  for (int64_t d = 0; d < dirs; ++d) {
    const Tensor& m = noise[3 * d];
    if (m.numel()) {
      TORCH_CHECK(m.numel() == B * R, "rnnkit fused: the recurrent mask must be [B, R]");
      n.rmask[d] = m.to(opts.dtype()).contiguous();
    }
    n.zh[d] = keep(noise[3 * d + 1], R);
    n.zc[d] = keep(noise[3 * d + 2], H);
  }
  TORCH_CHECK(!(full && n.z_const), "rnnkit fused: zoneout masks all per step or all constant");
  n.zero = at::zeros({std::max(H, R)}, opts);
  return n;
}

template <typename S>
void attach_noise(Dir<S>& dir, const Noise& n, int64_t d, const Tensor& hm) {
  auto ptr = [](const Tensor& t) -> S* { return t.defined() && t.numel() ? t.data_ptr<S>() : nullptr; };
  dir.rmask = ptr(n.rmask[d]);
  dir.hm = dir.rmask ? ptr(hm) : nullptr;
  dir.zh = ptr(n.zh[d]);
  dir.zc = ptr(n.zc[d]);
  dir.z_const = n.z_const;
  dir.zero = ptr(n.zero);
}

// The forward's input projection under bf16 autocast: a @ b on operands rounded to bf16
// (round_bf16) with fp32 accumulation through ATen (oneDNN's bf16 kernels natively), the
// result back in a's dtype. (The per-step recurrent products go through Bf16Mirror,
// backward's big products through its own prod.)
Tensor mm_bf16(const Tensor& a, const Tensor& b, int64_t mode) {
  return at::mm(round_bf16(a, mode), round_bf16(b, mode)).to(a.scalar_type());
}

// x [T, B, D] -> [N, D]: the real tokens, packed as the schedule orders them; tokens is
// sc.index(0, true) (undefined when every row is full).
Tensor packed_input(const Tensor& x, const Schedule& sc, const Tensor& tokens) {
  const Tensor x2d = x.view({sc.T * sc.B, x.size(2)});
  return sc.full() ? x2d : x2d.index_select(0, tokens);
}

// The layer norms' per-direction parameters (the extension's extra argument: per direction
// g_ih [G], g_hh [G], g_c [H], b_c [H], empty where a cell or the layer has none; [] for
// the other cells), in the compute dtype, with b_c as zeros when absent.
struct Norms {
  std::vector<Tensor> g_ih, g_hh, g_c, b_c;
};

Norms norm_args(int64_t cell, const std::vector<Tensor>& extra, int64_t dirs, int64_t H,
                const at::TensorOptions& opts) {
  Norms n;
  if (!layer_normed(cell)) {
    TORCH_CHECK(extra.empty(), "rnnkit fused: layer-norm parameters for a cell without norms");
    return n;
  }
  TORCH_CHECK(int64_t(extra.size()) == 4 * dirs, "rnnkit fused: 4 layer-norm tensors per direction");
  const int64_t G = num_gates(cell) * H;
  for (int64_t d = 0; d < dirs; ++d) {
    auto take = [&](const Tensor& t, int64_t size, bool zeros_if_empty) -> Tensor {
      if (!t.numel()) return zeros_if_empty ? at::zeros({size}, opts) : Tensor();
      TORCH_CHECK(t.numel() == size, "rnnkit fused: a layer-norm parameter of the wrong size");
      return t.to(opts.dtype()).contiguous();
    };
    n.g_ih.push_back(take(extra[4 * d], G, false));
    n.g_hh.push_back(take(extra[4 * d + 1], G, false));
    TORCH_CHECK(n.g_ih.back().defined() && n.g_hh.back().defined(),
                "rnnkit fused: the layer norms' gains are required");
    const bool lstm = cell == LSTM_LN;
    n.g_c.push_back(lstm ? take(extra[4 * d + 2], H, false) : Tensor());
    n.b_c.push_back(lstm ? take(extra[4 * d + 3], H, true) : Tensor());
    TORCH_CHECK(!lstm || n.g_c.back().defined(), "rnnkit fused: lstm_ln needs g_c");
  }
  return n;
}

// The kind of cell a call runs: LSTM_PROJ for an LSTM whose extra argument holds the
// projections W_hr [R, H], one per direction (torch.nn.LSTM's weight_hr; R < H); the code
// the caller passed otherwise.
int64_t call_kind(int64_t cell, const std::vector<Tensor>& extra) {
  return cell == LSTM && !extra.empty() ? LSTM_PROJ : cell;
}

// The layer's sizes from its weights: H (c's and the gates' width) from W_ih [gates*H, D], R
// (h's) from W_hh [gates*H, R] (the minimal cells' [0, H] placeholder), W_hr [R, H] checked.
std::pair<int64_t, int64_t> layer_sizes(int64_t kind, const std::vector<Tensor>& w_ih,
                                        const std::vector<Tensor>& w_hh,
                                        const std::vector<Tensor>& extra) {
  const int64_t H = w_ih[0].size(0) / num_gates(kind), R = w_hh[0].size(1);
  if (kind == LSTM_PROJ) {
    TORCH_CHECK(extra.size() == w_ih.size(), "rnnkit fused: one W_hr per direction");
    for (const Tensor& w : extra)
      TORCH_CHECK(w.dim() == 2 && w.size(0) == R && w.size(1) == H,
                  "rnnkit fused: W_hr must be [R, H] with W_hh [4H, R]");
  } else {
    TORCH_CHECK(R == H, "rnnkit fused: W_hh's columns must equal the hidden size");
  }
  return {H, R};
}

// The pre-pass of the layer-normalised cells: every token's projection gx [N, G] (without
// bias) normalised in place, px = LN(gx; g_ih, b_ih), saving x^ and rstd_x into ln.
template <typename S>
void input_norm(S* gx, S* ln, int64_t N, int64_t G, int64_t ldn, int64_t stats, const S* g_ih,
                const S* b_ih) {
  at::parallel_for(0, N, std::max<int64_t>(1, kRowGrain / std::max<int64_t>(G, 1)),
                   [&](int64_t r0, int64_t r1) {
                     for (int64_t r = r0; r < r1; ++r) {
                       S *a = gx + r * G, *lb = ln + r * ldn;
                       lb[stats] = normalise_row(a, lb, G);
#pragma omp simd
                       for (int64_t j = 0; j < G; ++j) a[j] = lb[j] * g_ih[j] + b_ih[j];
                     }
                   });
}

// forward(cell, x [T,B,D], lengths [B] int64 or empty, h0s, c0s, w_ih, w_hh, b_ih, b_hh,
// extra (the layer norms' parameters, see norm_args; for the LSTM, W_hr per direction or
// none, see call_kind), noise (see noise_args), training, bf16 (a Bf16Mode: the products on
// bf16 operands, see mm_bf16 and Bf16Mirror; not with W_hr))
// -> [out [T,B,dirs*R], then per direction h_T [B, R] (, c_T [B, H]), then, when training,
// per direction the saved buffers hbuf, cbuf, gates [N, G] (the RNN's under zoneout: its
// activations), ghn [N, H], hm [N, R], and ln [N, norm_width] (the projected LSTM: r [N,
// H]) (empty tensors where a cell or the noise has none)]. Empty tensors stand for absent
// biases and for "all rows full". For the layer-normalised cells b_ih and b_hh are the
// biases after LN(x W_ih^T) and LN(U h). R = H but with W_hr.
std::vector<Tensor> forward(int64_t cell, Tensor x, Tensor lengths, std::vector<Tensor> h0s,
                            std::vector<Tensor> c0s, std::vector<Tensor> w_ih,
                            std::vector<Tensor> w_hh, std::vector<Tensor> b_ih,
                            std::vector<Tensor> b_hh, std::vector<Tensor> extra,
                            std::vector<Tensor> noise, bool training, int64_t bf16) {
  x = x.contiguous();
  const int64_t T = x.size(0), B = x.size(1), dirs = int64_t(w_ih.size());
  const int64_t kind = call_kind(cell, extra);
  const auto [H, R] = layer_sizes(kind, w_ih, w_hh, extra);
  const int64_t G = num_gates(kind) * H;
  const bool lstm = two_states(kind), normed = layer_normed(kind), proj = kind == LSTM_PROJ;
  TORCH_CHECK(!(proj && bf16), "rnnkit fused: the projected LSTM runs fp32 or fp64 products");
  const bool ghn_kept = cell == GRU || cell == GRU_LN;
  const int64_t ldn = norm_width(cell, H), stats = ldn - 3;
  const Schedule sc = schedule(lengths, T, B);
  // Padded positions are never written: they stay 0.
  Tensor out = sc.full() ? at::empty({T, B, dirs * R}, x.options())
                         : at::zeros({T, B, dirs * R}, x.options());
  const Tensor xp = packed_input(x, sc, sc.full() ? Tensor() : sc.index(0, true));  // [N, D]
  std::vector<Tensor> gx(dirs), hbuf(dirs), cbuf(dirs), ghn(dirs), scratch(dirs), whh(dirs);
  std::vector<Tensor> bhh(dirs), bih(dirs), h0(dirs), c0(dirs), hT(dirs), cT(dirs), hm(dirs);
  std::vector<Tensor> ln(dirs), whr(dirs), rbuf(dirs);
  const Noise nz = noise_args(noise, T, B, H, R, dirs, x.options());
  const Norms nm = norm_args(cell, proj ? std::vector<Tensor>{} : extra, dirs, H, x.options());
  for (int64_t d = 0; d < dirs; ++d)
    TORCH_CHECK(has_recurrent_weight(cell) || !nz.rmask[d].defined(),
                "rnnkit fused: recurrent dropout needs a recurrent weight");
  for (int64_t d = 0; d < dirs; ++d) {
    // Every step's input projection in one GEMM: [N, D] @ [D, G] (+ b_ih; the normed
    // cells add theirs after the norm, in input_norm).
    const Tensor b_proj = normed ? Tensor() : b_ih[d];
    if (bf16) {
      gx[d] = mm_bf16(xp, w_ih[d].t(), bf16);
      if (b_proj.defined() && b_proj.numel()) gx[d].add_(b_proj);
    } else {
      gx[d] = project(xp, w_ih[d], b_proj.defined() ? b_proj : at::empty({0}, x.options()));
    }
    bhh[d] = b_hh[d].numel() ? b_hh[d].to(x.scalar_type()).contiguous()
                             : at::zeros({G}, x.options());
    if (normed)
      bih[d] = b_ih[d].numel() ? b_ih[d].to(x.scalar_type()).contiguous()
                               : at::zeros({G}, x.options());
    whh[d] = w_hh[d].contiguous();
    const int64_t slots = training ? T + 1 : 2;
    hbuf[d] = at::empty({slots, B, R}, x.options());
    h0[d] = h0s[d].to(x.scalar_type()).contiguous();
    TORCH_CHECK(h0[d].numel() == B * R, "rnnkit fused: initial h must be [B, R]");
    hT[d] = h0[d].clone();  // rows of length 0 end where they start
    if (lstm) {
      cbuf[d] = at::empty({slots, B, H}, x.options());
      c0[d] = c0s[d].to(x.scalar_type()).contiguous();
      TORCH_CHECK(c0[d].numel() == B * H, "rnnkit fused: initial c must be [B, H]");
      cT[d] = c0[d].clone();
    }
    if (ghn_kept) ghn[d] = at::empty({training ? sc.N : B, H}, x.options());
    if (nz.rmask[d].defined()) hm[d] = at::empty({training ? sc.N : B, R}, x.options());
    if (proj) {
      whr[d] = extra[d].to(x.scalar_type()).contiguous();
      rbuf[d] = at::empty({training ? sc.N : B, H}, x.options());
    }
    if (normed) {
      ln[d] = at::empty({sc.N, ldn}, x.options());
      if (cell == GRU_LN) ln[d].narrow(1, stats + 2, 1).zero_();  // (no c: a column never written)
    }
    scratch[d] = at::empty({B, 4 * H}, x.options());
  }
  const bool overlap = overlap_directions(dirs, B, G, H);
  std::vector<Tensor> whh_bf16(dirs);  // undefined unless bf16 (see Bf16Mirror)
  if (bf16 && x.scalar_type() == at::kFloat)
    for (int64_t d = 0; d < dirs; ++d) whh_bf16[d] = round_bf16(whh[d], bf16);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "rnnkit_fused_forward", [&] {
    using S = scalar_t;
    for_directions(overlap, dirs, [&](int64_t d) {
      const MirrorGuard mirror(whh[d], whh_bf16[d]);
      const PackGuard pack(whh[d]);
      Dir<S> dir{T, B, H, R, d == 1, training, &sc, gx[d].data_ptr<S>(),
                 ghn_kept ? ghn[d].data_ptr<S>() : nullptr, hbuf[d].data_ptr<S>(),
                 lstm ? cbuf[d].data_ptr<S>() : nullptr, out.data_ptr<S>() + d * R, dirs * R,
                 scratch[d].data_ptr<S>()};
      attach_noise(dir, nz, d, hm[d]);
      if (proj) dir.w_hr = whr[d].data_ptr<S>(), dir.rbuf = rbuf[d].data_ptr<S>();
      if (normed) {
        dir.ln = ln[d].data_ptr<S>(), dir.ldn = ldn, dir.stats = stats;
        dir.g_hh = nm.g_hh[d].data_ptr<S>();
        if (cell == LSTM_LN) dir.g_c = nm.g_c[d].data_ptr<S>(), dir.b_c = nm.b_c[d].data_ptr<S>();
        input_norm<S>(dir.gx, dir.ln, sc.N, G, ldn, stats, nm.g_ih[d].data_ptr<S>(),
                      bih[d].data_ptr<S>());
      }
      dispatch_cell<S>(kind, [&](auto c) {
        auto run = [&](auto zone) {
          run_forward<S, decltype(c)::value, decltype(zone)::value>(
              dir, whh[d].data_ptr<S>(), bhh[d].data_ptr<S>(), h0[d].data_ptr<S>(),
              lstm ? c0[d].data_ptr<S>() : nullptr, hT[d].data_ptr<S>(),
              lstm ? cT[d].data_ptr<S>() : nullptr);
        };
        nz.zone ? run(std::true_type{}) : run(std::false_type{});
      });
    });
  });
  std::vector<Tensor> result{out};
  for (int64_t d = 0; d < dirs; ++d) {
    result.push_back(hT[d]);
    if (lstm) result.push_back(cT[d]);
  }
  if (training) {
    const Tensor none = at::empty({0}, x.options());
    for (int64_t d = 0; d < dirs; ++d) {
      result.push_back(hbuf[d]);
      result.push_back(lstm ? cbuf[d] : none);
      result.push_back(cell <= RNN_RELU && !nz.zone ? none : gx[d]);
      result.push_back(ghn_kept ? ghn[d] : none);
      result.push_back(hm[d].defined() ? hm[d] : none);
      result.push_back(normed ? ln[d] : proj ? rbuf[d] : none);
    }
  }
  return result;
}

// ---- Streaming: one inference step of one layer-direction (step, below).
// At B = 1 a step is two matrix-vector products that read every weight once: they are done
// here (dot_rows), in the calling thread, rather than by sgemm_, whose M = 1 call costs
// more than the read at these sizes and whose second thread, woken per call, costs more
// than it saves (docs/kernels.md). The gate math is forward_step's, row by row.
template <typename W, typename V, typename A>
void dot_rows_plain(const W* w, const V* v, int64_t K, int64_t r0, int64_t r1, A* out) {
  for (int64_t r = r0; r < r1; ++r) {  // out[r] += <w[r, :], v>
    const W* wr = w + r * K;
    A s = A(0);
#pragma omp simd reduction(+ : s)
    for (int64_t k = 0; k < K; ++k) s += A(wr[k]) * A(v[k]);
    out[r] += s;
  }
}

template <typename W, typename V, typename A>
void dot_rows(const W* w, const V* v, int64_t K, int64_t r0, int64_t r1, A* out) {
  dot_rows_plain(w, v, K, r0, r1, out);
}

#if defined(__AVX512F__)
// Four rows at a time, so that four independent FMA chains hide the FMA latency.
inline void dot_rows(const float* w, const float* v, int64_t K, int64_t r0, int64_t r1,
                     float* out) {
  const __mmask16 tail = __mmask16((1u << (K % 16)) - 1);
  const int64_t k_end = K - K % 16;
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4) {
    const float* w0 = w + r * K;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t k = 0; k < k_end; k += 16) {
      const __m512 x = _mm512_loadu_ps(v + k);
      a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + k), x, a0);
      a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + K + k), x, a1);
      a2 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + 2 * K + k), x, a2);
      a3 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + 3 * K + k), x, a3);
    }
    if (tail) {
      const __m512 x = _mm512_maskz_loadu_ps(tail, v + k_end);
      a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, w0 + k_end), x, a0);
      a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, w0 + K + k_end), x, a1);
      a2 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, w0 + 2 * K + k_end), x, a2);
      a3 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, w0 + 3 * K + k_end), x, a3);
    }
    out[r] += _mm512_reduce_add_ps(a0);
    out[r + 1] += _mm512_reduce_add_ps(a1);
    out[r + 2] += _mm512_reduce_add_ps(a2);
    out[r + 3] += _mm512_reduce_add_ps(a3);
  }
  dot_rows_plain(w, v, K, r, r1, out);
}
#endif

#if defined(__AVX512BF16__) && defined(__AVX512BW__)
// bf16 pairs multiplied and summed into fp32 lanes (vdpbf16ps), four rows at a time.
inline void dot_rows(const at::BFloat16* w, const at::BFloat16* v, int64_t K, int64_t r0,
                     int64_t r1, float* out) {
  const __mmask32 tail = __mmask32((uint64_t(1) << (K % 32)) - 1);
  const int64_t k_end = K - K % 32;
  auto load = [](const at::BFloat16* p) { return (__m512bh)_mm512_loadu_si512(p); };
  auto load_tail = [tail](const at::BFloat16* p) {
    return (__m512bh)_mm512_maskz_loadu_epi16(tail, p);
  };
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4) {
    const at::BFloat16* w0 = w + r * K;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t k = 0; k < k_end; k += 32) {
      const __m512bh x = load(v + k);
      a0 = _mm512_dpbf16_ps(a0, load(w0 + k), x);
      a1 = _mm512_dpbf16_ps(a1, load(w0 + K + k), x);
      a2 = _mm512_dpbf16_ps(a2, load(w0 + 2 * K + k), x);
      a3 = _mm512_dpbf16_ps(a3, load(w0 + 3 * K + k), x);
    }
    if (tail) {
      const __m512bh x = load_tail(v + k_end);
      a0 = _mm512_dpbf16_ps(a0, load_tail(w0 + k_end), x);
      a1 = _mm512_dpbf16_ps(a1, load_tail(w0 + K + k_end), x);
      a2 = _mm512_dpbf16_ps(a2, load_tail(w0 + 2 * K + k_end), x);
      a3 = _mm512_dpbf16_ps(a3, load_tail(w0 + 3 * K + k_end), x);
    }
    out[r] += _mm512_reduce_add_ps(a0);
    out[r + 1] += _mm512_reduce_add_ps(a1);
    out[r + 2] += _mm512_reduce_add_ps(a2);
    out[r + 3] += _mm512_reduce_add_ps(a3);
  }
  dot_rows_plain(w, v, K, r, r1, out);
}
#elif defined(__AVX2__) && defined(__FMA__)
// No bf16 dot product on this CPU (bf16 emulated, precision.py): eight bf16 values widened
// to fp32 by a 16-bit shift, multiplied and summed with FMAs in fp32, four rows at a time
// (the same products as vdpbf16ps; the plain loop's scalar conversions do not vectorise).
inline __m256 widen8(const at::BFloat16* p) {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(b), 16));
}

inline float hsum8(__m256 a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline void dot_rows(const at::BFloat16* w, const at::BFloat16* v, int64_t K, int64_t r0,
                     int64_t r1, float* out) {
  const int64_t k_end = K - K % 8;
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4) {
    const at::BFloat16* w0 = w + r * K;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t k = 0; k < k_end; k += 8) {
      const __m256 x = widen8(v + k);
      a0 = _mm256_fmadd_ps(widen8(w0 + k), x, a0);
      a1 = _mm256_fmadd_ps(widen8(w0 + K + k), x, a1);
      a2 = _mm256_fmadd_ps(widen8(w0 + 2 * K + k), x, a2);
      a3 = _mm256_fmadd_ps(widen8(w0 + 3 * K + k), x, a3);
    }
    float s[4] = {hsum8(a0), hsum8(a1), hsum8(a2), hsum8(a3)};
    for (int64_t k = k_end; k < K; ++k)
      for (int i = 0; i < 4; ++i) s[i] += float(w0[i * K + k]) * float(v[k]);
    for (int i = 0; i < 4; ++i) out[r + i] += s[i];
  }
  dot_rows_plain(w, v, K, r, r1, out);
}
#endif

// out[b, :R] += w [R, K] v[b, :K] for every batch row b (the weights re-read per row: the
// step is for small B).
template <typename W, typename A>
void gemv(const W* w, const W* v, int64_t B, int64_t K, int64_t R, A* out, int64_t ldo) {
  for (int64_t b = 0; b < B; ++b) dot_rows(w, v + b * K, K, 0, R, out + b * ldo);
}

// Contiguous t (float, double or bf16) into n values of T.
template <typename T>
void load_as(const Tensor& t, T* dst, int64_t n) {
  switch (t.scalar_type()) {
    case at::kFloat: std::copy_n(t.data_ptr<float>(), n, dst); return;
    case at::kDouble: std::copy_n(t.data_ptr<double>(), n, dst); return;
    case at::kBFloat16: std::copy_n(t.data_ptr<at::BFloat16>(), n, dst); return;
    default: TORCH_CHECK(false, "rnnkit fused step: unsupported dtype ", t.scalar_type());
  }
}

template <typename S>
void store_as(const S* src, Tensor& out) {
  if (out.scalar_type() == at::kBFloat16) {
    std::copy_n(src, out.numel(), out.data_ptr<at::BFloat16>());
  } else {
    std::copy_n(src, out.numel(), out.data_ptr<S>());
  }
}

// The step in compute dtype S with products on weights of dtype W (S, or bf16 for S float).
template <typename S, typename W>
void stream_step(int64_t cell, const Tensor& x, const Tensor& h, const Tensor& c,
                 const Tensor& w_ih, const Tensor& w_hh, const Tensor& b_ih, const Tensor& b_hh,
                 Tensor& y, Tensor& h_new, Tensor& c_new) {
  const int64_t D = w_ih.size(1), H = w_hh.size(1), G = num_gates(cell) * H, B = h.numel() / H;
  const bool lstm = cell == LSTM, rb = cell == GRU_RESET_BEFORE;
  std::vector<W> xv(B * D), hv(B * H);  // the products' right-hand sides
  std::vector<S> hs(B * H), cs(lstm ? B * H : 0), bhh(G, S(0));
  std::vector<S> gx(B * G, S(0)), gh(B * G, S(0)), hn(B * H), cn(lstm ? B * H : 0);
  load_as(x, xv.data(), B * D);
  load_as(h, hs.data(), B * H);
  std::copy(hs.begin(), hs.end(), hv.begin());
  if (lstm) load_as(c, cs.data(), B * H);
  if (b_ih.numel())
    for (int64_t b = 0; b < B; ++b) load_as(b_ih, gx.data() + b * G, G);
  if (b_hh.numel()) load_as(b_hh, bhh.data(), G);
  const W *wi = w_ih.data_ptr<W>(), *wh = w_hh.data_ptr<W>();
  // gx = x W_ih^T + b_ih, gh = h U^T (the reset-before GRU: U_rz only; U_n needs r first)
  gemv(wi, xv.data(), B, D, G, gx.data(), G);
  if (has_recurrent_weight(cell)) gemv(wh, hv.data(), B, H, rb ? 2 * H : G, gh.data(), G);
  const S* bh = bhh.data();
  for (int64_t b = 0; b < B; ++b) {
    S *a = gx.data() + b * G, *u = gh.data() + b * G;
    const S* hp = hs.data() + b * H;
    S* hb = hn.data() + b * H;
    if (cell == RNN_TANH || cell == RNN_RELU) {
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) hb[j] = act(a[j] + u[j] + bh[j], cell == RNN_RELU);
    } else if (lstm) {
      const S* cp = cs.data() + b * H;
      S* cb = cn.data() + b * H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const S i = sigmoid(a[j] + u[j] + bh[j]);
        const S f = sigmoid(a[H + j] + u[H + j] + bh[H + j]);
        const S g = tanh_(a[2 * H + j] + u[2 * H + j] + bh[2 * H + j]);
        const S o = sigmoid(a[3 * H + j] + u[3 * H + j] + bh[3 * H + j]);
        cb[j] = f * cp[j] + i * g;
        hb[j] = o * tanh_(cb[j]);
      }
    } else if (cell == MINGRU) {
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const S z = sigmoid(a[j]), ht = min_candidate(a[H + j]);
        hb[j] = hp[j] + z * (ht - hp[j]);
      }
    } else if (cell == MINLSTM) {
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const S i = sigmoid(a[j]), f = sigmoid(a[H + j]), ht = min_candidate(a[2 * H + j]);
        hb[j] = (f * hp[j] + i * ht) / (f + i);
      }
    } else if (cell == GRU) {
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const S r = sigmoid(a[j] + u[j] + bh[j]);
        const S z = sigmoid(a[H + j] + u[H + j] + bh[H + j]);
        const S n = tanh_(a[2 * H + j] + r * (u[2 * H + j] + bh[2 * H + j]));
        hb[j] = n + z * (hp[j] - n);
      }
    } else {  // reset-before: r h into hv, for the U_n product below
      W* rh = hv.data() + b * H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        a[j] = sigmoid(a[j] + u[j] + bh[j]);
        a[H + j] = sigmoid(a[H + j] + u[H + j] + bh[H + j]);
        rh[j] = W(a[j] * hp[j]);
      }
    }
  }
  if (rb) {
    gemv(wh + 2 * H * H, hv.data(), B, H, H, gh.data() + 2 * H, G);
    for (int64_t b = 0; b < B; ++b) {
      const S *a = gx.data() + b * G, *u = gh.data() + b * G, *hp = hs.data() + b * H;
      S* hb = hn.data() + b * H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const S n = tanh_(a[2 * H + j] + u[2 * H + j] + bh[2 * H + j]);
        hb[j] = n + a[H + j] * (hp[j] - n);
      }
    }
  }
  store_as(hn.data(), y);
  store_as(hn.data(), h_new);
  if (lstm) store_as(cn.data(), c_new);
}

// step(cell, x [.., D], h [.., H], c [.., H] or empty, w_ih [G, D], w_hh [G, H], b_ih, b_hh,
// y_bf16, state_bf16) -> [y [1, B, H], h' [1, B, H], c' [1, B, H] (or empty)]: one inference
// step of one layer-direction (T = 1, a given state), for streaming. x, h and c may be fp32,
// fp64 or bf16 (the states a layer under bf16 autocast returned); the weights are the
// layer's fp32/fp64 ones, or bf16 copies for bf16 products (under bf16 autocast: x and h are
// rounded to bf16, the products accumulate in fp32). Gates and states compute in fp32 (fp64
// for fp64 weights); y and the new states come back in bf16 where asked, else in that dtype.
std::vector<Tensor> step(int64_t cell, Tensor x, Tensor h, Tensor c, Tensor w_ih, Tensor w_hh,
                         Tensor b_ih, Tensor b_hh, bool y_bf16, bool state_bf16) {
  TORCH_CHECK(!layer_normed(cell), "rnnkit fused step: the layer-normalised cells stream "
              "through their composite step (fused.py)");
  const int64_t H = w_hh.size(1), B = h.numel() / H;
  w_ih = w_ih.contiguous();
  w_hh = w_hh.contiguous();
  TORCH_CHECK(x.numel() == B * w_ih.size(1) && w_ih.size(0) == num_gates(cell) * H,
              "rnnkit fused step: shapes");
  x = x.contiguous();
  h = h.contiguous();
  c = c.contiguous();
  b_ih = b_ih.contiguous();
  b_hh = b_hh.contiguous();
  const auto w = w_ih.scalar_type();
  const auto compute = w == at::kBFloat16 ? at::kFloat : w;
  const auto opts = x.options().dtype(compute);
  Tensor y = at::empty({1, B, H}, y_bf16 ? opts.dtype(at::kBFloat16) : opts);
  const auto state_opts = state_bf16 ? opts.dtype(at::kBFloat16) : opts;
  Tensor h_new = at::empty({1, B, H}, state_opts);
  Tensor c_new = at::empty({cell == LSTM ? 1 : 0, B, H}, state_opts);
  if (w == at::kBFloat16) {
    stream_step<float, at::BFloat16>(cell, x, h, c, w_ih, w_hh, b_ih, b_hh, y, h_new, c_new);
  } else if (w == at::kFloat) {
    stream_step<float, float>(cell, x, h, c, w_ih, w_hh, b_ih, b_hh, y, h_new, c_new);
  } else {
    TORCH_CHECK(w == at::kDouble, "rnnkit fused step: weights of dtype ", w);
    stream_step<double, double>(cell, x, h, c, w_ih, w_hh, b_ih, b_hh, y, h_new, c_new);
  }
  return {y, h_new, c_new};
}

// backward(cell, x, lengths, dout [T,B,dirs*R], dh_T, dc_T, saved (6 per direction, as
// forward returned them), extra (the forward's layer-norm parameters or W_hr), noise (the
// forward's), w_ih, w_hh, has_b_ih, has_b_hh, need_dx, bf16 (a Bf16Mode: dx and the weight
// gradients from products on operands rounded to bf16, each rounded once)) -> [dx (or
// empty), then per direction dh0, dc0 (or empty), dw_ih, dw_hh, db_ih (or empty), db_hh (or
// empty), and four more: for the layer-normalised cells dg_ih, dg_hh, dg_c, db_c (each
// empty where the forward's was), for the projected LSTM dW_hr and three empty]. The
// weight gradients are large GEMMs over all T*B rows after the reverse loop.
std::vector<Tensor> backward(int64_t cell, Tensor x, Tensor lengths, Tensor dout,
                             std::vector<Tensor> dhT, std::vector<Tensor> dcT,
                             std::vector<Tensor> saved, std::vector<Tensor> extra,
                             std::vector<Tensor> noise, std::vector<Tensor> w_ih,
                             std::vector<Tensor> w_hh, bool has_b_ih, bool has_b_hh,
                             bool need_dx, int64_t bf16) {
  x = x.contiguous();
  dout = dout.contiguous();
  const int64_t T = x.size(0), B = x.size(1), D = x.size(2), dirs = int64_t(w_ih.size());
  const int64_t kind = call_kind(cell, extra);
  const auto [H, R] = layer_sizes(kind, w_ih, w_hh, extra);
  const int64_t G = num_gates(kind) * H;
  const bool lstm = two_states(kind), normed = layer_normed(kind), proj = kind == LSTM_PROJ;
  TORCH_CHECK(!(proj && bf16), "rnnkit fused: the projected LSTM runs fp32 or fp64 products");
  const int64_t Gs = grad_width(kind, H);  // stored gate-gradient width
  TORCH_CHECK(dout.numel() == T * B * dirs * R, "rnnkit fused: dout must be [T, B, dirs * R]");
  const int64_t ldn = norm_width(cell, H), stats = ldn - 3;
  const Schedule sc = schedule(lengths, T, B);  // the forward's
  std::vector<Tensor> dG(dirs), dh(dirs), dc(dirs), scratch(dirs), whh(dirs), tmp(dirs);
  std::vector<Tensor> dhTs(dirs), dcTs(dirs), dh0(dirs), dc0(dirs), whr(dirs), dhr(dirs);
  const Noise nz = noise_args(noise, T, B, H, R, dirs, x.options());
  const Norms nm = norm_args(cell, proj ? std::vector<Tensor>{} : extra, dirs, H, x.options());
  for (int64_t d = 0; d < dirs; ++d) {
    dG[d] = at::empty({sc.N, Gs}, x.options());
    dh[d] = at::empty({2, B, R}, x.options());
    dhTs[d] = dhT[d].to(x.scalar_type()).contiguous();
    TORCH_CHECK(dhTs[d].numel() == B * R, "rnnkit fused: dL/dh_T must be [B, R]");
    dh0[d] = dhTs[d].clone();  // rows of length 0 pass it straight through
    if (lstm) {
      dc[d] = at::empty({B, H}, x.options());
      dcTs[d] = dcT[d].to(x.scalar_type()).contiguous();
      TORCH_CHECK(dcTs[d].numel() == B * H, "rnnkit fused: dL/dc_T must be [B, H]");
      dc0[d] = dcTs[d].clone();
    }
    scratch[d] = at::empty({B, 4 * H}, x.options());
    tmp[d] = nz.rmask[d].defined() ? at::empty({B, R}, x.options()) : Tensor();
    whh[d] = w_hh[d].contiguous();
    if (proj) {
      whr[d] = extra[d].to(x.scalar_type()).contiguous();
      dhr[d] = at::empty({sc.N, R}, x.options());
    }
  }
  const bool overlap = overlap_directions(dirs, B, G, H);
  std::vector<Tensor> whh_bf16(dirs);  // undefined unless bf16 (see Bf16Mirror)
  if (bf16 && x.scalar_type() == at::kFloat)
    for (int64_t d = 0; d < dirs; ++d) whh_bf16[d] = round_bf16(whh[d], bf16);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "rnnkit_fused_backward", [&] {
    using S = scalar_t;
    for_directions(overlap, dirs, [&](int64_t d) {
      const MirrorGuard mirror(whh[d], whh_bf16[d]);
      const PackGuard pack(whh[d]);
      Tensor hbuf = saved[6 * d], cbuf = saved[6 * d + 1], gates = saved[6 * d + 2];
      Tensor ghn = saved[6 * d + 3];
      Dir<S> dir{T, B, H, R, d == 1, true, &sc,
                 gates.numel() ? gates.data_ptr<S>() : nullptr,
                 ghn.numel() ? ghn.data_ptr<S>() : nullptr, hbuf.data_ptr<S>(),
                 cbuf.numel() ? cbuf.data_ptr<S>() : nullptr, nullptr, dirs * R, nullptr};
      Back<S> k{dG[d].data_ptr<S>(), dout.data_ptr<S>() + d * R, dirs * R,
                dh[d][0].data_ptr<S>(), dh[d][1].data_ptr<S>(),
                lstm ? dc[d].data_ptr<S>() : nullptr, scratch[d].data_ptr<S>(),
                tmp[d].defined() ? tmp[d].data_ptr<S>() : nullptr};
      attach_noise(dir, nz, d, saved[6 * d + 4]);
      if (proj) {
        dir.w_hr = whr[d].data_ptr<S>(), dir.rbuf = saved[6 * d + 5].data_ptr<S>();
        k.dhr = dhr[d].data_ptr<S>();
      }
      if (normed) {
        dir.ln = saved[6 * d + 5].data_ptr<S>(), dir.ldn = ldn, dir.stats = stats;
        dir.g_hh = nm.g_hh[d].data_ptr<S>();
        if (cell == LSTM_LN) dir.g_c = nm.g_c[d].data_ptr<S>(), dir.b_c = nm.b_c[d].data_ptr<S>();
      }
      dispatch_cell<S>(kind, [&](auto c) {
        auto run = [&](auto zone) {
          run_backward<S, decltype(c)::value, decltype(zone)::value>(
              dir, k, whh[d].data_ptr<S>(), dhTs[d].data_ptr<S>(),
              lstm ? dcTs[d].data_ptr<S>() : nullptr, dh0[d].data_ptr<S>(),
              lstm ? dc0[d].data_ptr<S>() : nullptr);
        };
        nz.zone ? run(std::true_type{}) : run(std::false_type{});
      });
    });
  });
  const Tensor tokens = sc.full() ? Tensor() : sc.index(0, true);  // [N] rows of x
  const Tensor xp = packed_input(x, sc, tokens), none = at::empty({0}, x.options());  // [N, D]
  Tensor dxp = need_dx ? at::zeros({sc.N, D}, x.options()) : none;           // [N, D]
  // Under bf16 every operand is rounded once (a strided view of a bf16 copy costs the
  // product nothing; converting each narrowed or transposed view apart costs a copy each).
  const auto low = [bf16](const Tensor& t) { return bf16 ? round_bf16(t, bf16) : t; };
  const auto prod = [bf16, &x](const Tensor& a, const Tensor& b) {  // a @ b in x's dtype
    return bf16 ? at::mm(a, b).to(x.scalar_type()) : mm_products(a, b);
  };
  const auto prod_into = [bf16](Tensor out, const Tensor& a, const Tensor& b) {
    if (bf16) {
      out.copy_(at::mm(a, b));  // a bf16 result (native) widened by the copy
    } else {
      mm_products_into(out, a, b);
    }
  };
  const Tensor xl = low(xp);
  std::vector<Tensor> result{none};
  for (int64_t d = 0; d < dirs; ++d) {
    result.push_back(dh0[d]);
    result.push_back(lstm ? dc0[d] : none);
    const Tensor g2d = dG[d];  // [N, Gs]
    // [N, G] = dL/d(x W_ih^T + b_ih); for the normed cells dL/d(x W_ih^T) through the
    // input's norm, from dpx (its gain and bias gradients are sums over the tokens)
    Tensor dgx = g2d.narrow(1, 0, G);
    std::vector<Tensor> norm_grads;  // dg_ih, dg_hh, dg_c, db_c: each its own (empty) tensor,
    for (int k = 0; k < 4; ++k) norm_grads.push_back(at::empty({0}, x.options()));  // no aliases
    if (proj) norm_grads[0] = prod(dhr[d].t(), saved[6 * d + 5]);  // dW_hr [R, N] @ [N, H]
    Tensor db_ih_normed, db_hh_normed;
    if (normed) {
      const Tensor L = saved[6 * d + 5];  // [N, ldn]
      const Tensor xhat = L.narrow(1, 0, G), hhat = L.narrow(1, G, G);
      const Tensor rstd_x = L.narrow(1, stats, 1);
      const Tensor dpx = g2d.narrow(1, 0, G);
      const Tensor dph = cell == LSTM_LN ? dpx
          : at::cat({g2d.narrow(1, 0, 2 * H), g2d.narrow(1, 3 * H, H)}, 1);
      norm_grads[0] = (dpx * xhat).sum(0);
      norm_grads[1] = (dph * hhat).sum(0);
      if (has_b_ih) db_ih_normed = dpx.sum(0);
      if (has_b_hh) db_hh_normed = dph.sum(0);
      if (cell == LSTM_LN) {
        const Tensor dyc = g2d.narrow(1, 2 * G, H), chat = L.narrow(1, 2 * G, H);
        norm_grads[2] = (dyc * chat).sum(0);
        if (extra[4 * d + 3].numel()) norm_grads[3] = dyc.sum(0);
      }
      const Tensor dxh = dpx * nm.g_ih[d];  // [N, G]
      dgx = rstd_x * (dxh - dxh.mean(1, true) - xhat * (dxh * xhat).mean(1, true));
    }
    const Tensor gl = low(g2d), dgxl = normed ? low(dgx) : gl.narrow(1, 0, G);
    // [N, H]: the h each token's recurrent products read: the state entering its step
    // (slot t, or t + 1 walking backwards), or under recurrent dropout the masked copy.
    // (None for the minimal cells, which have no such product.)
    const int64_t shift = d == 1 ? 1 : 0;
    const Tensor hprev = !has_recurrent_weight(cell) ? none
        : nz.rmask[d].defined() ? saved[6 * d + 4]
        : sc.full()
        ? saved[6 * d].narrow(0, shift, T).reshape({T * B, R})
        : saved[6 * d].view({(T + 1) * B, R}).index_select(0, sc.index(shift, false));
    if (need_dx) {  // [N,G] @ [G,D]
      if (bf16) {
        dxp.add_(prod(dgxl, low(w_ih[d])));
      } else if (x.scalar_type() == at::kFloat && gemm_backend_now() == GEMM_ONEDNN) {
        dxp.add_(onednn_linear(dgx.contiguous(), w_ih[d].t().contiguous(), Tensor()));
      } else {
        dxp.addmm_(dgx, w_ih[d]);
      }
    }
    result.push_back(prod(dgxl.t(), xl));  // dW_ih [G, D]
    Tensor dw_hh, db_hh;
    if (!has_recurrent_weight(cell)) {  // the [0, H] placeholder's gradient
      dw_hh = at::empty({0, H}, x.options());
    } else if (normed) {  // d(U h), stored after dpx (and the GRU's dph_n)
      dw_hh = prod(gl.narrow(1, cell == LSTM_LN ? G : 4 * H, G).t(), low(hprev));
      db_hh = db_hh_normed;
    } else if (cell == GRU) {  // the n block of dL/d(h U^T + b_h) is dan * r, stored at 3H
      const Tensor hl = low(hprev);
      dw_hh = at::empty({G, H}, x.options());
      prod_into(dw_hh.narrow(0, 0, 2 * H), gl.narrow(1, 0, 2 * H).t(), hl);
      prod_into(dw_hh.narrow(0, 2 * H, H), gl.narrow(1, 3 * H, H).t(), hl);
      if (has_b_hh)
        db_hh = at::cat({g2d.narrow(1, 0, 2 * H).sum(0), g2d.narrow(1, 3 * H, H).sum(0)});
    } else if (cell == GRU_RESET_BEFORE) {  // U_n multiplies r * h
      dw_hh = at::empty({G, H}, x.options());
      prod_into(dw_hh.narrow(0, 0, 2 * H), dgxl.narrow(1, 0, 2 * H).t(), low(hprev));
      const Tensor r = saved[6 * d + 2].narrow(1, 0, H);  // [N, H]
      prod_into(dw_hh.narrow(0, 2 * H, H), dgxl.narrow(1, 2 * H, H).t(), low(r * hprev));
    } else {
      dw_hh = prod(dgxl.t(), low(hprev));
    }
    const Tensor db_ih = normed ? (has_b_ih ? db_ih_normed : none)
        : (has_b_ih || (has_b_hh && !db_hh.defined())) ? dgx.sum(0) : none;
    if (has_b_hh && !db_hh.defined()) db_hh = db_ih.clone();
    result.push_back(dw_hh);
    result.push_back(has_b_ih ? db_ih : none);
    result.push_back(has_b_hh ? db_hh : none);
    for (const Tensor& g : norm_grads) result.push_back(g);
  }
  if (need_dx) {  // back to [T, B, D], padded positions 0
    result[0] = sc.full() ? dxp.view({T, B, D})
                          : at::zeros({T * B, D}, x.options())
                                .index_copy_(0, tokens, dxp)
                                .view({T, B, D});
  }
  return result;
}

// ---------------------------------------------------------------------------------------
// The language model's softmax down the columns of z^T [V, N] (logits computed transposed,
// see rnnkit/tasks/lm/loss.py): log-sum-exp per column, and the cross-entropy gradient in
// place. Each loop runs along a contiguous row of N, so it vectorises with fast_exp.
// z^T is fp32 or fp64 (computed in its own type), or bf16 under bf16 autocast: the logits
// as the bf16 product returned them, widened on read and computed in fp32 (lse, P before
// its rounding, db), with the bias b [V] (fp32) added on read: only the product is rounded,
// not z + b, and no fp32 copy of the logits is made.
// ---------------------------------------------------------------------------------------

// bf16 values are handled as their bits (uint16_t), so that the loops vectorise: widening is
// a shift, and narrowing rounds to nearest even in integer arithmetic (the values here are
// finite: fast_exp clamps).
inline float widen(uint16_t v) { return bits_to_float(uint32_t(v) << 16); }
inline float widen(float v) { return v; }
inline double widen(double v) { return v; }
template <typename Z, typename S>
inline Z narrow(S v) {
  if constexpr (std::is_same_v<Z, uint16_t>) {
    const uint32_t u = __builtin_bit_cast(uint32_t, v);
    return uint16_t((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
  } else {
    return v;
  }
}
const uint16_t* bf16_bits(const Tensor& t) {
  return reinterpret_cast<const uint16_t*>(t.data_ptr<at::BFloat16>());
}

void check_columns(const Tensor& zt, const char* what) {
  TORCH_CHECK(zt.dim() == 2 && zt.is_contiguous() && zt.device().is_cpu(), what,
              ": z^T must be a contiguous CPU matrix [V, N]");
}

// The compute dtype of z^T's values (fp32 for bf16) and the optional bias [V] in it.
at::ScalarType column_compute(const Tensor& zt, const std::optional<Tensor>& bias,
                              const char* what) {
  const auto s = zt.scalar_type() == at::kBFloat16 ? at::kFloat : zt.scalar_type();
  TORCH_CHECK(s == at::kFloat || s == at::kDouble, what, ": z^T must be fp32, fp64 or bf16");
  TORCH_CHECK(!bias || (bias->is_contiguous() && bias->numel() == zt.size(0) &&
                        bias->scalar_type() == s),
              what, ": bias must be contiguous [V] of the compute dtype");
  TORCH_CHECK(!bias || zt.scalar_type() == at::kBFloat16, what,
              ": a separate bias is for bf16 z^T only (fp32 logits include it)");
  return s;
}

// Columns [n0, n1) of z^T [V, N] (row stride N), plus bias[v] where given, -> lse[n0, n1):
// a pass for the column maxima, a pass for the sums of exp(z - max).
template <typename Z, typename S>
void logsumexp_columns(const Z* z, const S* bias, int64_t V, int64_t N, int64_t n0,
                       int64_t n1, S* lse) {
  const int64_t w = n1 - n0;
  std::vector<S> m(w, -std::numeric_limits<S>::infinity()), sum(w, S(0));
  S* mp = m.data();
  S* sp = sum.data();
  for (int64_t v = 0; v < V; ++v) {
    const Z* row = z + v * N + n0;
    const S b = bias ? bias[v] : S(0);
#pragma omp simd
    for (int64_t j = 0; j < w; ++j) {
      const S x = widen(row[j]) + b;
      mp[j] = x > mp[j] ? x : mp[j];
    }
  }
  for (int64_t v = 0; v < V; ++v) {
    const Z* row = z + v * N + n0;
    const S b = bias ? bias[v] : S(0);
#pragma omp simd
    for (int64_t j = 0; j < w; ++j) sp[j] += fast_exp(widen(row[j]) + b - mp[j]);
  }
  for (int64_t j = 0; j < w; ++j) lse[n0 + j] = mp[j] + std::log(sp[j]);
}

// One row of z^T in place: p = exp(z + b - lse) * scale along the columns (rounded once to
// Z); returns its sum in S.
template <typename Z, typename S>
S softmax_grad_row(Z* row, S b, const S* lse, int64_t N, S scale) {
  S acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t n = 0; n < N; ++n) {
    const S p = fast_exp(widen(row[n]) + b - lse[n]) * scale;
    row[n] = narrow<Z>(p);
    acc += p;
  }
  return acc;
}

// column_logsumexp(zt [V, N], bias [V] or None) -> lse [N] in the compute dtype; the
// threads split the columns.
Tensor column_logsumexp(Tensor zt, std::optional<Tensor> bias) {
  check_columns(zt, "column_logsumexp");
  const auto s = column_compute(zt, bias, "column_logsumexp");
  const int64_t V = zt.size(0), N = zt.size(1);
  Tensor lse = at::empty({N}, zt.options().dtype(s));
  auto run = [&](auto z, auto out) {
    using S = std::remove_pointer_t<decltype(out)>;
    const S* b = bias ? bias->data_ptr<S>() : nullptr;
    at::parallel_for(0, N, 64, [&](int64_t n0, int64_t n1) {
      logsumexp_columns(z, b, V, N, n0, n1, out);
    });
  };
  if (zt.scalar_type() == at::kBFloat16)
    run(bf16_bits(zt), lse.data_ptr<float>());
  else
    AT_DISPATCH_FLOATING_TYPES(zt.scalar_type(), "rnnkit_column_logsumexp", [&] {
      run(zt.data_ptr<scalar_t>(), lse.data_ptr<scalar_t>());
    });
  return lse;
}

// column_softmax_grad_(zt [V, N], lse [N], target [N], scale, bias [V] or None) -> db [V]:
// zt becomes dL/dz^T = (softmax down each column - onehot(target)) * scale in one pass,
// and db its row sums (in the compute dtype); the threads split the rows. For bf16 z^T each
// target entry is recomputed from its saved logit, so p - scale is rounded once.
Tensor column_softmax_grad_(Tensor zt, Tensor lse, Tensor target, double scale,
                            std::optional<Tensor> bias) {
  check_columns(zt, "column_softmax_grad_");
  const auto s = column_compute(zt, bias, "column_softmax_grad_");
  const int64_t V = zt.size(0), N = zt.size(1);
  TORCH_CHECK(lse.is_contiguous() && lse.numel() == N && lse.scalar_type() == s,
              "column_softmax_grad_: lse must be contiguous [N] of the compute dtype");
  TORCH_CHECK(target.is_contiguous() && target.numel() == N &&
                  target.scalar_type() == at::kLong,
              "column_softmax_grad_: target must be contiguous int64 [N]");
  const int64_t* t = target.data_ptr<int64_t>();
  for (int64_t n = 0; n < N; ++n)
    TORCH_CHECK(t[n] >= 0 && t[n] < V, "target ", t[n], " at position ", n,
                " is outside the vocabulary [0, ", V, ")");
  Tensor db = at::empty({V}, zt.options().dtype(s));
  auto run = [&](auto z, auto dbp) {
    using Z = std::remove_pointer_t<decltype(z)>;
    using S = std::remove_pointer_t<decltype(dbp)>;
    const S* l = lse.data_ptr<S>();
    const S* b = bias ? bias->data_ptr<S>() : nullptr;
    const auto sc = S(scale);
    constexpr bool rounded = !std::is_same_v<Z, S>;  // bf16 z^T: P is rounded as stored
    std::vector<S> logit(rounded ? N : 0);  // its target logits, before the pass overwrites them
    if constexpr (rounded)
      for (int64_t n = 0; n < N; ++n) logit[n] = widen(z[t[n] * N + n]) + (b ? b[t[n]] : S(0));
    at::parallel_for(0, V, 16, [&](int64_t v0, int64_t v1) {
      for (int64_t v = v0; v < v1; ++v)
        dbp[v] = softmax_grad_row(z + v * N, b ? b[v] : S(0), l, N, sc);
    });
    for (int64_t n = 0; n < N; ++n) {
      if constexpr (rounded)
        z[t[n] * N + n] = narrow<Z>(fast_exp(logit[n] - l[n]) * sc - sc);
      else
        z[t[n] * N + n] -= sc;
      dbp[t[n]] -= sc;
    }
  };
  if (zt.scalar_type() == at::kBFloat16)
    run(const_cast<uint16_t*>(bf16_bits(zt)), db.data_ptr<float>());
  else
    AT_DISPATCH_FLOATING_TYPES(zt.scalar_type(), "rnnkit_column_softmax_grad", [&] {
      run(zt.data_ptr<scalar_t>(), db.data_ptr<scalar_t>());
    });
  return db;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "fused RNN layer forward (see fused.py)");
  m.def("step", &step, "one fused inference step of one layer-direction (see fused.py)");
  m.def("backward", &backward, "fused RNN layer backward through time (see fused.py)");
  m.def("column_logsumexp", &column_logsumexp, "log-sum-exp down the columns of z^T [V, N]",
        py::arg("zt"), py::arg("bias") = py::none());
  m.def("column_softmax_grad_", &column_softmax_grad_,
        "in place: z^T [V, N] -> (softmax down the columns - onehot) * scale; returns row sums",
        py::arg("zt"), py::arg("lse"), py::arg("target"), py::arg("scale"),
        py::arg("bias") = py::none());
  m.def("set_gemm_backend", &set_gemm_backend, "the library of the fp32 products (see gemm.py)");
  m.def("gemm_backend", &gemm_backend, "the library of the fp32 products now");
  m.def("gemm_available", &gemm_available, "whether a GEMM backend can run here");
  m.def("gemm_time", &gemm_time, "seconds of each product of one probe round under a GEMM backend");
}
