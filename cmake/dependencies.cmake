# Third-party pieces: GoogleTest, nlohmann/json, OpenMP, zlib (reading the gzip'd IDX files
# of Fashion-MNIST). Found on the system (Debian packages libgtest-dev, nlohmann-json3-dev,
# zlib1g-dev), or, for all but OpenMP (it comes with the compiler), from a folder prepared
# offline by scripts/prepare-gpu-deps.sh for a GPU machine that has no package registry:
#   -DDDPM_DEPS_DIR=/path/with/googletest-src/json-include/zlib
set(DDPM_DEPS_DIR "" CACHE PATH
    "Folder holding googletest/ sources, nlohmann/json headers and zlib/ (headers, libz.a)")

find_package(OpenMP REQUIRED)

# zlib: the system's, else deps/zlib (zlib.h, zconf.h and the static libz.a copied from the
# machine that prepared deps/: headers and library of one version, and nothing to find at
# run time). A machine with the library but not its -dev headers is the case this is for.
find_package(ZLIB QUIET)
if(NOT ZLIB_FOUND)
  set(DDPM_ZLIB_DIR ${DDPM_DEPS_DIR}/zlib)
  if(NOT (EXISTS ${DDPM_ZLIB_DIR}/include/zlib.h AND EXISTS ${DDPM_ZLIB_DIR}/lib/libz.a))
    message(FATAL_ERROR "zlib not found: install zlib1g-dev, or set DDPM_DEPS_DIR to a folder "
                        "with zlib/include/zlib.h and zlib/lib/libz.a (scripts/prepare-gpu-deps.sh)"
                        "; DDPM_DEPS_DIR is '${DDPM_DEPS_DIR}'")
  endif()
  add_library(ZLIB::ZLIB STATIC IMPORTED)
  set_target_properties(ZLIB::ZLIB PROPERTIES IMPORTED_LOCATION ${DDPM_ZLIB_DIR}/lib/libz.a
                        INTERFACE_INCLUDE_DIRECTORIES ${DDPM_ZLIB_DIR}/include)
  message(STATUS "zlib: from ${DDPM_ZLIB_DIR}")
endif()

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
