// Group norm with bf16 storage (kernels/cuda/group_norm.cu's *_bf16 entries) against the CPU
// reference (kernels/cpu/group_norm_bf16.h: the fp32 kernels on the decoded values, each
// stored activation rounded once).
//
// The bound, from what the two sides do: the same bf16 inputs, every sum in fp32 on the GPU
// and in double / fp32 on the CPU, so before the final rounding the two fp32 values differ
// by ~1e-6 relative (the sums' order). Rounding to bf16 then gives the same bits, unless
// the value lies within that distance of a rounding boundary: then the two land on
// neighbouring bf16 values, one step apart. A step of a value v is at most 2^-7 |v| (8
// significant bits), so each stored element is within 2^-7 max(|a|, |b|) (plus 1e-6 for
// values near zero), and nearly all are the same bits (at least 99%: an element near a
// boundary is rare). fp32 outputs (mean, rstd, dgamma, dbeta) keep the fp32 bound of the
// other group norm tests (2e-4 relative to the output's scale).
// Shapes: an awkward one (65 channels in 13 groups, odd map) and a model one.
// Skips, saying why, without a GPU; runs on the CPU emulation in CI.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "kernels/bf16.h"
#include "kernels/cpu/group_norm_bf16.h"
#include "kernels/grad_write.h"
#include "tests/test_util.h"

#if DDPM_WITH_CUDA
#include <cuda_runtime.h>

#include "engine/cuda_check.h"
#include "kernels/cuda/group_norm.cuh"
#include "tests/device_buffer.h"
#include "tests/group_norm_version.h"
#endif

namespace ddpm {
namespace {

std::vector<uint16_t> bf16_randoms(int64_t n, uint64_t stream, double scale) {
  const std::vector<float> v =
      test::random_tensor(Shape{n}, stream, DType::F32, scale).to_vector<float>();
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = bf16_bits_from_float(v[i]);
  return out;
}

std::vector<float> randoms(int64_t n, uint64_t stream) {
  return test::random_tensor(Shape{n}, stream, DType::F32, 1.0).to_vector<float>();
}

// Stored bf16 results: within one bf16 step of each other, and at least 99% the same bits.
void expect_bf16_close(const std::vector<uint16_t>& gpu, const std::vector<uint16_t>& cpu,
                       const std::string& what) {
  ASSERT_EQ(gpu.size(), cpu.size()) << what;
  size_t same = 0;
  for (size_t i = 0; i < cpu.size(); ++i) {
    const float a = float_from_bf16_bits(gpu[i]), b = float_from_bf16_bits(cpu[i]);
    ASSERT_LE(std::fabs(a - b), std::ldexp(std::max(std::fabs(a), std::fabs(b)), -7) + 1e-6)
        << what << " element " << i << ": gpu " << a << " cpu " << b;
    same += gpu[i] == cpu[i];
  }
  EXPECT_GE(same, 0.99 * cpu.size()) << what << ": " << same << " of " << cpu.size();
}

void expect_f32_close(const std::vector<float>& gpu, const std::vector<float>& cpu,
                      const std::string& what) {
  ASSERT_EQ(gpu.size(), cpu.size()) << what;
  float scale = 0;
  for (float v : cpu) scale = std::max(scale, std::fabs(v));
  for (size_t i = 0; i < cpu.size(); ++i)
    ASSERT_NEAR(gpu[i], cpu[i], 2e-4 * scale + 1e-6) << what << " element " << i;
}

#if DDPM_WITH_CUDA
using test::OnDevice;
using test::GroupNormVersion;

// `offset` zeros, then v: a tensor that starts `offset` elements into its allocation.
template <class T>
std::vector<T> after(int64_t offset, const std::vector<T>& v) {
  std::vector<T> out(static_cast<size_t>(offset), T{});
  out.insert(out.end(), v.begin(), v.end());
  return out;
}
template <class T>
std::vector<T> from(int64_t offset, const std::vector<T>& v) {
  return std::vector<T>(v.begin() + offset, v.end());
}

// Forward (plain, with SiLU, with SiLU and dropout), dh and the backward of shape s on the
// GPU against the CPU reference, the inputs x and dy starting `in` elements into their
// allocations, the outputs y, dh and dx `out` elements.
void expect_the_reference(const GroupNormShape& s, uint64_t stream, int64_t in = 0,
                          int64_t out = 0) {
  const int64_t elems = s.n * s.s * s.c, stats = s.n * s.groups;
  const std::vector<uint16_t> x = bf16_randoms(elems, stream, 2.0),
                              dy = bf16_randoms(elems, stream + 1, 1.0),
                              dx0 = bf16_randoms(elems, stream + 2, 0.5);
  const std::vector<float> gamma = randoms(s.c, stream + 3), beta = randoms(s.c, stream + 4);
  for (const bool silu : {false, true}) {
    for (const float p : {0.0f, 0.3f}) {
      if (!silu && p > 0) continue;  // dropout comes with the fused GN + SiLU only
      const std::string what = std::string(silu ? "gn+silu" : "gn") + (p > 0 ? "+dropout" : "") +
                               " (" + std::to_string(s.n) + ", " + std::to_string(s.s) + ", " +
                               std::to_string(s.c) + ") / " + std::to_string(s.groups) +
                               ", offsets " + std::to_string(in) + " " + std::to_string(out);
      SCOPED_TRACE(what);
      // CPU reference
      std::vector<uint16_t> y(elems), dh(elems), dx = dx0;
      std::vector<float> mean(stats), rstd(stats), dgamma(s.c, 0.0f), dbeta(s.c, 0.0f);
      const cpu::DropoutKeys keys{p, 5, 9};
      cpu::group_norm_forward_bf16(s, x.data(), gamma.data(), beta.data(), y.data(), mean.data(),
                                   rstd.data(), silu, keys);
      const std::vector<uint16_t>& dnorm = silu ? dh : dy;  // the norm's output gradient
      if (silu)
        cpu::group_norm_silu_dh_bf16(s, x.data(), gamma.data(), beta.data(), mean.data(),
                                     rstd.data(), dy.data(), dh.data(), keys);
      cpu::group_norm_backward_bf16(s, x.data(), gamma.data(), mean.data(), rstd.data(),
                                    dnorm.data(), dx.data(), dgamma.data(), dbeta.data());
      // GPU, on the same inputs. The backward takes the GPU's own statistics but the CPU's
      // dh: dh is a stored bf16 value, and where the two sides' land one step apart (a value
      // near a rounding boundary: the dh check allows it), dx, which subtracts group means
      // of gamma dh from gamma dh, differs by a step of dh, not of dx (an H200 showed dx
      // 0.0112 against 0.0126 so). With the same dh, dx is within a step of dx.
      const std::vector<uint16_t> none(elems);
      const OnDevice<uint16_t> gx(after(in, x)), gdy(after(in, dy)), gy(after(out, none)),
          gdh(after(out, none)), gdh_cpu(after(out, dh)), gdx(after(out, dx0));
      const OnDevice<float> gg(gamma), gb(beta), gmean(stats), grstd(stats), gdg(s.c), gdb(s.c);
      const cuda::DropoutSpec drop{p, 5, StepKey(9)};
      cuda::group_norm_forward_bf16(s, gx.ptr + in, gg.ptr, gb.ptr, gy.ptr + out, gmean.ptr,
                                    grstd.ptr, silu, drop);
      if (silu)
        cuda::group_norm_silu_dh_bf16(s, gx.ptr + in, gg.ptr, gb.ptr, gmean.ptr, grstd.ptr,
                                      gdy.ptr + in, gdh.ptr + out, drop);
      // with a workspace for the fused GN + SiLU (dgamma and dbeta summed in the channel
      // slab's dx pass; column sums in chunks in the other mapping), without one for the
      // plain norm (one column-sum pass per channel)
      const OnDevice<float> ws(silu ? cuda::group_norm_backward_workspace(s) : 1);
      cuda::group_norm_backward_bf16(s, gx.ptr + in, gg.ptr, gmean.ptr, grstd.ptr,
                                     silu ? gdh_cpu.ptr + out : gdy.ptr + in, gdx.ptr + out,
                                     gdg.ptr, gdb.ptr, silu ? ws.ptr : nullptr);
      expect_f32_close(gmean.get(), mean, "mean");
      expect_f32_close(grstd.get(), rstd, "rstd");
      expect_bf16_close(from(out, gy.get()), y, "y");
      if (silu) expect_bf16_close(from(out, gdh.get()), dh, "dh");
      expect_bf16_close(from(out, gdx.get()), dx, "dx (accumulated)");
      expect_f32_close(gdg.get(), dgamma, "dgamma");
      expect_f32_close(gdb.get(), dbeta, "dbeta");
      // what the dropout's mask did: about p of the outputs are exactly zero
      if (p > 0) {
        const std::vector<uint16_t> ys = from(out, gy.get());
        const double zeros = std::count(ys.begin(), ys.end(), uint16_t{0});
        EXPECT_NEAR(zeros / elems, p, 0.05);
      }
    }
  }
}

TEST(CudaGroupNormBf16, ForwardAndBackwardAreTheReferenceWithinOneBf16Step) {
  REQUIRE_GPU();
  struct Case {
    int64_t n, s, c, groups;
  } cases[] = {{3, 35, 65, 13}, {2, 35, 64, 16}, {2, 100, 96, 8}, {2, 256, 256, 32}};
  // the second: slabs of 4-channel groups, whose dropout masks take a Philox block per four
  // elements (quad_keeps in v2; a run's own blocks in v3), rows of unequal lengths per warp
  // (35 rows, 16 a pass in v2; in v3 runs of 8 channels, 2 threads a row, 128 rows a pass).
  // The third: 12-channel groups, 24-channel slabs, 3 threads a row: v4's warps of 10 rows
  // and 2 idle lanes, 2 warps forward (13 rows a pass) and 3 backward (25)
  const size_t count = test::small_shapes_only() ? 3 : std::size(cases);
  for (const cuda::GroupNormMapping mapping : test::kGroupNormMappings) {
    const GroupNormVersion version(mapping);
    SCOPED_TRACE(test::mapping_name(mapping));
    uint64_t stream = 300;
    for (size_t k = 0; k < count; ++k, stream += 5) {
      const Case& cs = cases[k];
      expect_the_reference(GroupNormShape{cs.n, cs.s, cs.c, cs.groups, 1e-6f}, stream);
    }
  }
}

// v3 moves runs of 8 channels as 16-byte words, which a row may not allow: an activation
// that starts 2 bytes into its allocation (a GPU faults on a misaligned word, the emulation
// traps) takes v2's thread per channel, as does a row of channels that is no multiple of 8
// (the first case above): the inputs misaligned, then the outputs (the plain norm's backward
// reads an aligned dy and writes a misaligned dx), then both 16 bytes in (runs again).
TEST(CudaGroupNormBf16, ChannelRunsTakeTheSlabWhereRowsAreNotAligned) {
  REQUIRE_GPU();
  const GroupNormVersion version(cuda::GroupNormMapping::ChannelRuns);
  const GroupNormShape s{2, 35, 64, 16, 1e-6f};
  expect_the_reference(s, 330, 1, 0);
  expect_the_reference(s, 340, 0, 1);
  expect_the_reference(s, 350, 8, 8);
}

// The fused GN + SiLU backward (group_norm_silu_backward: one kernel that recomputes dh as it
// reads x and dy) against the two kernels it replaces (group_norm_silu_dh writing dh,
// group_norm_backward reading it), bit for bit: dx accumulated onto a start and written
// outright, dgamma and dbeta accumulated, or not wanted. In each storage, on v2's, v3's and
// v4's paths (65 channels: v3 and v4 run v2; 12 channels a group: 3 threads a row); with dropout
// (v4 only: its mask regenerated in the one kernel, drawn in the chain's dh pass). v1 has no
// fused kernel and refuses, naming the shape.
template <class T>
void expect_fused_silu_backward_is_the_chain(const GroupNormShape& s, uint64_t stream,
                                             const cuda::DropoutSpec& drop = {}) {
  const int64_t elems = s.n * s.s * s.c, stats = s.n * s.groups;
  const auto stored = [](const std::vector<uint16_t>& bits) {
    if constexpr (sizeof(T) == 2) {
      return bits;
    } else {
      std::vector<float> v(bits.size());
      for (size_t i = 0; i < bits.size(); ++i) v[i] = float_from_bf16_bits(bits[i]);
      return v;
    }
  };
  const std::vector<T> x = stored(bf16_randoms(elems, stream, 2.0)),
                       dy = stored(bf16_randoms(elems, stream + 1, 1.0)),
                       dx0 = stored(bf16_randoms(elems, stream + 2, 0.5));
  const std::vector<float> gamma = randoms(s.c, stream + 3), beta = randoms(s.c, stream + 4);
  const OnDevice<T> gx(x), gy(elems), gdy(dy), gdh(elems);
  const OnDevice<float> gg(gamma), gb(beta), mean(stats), rstd(stats);
  const OnDevice<float> ws(cuda::group_norm_backward_workspace(s));
  const auto forward = [&] {
    if constexpr (sizeof(T) == 2)
      cuda::group_norm_forward_bf16(s, gx.ptr, gg.ptr, gb.ptr, gy.ptr, mean.ptr, rstd.ptr, true);
    else
      cuda::group_norm_silu_forward(s, gx.ptr, gg.ptr, gb.ptr, gy.ptr, mean.ptr, rstd.ptr);
  };
  forward();
  for (const GradWrite write : {GradWrite::Accumulate, GradWrite::Assign}) {
    for (const bool params : {true, false}) {
      SCOPED_TRACE(std::string(write == GradWrite::Assign ? "dx assigned" : "dx accumulated") +
                   (params ? ", dgamma and dbeta" : ", no parameter gradients"));
      const OnDevice<T> chain_dx(dx0), fused_dx(dx0);
      const OnDevice<float> chain_dg(s.c), chain_db(s.c), fused_dg(s.c), fused_db(s.c);
      if constexpr (sizeof(T) == 2) {
        cuda::group_norm_silu_dh_bf16(s, gx.ptr, gg.ptr, gb.ptr, mean.ptr, rstd.ptr, gdy.ptr,
                                      gdh.ptr, drop);
        cuda::group_norm_backward_bf16(s, gx.ptr, gg.ptr, mean.ptr, rstd.ptr, gdh.ptr,
                                       chain_dx.ptr, params ? chain_dg.ptr : nullptr,
                                       params ? chain_db.ptr : nullptr, ws.ptr, write);
        cuda::group_norm_silu_backward_bf16(s, gx.ptr, gg.ptr, gb.ptr, mean.ptr, rstd.ptr,
                                            gdy.ptr, fused_dx.ptr,
                                            params ? fused_dg.ptr : nullptr,
                                            params ? fused_db.ptr : nullptr, ws.ptr, write, drop);
      } else {
        cuda::group_norm_silu_dh(s, gx.ptr, gg.ptr, gb.ptr, mean.ptr, rstd.ptr, gdy.ptr, gdh.ptr,
                                 drop);
        cuda::group_norm_backward(s, gx.ptr, gg.ptr, mean.ptr, rstd.ptr, gdh.ptr, chain_dx.ptr,
                                  params ? chain_dg.ptr : nullptr, params ? chain_db.ptr : nullptr,
                                  ws.ptr, write);
        cuda::group_norm_silu_backward(s, gx.ptr, gg.ptr, gb.ptr, mean.ptr, rstd.ptr, gdy.ptr,
                                       fused_dx.ptr, params ? fused_dg.ptr : nullptr,
                                       params ? fused_db.ptr : nullptr, ws.ptr, write, drop);
      }
      EXPECT_EQ(fused_dx.get(), chain_dx.get());
      EXPECT_EQ(fused_dg.get(), chain_dg.get());
      EXPECT_EQ(fused_db.get(), chain_db.get());
      if (params) {  // the sums happened: not all zero
        const std::vector<float> dg = fused_dg.get();
        EXPECT_NE(std::count(dg.begin(), dg.end(), 0.0f), static_cast<long>(dg.size()));
      }
    }
  }
}

TEST(CudaGroupNormBf16, FusedSiluBackwardIsTheTwoKernelsBitForBit) {
  REQUIRE_GPU();
  using M = cuda::GroupNormMapping;
  // v4 plans all but the second (no runs): the first and the last 16-channel slabs of runs, 2
  // threads a row (the last 4 passes of 32 rows in bf16, 2 of 64 in f32), the third 24
  // channels a slab, 3 threads a row, 10 rows a warp and 2 lanes idle
  const GroupNormShape shapes[] = {{2, 35, 64, 16, 1e-6f}, {3, 35, 65, 13, 1e-6f},
                                   {2, 20, 48, 4, 1e-6f}, {2, 100, 32, 16, 1e-6f}};
  const bool v4_plans[] = {true, false, true, true};
  const cuda::DropoutSpec drop{0.3f, 5, 9};
  for (const M mapping : {M::ChannelSlab, M::ChannelRuns, M::SlabInRegisters}) {
    const GroupNormVersion version(mapping);
    uint64_t stream = 500;
    for (size_t k = 0; k < std::size(shapes); ++k) {
      const GroupNormShape& s = shapes[k];
      SCOPED_TRACE(std::string(test::mapping_name(mapping)) + " (" + std::to_string(s.n) + ", " +
                   std::to_string(s.s) + ", " + std::to_string(s.c) + ") / " +
                   std::to_string(s.groups));
      const bool v4 = mapping == M::SlabInRegisters && v4_plans[k];
      ASSERT_TRUE(cuda::group_norm_silu_backward_fuses(s, 0.0f));
      for (const bool bf16 : {true, false})
        EXPECT_EQ(cuda::group_norm_silu_backward_fuses(s, drop.p, bf16), v4)
            << "dropout fuses on v4 only";
      {
        SCOPED_TRACE("bf16 storage");
        expect_fused_silu_backward_is_the_chain<uint16_t>(s, stream);
        if (v4) {
          SCOPED_TRACE("with dropout");
          expect_fused_silu_backward_is_the_chain<uint16_t>(s, stream, drop);
        }
      }
      {
        SCOPED_TRACE("f32 storage");
        expect_fused_silu_backward_is_the_chain<float>(s, stream + 10);
        if (v4) {
          SCOPED_TRACE("with dropout");
          expect_fused_silu_backward_is_the_chain<float>(s, stream + 10, drop);
        }
      }
      stream += 20;
    }
  }
  const GroupNormVersion v1(cuda::GroupNormMapping::BlockPerGroup);
  const GroupNormShape s{2, 35, 64, 16, 1e-6f};
  EXPECT_FALSE(cuda::group_norm_silu_backward_fuses(s, 0.0f));
  const OnDevice<float> x(s.n * s.s * s.c), stats(s.n * s.groups), c(s.c);
  test::expect_error(
      [&] {
        cuda::group_norm_silu_backward(s, x.ptr, c.ptr, c.ptr, stats.ptr, stats.ptr, x.ptr, x.ptr,
                                       nullptr, nullptr, nullptr);
      },
      {"group_norm_silu_backward", "(2, 35, 64) in 16 groups", "no fused kernel"});
}

// Storage is the only difference: the bf16 kernels on values that are bf16 already give the
// f32 kernels' results rounded (the same sums in the same order), bit for bit. On v1-v3's
// paths (65 channels) and v4's (64), where v4 plans both storages alike (35 rows: one warp's
// 16 rows a pass, the forward's 4 passes in f32 and 8 in bf16 both taking 3 of them).
TEST(CudaGroupNormBf16, IsTheF32KernelRoundedOnce) {
  REQUIRE_GPU();
  for (const cuda::GroupNormMapping mapping : test::kGroupNormMappings)
    for (const GroupNormShape& s : {GroupNormShape{2, 35, 65, 13, 1e-6f},
                                    GroupNormShape{2, 35, 64, 16, 1e-6f}}) {
    const GroupNormVersion version(mapping);
    SCOPED_TRACE(std::string(test::mapping_name(mapping)) + ", " + std::to_string(s.c) +
                 " channels");
    const int64_t elems = s.n * s.s * s.c, stats = s.n * s.groups;
    const std::vector<uint16_t> x = bf16_randoms(elems, 400, 2.0);
    std::vector<float> xf(elems);
    for (int64_t i = 0; i < elems; ++i) xf[i] = float_from_bf16_bits(x[i]);
    const std::vector<float> gamma = randoms(s.c, 401), beta = randoms(s.c, 402);
    const OnDevice<uint16_t> gx(x), gy(elems);
    const OnDevice<float> gxf(xf), gyf(elems), gg(gamma), gb(beta), m1(stats), r1(stats), m2(stats),
        r2(stats);
    cuda::group_norm_forward_bf16(s, gx.ptr, gg.ptr, gb.ptr, gy.ptr, m1.ptr, r1.ptr, true);
    cuda::group_norm_silu_forward(s, gxf.ptr, gg.ptr, gb.ptr, gyf.ptr, m2.ptr, r2.ptr);
    EXPECT_EQ(m1.get(), m2.get());
    EXPECT_EQ(r1.get(), r2.get());
    const std::vector<float> yf = gyf.get();
    const std::vector<uint16_t> y = gy.get();
    for (int64_t i = 0; i < elems; ++i)
      ASSERT_EQ(y[i], bf16_bits_from_float(yf[i])) << "element " << i;
  }
}

// The default takes v4 where it has a plan, forward and backward: on a 32x32 map of 128
// channels (v4: 256 threads forward, 512 backward; v3: 256, 128 rows a pass) its statistics
// and parameter gradients are v4's bits, and not v3's (the two add up the same values in
// different orders: a group's 4,096 values, a channel's 1,024 rows, in fp32). The inputs are
// fixed, so whether the two orders differ somewhere is fixed too: they do, in the last bits
// of some of the 64 means and of the 128 dgammas. Each backward starts from the same
// statistics (the default forward's), so its bits are its own. Both backward entries: the
// fused GN + SiLU's, and the plain norm's. A default that ran v3 in any of the three fails
// here, where the reference tests above cannot tell (both are right).
TEST(CudaGroupNormBf16, TheDefaultRunsTheSlabInRegistersWhereItHasAPlan) {
  REQUIRE_GPU();
  using M = cuda::GroupNormMapping;
  const GroupNormShape s{2, 32 * 32, 128, 32, 1e-6f};
  const int64_t elems = s.n * s.s * s.c, stats = s.n * s.groups;
  const OnDevice<uint16_t> x(bf16_randoms(elems, 700, 2.0)), dy(bf16_randoms(elems, 701, 1.0));
  const OnDevice<float> gamma(randoms(s.c, 702)), beta(randoms(s.c, 703));
  const OnDevice<float> ws(cuda::group_norm_backward_workspace(s));
  const OnDevice<float> mean(stats), rstd(stats);
  {
    const GroupNormVersion by_shape(M::ByShape);
    const OnDevice<uint16_t> y(elems);
    cuda::group_norm_forward_bf16(s, x.ptr, gamma.ptr, beta.ptr, y.ptr, mean.ptr, rstd.ptr,
                                  true);
  }
  struct Bits {
    std::vector<float> mean, rstd, fused_dgamma, plain_dgamma;
  };
  const auto run = [&](M mapping) {
    const GroupNormVersion version(mapping);
    const OnDevice<uint16_t> y(elems), dx(elems);
    const OnDevice<float> m(stats), r(stats), zeros(std::vector<float>(s.c, 0.0f));
    const OnDevice<float> fused_dg(zeros.get()), plain_dg(zeros.get()), db(zeros.get());
    cuda::group_norm_forward_bf16(s, x.ptr, gamma.ptr, beta.ptr, y.ptr, m.ptr, r.ptr, true);
    cuda::group_norm_silu_backward_bf16(s, x.ptr, gamma.ptr, beta.ptr, mean.ptr, rstd.ptr,
                                        dy.ptr, dx.ptr, fused_dg.ptr, db.ptr, ws.ptr,
                                        GradWrite::Assign);
    cuda::group_norm_backward_bf16(s, x.ptr, gamma.ptr, mean.ptr, rstd.ptr, dy.ptr, dx.ptr,
                                   plain_dg.ptr, db.ptr, ws.ptr, GradWrite::Assign);
    return Bits{m.get(), r.get(), fused_dg.get(), plain_dg.get()};
  };
  ASSERT_EQ(cuda::group_norm_mapping_for(s), M::SlabInRegisters);
  const Bits by_shape = run(M::ByShape), v4 = run(M::SlabInRegisters), v3 = run(M::ChannelRuns);
  EXPECT_EQ(by_shape.mean, v4.mean);
  EXPECT_EQ(by_shape.rstd, v4.rstd);
  EXPECT_EQ(by_shape.fused_dgamma, v4.fused_dgamma);
  EXPECT_EQ(by_shape.plain_dgamma, v4.plain_dgamma);
  EXPECT_NE(v4.mean, v3.mean) << "v3's statistics: the forward did not run v4";
  EXPECT_NE(v4.fused_dgamma, v3.fused_dgamma) << "the fused backward did not run v4";
  EXPECT_NE(v4.plain_dgamma, v3.plain_dgamma) << "the norm's backward did not run v4";
}
#endif

}  // namespace
}  // namespace ddpm
