# Third-party pieces: GoogleTest, nlohmann/json, OpenMP, zlib (reading the gzip'd IDX files
# of Fashion-MNIST). Found on the system (Debian packages libgtest-dev, nlohmann-json3-dev,
# zlib1g-dev), or, for the first two, built from a folder prepared offline:
#   -DDDPM_DEPS_DIR=/path/with/googletest-src/and/json-include
set(DDPM_DEPS_DIR "" CACHE PATH "Folder holding googletest/ sources and nlohmann/json headers")

find_package(OpenMP REQUIRED)
find_package(ZLIB REQUIRED)

find_package(nlohmann_json 3.2 QUIET)
if(NOT nlohmann_json_FOUND)
  find_path(DDPM_JSON_INCLUDE nlohmann/json.hpp HINTS ${DDPM_DEPS_DIR}/json/include)
  if(NOT DDPM_JSON_INCLUDE)
    message(FATAL_ERROR "nlohmann/json not found: install nlohmann-json3-dev or set DDPM_DEPS_DIR")
  endif()
  add_library(nlohmann_json::nlohmann_json INTERFACE IMPORTED)
  target_include_directories(nlohmann_json::nlohmann_json INTERFACE ${DDPM_JSON_INCLUDE})
endif()

if(EXISTS ${DDPM_DEPS_DIR}/googletest/CMakeLists.txt)
  set(INSTALL_GTEST OFF CACHE BOOL "" FORCE)
  add_subdirectory(${DDPM_DEPS_DIR}/googletest ${CMAKE_BINARY_DIR}/googletest EXCLUDE_FROM_ALL)
  if(NOT TARGET GTest::gtest_main)
    add_library(GTest::gtest_main ALIAS gtest_main)
  endif()
else()
  find_package(GTest REQUIRED)
endif()
