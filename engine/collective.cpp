#include "engine/collective.h"

#include <sstream>

#include "engine/check.h"
#include "engine/ops.h"

namespace ddpm {

void fold_in_order(const std::vector<Tensor>& parts, const Tensor& sum, bool sum_holds_prefix) {
  CHECK(!parts.empty(), "fold_in_order: no parts");
  size_t i = 0;
  if (!sum_holds_prefix) sum.copy_from(parts[i++]);  // 0 + s_0 is s_0: a copy, exactly
  for (; i < parts.size(); ++i) accumulate(sum, parts[i]);
}

void check_ranks_agree(Collective& world, const std::string& what, const std::string& value) {
  const std::vector<std::string> all = world.all_gather_text(value);
  std::ostringstream differ;
  for (size_t r = 1; r < all.size(); ++r)
    if (all[r] != all[0]) differ << (differ.tellp() > 0 ? ", " : "") << "rank " << r << " has " << all[r];
  CHECK(differ.tellp() == 0, "the " << world.size() << " ranks disagree on " << what << ": rank 0 has "
                                    << all[0] << ", " << differ.str()
                                    << " (every rank must start from the same config and files)");
}

}  // namespace ddpm
