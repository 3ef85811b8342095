// The per-shape choice of attention_autotune.cuh. The candidates run through the same entry
// points the op calls (attention.cuh), the forward, then for training the backward (the
// first contribution to dqkv written outright, as a step's is), on scratch buffers filled
// with a fixed pattern (autotune_scratch.cuh): qkv and dout bf16, out, lse, delta and the
// paths' own matrices as the op allocates them. Each candidate's first run is checked
// against the first's, the mma.sync flash pair (autotune_check.cuh): out, or for training
// dqkv, within kSameSumsBound of the largest value of each of its thirds. The key is the
// whole shape (batch, length, channels, heads) and whether a backward follows.
#include <array>
#include <cstdio>
#include <map>
#include <mutex>
#include <vector>

#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/attention_autotune.cuh"
#include "kernels/cuda/autotune_check.cuh"
#include "kernels/cuda/autotune_scratch.cuh"
#include "kernels/cuda/gemm_sm90.cuh"

namespace ddpm::cuda {

namespace {

using autotune::Scratch;

bool g_unverified = false;  // set_attention_autotune_unverified

// The GEMM paths' B H L L matrices, each at most this many elements (2^28: S and dP in fp32,
// P and dS in bf16, 3 GiB of scratch in all), so that timing them cannot exhaust the memory
// a long sequence's flash pair never needs.
constexpr int64_t kMaxMatrixElements = int64_t(1) << 28;

bool gemms_run(const AttentionShape& s) {
  return s.c % s.heads == 0 && s.head_dim() % 8 == 0 &&
         attention_gemm_matrix_elements(s) <= kMaxMatrixElements;
}

AttentionBf16Path tune(const AttentionShape& s, bool backward) {
  CHECK(!autotune::capturing(),
        "cuda_autotune met a new attention shape inside a CUDA graph capture (batch "
            << s.b << ", length " << s.l << ", " << s.c << " channels, " << s.heads
            << " heads): the eager steps before a capture must see every shape");
  std::vector<AttentionBf16Path> candidates{AttentionBf16Path::Flash};
  if (gemms_run(s) && backward) candidates.push_back(AttentionBf16Path::FlashDqByGemm);
  if (gemms_run(s)) candidates.push_back(AttentionBf16Path::Gemm);
  const bool wgmma =
      g_unverified && gemm_sm90_available() && attention_flash_wgmma_supports(s);
  if (wgmma) candidates.push_back(AttentionBf16Path::FlashWgmma);
  const int64_t rows = s.b * s.l, stats = s.b * s.heads * s.l;
  const int64_t matrices = gemms_run(s) ? attention_gemm_matrix_elements(s) : 0;
  const int64_t ds = gemms_run(s) || wgmma ? attention_flash_bf16_ds_elements(s) : 0;
  // bf16 buffers of n elements take n / 2 floats (rounded up)
  const auto halves = [](int64_t n) { return (n + 1) / 2; };
  const Scratch qkv(halves(rows * 3 * s.c)), out(halves(rows * s.c)), dout(halves(rows * s.c)),
      dqkv(halves(rows * 3 * s.c)), lse(stats), delta(stats), ds_flash(halves(ds)),
      p(halves(matrices)), scores(matrices), dp(matrices), ds_gemm(halves(matrices));
  qkv.filled<uint16_t>(rows * 3 * s.c);
  dout.filled<uint16_t>(rows * s.c);
  // out (a forward alone), or dqkv (its q, k and v thirds each held to its own scale;
  // assigned: nvcc 13.0's front end crashed on a conditional expression of these aggregates)
  autotune::Output checked{out.get(), rows * s.c, autotune::Compare::Bf16};
  if (backward) checked = {dqkv.get(), rows * 3 * s.c, autotune::Compare::Bf16, 3 * s.c, 3};
  const autotune::Check check({checked});
  const auto run = [&](size_t i) {
    const AttentionBf16Path path = candidates[i];
    if (path == AttentionBf16Path::Gemm) {
      attention_gemm_forward(s, qkv.get<uint16_t>(), out.get<uint16_t>(), nullptr,
                             p.get<uint16_t>(), scores.get());
      if (backward)
        attention_gemm_backward(s, qkv.get<uint16_t>(), p.get<uint16_t>(), dout.get<uint16_t>(),
                                dqkv.get<uint16_t>(), dp.get(), ds_gemm.get<uint16_t>(),
                                GradWrite::Assign);
    } else if (path == AttentionBf16Path::FlashWgmma) {
      attention_flash_wgmma_forward(s, qkv.get<uint16_t>(), out.get<uint16_t>(), lse.get());
      if (backward)
        attention_flash_wgmma_backward(s, qkv.get<uint16_t>(), out.get<uint16_t>(), lse.get(),
                                       dout.get<uint16_t>(), dqkv.get<uint16_t>(), delta.get(),
                                       ds_flash.get<uint16_t>(), GradWrite::Assign);
    } else {
      attention_flash_bf16_forward(s, qkv.get<uint16_t>(), out.get<uint16_t>(), lse.get());
      if (backward)
        attention_flash_bf16_backward(
            s, qkv.get<uint16_t>(), out.get<uint16_t>(), lse.get(), dout.get<uint16_t>(),
            dqkv.get<uint16_t>(), delta.get(), GradWrite::Assign,
            path == AttentionBf16Path::FlashDqByGemm ? ds_flash.get<uint16_t>() : nullptr);
    }
  };
  const std::vector<autotune::Timing> timings =
      autotune::check_and_time(candidates.size(), check, autotune::kSameSumsBound, run);
  // the line says what was checked (the output each candidate's first run was held to)
  std::printf("attention autotune: batch %lld, length %lld, %lld channels, %lld heads (%s):",
              static_cast<long long>(s.b), static_cast<long long>(s.l),
              static_cast<long long>(s.c), static_cast<long long>(s.heads),
              checked.p != dqkv.get() ? "forward, out checked"
              : checked.groups == 3   ? "forward + backward, dqkv checked by its thirds"
                                      : "forward + backward, dqkv checked whole");
  std::vector<const char*> names;
  for (AttentionBf16Path path : candidates) names.push_back(attention_bf16_path_name(path));
  return candidates[autotune::print_and_pick(names, timings, autotune::kSameSumsBound)];
}

}  // namespace

const char* attention_bf16_path_name(AttentionBf16Path p) {
  switch (p) {
    case AttentionBf16Path::Flash: return "flash";
    case AttentionBf16Path::FlashDqByGemm: return "flash, dq by cuBLAS";
    case AttentionBf16Path::Gemm: return "cuBLAS GEMMs and row kernels";
    case AttentionBf16Path::FlashWgmma: return "flash on wgmma";
  }
  return "?";
}

AttentionBf16Path attention_bf16_path_by_rule(const AttentionShape& s) {
  if (attention_gemm_bf16_pays(s)) return AttentionBf16Path::Gemm;
  return attention_flash_bf16_dq_by_gemm_pays(s) ? AttentionBf16Path::FlashDqByGemm
                                                 : AttentionBf16Path::Flash;
}

namespace {
// batch, length, channels, heads, backward, unverified paths taken
using Key = std::array<int64_t, 6>;
std::mutex g_mutex;
std::map<Key, AttentionBf16Path> g_choices;
Key key_of(const AttentionShape& s, bool backward) {
  return {s.b, s.l, s.c, s.heads, backward, g_unverified};
}
}  // namespace

void set_attention_autotune_unverified(bool on) {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_unverified = on;
}

AttentionBf16Path attention_bf16_path_autotuned(const AttentionShape& s, bool backward) {
  std::lock_guard<std::mutex> lock(g_mutex);
  const Key key = key_of(s, backward);
  auto found = g_choices.find(key);
  if (found == g_choices.end()) found = g_choices.emplace(key, tune(s, backward)).first;
  return found->second;
}

bool attention_bf16_path_remember(const AttentionShape& s, bool backward, AttentionBf16Path p) {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_choices.emplace(key_of(s, backward), p).second;
}

}  // namespace ddpm::cuda
