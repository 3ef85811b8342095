# Warnings for our own C++ code, as an interface target so third-party code is not affected.
add_library(ddpm_warnings INTERFACE)
target_compile_options(ddpm_warnings INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wshadow -Wno-unknown-pragmas>)

# No floating-point contraction on the host: a*b+c stays two roundings unless the code asks
# for fma explicitly. The CPU reference must not change with -march, and the Philox normal
# draw must give the same bits on CPU and GPU (see engine/philox.h).
add_compile_options($<$<COMPILE_LANGUAGE:CXX>:-ffp-contract=off>)
