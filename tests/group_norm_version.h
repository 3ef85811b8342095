// A test's scope with one of the CUDA group norm's mappings onto blocks selected
// (kernels/cuda/group_norm.cuh: v1 a block per group, v2 a block per channel slab, v3 the
// slab's channels in runs of 8, v4 the slab in registers; by shape, the default, one of the
// last three), and the one chosen before restored at its end.
#pragma once

#include "kernels/cuda/group_norm.cuh"

namespace ddpm::test {

class GroupNormVersion {
 public:
  explicit GroupNormVersion(cuda::GroupNormMapping m) : saved_(cuda::group_norm_mapping()) {
    cuda::set_group_norm_mapping(m);
  }
  ~GroupNormVersion() { cuda::set_group_norm_mapping(saved_); }
  GroupNormVersion(const GroupNormVersion&) = delete;
  GroupNormVersion& operator=(const GroupNormVersion&) = delete;

 private:
  cuda::GroupNormMapping saved_;
};

// Every mapping, for tests that run once per mapping (ByShape is one of these per shape).
constexpr cuda::GroupNormMapping kGroupNormMappings[] = {cuda::GroupNormMapping::BlockPerGroup,
                                                         cuda::GroupNormMapping::ChannelSlab,
                                                         cuda::GroupNormMapping::ChannelRuns,
                                                         cuda::GroupNormMapping::SlabInRegisters};

inline const char* mapping_name(cuda::GroupNormMapping m) {
  switch (m) {
    case cuda::GroupNormMapping::BlockPerGroup:
      return "block per group";
    case cuda::GroupNormMapping::ChannelSlab:
      return "channel slab";
    case cuda::GroupNormMapping::ChannelRuns:
      return "channel runs";
    case cuda::GroupNormMapping::SlabInRegisters:
      return "slab in registers";
    case cuda::GroupNormMapping::ByShape:
      return "by shape";
  }
  return "?";
}

}  // namespace ddpm::test
