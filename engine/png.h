// A minimal PNG writer (8-bit RGB), so samples and plots need no image library. The image
// data goes into "stored" (uncompressed) deflate blocks: larger files than zlib would make,
// but a few dozen lines anyone can check against the PNG and zlib specifications
// (RFC 2083, RFC 1950/1951). Written atomically.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ddpm {

// rgb: height rows of width pixels, 3 bytes each.
void write_png(const std::string& path, int width, int height, const std::vector<uint8_t>& rgb);
// The encoded file, for tests.
std::vector<uint8_t> encode_png(int width, int height, const std::vector<uint8_t>& rgb);

}  // namespace ddpm
