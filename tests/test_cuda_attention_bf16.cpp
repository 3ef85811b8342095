// The bf16 flash-attention forward (kernels/cuda/attention_flash_bf16.cu) and backward
// (attention_flash_bf16_backward.cu) against the CPU reference. The forward: with a bound derived from what the kernel does to the numbers:
//  - q, k, v are rounded to bf16 on the way into shared memory, so the reference runs in
//    double on the same rounded values; S = q.k / sqrt(d) is then exact products summed in
//    fp32 on the GPU (~1e-7 relative).
//  - P is rounded to bf16 (relative error at most 2^-8) where it multiplies V, while the
//    row sum l adds the unrounded fp32 P. So out_i = sum_j p_ij (1 + e_ij) v_j with
//    |e_ij| <= 2^-8: each element is within 2^-8 sum_j p_ij |v_j| of the reference, which
//    the test computes by running the reference once more on |v| (same q, k: same p).
//    Plus fp32 slack (exp, the sums: 1e-5 of the same sum, 1e-6 absolute).
//  - lse is fp32 softmax statistics only: 1e-5 relative.
// A wrong fragment index, a key tile misaligned with its mask, or a P paired with the wrong V
// rows is off by the size of the output itself. Shapes: partial query and key tiles, every
// supported head dim (32, 64, 128, 256), several heads, the CIFAR-10 model's single head of
// 256 at L = 256, and L = 1024 with 4 heads of 32. Skips without a GPU; emulated in CI.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "engine/ops.h"
#include "engine/ops/op_util.h"
#include "kernels/bf16.h"
#include "kernels/cpu/attention.h"
#include "tests/test_util.h"

#if DDPM_WITH_CUDA
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/attention_autotune.cuh"
#include "kernels/cuda/device_info.cuh"
#include "kernels/cuda/gemm_sm90.cuh"
#include "tests/require_sm90a.h"
#endif

namespace ddpm {
namespace {

struct Case {
  int64_t b, l, c, heads;
  float boost = 1.0f;  // keys from L / 2 on are multiplied by this (see qkv_of)
};

std::string describe(const Case& c) {
  char boost[32] = "";
  if (c.boost != 1.0f) std::snprintf(boost, sizeof boost, ", late keys x%g", c.boost);
  return "B" + std::to_string(c.b) + " L" + std::to_string(c.l) + " C" + std::to_string(c.c) +
         " heads " + std::to_string(c.heads) + boost;
}

// Uniform q, k, v in [-1.5, 1.5]; with a boost, the keys of the second half of the sequence
// scaled up, so that the scores jump past the first key tiles' by more than the forward lets
// a row's running max lag (flash::kStaleMaxLog2 = 8 in base 2; the boosts below take the
// typical score from about 1 to 6 - 9): the forward must then move it and rescale O.
std::vector<float> qkv_of(const Case& c, const AttentionShape& s, uint64_t stream) {
  std::vector<float> qkv =
      test::random_tensor(Shape{s.b * s.l * 3 * s.c}, stream, DType::F32, 1.5)
          .to_vector<float>();
  for (int64_t i = 0; i < s.b * s.l; ++i)
    if (i % s.l >= s.l / 2)
      for (int64_t ch = s.c; ch < 2 * s.c; ++ch) qkv[i * 3 * s.c + ch] *= c.boost;
  return qkv;
}

AttentionShape shape_of(const Case& c) {
  AttentionShape s;
  s.b = c.b;
  s.l = c.l;
  s.c = c.c;
  s.heads = c.heads;
  return s;
}

std::vector<Case> cases() {
  std::vector<Case> all = {{2, 9, 32, 1},    // d 32: one partial query tile, one key tile
                           {1, 70, 128, 2},  // d 64: 2 query tiles, 2 key tiles, both partial
                           {2, 77, 128, 1},  // d 128: 2 blocks of 64 rows, the second partial
                           {1, 100, 256, 1}, // d 256: 32-key tiles, 4 of them
                           {1, 130, 96, 3},  // d 32, 3 heads, 3 query tiles
                           {1, 256, 256, 1},  // the CIFAR-10 U-Net's 16x16 attention
                           {1, 200, 64, 1, 6.0f},    // d 64: the max moves in key tile 1
                           {1, 100, 256, 1, 8.0f},   // d 256: in key tile 1 (of 32)
                           {2, 40, 128, 2}};  // d 64, 2 heads of 2 samples: both strides
  if (!test::small_shapes_only()) {
    all.push_back({4, 256, 256, 1});   // ... at a larger batch
    all.push_back({1, 1024, 128, 4});  // a 32x32 map, 4 heads of 32
  }
  return all;
}

#if DDPM_WITH_CUDA
struct GpuRun {
  std::vector<float> out, lse;
};

// The mma.sync forward on fp32 tensors (its conversions of q, k, v to bf16 included).
GpuRun run_mma_sync(const AttentionShape& s, const std::vector<float>& qkv) {
  const Tensor x = Tensor::from_vector(Shape{s.b, s.l, 3 * s.c}, qkv, Device::CUDA);
  const Tensor out = Tensor::empty(Shape{s.b, s.l, s.c}, DType::F32, Device::CUDA);
  const Tensor lse = Tensor::empty(Shape{s.b, s.heads, s.l}, DType::F32, Device::CUDA);
  cuda::attention_flash_bf16_forward(s, x.data<float>(), out.data<float>(), lse.data<float>());
  return {out.to(Device::CPU).to_vector<float>(), lse.to(Device::CPU).to_vector<float>()};
}

// The wgmma forward, on bf16 tensors: qkv rounded to bf16 on the way in (as the mma.sync
// forward rounds it in its kernel), out widened from bf16 on the way out.
GpuRun run_wgmma(const AttentionShape& s, const std::vector<float>& qkv) {
  const Tensor x =
      cast(Tensor::from_vector(Shape{s.b, s.l, 3 * s.c}, qkv, Device::CUDA), DType::BF16);
  const Tensor out = Tensor::empty(Shape{s.b, s.l, s.c}, DType::BF16, Device::CUDA);
  const Tensor lse = Tensor::empty(Shape{s.b, s.heads, s.l}, DType::F32, Device::CUDA);
  cuda::attention_flash_wgmma_forward(s, detail::bf16_bits(x), detail::bf16_bits(out),
                                      lse.data<float>());
  return {cast(out, DType::F32).to(Device::CPU).to_vector<float>(),
          lse.to(Device::CPU).to_vector<float>()};
}

// Every case `supports` takes, run by `run` against the reference in double on the rounded
// operands, within the bound above; `stored_bf16`: out is stored in bf16, one rounding more
// (2^-8 of the value, bf16's unit roundoff). Twice, for the same bits.
template <class Run, class Supports>
void check_forward(Run run, Supports supports, bool stored_bf16) {
  uint64_t stream = 40;
  int checked = 0;
  for (const Case& c : cases()) {
    SCOPED_TRACE(describe(c));
    const AttentionShape s = shape_of(c);
    const std::vector<float> qkv = qkv_of(c, s, stream++);
    if (!supports(s)) continue;
    ++checked;
    // The reference on the rounded operands, in double; and once more with |v| for the bound.
    std::vector<double> rounded(qkv.size()), magnitude(qkv.size());
    for (size_t i = 0; i < qkv.size(); ++i) {
      rounded[i] = round_to_bf16(qkv[i]);
      const bool is_v = static_cast<int64_t>(i % (3 * s.c)) >= 2 * s.c;
      magnitude[i] = is_v ? std::abs(rounded[i]) : rounded[i];
    }
    std::vector<double> ref(s.b * s.l * s.c), ref_lse(s.b * s.heads * s.l), mag(ref.size()),
        mag_lse(ref_lse.size());
    cpu::attention_forward<double>(s, rounded.data(), ref.data(), ref_lse.data());
    cpu::attention_forward<double>(s, magnitude.data(), mag.data(), mag_lse.data());

    const GpuRun gpu = run(s, qkv);
    double worst = 0;  // the largest error as a fraction of its bound
    for (size_t i = 0; i < ref.size(); ++i) {
      double bound = (std::ldexp(1.0, -8) + 1e-5) * mag[i] + 1e-6;
      if (stored_bf16) bound += std::ldexp(std::abs(ref[i]) + bound, -8);
      const double err = std::abs(gpu.out[i] - ref[i]);
      worst = std::max(worst, err / bound);
      ASSERT_LE(err, bound) << "out element " << i << ": " << gpu.out[i] << " vs " << ref[i];
    }
    for (size_t i = 0; i < ref_lse.size(); ++i)
      ASSERT_NEAR(gpu.lse[i], ref_lse[i], 1e-5 * std::max(1.0, std::abs(ref_lse[i])))
          << "lse element " << i;
    std::printf("%s: worst output error %.2f of its bf16 bound\n", describe(c).c_str(), worst);
    // The kernel has no atomics and a fixed order: the same bits every run.
    const GpuRun again = run(s, qkv);
    EXPECT_EQ(again.out, gpu.out);
    EXPECT_EQ(again.lse, gpu.lse);
  }
  EXPECT_GE(checked, 5) << "the cases left too few shapes this kernel supports";
}
#endif

TEST(CudaAttentionBf16, ForwardIsTheReferenceWithinBf16Rounding) {
  REQUIRE_GPU();
#if DDPM_WITH_CUDA
  check_forward(run_mma_sync, cuda::attention_flash_bf16_supports, false);
#endif
}

// The forward on Hopper's wgmma (attention_flash_wgmma.cu): the same numbers as the mma.sync
// forward's (q, k, v in bf16, P rounded to bf16 where it multiplies V, fp32 sums), so the
// same bound, and out's rounding as it is stored in bf16. Every case but the head dim of 32
// (its rows are not a 128-byte column); under the emulation the wgmma products, the
// register form's A fragments and the copy engine's boxes are emulated from the PTX ISA
// (tests/cuda_emulation/ptx_sm90.h), so a GPU is the final word.
TEST(CudaAttentionBf16, WgmmaForwardIsTheReferenceWithinBf16Rounding) {
  REQUIRE_SM90A();
#if DDPM_WITH_CUDA
  check_forward(run_wgmma, cuda::attention_flash_wgmma_supports, true);
#endif
}

// The backward (kernels/cuda/attention_flash_bf16_backward.cu) against the CPU reference in
// double on the same rounded q, k, v and dout, from the reference's own out and lse (the
// kernel's inputs, so that only the backward's arithmetic is measured). Each product's
// first operand is rounded to bf16 (relative 2^-8) where it becomes an mma operand:
//  - dv_j = sum_i P_ij dout_i: within 2^-8 sum_i P_ij |dout_i| (the reference on |dout|);
//  - dq_i = sum_j dS_ij k_j and dk_j = sum_i dS_ij q_i: within 2^-8 sum |dS| |k| (|q|), plus
//    the fp32 rounding of dS = P (dP - delta) scale before it is rounded, which cancellation
//    can make large next to dS itself: 1e-5 sum P scale (|dP| + |delta|) |k| (|q|). Both
//    sums come from P, dP and dS recomputed here in double (bounds()).
// P itself is fp32 arithmetic on large numbers: P = exp2(S scale log2 e - lse log2 e), S
// summed in fp32 by the tensor cores (d / 16 mma steps, each rounding its partial: at most
// (d / 8) 2^-24 sum_c |q_c k_c|, doubled for truncating hardware), the exponent's two
// roundings (2^-24 of |S| scale and 2^-23 of |lse|) and exp2f's (2 ulp): a relative error
// e_ij of P_ij, as large as 1e-4 where boosted keys make the scores ~70. It moves dS_ij by
// e_ij P_ij scale |dP_ij - delta_i| and dv_j by e_ij P_ij |dout_i| (bd.p_error).
// Plus fp32 slack (1e-5 of the sums, 1e-6 absolute) and determinism: two runs, same bits.
// A wrong fragment, or a warp multiplying its partner's columns as its own, is off by the
// size of the gradient itself.
//
// On bf16 tensors (activations bf16: out, dout, dqkv stored as bf16), with dq by GEMM (dS
// stored by the dkv kernel, dq = dS k by cuBLAS), two roundings more:
//  - out is stored in bf16 (relative 2^-8), so delta_i = dout_i . out_i moves by up to
//    2^-8 sum_c |dout_ic out_ic|, and dS_ij with it by P_ij scale times that: on dq_i
//    sum_j P_ij scale e_i |k_j|, on dk_j sum_i P_ij scale e_i |q_i| (bd.delta);
//  - dqkv is stored in bf16: 2^-8 of the value, which is within the bound of the reference.
// dS itself is the same bf16 the dkv kernel multiplies by q: the dq bound above holds as is.
//
// The GEMM path (attention_gemm.cu) rounds P to bf16 before dS = P (dP - delta) scale
// is formed, so dS moves by 2^-8 P scale |dP - delta| more (2^-8 of bd.slack), and its
// delta is sum_j P dP on the rounded P (2^-7 sum_j P |dP| in bd.delta, for both); its dP is
// cuBLAS's fp32 sum of d products, within (d + 2) 2^-24 sum_c |dout_c v_c|, which moves dS
// and delta with it (bd.dp_error).
struct Bounds {
  std::vector<double> rounding, slack, delta;  // packed like dqkv; the v part unused
  std::vector<double> p_error;                 // packed like dqkv, all three parts
  std::vector<double> p, p_rel;                // P_ij and e_ij, (B, H, L, L)
  std::vector<double> dp_error;                // the GEMM path's, packed like dqkv
};

Bounds bounds(const AttentionShape& s, const std::vector<double>& qkv,
              const std::vector<double>& dout, const std::vector<double>& lse) {
  const int64_t d = s.head_dim(), stride = 3 * s.c;
  const double scale = 1.0 / std::sqrt(double(d));
  const std::vector<double> zeros(qkv.size(), 0.0);
  Bounds bd{zeros, zeros, zeros, zeros, {}, {}, zeros};
  bd.p.resize(s.b * s.heads * s.l * s.l);
  bd.p_rel.resize(bd.p.size());
  std::vector<double> delta_error(s.l);  // of each query's delta (see the top)
  std::vector<double> dp_error(s.l * s.l), dp_error_row(s.l);  // of dP, the GEMM path's
  std::vector<double> p(s.l * s.l), ds_abs(s.l * s.l), cancel(s.l * s.l), p_rel(s.l * s.l);
  for (int64_t b = 0; b < s.b; ++b)
    for (int64_t h = 0; h < s.heads; ++h) {
      const auto at = [&](int64_t token, int part, int64_t c) {
        return (b * s.l + token) * stride + part * s.c + h * d + c;
      };
      for (int64_t i = 0; i < s.l; ++i) {
        double delta = 0, p_dp = 0;
        std::vector<double> dp(s.l), out(d, 0.0);
        const double row_lse = lse[(b * s.heads + h) * s.l + i];
        dp_error_row[i] = 0;
        for (int64_t j = 0; j < s.l; ++j) {
          double dot = 0, g = 0, dot_abs = 0, g_abs = 0;
          for (int64_t c = 0; c < d; ++c) {
            dot += qkv[at(i, 0, c)] * qkv[at(j, 1, c)];
            dot_abs += std::abs(qkv[at(i, 0, c)] * qkv[at(j, 1, c)]);
            g += dout[(b * s.l + i) * s.c + h * d + c] * qkv[at(j, 2, c)];
            g_abs += std::abs(dout[(b * s.l + i) * s.c + h * d + c] * qkv[at(j, 2, c)]);
          }
          p[i * s.l + j] = std::exp(dot * scale - row_lse);
          p_rel[i * s.l + j] = std::ldexp((d + 2.0) * scale * dot_abs, -24) +
                               std::ldexp(std::abs(row_lse), -23) + std::ldexp(1.0, -21);
          dp_error[i * s.l + j] = std::ldexp((d + 2.0) * g_abs, -24);
          dp_error_row[i] += p[i * s.l + j] * dp_error[i * s.l + j];
          p_dp += p[i * s.l + j] * std::abs(g);
          const int64_t flat = ((b * s.heads + h) * s.l + i) * s.l + j;
          bd.p[flat] = p[i * s.l + j];
          bd.p_rel[flat] = p_rel[i * s.l + j];
          dp[j] = g;
          delta += p[i * s.l + j] * g;
          for (int64_t c = 0; c < d; ++c) out[c] += p[i * s.l + j] * qkv[at(j, 2, c)];
        }
        // bf16 tensors: out stored in bf16; the GEMM path: delta = sum_j P dP on P rounded
        // (2^-8, and e_ij < 2^-8 more at most)
        delta_error[i] = std::ldexp(p_dp, -7);
        for (int64_t c = 0; c < d; ++c)
          delta_error[i] += std::ldexp(std::abs(dout[(b * s.l + i) * s.c + h * d + c] * out[c]), -8);
        for (int64_t j = 0; j < s.l; ++j) {
          ds_abs[i * s.l + j] = std::abs(p[i * s.l + j] * (dp[j] - delta) * scale);
          cancel[i * s.l + j] = p[i * s.l + j] * scale * (std::abs(dp[j]) + std::abs(delta));
        }
      }
      for (int64_t i = 0; i < s.l; ++i)
        for (int64_t j = 0; j < s.l; ++j)
          for (int64_t c = 0; c < d; ++c) {
            const double k = std::abs(qkv[at(j, 1, c)]), q = std::abs(qkv[at(i, 0, c)]);
            const double moved = p[i * s.l + j] * scale * delta_error[i];  // of dS_ij
            const double e = p_rel[i * s.l + j];  // of P_ij
            bd.rounding[at(i, 0, c)] += ds_abs[i * s.l + j] * k;  // dq_i
            bd.slack[at(i, 0, c)] += cancel[i * s.l + j] * k;
            bd.delta[at(i, 0, c)] += moved * k;
            bd.p_error[at(i, 0, c)] += e * cancel[i * s.l + j] * k;
            bd.rounding[at(j, 1, c)] += ds_abs[i * s.l + j] * q;  // dk_j
            bd.slack[at(j, 1, c)] += cancel[i * s.l + j] * q;
            bd.delta[at(j, 1, c)] += moved * q;
            bd.p_error[at(j, 1, c)] += e * cancel[i * s.l + j] * q;
            bd.p_error[at(j, 2, c)] +=  // dv_j
                e * p[i * s.l + j] * std::abs(dout[(b * s.l + i) * s.c + h * d + c]);
            // the GEMM path: dP in fp32 by cuBLAS, and delta = sum_j P dP with it
            const double dp_moved =
                p[i * s.l + j] * scale * (dp_error[i * s.l + j] + dp_error_row[i]);
            bd.dp_error[at(i, 0, c)] += dp_moved * k;
            bd.dp_error[at(j, 1, c)] += dp_moved * q;
          }
    }
  return bd;
}

// Both tensor kinds, the same data: fp32 (converted in the kernels, dq by its kernel) and
// bf16 with dq by GEMM (the op's choice where L <= 6 d; tests/test_cuda_bf16_storage.cpp
// runs the op on both sides of that line). The bf16 run writes dqkv outright into NaNs
// (GradWrite::Assign), so a row the GEMM or the dkv kernel missed, or a dS element store_ds
// missed, shows.
#if DDPM_WITH_CUDA
// `wgmma`: the bf16 run on the backward on wgmma (attention_flash_wgmma_backward.cu, dq by
// GEMM too: the same roundings, so the same bounds), on the shapes it supports.
void check_backward(bool bf16_tensors, bool wgmma = false) {
  uint64_t stream = 80;
  int checked = 0;
  for (const Case& c : cases()) {
    SCOPED_TRACE(describe(c));
    const AttentionShape s = shape_of(c);
    if (wgmma && !cuda::attention_flash_wgmma_supports(s)) {
      stream += 2;  // the same data as the other runs for the cases that follow
      continue;
    }
    ++checked;
    const int64_t n_qkv = s.b * s.l * 3 * s.c, n_out = s.b * s.l * s.c;
    std::vector<float> qkv = qkv_of(c, s, stream++);
    std::vector<float> dout =
        test::random_tensor(Shape{n_out}, stream++, DType::F32).to_vector<float>();
    for (float& x : qkv) x = round_to_bf16(x);  // the kernel's rounding is then exact
    for (float& x : dout) x = round_to_bf16(x);
    const std::vector<double> qkv_d(qkv.begin(), qkv.end()), dout_d(dout.begin(), dout.end());
    std::vector<double> dout_abs(dout_d);
    for (double& x : dout_abs) x = std::abs(x);
    std::vector<double> out(n_out), lse(s.b * s.heads * s.l), grad(n_qkv, 0.0), mag(n_qkv, 0.0);
    cpu::attention_forward<double>(s, qkv_d.data(), out.data(), lse.data());
    cpu::attention_backward<double>(s, qkv_d.data(), lse.data(), dout_d.data(), grad.data());
    cpu::attention_backward<double>(s, qkv_d.data(), lse.data(), dout_abs.data(), mag.data());
    const Bounds bd = bounds(s, qkv_d, dout_d, lse);

    {
      SCOPED_TRACE(bf16_tensors ? "bf16 tensors, dq by GEMM" : "fp32 tensors, dq kernel");
      const auto run = [&] {
        const Tensor x = Tensor::from_vector(Shape{n_qkv}, qkv, Device::CUDA);
        const Tensor o = Tensor::from_vector(
            Shape{n_out}, std::vector<float>(out.begin(), out.end()), Device::CUDA);
        const Tensor l = Tensor::from_vector(Shape{static_cast<int64_t>(lse.size())},
                                             std::vector<float>(lse.begin(), lse.end()),
                                             Device::CUDA);
        const Tensor g = Tensor::from_vector(Shape{n_out}, dout, Device::CUDA);
        const Tensor delta = Tensor::empty(Shape{s.b * s.heads * s.l}, DType::F32, Device::CUDA);
        if (!bf16_tensors) {
          const Tensor dx = Tensor::zeros(Shape{n_qkv}, DType::F32, Device::CUDA);
          cuda::attention_flash_bf16_backward(s, x.data<float>(), o.data<float>(),
                                              l.data<float>(), g.data<float>(), dx.data<float>(),
                                              delta.data<float>());
          return dx.to(Device::CPU).to_vector<float>();
        }
        const Tensor x16 = cast(x, DType::BF16), o16 = cast(o, DType::BF16);
        const Tensor g16 = cast(g, DType::BF16);
        const Tensor dx16 = cast(Tensor::from_vector(Shape{n_qkv}, std::vector<float>(n_qkv, NAN),
                                                     Device::CUDA),
                                 DType::BF16);
        const Tensor ds = Tensor::empty(Shape{cuda::attention_flash_bf16_ds_elements(s)},
                                        DType::BF16, Device::CUDA);
        if (wgmma)
          cuda::attention_flash_wgmma_backward(
              s, detail::bf16_bits(x16), detail::bf16_bits(o16), l.data<float>(),
              detail::bf16_bits(g16), detail::bf16_bits(dx16), delta.data<float>(),
              detail::bf16_bits(ds), GradWrite::Assign);
        else
          cuda::attention_flash_bf16_backward(
              s, detail::bf16_bits(x16), detail::bf16_bits(o16), l.data<float>(),
              detail::bf16_bits(g16), detail::bf16_bits(dx16), delta.data<float>(),
              GradWrite::Assign, detail::bf16_bits(ds));
        return cast(dx16, DType::F32).to(Device::CPU).to_vector<float>();
      };
      const std::vector<float> got = run();
      double worst[3] = {0, 0, 0};  // dq, dk, dv: the largest error as a fraction of its bound
      for (int64_t i = 0; i < n_qkv; ++i) {
        const int which = static_cast<int>((i % (3 * s.c)) / s.c);
        double bound = (which == 2 ? (std::ldexp(1.0, -8) + 1e-5) * mag[i] + 1e-6
                                   : std::ldexp(1.0, -8) * bd.rounding[i] +
                                         1e-5 * (bd.rounding[i] + bd.slack[i]) + 1e-6) +
                       bd.p_error[i];
        if (bf16_tensors) {
          if (which != 2) bound += bd.delta[i];
          bound += std::ldexp(std::abs(grad[i]) + bound, -8);  // dqkv stored in bf16
        }
        const double err = std::abs(got[i] - grad[i]);
        worst[which] = std::max(worst[which], err / bound);
        ASSERT_LE(err, bound) << "d" << "qkv"[which] << " at " << i << ": " << got[i] << " vs "
                              << grad[i];
      }
      std::printf("%s, %s: worst error of dq, dk, dv %.2f, %.2f, %.2f of their bf16 bounds\n",
                  describe(c).c_str(),
                  wgmma ? "wgmma" : bf16_tensors ? "bf16 tensors" : "fp32 tensors", worst[0],
                  worst[1], worst[2]);
      EXPECT_EQ(run(), got);
    }
  }
  EXPECT_GE(checked, 5) << "the cases left too few shapes this kernel supports";
}
#endif

TEST(CudaAttentionBf16, BackwardIsTheReferenceWithinBf16Rounding) {
  REQUIRE_GPU();
#if DDPM_WITH_CUDA
  check_backward(false);
#endif
}

// (Under ThreadSanitizer the emulation runs the fp32 one only: the dk/dv kernel on bf16
// rows, with its dS stores and the dq GEMM, runs there in the op's test,
// CudaBf16Storage.AttentionReadsBf16ActivationsAsTheyAre; tests/cuda_emulation/CMakeLists.txt.)
TEST(CudaAttentionBf16, BackwardOnBf16TensorsWithDqByGemmIsTheReference) {
  REQUIRE_GPU();
#if DDPM_WITH_CUDA
  check_backward(true);
#endif
}

// The backward on Hopper's wgmma: the dk/dv kernel's products by wgmma, P^T and dS^T from
// the accumulators into the register form, dS^T stored for dq by GEMM (the emulation's
// reading of the PTX ISA, as the forward's).
TEST(CudaAttentionBf16, WgmmaBackwardIsTheReferenceWithinBf16Rounding) {
  REQUIRE_SM90A();
#if DDPM_WITH_CUDA
  check_backward(true, true);
#endif
}

// The GEMM path (kernels/cuda/attention_gemm.cu), forward then backward, on bf16
// tensors, against the same double reference. The forward's out_ic is sum_j P~_ij v_jc with
// P~ = bf16(P (1 + e_ij)): within (2^-8 + 1e-5) sum_j P |v| (the reference on |v|) plus
// sum_j e_ij P_ij |v_jc| plus 2^-8 of the value (out stored in bf16) plus 1e-6; lse (fp32
// from S's fp32 sums) within max_j e_ij. The backward's bounds are the flash kernels' on bf16
// tensors with the GEMM path's terms (above). dqkv is written outright into NaNs; two runs,
// the same bits.
TEST(CudaAttentionBf16, GemmPathIsTheReferenceWithinBf16Rounding) {
  REQUIRE_GPU();
#if DDPM_WITH_CUDA
  uint64_t stream = 120;
  for (const Case& c : cases()) {
    SCOPED_TRACE(describe(c));
    const AttentionShape s = shape_of(c);
    const int64_t n_qkv = s.b * s.l * 3 * s.c, n_out = s.b * s.l * s.c, d = s.head_dim();
    std::vector<float> qkv = qkv_of(c, s, stream++);
    std::vector<float> dout =
        test::random_tensor(Shape{n_out}, stream++, DType::F32).to_vector<float>();
    for (float& x : qkv) x = round_to_bf16(x);
    for (float& x : dout) x = round_to_bf16(x);
    const std::vector<double> qkv_d(qkv.begin(), qkv.end()), dout_d(dout.begin(), dout.end());
    std::vector<double> qkv_mag(qkv_d), dout_abs(dout_d);
    for (int64_t i = 0; i < n_qkv; ++i)
      if (i % (3 * s.c) >= 2 * s.c) qkv_mag[i] = std::abs(qkv_mag[i]);
    for (double& x : dout_abs) x = std::abs(x);
    std::vector<double> out(n_out), out_mag(n_out), lse(s.b * s.heads * s.l), lse_mag(lse.size()),
        grad(n_qkv, 0.0), mag(n_qkv, 0.0);
    cpu::attention_forward<double>(s, qkv_d.data(), out.data(), lse.data());
    cpu::attention_forward<double>(s, qkv_mag.data(), out_mag.data(), lse_mag.data());
    cpu::attention_backward<double>(s, qkv_d.data(), lse.data(), dout_d.data(), grad.data());
    cpu::attention_backward<double>(s, qkv_d.data(), lse.data(), dout_abs.data(), mag.data());
    const Bounds bd = bounds(s, qkv_d, dout_d, lse);

    struct Run {
      std::vector<float> out, lse, dqkv;
    };
    const auto run = [&] {
      const auto matrices = Shape{cuda::attention_gemm_matrix_elements(s)};
      const Tensor x = cast(Tensor::from_vector(Shape{n_qkv}, qkv, Device::CUDA), DType::BF16);
      const Tensor g = cast(Tensor::from_vector(Shape{n_out}, dout, Device::CUDA), DType::BF16);
      const Tensor o = Tensor::empty(Shape{n_out}, DType::BF16, Device::CUDA);
      const Tensor l = Tensor::empty(Shape{static_cast<int64_t>(lse.size())}, DType::F32,
                                     Device::CUDA);
      const Tensor p = Tensor::empty(matrices, DType::BF16, Device::CUDA);
      const Tensor f32 = Tensor::empty(matrices, DType::F32, Device::CUDA);  // S, then dP
      const Tensor ds = Tensor::empty(matrices, DType::BF16, Device::CUDA);
      const Tensor dx = cast(Tensor::from_vector(Shape{n_qkv}, std::vector<float>(n_qkv, NAN),
                                                 Device::CUDA),
                             DType::BF16);
      using detail::bf16_bits;
      cuda::attention_gemm_forward(s, bf16_bits(x), bf16_bits(o), l.data<float>(),
                                   bf16_bits(p), f32.data<float>());
      cuda::attention_gemm_backward(s, bf16_bits(x), bf16_bits(p), bf16_bits(g),
                                    bf16_bits(dx), f32.data<float>(), bf16_bits(ds),
                                    GradWrite::Assign);
      return Run{cast(o, DType::F32).to(Device::CPU).to_vector<float>(),
                 l.to(Device::CPU).to_vector<float>(),
                 cast(dx, DType::F32).to(Device::CPU).to_vector<float>()};
    };
    const Run got = run();

    double worst_out = 0, worst_lse = 0;
    for (int64_t b = 0; b < s.b; ++b)
      for (int64_t h = 0; h < s.heads; ++h)
        for (int64_t i = 0; i < s.l; ++i) {
          const int64_t row = (b * s.heads + h) * s.l + i;
          double lse_bound = 1e-6 * std::abs(lse[row]);
          std::vector<double> p_error(d, 0.0);  // sum_j e_ij P_ij |v_jc|
          for (int64_t j = 0; j < s.l; ++j) {
            const double e = bd.p_rel[row * s.l + j];
            lse_bound = std::max(lse_bound, e + 1e-6 * std::abs(lse[row]));
            for (int64_t ch = 0; ch < d; ++ch)
              p_error[ch] += e * bd.p[row * s.l + j] *
                            std::abs(qkv_d[(b * s.l + j) * 3 * s.c + 2 * s.c + h * d + ch]);
          }
          const double lse_err = std::abs(got.lse[row] - lse[row]);
          worst_lse = std::max(worst_lse, lse_err / lse_bound);
          ASSERT_LE(lse_err, lse_bound) << "lse of row " << row;
          for (int64_t ch = 0; ch < d; ++ch) {
            const int64_t at = (b * s.l + i) * s.c + h * d + ch;
            double bound = (std::ldexp(1.0, -8) + 1e-5) * out_mag[at] + p_error[ch] + 1e-6;
            bound += std::ldexp(std::abs(out[at]) + bound, -8);  // stored in bf16
            const double err = std::abs(got.out[at] - out[at]);
            worst_out = std::max(worst_out, err / bound);
            ASSERT_LE(err, bound) << "out element " << at << ": " << got.out[at] << " vs "
                                  << out[at];
          }
        }
    double worst[3] = {0, 0, 0};
    for (int64_t i = 0; i < n_qkv; ++i) {
      const int which = static_cast<int>((i % (3 * s.c)) / s.c);
      double bound = which == 2 ? (std::ldexp(1.0, -8) + 1e-5) * mag[i] + 1e-6
                                : std::ldexp(1.0, -8) * (bd.rounding[i] + bd.slack[i]) +
                                      1e-5 * (bd.rounding[i] + bd.slack[i]) + bd.delta[i] +
                                      bd.dp_error[i] + 1e-6;
      bound += bd.p_error[i];
      bound += std::ldexp(std::abs(grad[i]) + bound, -8);  // dqkv stored in bf16
      const double err = std::abs(got.dqkv[i] - grad[i]);
      worst[which] = std::max(worst[which], err / bound);
      ASSERT_LE(err, bound) << "d" << "qkv"[which] << " at " << i << ": " << got.dqkv[i]
                            << " vs " << grad[i];
    }
    std::printf("%s: worst error of out, lse %.2f, %.2f; of dq, dk, dv %.2f, %.2f, %.2f of "
                "their bounds\n",
                describe(c).c_str(), worst_out, worst_lse, worst[0], worst[1], worst[2]);
    const Run again = run();
    EXPECT_EQ(again.out, got.out);
    EXPECT_EQ(again.lse, got.lse);
    EXPECT_EQ(again.dqkv, got.dqkv);
  }
#endif
}

#if DDPM_WITH_CUDA
// What the op, or a path called directly, gives: out and qkv's gradient, widened.
struct OpBits {
  std::vector<float> out, dqkv;
};

std::vector<float> widened(const Tensor& t) {
  return cast(t, DType::F32).to(Device::CPU).to_vector<float>();
}

// Attention path `path` called directly on bf16 qkv (B, L, 3C) and dout (B, L, C): the
// forward, then the backward writing dqkv outright.
OpBits run_path(cuda::AttentionBf16Path path, const AttentionShape& s, const Tensor& qkv,
                const Tensor& dout) {
  using detail::bf16_bits;
  const Tensor o = Tensor::empty(Shape{s.b * s.l * s.c}, DType::BF16, Device::CUDA);
  const Tensor dx = Tensor::empty(Shape{s.b * s.l * 3 * s.c}, DType::BF16, Device::CUDA);
  const Tensor lse = Tensor::empty(Shape{s.b * s.heads * s.l}, DType::F32, Device::CUDA);
  const Tensor delta = Tensor::empty(Shape{s.b * s.heads * s.l}, DType::F32, Device::CUDA);
  if (path == cuda::AttentionBf16Path::Gemm) {
    const Shape matrices{cuda::attention_gemm_matrix_elements(s)};
    const Tensor p = Tensor::empty(matrices, DType::BF16, Device::CUDA);
    const Tensor f32 = Tensor::empty(matrices, DType::F32, Device::CUDA);  // S, then dP
    const Tensor ds = Tensor::empty(matrices, DType::BF16, Device::CUDA);
    cuda::attention_gemm_forward(s, bf16_bits(qkv), bf16_bits(o), nullptr, bf16_bits(p),
                                 f32.data<float>());
    cuda::attention_gemm_backward(s, bf16_bits(qkv), bf16_bits(p), bf16_bits(dout),
                                  bf16_bits(dx), f32.data<float>(), bf16_bits(ds),
                                  GradWrite::Assign);
  } else if (path == cuda::AttentionBf16Path::FlashWgmma) {
    const Tensor ds = Tensor::empty(Shape{cuda::attention_flash_bf16_ds_elements(s)},
                                    DType::BF16, Device::CUDA);
    cuda::attention_flash_wgmma_forward(s, bf16_bits(qkv), bf16_bits(o), lse.data<float>());
    cuda::attention_flash_wgmma_backward(s, bf16_bits(qkv), bf16_bits(o), lse.data<float>(),
                                         bf16_bits(dout), bf16_bits(dx), delta.data<float>(),
                                         bf16_bits(ds), GradWrite::Assign);
  } else {
    const bool by_gemm = path == cuda::AttentionBf16Path::FlashDqByGemm;
    const Tensor ds =
        by_gemm ? Tensor::empty(Shape{cuda::attention_flash_bf16_ds_elements(s)}, DType::BF16,
                                Device::CUDA)
                : Tensor();
    cuda::attention_flash_bf16_forward(s, bf16_bits(qkv), bf16_bits(o), lse.data<float>());
    cuda::attention_flash_bf16_backward(s, bf16_bits(qkv), bf16_bits(o), lse.data<float>(),
                                        bf16_bits(dout), bf16_bits(dx), delta.data<float>(),
                                        GradWrite::Assign, by_gemm ? bf16_bits(ds) : nullptr);
  }
  return {widened(o), widened(dx)};
}

// The op on the same operands: attention(qkv, heads), then its backward from dout.
OpBits run_op(const Tensor& qkv0, const Tensor& dout, int64_t heads) {
  Tensor qkv = qkv0.clone();
  qkv.set_requires_grad(true);
  const Tensor out = attention(qkv, heads);
  tape().backward(out, dout);
  return {widened(out), widened(qkv.grad())};
}
#endif

// The op on bf16 activations runs the path its rule names, or with cuda_autotune the path
// the autotuner chose (kernels/cuda/attention_autotune.cuh): its output and qkv's gradient
// are that path's bits, called directly on the same operands. The timing is done once per
// shape (one printed line, naming the candidates and the choice: three, and the flash pair
// on wgmma where the GPU has it and cuda_autotune_unverified asks for it). Head dims of 64, which every path runs and where the rule
// names the flash pair with dq by GEMM; a second batch size's choice is set to the GEMMs
// (attention_bf16_path_remember), so that the op is seen to follow a choice that is not the
// rule's, whichever the timing made, and a third's to the wgmma pair where there is one.
TEST(CudaAttentionBf16, TheOpRunsTheRulesPathOrTheTimedOne) {
  REQUIRE_GPU();
#if DDPM_WITH_CUDA
  using cuda::AttentionBf16Path;
  struct Restore {
    ~Restore() {
      set_attention_autotune(false);
      set_attention_autotune_unverified(false);
      set_precision(Precision::F32);
    }
  } restore;
  set_precision(Precision::BF16);
  const auto shape = [](int64_t b) {
    AttentionShape s;
    s.b = b;
    s.l = 24;
    s.c = 64;
    s.bf16_probs = true;
    return s;
  };
  const auto bf16_on_gpu = [](const Shape& dims, uint64_t stream) {
    return cast(test::random_tensor(dims, stream, DType::F32), DType::BF16).to(Device::CUDA);
  };
  const AttentionShape s = shape(2), pinned = shape(3);
  const Tensor qkv = bf16_on_gpu(Shape{2, 24, 192}, 150), dout = bf16_on_gpu({2, 24, 64}, 151);
  const Tensor qkv3 = bf16_on_gpu(Shape{3, 24, 192}, 152), dout3 = bf16_on_gpu({3, 24, 64}, 153);
  const auto lines = [](const std::string& printed, int64_t b) {
    const std::string line = "attention autotune: batch " + std::to_string(b) +
                             ", length 24, 64 channels, 1 heads";
    std::vector<std::string> found;
    for (size_t i = printed.find(line); i != std::string::npos; i = printed.find(line, i + 1))
      found.push_back(printed.substr(i, printed.find('\n', i) - i));
    return found;
  };
  // the rule's path, nothing timed
  ASSERT_EQ(cuda::attention_bf16_path_by_rule(s), AttentionBf16Path::FlashDqByGemm);
  testing::internal::CaptureStdout();
  const OpBits by_rule = run_op(qkv, dout, 1);
  EXPECT_TRUE(lines(testing::internal::GetCapturedStdout(), 2).empty());
  const OpBits rules_path = run_path(AttentionBf16Path::FlashDqByGemm, s, qkv, dout);
  EXPECT_EQ(by_rule.out, rules_path.out);
  EXPECT_EQ(by_rule.dqkv, rules_path.dqkv);
  // timed: once, then the same choice
  set_attention_autotune(true);
  set_attention_autotune_unverified(true);  // the flash pair on wgmma timed too
  ASSERT_TRUE(cuda::attention_bf16_path_remember(pinned, true, AttentionBf16Path::Gemm));
  testing::internal::CaptureStdout();
  const OpBits tuned = run_op(qkv, dout, 1), again = run_op(qkv, dout, 1);
  const OpBits on_gemms = run_op(qkv3, dout3, 1);
  const std::string printed = testing::internal::GetCapturedStdout();
  EXPECT_TRUE(lines(printed, 3).empty()) << printed;
  const std::vector<std::string> timed = lines(printed, 2);
  ASSERT_EQ(timed.size(), 1u) << printed;
  const std::string& choice = timed[0];
  // a backward follows: each candidate held to the reference's dqkv, by thirds
  EXPECT_NE(choice.find("(forward + backward, dqkv checked by its thirds): flash "),
            std::string::npos)
      << choice;
  // each path checked against the flash pair and timed
  for (const char* name : {"flash", "flash, dq by cuBLAS", "cuBLAS GEMMs and row kernels"})
    EXPECT_TRUE(test::autotune_timed(choice, name)) << name << " in " << choice;
  // the flash pair on wgmma, a candidate where the GPU has it
  EXPECT_EQ(test::autotune_timed(choice, "flash on wgmma"), cuda::gemm_sm90_available())
      << choice;
  const std::string name = choice.substr(choice.rfind("-> ") + 3);
  std::vector<AttentionBf16Path> named;
  for (const auto path : {AttentionBf16Path::Flash, AttentionBf16Path::FlashDqByGemm,
                          AttentionBf16Path::Gemm, AttentionBf16Path::FlashWgmma})
    if (name == cuda::attention_bf16_path_name(path)) named.push_back(path);
  ASSERT_EQ(named.size(), 1u) << choice;
  EXPECT_EQ(cuda::attention_bf16_path_autotuned(s, true), named[0]);
  const OpBits chosen = run_path(named[0], s, qkv, dout);
  EXPECT_EQ(tuned.out, chosen.out) << choice;
  EXPECT_EQ(tuned.dqkv, chosen.dqkv) << choice;
  EXPECT_EQ(again.out, tuned.out);
  EXPECT_EQ(again.dqkv, tuned.dqkv);
  const OpBits gemms = run_path(AttentionBf16Path::Gemm, pinned, qkv3, dout3);
  EXPECT_EQ(on_gemms.out, gemms.out);
  EXPECT_EQ(on_gemms.dqkv, gemms.dqkv);
  // and the GEMMs' bits are not the rule's path's (else the line above would prove nothing)
  EXPECT_NE(run_path(AttentionBf16Path::FlashDqByGemm, pinned, qkv3, dout3).dqkv, gemms.dqkv);
  EXPECT_FALSE(cuda::attention_bf16_path_remember(pinned, true, AttentionBf16Path::Flash));
  // a batch of 4 pinned to the flash pair on wgmma, where the GPU has it: the op runs it
  if (cuda::gemm_sm90_available()) {
    const AttentionShape on_wgmma = shape(4);
    const Tensor qkv4 = bf16_on_gpu(Shape{4, 24, 192}, 154), dout4 = bf16_on_gpu({4, 24, 64}, 155);
    ASSERT_TRUE(
        cuda::attention_bf16_path_remember(on_wgmma, true, AttentionBf16Path::FlashWgmma));
    const OpBits by_wgmma = run_op(qkv4, dout4, 1);
    const OpBits wgmma = run_path(AttentionBf16Path::FlashWgmma, on_wgmma, qkv4, dout4);
    EXPECT_EQ(by_wgmma.out, wgmma.out);
    EXPECT_EQ(by_wgmma.dqkv, wgmma.dqkv);
  }
  // without a backward to come (sampling), timed apart on forwards alone, where dq by GEMM
  // is no candidate
  testing::internal::CaptureStdout();
  const Tensor sampled = attention(qkv, 1);  // qkv needs no gradient
  const std::string forward_only = testing::internal::GetCapturedStdout();
  const std::vector<std::string> forwards = lines(forward_only, 2);
  ASSERT_EQ(forwards.size(), 1u) << forward_only;
  EXPECT_NE(forwards[0].find("(forward, out checked): flash "), std::string::npos)
      << forwards[0];
  EXPECT_TRUE(test::autotune_timed(forwards[0], "cuBLAS GEMMs and row kernels")) << forwards[0];
  EXPECT_EQ(test::autotune_timed(forwards[0], "flash on wgmma"), cuda::gemm_sm90_available())
      << forwards[0];
  EXPECT_EQ(forwards[0].find("dq by cuBLAS"), std::string::npos) << forwards[0];
  const AttentionBf16Path forward_path = cuda::attention_bf16_path_autotuned(s, false);
  EXPECT_EQ(forwards[0].substr(forwards[0].rfind("-> ") + 3),
            cuda::attention_bf16_path_name(forward_path));
  EXPECT_EQ(widened(sampled), run_path(forward_path, s, qkv, dout).out);
  // the paths no GPU has run left out, as by default: a fifth batch size's forward
  set_attention_autotune_unverified(false);
  testing::internal::CaptureStdout();
  (void)attention(bf16_on_gpu(Shape{5, 24, 192}, 156), 1);
  const std::string verified = testing::internal::GetCapturedStdout();
  const std::vector<std::string> fives = lines(verified, 5);
  ASSERT_EQ(fives.size(), 1u) << verified;
  EXPECT_TRUE(test::autotune_timed(fives[0], "flash")) << fives[0];
  EXPECT_EQ(fives[0].find("flash on wgmma"), std::string::npos) << fives[0];
#endif
}

TEST(CudaAttentionBf16, UnsupportedHeadDimsAreRefusedWithTheReason) {
  REQUIRE_GPU();
#if DDPM_WITH_CUDA
  const AttentionShape s = shape_of({1, 8, 48, 1});
  EXPECT_FALSE(cuda::attention_flash_bf16_supports(s));
  const Tensor x = Tensor::zeros(Shape{1, 8, 144}, DType::F32, Device::CUDA);
  const Tensor out = Tensor::empty(Shape{1, 8, 48}, DType::F32, Device::CUDA);
  const Tensor lse = Tensor::empty(Shape{1, 1, 8}, DType::F32, Device::CUDA);
  test::expect_error(
      [&] {
        cuda::attention_flash_bf16_forward(s, x.data<float>(), out.data<float>(),
                                           lse.data<float>());
      },
      {"head dim 48", "32, 64, 128 or 256"});
  // the wgmma forward (bf16 tensors; it checks the shape before the device)
  EXPECT_FALSE(cuda::attention_flash_wgmma_supports(s));
  EXPECT_FALSE(cuda::attention_flash_wgmma_supports(shape_of({1, 8, 96, 3})));  // head dim 32
  const Tensor x16 = Tensor::zeros(Shape{1, 8, 144}, DType::BF16, Device::CUDA);
  const Tensor out16 = Tensor::empty(Shape{1, 8, 48}, DType::BF16, Device::CUDA);
  test::expect_error(
      [&] {
        cuda::attention_flash_wgmma_forward(s, detail::bf16_bits(x16), detail::bf16_bits(out16),
                                            lse.data<float>());
      },
      {"head dim 48", "needs 64, 128 or 256"});
#endif
}

// A device that gives a block less shared memory than a head dim needs (sm_86 and sm_89
// allow 99 KB; the backward takes 141 KB at d = 256) gets the sizes and what to run instead,
// not a launch failure. Runs where the device is that small: ctest plays one on the emulated
// device (DDPM_EMU_OPTIN_SHARED_BYTES=101376, tests/cuda_emulation/CMakeLists.txt); an
// H100 or A100 skips it. The forward (66 KB at d = 256 on fp32 tensors, 99 KB on bf16) still
// fits such a device, and runs.
TEST(CudaAttentionBf16, HeadDimsPastTheDevicesSharedMemoryAreRefusedWithTheSizes) {
  REQUIRE_GPU();
#if DDPM_WITH_CUDA
  const int most = cuda::max_shared_memory_per_block();
  if (most >= 160 * 1024) GTEST_SKIP() << "this device allows a block " << most << " bytes";
  const AttentionShape s = shape_of({1, 40, 256, 1});
  ASSERT_TRUE(cuda::attention_flash_bf16_supports(s));
  const Tensor qkv = Tensor::zeros(Shape{1, 40, 768}, DType::F32, Device::CUDA);
  const Tensor out = Tensor::empty(Shape{1, 40, 256}, DType::F32, Device::CUDA);
  const Tensor lse = Tensor::empty(Shape{1, 1, 40}, DType::F32, Device::CUDA);
  const Tensor dqkv = Tensor::zeros(Shape{1, 40, 768}, DType::F32, Device::CUDA);
  const Tensor delta = Tensor::empty(Shape{40}, DType::F32, Device::CUDA);
  cuda::attention_flash_bf16_forward(s, qkv.data<float>(), out.data<float>(), lse.data<float>());
  EXPECT_NEAR(out.to_vector<float>()[0], 0.0f, 0.0f);  // zeros in: the mean of zero values
  const std::string allows =
      " bytes of shared memory per block, the device allows " + std::to_string(most);
  test::expect_error(
      [&] {
        cuda::attention_flash_bf16_backward(s, qkv.data<float>(), out.data<float>(),
                                            lse.data<float>(), out.data<float>(),
                                            dqkv.data<float>(), delta.data<float>());
      },
      {"bf16 flash attention backward: head dim 256 needs ",
       allows.c_str(), "precision fp32 or tf32"});
#endif
}

}  // namespace
}  // namespace ddpm
