// Check macros: each throws ddpm::Error naming the expression, the file and the line.
// CUDA_CHECK / CUBLAS_CHECK / CUDNN_CHECK are exercised with failing status codes, which
// needs the libraries but no GPU.
#include <gtest/gtest.h>

#include "engine/check.h"
#include "tests/test_util.h"

#if DDPM_WITH_CUDA
#include "engine/cuda_check.h"
#include "engine/cudnn_check.h"
#endif

namespace ddpm {
namespace {

using test::expect_error;

TEST(Check, ThrowsWithExpressionFileAndLine) {
  const int channels = 65, groups = 32;
  expect_error([&] { CHECK(channels % groups == 0, "C=" << channels << " G=" << groups); },
               {"test_check.cpp:", "C=65 G=32", "channels % groups == 0"});
  EXPECT_NO_THROW(CHECK(channels > groups, "never"));
  expect_error([] { THROW_ERROR("unknown option '" << "--bogus" << "'"); },
               {"test_check.cpp:", "unknown option '--bogus'"});
}

#if DDPM_WITH_CUDA
TEST(Check, CudaCheckNamesTheError) {
  expect_error([] { CUDA_CHECK(cudaErrorInvalidValue); },
               {"cudaErrorInvalidValue", "invalid argument", "test_check.cpp:"});
}

TEST(Check, CublasCheckNamesTheStatus) {
  expect_error([] { CUBLAS_CHECK(CUBLAS_STATUS_INVALID_VALUE); },
               {"CUBLAS_STATUS_INVALID_VALUE", "test_check.cpp:"});
}

TEST(Check, CudnnCheckNamesTheStatus) {
  expect_error([] { CUDNN_CHECK(CUDNN_STATUS_BAD_PARAM); },
               {"CUDNN_STATUS_BAD_PARAM", "test_check.cpp:"});
}
#endif

}  // namespace
}  // namespace ddpm
