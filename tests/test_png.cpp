// The PNG writer (engine/png.h) checked by another implementation: zlib (a dependency for
// the gzip'd IDX files) inflates the IDAT stream, which verifies the stored blocks' headers
// and the Adler-32, and recomputes every chunk's CRC-32; the inflated bytes must be the
// scanlines, a filter byte 0 before each row.
#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <string>
#include <vector>

#include "engine/png.h"
#include "tests/test_util.h"

namespace ddpm {
namespace {

using test::expect_error;

TEST(Png, EncodesAValidStructure) {
  const std::vector<uint8_t> png = encode_png(2, 1, {255, 0, 0, 0, 255, 0});
  const uint8_t signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  EXPECT_TRUE(std::equal(signature, signature + 8, png.begin()));
  // IHDR: length 13, width 2, height 1, depth 8, colour type 2
  EXPECT_EQ(png[11], 13);
  EXPECT_EQ(std::string(png.begin() + 12, png.begin() + 16), "IHDR");
  EXPECT_EQ(png[19], 2);
  EXPECT_EQ(png[23], 1);
  // IEND's CRC is a constant of the format: AE 42 60 82.
  const std::vector<uint8_t> tail(png.end() - 4, png.end());
  EXPECT_EQ(tail, (std::vector<uint8_t>{0xAE, 0x42, 0x60, 0x82}));
  expect_error([] { encode_png(2, 2, {1, 2, 3}); }, {"png: 3 bytes for a 2x2 RGB image"});
}

uint32_t be32(const std::vector<uint8_t>& b, size_t at) {
  return uint32_t{b[at]} << 24 | uint32_t{b[at + 1]} << 16 | uint32_t{b[at + 2]} << 8 | b[at + 3];
}

// 200 x 120 pixels: 72,120 bytes of scanlines, more than one stored block holds (65,535).
TEST(Png, ZlibInflatesTheScanlinesAndEveryCrcMatches) {
  const int w = 200, h = 120;
  std::vector<uint8_t> rgb(static_cast<size_t>(w) * h * 3);
  for (size_t i = 0; i < rgb.size(); ++i) rgb[i] = static_cast<uint8_t>(i * 7 + i / 600);
  const std::vector<uint8_t> png = encode_png(w, h, rgb);
  std::vector<std::string> types;
  std::vector<uint8_t> idat;
  for (size_t at = 8; at < png.size();) {
    ASSERT_LE(at + 12, png.size()) << "a chunk runs past the end";
    const uint32_t length = be32(png, at);
    ASSERT_LE(at + 12 + length, png.size());
    const std::string type(png.begin() + at + 4, png.begin() + at + 8);
    const uLong crc = crc32(0L, png.data() + at + 4, 4 + length);
    EXPECT_EQ(be32(png, at + 8 + length), crc) << type << "'s CRC";
    if (type == "IDAT") idat.insert(idat.end(), png.begin() + at + 8, png.begin() + at + 8 + length);
    types.push_back(type);
    at += 12 + length;
  }
  EXPECT_EQ(types, (std::vector<std::string>{"IHDR", "IDAT", "IEND"}));
  std::vector<uint8_t> raw(static_cast<size_t>(h) * (1 + 3 * w) + 1);  // one spare byte
  uLongf size = raw.size();
  ASSERT_EQ(uncompress(raw.data(), &size, idat.data(), idat.size()), Z_OK);
  ASSERT_EQ(size, static_cast<uLongf>(h) * (1 + 3 * w));
  for (int y = 0; y < h; ++y) {
    const uint8_t* row = raw.data() + static_cast<size_t>(y) * (1 + 3 * w);
    ASSERT_EQ(row[0], 0) << "row " << y << "'s filter";
    ASSERT_TRUE(std::equal(row + 1, row + 1 + 3 * w, rgb.begin() + static_cast<size_t>(y) * 3 * w))
        << "row " << y;
  }
}

}  // namespace
}  // namespace ddpm
