#include "engine/collective.h"

#include "engine/check.h"
#include "engine/ops.h"

namespace ddpm {

void fold_in_order(const std::vector<Tensor>& parts, const Tensor& sum, bool sum_holds_prefix) {
  CHECK(!parts.empty(), "fold_in_order: no parts");
  size_t i = 0;
  if (!sum_holds_prefix) sum.copy_from(parts[i++]);  // 0 + s_0 is s_0: a copy, exactly
  for (; i < parts.size(); ++i) accumulate(sum, parts[i]);
}

}  // namespace ddpm
