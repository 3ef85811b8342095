// Shared-memory bank conflicts of the tensor-core kernels, counted on the emulated device:
// every ldmatrix and cp.async of convolutions v4 and v5 (kernels/cuda/conv2d_bf16.cu and conv2d_bf16_v5.cu; v5's
// wgmma reads its tiles itself, so only its copies) and of the
// bf16 flash attention (attention_flash_bf16*.cu) is served in the wavefronts the emulator
// counts (tests/cuda_emulation/block.h has the model: 128 bytes a wavefront, a 16-byte
// access covering one of 8 bank groups). The kernels' comments claim their swizzle and
// padding put the 8 rows of every ldmatrix, and every 8 consecutive 16-byte copies, in 8
// different groups: here that claim is a count, for every pass, block shape and storage,
// with no GPU. A layout that conflicts costs a multiple of the shared-memory bandwidth the
// mma loop lives on, and no value comparison can see it.
//
// And where the convolutions' copies read from (CopyReads below): the forward's and the
// dgrad's gathers through L1, whose rereads an L1 serves, and the other operands from L2.
//
// What this does not cover: the kernels' plain shared loads and stores (the flash kernels'
// fp32 staging, the epilogues' exchanges), which the emulator does not see as warp
// instructions. On a GPU, Nsight Compute's l1tex bank-conflict counters are the final word
// (scripts/gpu-check.sh, stage profile).
#include <gtest/gtest.h>

#include <cstdio>
#include <functional>
#include <set>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "kernels/bf16.h"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/conv2d_bf16.cuh"
#include "tests/cuda_emulation/block.h"
#include "tests/device_buffer.h"
#include "tests/test_util.h"

namespace ddpm {
namespace {

using test::OnDevice;

std::vector<float> randoms(size_t n, uint64_t stream) {
  return test::random_tensor(Shape{int64_t(n)}, stream, DType::F32, 1.0).to_vector<float>();
}

std::vector<uint16_t> bf16_randoms(size_t n, uint64_t stream) {
  std::vector<uint16_t> bits;
  for (float v : randoms(n, stream)) bits.push_back(bf16_bits_from_float(v));
  return bits;
}

// What `kernel` issued since the last reset, printed as wavefronts per ideal, and required
// to be conflict-free: every ldmatrix and cp.async in its ideal wavefronts. The instruction
// counts must be positive (a kernel that issued nothing proves nothing; cp.async only where
// expected), and every warp's lanes must have issued the same number of copies.
void expect_conflict_free(const std::string& kernel, const std::string& what,
                          bool expects_cp_async, bool expects_ldmatrix = true) {
  const auto all = cuda_emu::shared_traffic();
  const auto it = all.find(kernel);
  if (it == all.end()) {
    ADD_FAILURE() << kernel << " issued no ldmatrix or cp.async (" << what << ")";
    return;
  }
  const cuda_emu::SharedTraffic& t = it->second;
  EXPECT_EQ(t.ldmatrix.instructions > 0, expects_ldmatrix) << what;
  EXPECT_EQ(t.cp_async.instructions > 0, expects_cp_async) << what;
  EXPECT_EQ(t.unmatched_cp_async_warps, 0u) << what;
  const auto ratio = [](const cuda_emu::SharedWavefronts& w) {
    return w.ideal == 0 ? 1.0 : double(w.wavefronts) / double(w.ideal);
  };
  std::printf("%-44s ldmatrix %7llu x %.2f   cp.async %7llu x %.2f\n", what.c_str(),
              static_cast<unsigned long long>(t.ldmatrix.instructions), ratio(t.ldmatrix),
              static_cast<unsigned long long>(t.cp_async.instructions), ratio(t.cp_async));
  EXPECT_EQ(t.ldmatrix.wavefronts, t.ldmatrix.ideal) << what;
  EXPECT_EQ(t.cp_async.wavefronts, t.cp_async.ideal) << what;
}

const char* const kConvKernel = "(conv_gemm_bf16<Block, LoadA, LoadB, Epilogue, Products>)";
const char* const kConvV5Kernel = "(conv_gemm_wgmma<kRing, kSub, LoadA, LoadB, Epilogue>)";

// Every pass (the forward's K-major A and MN-major B, the dgrad's two K-major operands, the
// wgrad's two MN-major ones), every block shape, both storages, channels padded and not,
// stride 1 and 2: every ldmatrix and every cp.async in one wavefront per 8 rows; and v5's
// copies, the same operands in wgmma's tiles.
TEST(BankConflicts, ConvolutionsV4AndV5AreConflictFree) {
  REQUIRE_GPU();
  struct Case {
    Shape x;
    int64_t c_out, stride;
  };
  for (const Case& c : {Case{{2, 8, 8, 16}, 32, 1}, Case{{1, 5, 5, 3}, 8, 1},
                        Case{{1, 8, 8, 16}, 24, 2}}) {
    Conv2dParams p = Conv2dParams::same(3);
    p.stride = c.stride;
    const Conv2dShape s = conv2d_shape(c.x, Shape{3, 3, c.x[3], c.c_out}, p);
    const size_t nx = s.n * s.h * s.w * s.c_in, ny = s.n * s.out_h() * s.out_w() * s.c_out,
                 nw = 9 * s.c_in * s.c_out;
    const OnDevice<float> x(randoms(nx, 1)), w(randoms(nw, 2)), b(randoms(s.c_out, 3)),
        dy(randoms(ny, 4)), y(ny), dx(nx), dw(nw), db(s.c_out);
    const OnDevice<uint16_t> xh(bf16_randoms(nx, 5)), dyh(bf16_randoms(ny, 6)), yh(ny), dxh(nx);
    const OnDevice<float> fws(std::max<int64_t>(1, cuda::conv2d_bf16_forward_workspace(s)));
    const OnDevice<float> bws(std::max<int64_t>(1, cuda::conv2d_bf16_backward_workspace(s)));
    const std::string shape = "Cin " + std::to_string(s.c_in) + " Cout " +
                              std::to_string(s.c_out) + " stride " + std::to_string(c.stride);
    // v4's block shapes (the wide-warp one copies four chunks a thread, a warp's 32 still
    // consecutive), and v5 in both rings and on its tall tile (wgmma reads its tiles itself:
    // its cp.async stores only, into the 128-byte swizzle, K-major and MN-major)
    for (const auto& [tiles, name] :
         {std::pair{cuda::Bf16Tiles::Large, "v4 128x128"}, {cuda::Bf16Tiles::Deep, "v4 128x128x4"},
          {cuda::Bf16Tiles::Small, "v4 64x64"},
          {cuda::Bf16Tiles::WideWarps, "v4 128x128 of 64x64 warps"},
          {cuda::Bf16Tiles::Tall, "v4 256x128 of 64x64 warps"},
          {cuda::Bf16Tiles::Wgmma, "v5 wgmma"},
          {cuda::Bf16Tiles::WgmmaPaired, "v5 wgmma, 3 stages"},
          {cuda::Bf16Tiles::WgmmaTall, "v5 wgmma, 256x128"}}) {
      cuda::set_conv2d_bf16_tiles(tiles);
      const bool v5 = tiles == cuda::Bf16Tiles::Wgmma ||
                      tiles == cuda::Bf16Tiles::WgmmaPaired || tiles == cuda::Bf16Tiles::WgmmaTall;
      const auto check = [&](const std::string& what, const auto& run) {
        cuda_emu::reset_shared_traffic();
        run();
        expect_conflict_free(v5 ? kConvV5Kernel : kConvKernel,
                             "conv " + what + ", " + name + ", " + shape,
                             /*expects_cp_async=*/true, /*expects_ldmatrix=*/!v5);
      };
      // Each GEMM on its own (a null dx or dw skips its pass), so a conflict names its pass.
      check("forward f32", [&] {
        cuda::conv2d_bf16_forward(s, x.ptr, w.ptr, b.ptr, y.ptr, fws.ptr);
      });
      check("dgrad f32", [&] {
        cuda::conv2d_bf16_backward(s, x.ptr, w.ptr, dy.ptr, dx.ptr, nullptr, bws.ptr);
      });
      check("wgrad f32", [&] {
        cuda::conv2d_bf16_backward(s, x.ptr, w.ptr, dy.ptr, nullptr, dw.ptr, bws.ptr);
      });
      check("forward bf16", [&] {
        cuda::conv2d_bf16_forward(s, xh.ptr, w.ptr, b.ptr, yh.ptr, fws.ptr);
      });
      check("dgrad bf16", [&] {
        cuda::conv2d_bf16_backward(s, xh.ptr, w.ptr, dyh.ptr, dxh.ptr, nullptr, nullptr,
                                   bws.ptr);
      });
      check("wgrad bf16", [&] {
        cuda::conv2d_bf16_backward(s, xh.ptr, w.ptr, dyh.ptr, nullptr, dw.ptr, nullptr,
                                   bws.ptr);
      });
    }
  }
  cuda::set_conv2d_bf16_tiles(cuda::Bf16Tiles::Heuristic);
}

// ---- where the convolutions' copies read from (block.h: CopyReads) ----

// What a pass's gathered A (the forward's x, the dgrad's dy, through every tap's window; C
// channels, a multiple of 16, so a pixel is C / 16 whole sectors) asks of memory, block by
// block of `block_rows` GEMM rows: the sectors its copies request (each valid (row, tap)
// the pixel's sectors), and the distinct ones among them (what an L1 that keeps everything
// a block reads fetches from L2). `source(row, kh, kw, pixel)` gives the pixel a row's tap
// reads, or false when it reads none (padding: zero-filled, no read).
struct Sectors {
  uint64_t requested = 0, distinct = 0;
};
template <class Source>
Sectors gathered_sectors(int64_t rows, int64_t block_rows, const Conv2dShape& s, int64_t c,
                         Source source) {
  Sectors total;
  for (int64_t first = 0; first < rows; first += block_rows) {
    std::set<int64_t> pixels;
    for (int64_t r = first; r < std::min(rows, first + block_rows); ++r)
      for (int kh = 0; kh < s.kh; ++kh)
        for (int kw = 0; kw < s.kw; ++kw) {
          int64_t pixel = 0;
          if (!source(r, kh, kw, pixel)) continue;
          total.requested += c / 16;
          pixels.insert(pixel);
        }
    total.distinct += pixels.size() * (c / 16);
  }
  return total;
}

// What the wgrad's A (x through the taps of a block's columns; C channels, a multiple of 16)
// asks of memory, block by block of `block_cols` columns of dw (a block reads every pixel of
// the image for its columns: one image, K unsplit): each column sector's valid (pixel, tap)
// pairs, and the distinct pixel sectors among them. The columns run in blocks of `block`
// channels through the taps (conv2d_bf16_gemm.cuh's KOrder: 64 where C is a multiple of 64,
// as the kernels run them; C is the plain order, tap by tap).
template <class Source>
Sectors wgrad_sectors(const Conv2dShape& s, int64_t c, int64_t block, int64_t block_cols,
                      Source source) {
  const int64_t taps = s.kh * s.kw, span = taps * block;
  Sectors total;
  for (int64_t first = 0; first < taps * c; first += block_cols) {
    std::set<std::pair<int64_t, int64_t>> columns;  // (tap, channel sector)
    for (int64_t m = first; m < std::min(taps * c, first + block_cols); ++m)
      columns.insert({m % span / block, (m / span * block + m % block) / 16});
    std::set<int64_t> sectors;
    for (const auto& [tap, sector] : columns)
      for (int64_t r = 0; r < s.h * s.w; ++r) {
        int64_t pixel = 0;
        if (!source(s, r, static_cast<int>(tap / s.kw), static_cast<int>(tap % s.kw), pixel))
          continue;
        ++total.requested;
        sectors.insert(pixel * (c / 16) + sector);
      }
    total.distinct += sectors.size();
  }
  return total;
}

// The pixel a stride-1 3x3 'same' convolution's row r reads through tap (kh, kw) (in the
// image of one sample, s.n = 1): the forward's x, or (dgrad) dy; false when it is padding.
bool forward_source(const Conv2dShape& s, int64_t r, int kh, int kw, int64_t& pixel) {
  const int64_t ih = r / s.w - s.pad_top + kh, iw = r % s.w - s.pad_left + kw;
  pixel = ih * s.w + iw;
  return ih >= 0 && ih < s.h && iw >= 0 && iw < s.w;
}
bool dgrad_source(const Conv2dShape& s, int64_t r, int kh, int kw, int64_t& pixel) {
  const int64_t oh = r / s.w + s.pad_top - kh, ow = r % s.w + s.pad_left - kw;
  pixel = oh * s.w + ow;
  return oh >= 0 && oh < s.h && ow >= 0 && ow < s.w;
}

// The tests below that need every block to run its whole K: the emulated device with one
// SM (DDPM_EMU_SM_COUNT=1, as their ctest runs them; tests/cuda_emulation/CMakeLists.txt),
// else they skip, saying so.
#define REQUIRE_ONE_EMULATED_SM()                                                          \
  if (cuda_emu::sm_count() != 1)                                                           \
  GTEST_SKIP() << "needs the emulated device with one SM (DDPM_EMU_SM_COUNT=1), so that " \
                  "no block's K is split; ctest runs it so"

// The forward's and the stride-1 dgrad's A through L1 (cp.async.ca, the default) and
// without: their gathers request the sectors gathered_sectors counts, and an L1 holding
// what its block reads serves all but the distinct ones (here the L1 model, 64 KB a block,
// holds every sector a block reads: at 16 x 16 x 32 a block of 128 rows reads ~10 image
// rows, 10 KB). Their B (the weights) is read once per block, from L2 only, either way.
// The wgrad's A likewise: a block's columns are 32 channels of 2 to 8 taps here (C = 32),
// which read the same pixels shifted, and L1 holds the whole image (16 KB), so each block
// pulls each distinct sector once; a warp's copy takes the sectors two of its lanes share
// once, so what it requests is fewer than wgrad_sectors's pairs (the same without L1). Its
// B (dy) from L2 only, all of it for each block. v4's large, small and tall tiles and v5's
// wgmma alike (the same loaders); the tall tile's one block of 256 rows reads the weights
// once where the large tile's two blocks read them twice.
TEST(CopyReads, TheGathersRereadThroughL1) {
  REQUIRE_GPU();
  const Conv2dShape s = conv2d_shape(Shape{1, 16, 16, 32}, Shape{3, 3, 32, 32},
                                     Conv2dParams::same(3));
  const int64_t rows = s.n * s.h * s.w, k = 9 * s.c_in, n = s.n * s.h * s.w * 32;
  const OnDevice<float> w(randoms(9 * 32 * 32, 1)), dw(9 * 32 * 32);
  const OnDevice<uint16_t> x(bf16_randoms(n, 2)), dy(bf16_randoms(n, 3)), y(n), dx(n);
  const OnDevice<float> fws(cuda::conv2d_bf16_forward_workspace(s));
  const OnDevice<float> bws(cuda::conv2d_bf16_backward_workspace(s));
  auto forward = [&](int64_t r, int kh, int kw, int64_t& p) {
    return forward_source(s, r, kh, kw, p);
  };
  auto dgrad = [&](int64_t r, int kh, int kw, int64_t& p) { return dgrad_source(s, r, kh, kw, p); };
  for (const auto& [tiles, block_rows, name] :
       {std::tuple{cuda::Bf16Tiles::Large, int64_t{128}, "v4 128x128"},
        {cuda::Bf16Tiles::Small, int64_t{64}, "v4 64x64"},
        {cuda::Bf16Tiles::Tall, int64_t{256}, "v4 256x128"},
        {cuda::Bf16Tiles::Wgmma, int64_t{128}, "v5 wgmma"},
        {cuda::Bf16Tiles::WgmmaTall, int64_t{256}, "v5 256x128"}}) {
    cuda::set_conv2d_bf16_tiles(tiles);
    const bool v5 = tiles == cuda::Bf16Tiles::Wgmma || tiles == cuda::Bf16Tiles::WgmmaTall;
    const char* kernel = v5 ? kConvV5Kernel : kConvKernel;
    const int64_t blocks = (rows + block_rows - 1) / block_rows;
    const uint64_t weights = blocks * k * 32 * 2 / 32;  // each block's B, its sectors
    auto reads_of = [&](const auto& run) {
      cuda_emu::reset_shared_traffic();
      run();
      return cuda_emu::shared_traffic()[kernel].reads;
    };
    const struct {
      const char* pass;
      Sectors a;
      std::function<void()> run;
    } passes[] = {
        {"forward", gathered_sectors(rows, block_rows, s, 32, forward),
         [&] { cuda::conv2d_bf16_forward(s, x.ptr, w.ptr, nullptr, y.ptr, fws.ptr); }},
        {"dgrad", gathered_sectors(rows, block_rows, s, 32, dgrad),
         [&] {
           cuda::conv2d_bf16_backward(s, x.ptr, w.ptr, dy.ptr, dx.ptr, nullptr, nullptr,
                                      bws.ptr);
         }}};
    for (const auto& pass : passes) {
      const std::string what = std::string(pass.pass) + ", " + name;
      ASSERT_GT(pass.a.requested, 2 * pass.a.distinct) << what << ": the test's own shape";
      cuda_emu::CopyReads on, off;
      {
        const cuda::GathersThroughL1 l1(true);
        on = reads_of(pass.run);
      }
      {
        const cuda::GathersThroughL1 l2(false);
        off = reads_of(pass.run);
      }
      EXPECT_EQ(on.l1_misses, pass.a.distinct) << what;
      EXPECT_EQ(on.l1_hits, pass.a.requested - pass.a.distinct) << what;
      EXPECT_EQ(on.l2_only, weights) << what;
      EXPECT_EQ(off.l1_misses + off.l1_hits, 0u) << what;
      EXPECT_EQ(off.l2_only, pass.a.requested + weights) << what;
      std::printf("%-22s A's sectors from L2: %llu through L1, %llu without (%.2fx)\n",
                  what.c_str(), static_cast<unsigned long long>(on.l1_misses),
                  static_cast<unsigned long long>(pass.a.requested),
                  double(pass.a.requested) / double(on.l1_misses));
    }
    const Sectors wa = wgrad_sectors(s, 32, 32, block_rows, forward_source);
    const uint64_t wgrad_blocks = (k + block_rows - 1) / block_rows,
                   dy_sectors = wgrad_blocks * rows * 32 * 2 / 32;
    auto wgrad_reads = [&](bool through_l1) {
      const cuda::GathersThroughL1 gathers(through_l1);
      return reads_of([&] {
        cuda::conv2d_bf16_backward(s, x.ptr, w.ptr, dy.ptr, nullptr, dw.ptr, nullptr,
                                   bws.ptr);
      });
    };
    const std::string what = std::string("wgrad, ") + name;
    const cuda_emu::CopyReads on = wgrad_reads(true), off = wgrad_reads(false);
    EXPECT_EQ(on.l1_misses, wa.distinct) << what;
    EXPECT_EQ(on.l2_only, dy_sectors) << what;
    EXPECT_LE(on.l1_hits + on.l1_misses, wa.requested) << what;
    EXPECT_EQ(off.l1_misses + off.l1_hits, 0u) << what;
    EXPECT_EQ(off.l2_only, on.l1_hits + on.l1_misses + dy_sectors) << what;
    std::printf("%-22s A's sectors from L2: %llu through L1, %llu without (%.2fx)\n",
                what.c_str(), static_cast<unsigned long long>(on.l1_misses),
                static_cast<unsigned long long>(off.l2_only - dy_sectors),
                double(off.l2_only - dy_sectors) / double(on.l1_misses));
  }
  cuda::set_conv2d_bf16_tiles(cuda::Bf16Tiles::Heuristic);
}

// The tall tile's carveout (device_info.cuh, leave_rest_to_l1_of_resident: one block of 72
// KB a SM, so 100 KB of shared memory and 156 KB of L1 on an H100; the emulator sizes its L1
// model from the carveout a kernel sets, runtime.h's l1_bytes_per_block) keeps what a
// 256-channel map's taps reread. On a 16 x 16 x 256 map one block's 256 rows read all 256
// pixels (128 KB) through 9 taps: with that L1 every reread hits. With the most shared
// memory (228 KB, leaving 28 KB of L1) almost none does: the reuse between taps (kh, kw)
// and (kh, kw + 1) is 2 stages of 16 KB apart (K in blocks of 64 channels, KOrder; 8 in the
// plain order). The whole K must run in one block (one SM).
TEST(CopyReads, TheTallTilesCarveoutKeepsWhatA256ChannelMapsTapsReread) {
  REQUIRE_GPU();
  REQUIRE_ONE_EMULATED_SM();
  const Conv2dShape s = conv2d_shape(Shape{1, 16, 16, 256}, Shape{3, 3, 256, 32},
                                     Conv2dParams::same(3));
  ASSERT_EQ(cuda::conv2d_bf16_split_k(256, 32, 9 * 256), 1);
  const int64_t rows = s.n * s.h * s.w, nx = rows * s.c_in, ny = rows * s.c_out;
  const OnDevice<float> w(randoms(9 * s.c_in * s.c_out, 1));
  const OnDevice<uint16_t> x(bf16_randoms(nx, 2)), y(ny);
  const OnDevice<float> fws(cuda::conv2d_bf16_forward_workspace(s));
  const Sectors a = gathered_sectors(rows, 256, s, s.c_in, [&](int64_t r, int kh, int kw,
                                                               int64_t& pixel) {
    return forward_source(s, r, kh, kw, pixel);
  });
  cuda::set_conv2d_bf16_tiles(cuda::Bf16Tiles::Tall);
  auto reads = [&] {
    cuda_emu::reset_shared_traffic();
    cuda::conv2d_bf16_forward(s, x.ptr, w.ptr, nullptr, y.ptr, fws.ptr);
    return cuda_emu::shared_traffic()[kConvKernel].reads;
  };
  const cuda_emu::CopyReads carved = reads();
  cuda_emu::set_carveout_override(100);
  const cuda_emu::CopyReads all_shared = reads();
  cuda_emu::set_carveout_override(-2);
  cuda::set_conv2d_bf16_tiles(cuda::Bf16Tiles::Heuristic);
  EXPECT_EQ(carved.l1_misses, a.distinct);
  EXPECT_EQ(carved.l1_hits, a.requested - a.distinct);
  EXPECT_EQ(all_shared.l1_hits + all_shared.l1_misses, a.requested);
  EXPECT_LT(all_shared.l1_hits, a.requested / 20) << "hits with 28 KB of L1";
  std::printf("tall tile, 16x16x256: A's sectors from L2 %llu with its carveout (156 KB of L1),"
              " %llu with all 228 KB shared (28 KB), of %llu requested\n",
              static_cast<unsigned long long>(carved.l1_misses),
              static_cast<unsigned long long>(all_shared.l1_misses),
              static_cast<unsigned long long>(a.requested));
}

// What docs/kernels.md (v4 steps 12 and 13) claims of the model's layers, on two of them
// (the forward of the 32x32 128 -> 128 and the 16x16 256 -> 256 convolutions, one image):
// the KB each block pulls from L2 per MFLOP of the layer, A + B, with every block's L1 the
// one its kernel's carveout leaves it (78 KB for the 128x128 tiles, two an SM; 156 KB for
// the tall tile, one). Through L1 the 128x128 tile pulls under 0.65x what it pulls in L2
// only (the docs: 0.59), and the tall tile under 0.6x what the 128x128 tile pulls through
// L1 (0.54): its B is read once per 256 rows, its A hits as often. And v5's two tiles (its
// 128x128 one, its 256x128 one: docs/kernels.md, v5's tall tile). One emulated SM, as the
// test above.
TEST(CopyReads, TheModelsLayersPullLessFromL2ThroughL1AndOnTallTiles) {
  REQUIRE_GPU();
  REQUIRE_ONE_EMULATED_SM();
  for (const auto& [hw, c_in, c_out] : {std::tuple{32, 128, 128}, {16, 256, 256}}) {
    const Conv2dShape s = conv2d_shape(Shape{1, hw, hw, c_in}, Shape{3, 3, c_in, c_out},
                                       Conv2dParams::same(3));
    const int64_t rows = s.n * s.h * s.w;
    const OnDevice<float> w(randoms(9 * c_in * c_out, 1)), dw(9 * c_in * c_out);
    const OnDevice<uint16_t> x(bf16_randoms(rows * c_in, 2)), y(rows * c_out),
        dy(bf16_randoms(rows * c_out, 3)), dx(rows * c_in);
    const OnDevice<float> fws(cuda::conv2d_bf16_forward_workspace(s));
    const OnDevice<float> bws(cuda::conv2d_bf16_backward_workspace(s));
    const double mflop = 2.0 * rows * 9 * c_in * c_out / 1e6;
    auto kb_per_mflop = [&](cuda::Bf16Tiles tiles, bool through_l1,
                            const char* kernel = kConvKernel, bool dgrad = false) {
      const cuda::GathersThroughL1 gathers(through_l1);
      cuda::set_conv2d_bf16_tiles(tiles);
      cuda_emu::reset_shared_traffic();
      if (dgrad) {
        cuda::conv2d_bf16_backward(s, x.ptr, w.ptr, dy.ptr, dx.ptr, nullptr, nullptr, bws.ptr);
      } else {
        cuda::conv2d_bf16_forward(s, x.ptr, w.ptr, nullptr, y.ptr, fws.ptr);
      }
      const cuda_emu::CopyReads r = cuda_emu::shared_traffic()[kernel].reads;
      return (r.l2_only + r.l1_misses) * 32.0 / 1024 / mflop;
    };
    const double l2_only = kb_per_mflop(cuda::Bf16Tiles::Large, false),
                 large = kb_per_mflop(cuda::Bf16Tiles::Large, true),
                 tall = kb_per_mflop(cuda::Bf16Tiles::Tall, true);
    const std::string layer = std::to_string(hw) + "x" + std::to_string(hw) + " " +
                              std::to_string(c_in) + "->" + std::to_string(c_out);
    std::printf("%s forward, KB from L2 per MFLOP: 128x128 in L2 only %.2f, through L1 %.2f;"
                " 256x128 through L1 %.2f\n",
                layer.c_str(), l2_only, large, tall);
    EXPECT_LT(large, 0.65 * l2_only) << layer;
    EXPECT_LT(tall, 0.6 * large) << layer;
    // v5 (its 4-stage ring, one block an SM with 124 KB of L1; its tall tile, 92 KB)
    const double v5 = kb_per_mflop(cuda::Bf16Tiles::Wgmma, true, kConvV5Kernel),
                 v5_tall = kb_per_mflop(cuda::Bf16Tiles::WgmmaTall, true, kConvV5Kernel),
                 v5_dgrad = kb_per_mflop(cuda::Bf16Tiles::Wgmma, true, kConvV5Kernel, true),
                 v5_tall_dgrad =
                     kb_per_mflop(cuda::Bf16Tiles::WgmmaTall, true, kConvV5Kernel, true);
    std::printf("%s on v5, KB from L2 per MFLOP through L1: forward 128x128 %.2f, 256x128"
                " %.2f; dgrad 128x128 %.2f, 256x128 %.2f\n",
                layer.c_str(), v5, v5_tall, v5_dgrad, v5_tall_dgrad);
    // v5's 128x128 tile pulls what v4's does (the same tiles, the rereads held by both L1s).
    // Its tall tile's 92 KB hold them too, with K in blocks of 64 channels (KOrder: a
    // reread one stage of 32 KB back; in the plain order, 4 at 256 channels, none held and
    // more pulled than the 128x128 tile): B once per 256 rows, A's hits as many, 0.54x. The
    // dgrad's taps walk dy's channels as the forward's walk x's.
    EXPECT_EQ(v5, large) << layer;
    EXPECT_LT(v5_tall, 0.6 * v5) << layer;
    EXPECT_LT(v5_tall_dgrad, 0.6 * v5_dgrad) << layer;
    // The wgrad: its columns in blocks of 64 channels through the taps (WgradA), against the
    // plain order's one tap a 128-wide block, whose copies request each (pixel, tap) sector
    // once (computed: no block rereads a sector there); dy (B) from L2 only, the same in
    // every order.
    auto wgrad_reads = [&](cuda::Bf16Tiles tiles, bool through_l1, const char* kernel) {
      const cuda::GathersThroughL1 gathers(through_l1);
      cuda::set_conv2d_bf16_tiles(tiles);
      cuda_emu::reset_shared_traffic();
      cuda::conv2d_bf16_backward(s, x.ptr, w.ptr, dy.ptr, nullptr, dw.ptr, nullptr, bws.ptr);
      return cuda_emu::shared_traffic()[kernel].reads;
    };
    auto kb = [&](uint64_t sectors) { return sectors * 32.0 / 1024 / mflop; };
    auto from_l2 = [&](const cuda_emu::CopyReads& r) { return kb(r.l2_only + r.l1_misses); };
    const cuda_emu::CopyReads w_large = wgrad_reads(cuda::Bf16Tiles::Large, true, kConvKernel);
    const cuda_emu::CopyReads w_tall_reads =
        wgrad_reads(cuda::Bf16Tiles::Tall, true, kConvKernel);
    const double w_l2_only = from_l2(wgrad_reads(cuda::Bf16Tiles::Large, false, kConvKernel)),
                 w_tall = from_l2(w_tall_reads),
                 w_v5 = from_l2(wgrad_reads(cuda::Bf16Tiles::Wgmma, true, kConvV5Kernel)),
                 w_v5_tall =
                     from_l2(wgrad_reads(cuda::Bf16Tiles::WgmmaTall, true, kConvV5Kernel));
    // x's sectors in the plain order: each block's, for each of dw's column tiles of 128 (a
    // 256-column block of two taps read them as often: its copies cover one pixel a warp)
    const uint64_t plain_a = wgrad_sectors(s, c_in, c_in, 128, forward_source).requested *
                             ((c_out + 127) / 128);
    std::printf("%s wgrad, KB from L2 per MFLOP: 128x128 tap by tap %.2f (computed), in "
                "blocks in L2 only %.2f, through L1 %.2f (x's part %.2fx the plain order's);"
                " 256x128 tap by tap %.2f (computed), in blocks through L1 %.2f; v5 128x128 "
                "%.2f, 256x128 %.2f\n",
                layer.c_str(), kb(plain_a + w_large.l2_only), w_l2_only, from_l2(w_large),
                double(w_large.l1_misses) / double(plain_a), kb(plain_a + w_tall_reads.l2_only),
                w_tall, w_v5, w_v5_tall);
    // A block of 128 columns: 64 channels through 2 taps, whose rereads of x hit (x's part
    // 0.56-0.57x on both layers); the tall tile's 4 taps and B once per 256 columns (0.57x
    // and 0.54x of the 128x128 tile). v5's tiles pull what v4's of the same size do.
    EXPECT_LT(w_large.l1_misses, 0.65 * plain_a) << layer;
    EXPECT_LT(from_l2(w_large), w_l2_only) << layer;
    EXPECT_LT(w_tall, 0.6 * from_l2(w_large)) << layer;
    EXPECT_EQ(w_v5, from_l2(w_large)) << layer;
    EXPECT_EQ(w_v5_tall, w_tall) << layer;
    cuda::set_conv2d_bf16_tiles(cuda::Bf16Tiles::Heuristic);
  }
}

// The flash kernels' forward, then backward, on qkv in storage T (f32, or bf16 bits: then
// the tiles come by cp.async; from f32 they are converted through registers, plain stores
// that the emulator does not count).
template <class T>
void expect_flash_conflict_free(const AttentionShape& s, const std::string& what,
                                const OnDevice<T>& qkv, const OnDevice<T>& dout) {
  const bool copies = std::is_same_v<T, uint16_t>;
  const OnDevice<T> out(dout.n), dqkv(qkv.n);
  const OnDevice<float> lse(s.b * s.heads * s.l), delta(s.b * s.heads * s.l);
  cuda_emu::reset_shared_traffic();
  cuda::attention_flash_bf16_forward(s, qkv.ptr, out.ptr, lse.ptr);
  expect_conflict_free("(flash_forward_bf16<D, A>)", "flash forward " + what, copies);
  cuda_emu::reset_shared_traffic();
  cuda::attention_flash_bf16_backward(s, qkv.ptr, out.ptr, lse.ptr, dout.ptr, dqkv.ptr,
                                      delta.ptr);
  expect_conflict_free("(flash_dkv_bf16<D, A>)", "flash dk dv " + what, copies);
  expect_conflict_free("(flash_dq_bf16<D, A>)", "flash dq " + what, copies);
}

// Rows of D + 8 bf16 (kernels/cuda/flash_bf16.cuh): D / 8 + 1 chunks a row, an odd number
// at every supported head dim, so 8 consecutive rows at one column (an ldmatrix) are in 8
// different bank groups; the copies take rows in flash::in_bank_order (at D = 32 in the
// order 0 1 2 ... they took 2.00 wavefronts per quarter). Every head dim, both storages.
TEST(BankConflicts, FlashAttentionIsConflictFree) {
  REQUIRE_GPU();
  for (int64_t d : {32, 64, 128, 256}) {
    AttentionShape s;
    s.b = 1;
    s.l = 70;  // partial query and key tiles
    s.c = d;
    s.heads = 1;
    const size_t n_qkv = s.b * s.l * 3 * s.c, n_out = s.b * s.l * s.c;
    const std::string dim = "d " + std::to_string(d);
    expect_flash_conflict_free(s, "f32, " + dim, OnDevice<float>(randoms(n_qkv, 7)),
                               OnDevice<float>(randoms(n_out, 8)));
    expect_flash_conflict_free(s, "bf16, " + dim, OnDevice<uint16_t>(bf16_randoms(n_qkv, 9)),
                               OnDevice<uint16_t>(bf16_randoms(n_out, 10)));
  }
}

}  // namespace
}  // namespace ddpm
