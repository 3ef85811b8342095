// The per-shape choice of attention_autotune.cuh. The candidates run through the same entry
// points the op calls (attention.cuh), the forward, then for training the backward (the
// first contribution to dqkv written outright, as a step's is), on scratch buffers filled
// with a fixed pattern (autotune_timing.cuh): qkv and dout bf16, out, lse, delta and the
// paths' own matrices as the op allocates them. The key is the whole shape (batch, length,
// channels, heads) and whether a backward follows.
#include <algorithm>
#include <array>
#include <cstdio>
#include <map>
#include <mutex>
#include <vector>

#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/attention_autotune.cuh"
#include "kernels/cuda/autotune_timing.cuh"
#include "kernels/cuda/gemm_sm90.cuh"

namespace ddpm::cuda {

namespace {

using autotune::Scratch;

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
  const FlashForwardKernel forward_kernel = flash_forward_kernel_autotuned(s);
  std::vector<AttentionBf16Path> candidates{AttentionBf16Path::Flash};
  if (gemms_run(s) && backward) candidates.push_back(AttentionBf16Path::FlashDqByGemm);
  if (gemms_run(s)) candidates.push_back(AttentionBf16Path::Gemm);
  const int64_t rows = s.b * s.l, stats = s.b * s.heads * s.l;
  const int64_t matrices = gemms_run(s) ? attention_gemm_matrix_elements(s) : 0;
  const int64_t ds = gemms_run(s) ? attention_flash_bf16_ds_elements(s) : 0;
  // bf16 buffers of n elements take n / 2 floats (rounded up)
  const auto halves = [](int64_t n) { return (n + 1) / 2; };
  const Scratch qkv(halves(rows * 3 * s.c)), out(halves(rows * s.c)), dout(halves(rows * s.c)),
      dqkv(halves(rows * 3 * s.c)), lse(stats), delta(stats), ds_flash(halves(ds)),
      p(halves(matrices)), scores(matrices), dp(matrices), ds_gemm(halves(matrices));
  qkv.filled<uint16_t>(rows * 3 * s.c);
  dout.filled<uint16_t>(rows * s.c);
  std::vector<double> ms;
  for (AttentionBf16Path path : candidates) {
    ms.push_back(autotune::median_ms([&] {
      if (path == AttentionBf16Path::Gemm) {
        attention_gemm_forward(s, qkv.get<uint16_t>(), out.get<uint16_t>(), nullptr,
                               p.get<uint16_t>(), scores.get());
        if (backward)
          attention_gemm_backward(s, qkv.get<uint16_t>(), p.get<uint16_t>(),
                                  dout.get<uint16_t>(), dqkv.get<uint16_t>(), dp.get(),
                                  ds_gemm.get<uint16_t>(), GradWrite::Assign);
      } else {
        attention_flash_bf16_forward_by(forward_kernel, s, qkv.get<uint16_t>(),
                                        out.get<uint16_t>(), lse.get());
        if (backward)
          attention_flash_bf16_backward(
              s, qkv.get<uint16_t>(), out.get<uint16_t>(), lse.get(), dout.get<uint16_t>(),
              dqkv.get<uint16_t>(), delta.get(), GradWrite::Assign,
              path == AttentionBf16Path::FlashDqByGemm ? ds_flash.get<uint16_t>() : nullptr);
      }
    }));
  }
  const size_t best = static_cast<size_t>(std::min_element(ms.begin(), ms.end()) - ms.begin());
  std::printf("attention autotune: batch %lld, length %lld, %lld channels, %lld heads (%s):",
              static_cast<long long>(s.b), static_cast<long long>(s.l),
              static_cast<long long>(s.c), static_cast<long long>(s.heads),
              backward ? "forward + backward" : "forward");
  for (size_t i = 0; i < candidates.size(); ++i)
    std::printf("%s %s %.3f ms", i ? "," : "", attention_bf16_path_name(candidates[i]), ms[i]);
  std::printf(" -> %s\n", attention_bf16_path_name(candidates[best]));
  return candidates[best];
}

}  // namespace

const char* attention_bf16_path_name(AttentionBf16Path p) {
  switch (p) {
    case AttentionBf16Path::Flash: return "flash";
    case AttentionBf16Path::FlashDqByGemm: return "flash, dq by cuBLAS";
    case AttentionBf16Path::Gemm: return "cuBLAS GEMMs and row kernels";
  }
  return "?";
}

AttentionBf16Path attention_bf16_path_by_rule(const AttentionShape& s) {
  if (attention_gemm_bf16_pays(s)) return AttentionBf16Path::Gemm;
  return attention_flash_bf16_dq_by_gemm_pays(s) ? AttentionBf16Path::FlashDqByGemm
                                                 : AttentionBf16Path::Flash;
}

const char* flash_forward_kernel_name(FlashForwardKernel k) {
  return k == FlashForwardKernel::Wgmma ? "wgmma" : "mma.sync";
}

void attention_flash_bf16_forward_by(FlashForwardKernel k, const AttentionShape& s,
                                     const uint16_t* qkv, uint16_t* out, float* lse) {
  if (k == FlashForwardKernel::Wgmma) return attention_flash_wgmma_forward(s, qkv, out, lse);
  attention_flash_bf16_forward(s, qkv, out, lse);
}

namespace {
using Key = std::array<int64_t, 5>;  // batch, length, channels, heads, backward
std::mutex g_mutex;
std::map<Key, AttentionBf16Path> g_choices;
Key key_of(const AttentionShape& s, bool backward) { return {s.b, s.l, s.c, s.heads, backward}; }
}  // namespace

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

namespace {
// The forward kernels' choices, apart from the paths' (whose timing asks for them: a
// mutex of their own).
std::mutex g_forward_mutex;
std::map<Key, FlashForwardKernel> g_forward_choices;

FlashForwardKernel tune_forward(const AttentionShape& s) {
  if (!gemm_sm90_available() || !attention_flash_wgmma_supports(s))
    return FlashForwardKernel::MmaSync;  // the one kernel that runs s
  CHECK(!autotune::capturing(),
        "cuda_autotune met a new attention shape inside a CUDA graph capture (batch "
            << s.b << ", length " << s.l << ", " << s.c << " channels, " << s.heads
            << " heads): the eager steps before a capture must see every shape");
  const int64_t rows = s.b * s.l;
  const auto halves = [](int64_t n) { return (n + 1) / 2; };
  const Scratch qkv(halves(rows * 3 * s.c)), out(halves(rows * s.c)), lse(s.b * s.heads * s.l);
  qkv.filled<uint16_t>(rows * 3 * s.c);
  const FlashForwardKernel kernels[] = {FlashForwardKernel::MmaSync, FlashForwardKernel::Wgmma};
  double ms[2];
  for (int i = 0; i < 2; ++i)
    ms[i] = autotune::median_ms([&] {
      attention_flash_bf16_forward_by(kernels[i], s, qkv.get<uint16_t>(), out.get<uint16_t>(),
                                      lse.get());
    });
  const int best = ms[1] < ms[0] ? 1 : 0;
  std::printf("attention autotune: batch %lld, length %lld, %lld channels, %lld heads (flash "
              "forward kernel): %s %.3f ms, %s %.3f ms -> %s\n",
              static_cast<long long>(s.b), static_cast<long long>(s.l),
              static_cast<long long>(s.c), static_cast<long long>(s.heads),
              flash_forward_kernel_name(kernels[0]), ms[0], flash_forward_kernel_name(kernels[1]),
              ms[1], flash_forward_kernel_name(kernels[best]));
  return kernels[best];
}
}  // namespace

FlashForwardKernel flash_forward_kernel_autotuned(const AttentionShape& s) {
  std::lock_guard<std::mutex> lock(g_forward_mutex);
  const Key key = key_of(s, false);
  auto found = g_forward_choices.find(key);
  if (found == g_forward_choices.end())
    found = g_forward_choices.emplace(key, tune_forward(s)).first;
  return found->second;
}

bool flash_forward_kernel_remember(const AttentionShape& s, FlashForwardKernel k) {
  std::lock_guard<std::mutex> lock(g_forward_mutex);
  return g_forward_choices.emplace(key_of(s, false), k).second;
}

}  // namespace ddpm::cuda
