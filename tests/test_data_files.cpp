// The data files of Fashion-MNIST and what the engine writes for the FID tools:
// - IDX (models/data/idx.h): a valid file round-trips, gzip'd or plain; a bad magic number,
//   another element type, a header or data cut short and trailing bytes are errors naming
//   the file and the byte offset, and so are a .gz cut short or damaged; FashionMnist pads to 32x32 and repeats grey into RGB;
//   when Debian's dataset-fashion-mnist is installed, its test split has the published shape.
// - NPY inside a stored ZIP (models/data/image_export.h): the header exactly as NumPy writes
//   it, the 64-byte alignment, the ZIP structures and CRC-32 checked field by field against
//   the PKWARE specification and zlib's crc32; the writers' destination checks.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cstring>
#include <filesystem>

#include "engine/file_io.h"
#include "models/data/fashion_mnist.h"
#include "models/data/idx.h"
#include "models/data/image_export.h"
#include "tests/test_util.h"

namespace ddpm {
namespace {

namespace fs = std::filesystem;
using test::expect_error;

std::string fresh_dir(const std::string& name) {
  const std::string d = ::testing::TempDir() + "/data_files_" + name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// An IDX file of unsigned bytes: magic 0x00000800 | ndim, big-endian sizes, data.
std::vector<uint8_t> idx_bytes(const std::vector<uint32_t>& dims, uint8_t fill_from = 0) {
  std::vector<uint8_t> b = {0, 0, 0x08, static_cast<uint8_t>(dims.size())};
  size_t n = 1;
  for (uint32_t d : dims) {
    for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<uint8_t>(d >> s));
    n *= d;
  }
  for (size_t i = 0; i < n; ++i) b.push_back(static_cast<uint8_t>(fill_from + i));
  return b;
}

void write_gz(const std::string& path, const std::vector<uint8_t>& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())), static_cast<int>(bytes.size()));
  gzclose(f);
}

TEST(Idx, ReadsGzipAndPlainFiles) {
  const std::string d = fresh_dir("idx");
  const std::vector<uint8_t> b = idx_bytes({3, 2, 2}, 10);
  write_gz(d + "/a.gz", b);
  write_file_atomic(d + "/a", b.data(), b.size());
  for (const std::string& p : {d + "/a.gz", d + "/a"}) {
    const IdxArray a = read_idx(p);
    EXPECT_EQ(a.dims, (std::vector<int64_t>{3, 2, 2})) << p;
    ASSERT_EQ(a.data.size(), 12u);
    EXPECT_EQ(a.data[0], 10);
    EXPECT_EQ(a.data[11], 21);
  }
}

TEST(Idx, BadFilesNameTheFileAndTheOffset) {
  std::vector<uint8_t> b = idx_bytes({2, 3});
  std::vector<uint8_t> bad = b;
  bad[0] = 1;
  expect_error([&] { parse_idx(bad, "x.idx"); }, {"x.idx", "magic", "offset 0"});
  bad = b;
  bad[1] = 1;  // the magic's two zero bytes, each
  expect_error([&] { parse_idx(bad, "x.idx"); }, {"x.idx", "magic", "offset 0"});
  // 0 or 5 dimensions; a zero size; a size's high byte read (big-endian: 2^24 + 2 rows of
  // 3, of which the file holds 6 bytes)
  for (const uint8_t ndim : {uint8_t{0}, uint8_t{5}}) {
    bad = b;
    bad[3] = ndim;
    const std::string dims = std::to_string(ndim) + " dimensions at offset 3";
    expect_error([&] { parse_idx(bad, "x.idx"); }, {"x.idx", dims.c_str()});
  }
  expect_error([&] { parse_idx(idx_bytes({2, 0}), "x.idx"); },
               {"x.idx", "dimension 1 at offset 8 is 0"});
  bad = b;
  bad[4] = 1;
  const std::string expected = std::to_string(3 * ((uint64_t{1} << 24) + 2)) + " bytes expected";
  expect_error([&] { parse_idx(bad, "x.idx"); }, {"x.idx", "cut short", expected.c_str()});
  bad = b;
  bad[2] = 0x0D;  // float elements
  expect_error([&] { parse_idx(bad, "x.idx"); }, {"x.idx", "data type 0xd"});
  expect_error([&] { parse_idx(std::vector<uint8_t>(b.begin(), b.begin() + 6), "x.idx"); },
               {"x.idx", "header", "offset"});
  expect_error([&] { parse_idx(std::vector<uint8_t>(b.begin(), b.end() - 1), "x.idx"); },
               {"x.idx", "cut short", "offset 12"});
  bad = b;
  bad.push_back(7);
  expect_error([&] { parse_idx(bad, "x.idx"); }, {"x.idx", "after the data", "offset 18"});
  expect_error([] { read_idx("/nonexistent/t10k-images-idx3-ubyte.gz"); },
               {"/nonexistent/t10k-images-idx3-ubyte.gz"});
  // A .gz cut short, inside its deflate stream or only in the trailer (its size: the data
  // are whole), and one whose deflate stream is damaged: each an error naming the file, not
  // whatever zlib had decompressed by then.
  const std::string d = fresh_dir("idx_bad");
  write_gz(d + "/whole.gz", idx_bytes({64, 64}, 3));
  const std::vector<uint8_t> gz = read_file(d + "/whole.gz");
  ASSERT_GT(gz.size(), 40u);
  for (const size_t cut : {12, 4}) {
    write_file_atomic(d + "/cut.gz", gz.data(), gz.size() - cut);
    expect_error([&] { read_idx(d + "/cut.gz"); }, {"cut.gz", "ends early", "truncated .gz"});
  }
  std::vector<uint8_t> damaged = gz;
  for (size_t i = 12; i < 24; ++i) damaged[i] = 0xff;
  write_file_atomic(d + "/damaged.gz", damaged.data(), damaged.size());
  expect_error([&] { read_idx(d + "/damaged.gz"); }, {"damaged.gz", "decompression failed"});
}

TEST(FashionMnist, PadsTo32AndRepeatsGreyIntoRgb) {
  const std::string d = fresh_dir("fm");
  std::vector<uint8_t> images = idx_bytes({2, 28, 28}), labels = {0, 0, 8, 1, 0, 0, 0, 2, 3, 7};
  write_gz(d + "/images.gz", images);
  write_gz(d + "/labels.gz", labels);
  const FashionMnist grey = FashionMnist::load_files(d + "/images.gz", d + "/labels.gz", 28, 1);
  ASSERT_EQ(grey.size(), 2);
  EXPECT_EQ(grey.label(0), 3);
  EXPECT_EQ(grey.label(1), 7);
  std::vector<uint8_t> px(28 * 28);
  grey.get(1, px.data());
  EXPECT_EQ(px[0], static_cast<uint8_t>(28 * 28));  // image 1 starts where image 0 ended
  const FashionMnist rgb = FashionMnist::load_files(d + "/images.gz", d + "/labels.gz", 32, 3);
  EXPECT_EQ(rgb.height(), 32);
  EXPECT_EQ(rgb.channels(), 3);
  std::vector<uint8_t> big(32 * 32 * 3);
  rgb.get(0, big.data());
  EXPECT_EQ(big[0], 0);  // the black border
  const size_t inner = ((2 * 32) + 2) * 3;  // pixel (2, 2) = the source's (0, 0)
  EXPECT_EQ(big[inner], 0);
  EXPECT_EQ(big[inner + 3 * 5], 5);  // (2, 7) = the source's (0, 5), in all three channels
  EXPECT_EQ(big[inner + 3 * 5 + 2], 5);
  const FashionMnist bags = FashionMnist::load_files(d + "/images.gz", d + "/labels.gz", 28, 1, {7});
  EXPECT_EQ(bags.size(), 1);
  // labels that do not match the images
  write_gz(d + "/labels3.gz", {0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3});
  expect_error([&] { FashionMnist::load_files(d + "/images.gz", d + "/labels3.gz", 28, 1); },
               {"labels3.gz", "3"});
  // a label past 9, and images that are not 28 x 28
  write_gz(d + "/labels10.gz", {0, 0, 8, 1, 0, 0, 0, 2, 3, 10});
  expect_error([&] { FashionMnist::load_files(d + "/images.gz", d + "/labels10.gz", 28, 1); },
               {"labels10.gz", "label 10 of image 1", "offset 9", "outside 0-9"});
  write_gz(d + "/wide.gz", idx_bytes({2, 28, 27}));
  expect_error([&] { FashionMnist::load_files(d + "/wide.gz", d + "/labels.gz", 28, 1); },
               {"wide.gz", "(N, 28, 28)"});
}

TEST(FashionMnist, TheInstalledTestSplitHasThePublishedShape) {
  const std::string dir = FashionMnist::kDefaultDir;
  if (!fs::exists(dir + "/t10k-images-idx3-ubyte.gz"))
    GTEST_SKIP() << dir << " not installed (apt install dataset-fashion-mnist)";
  const FashionMnist t = FashionMnist::load(dir, "test", 28, 1);
  EXPECT_EQ(t.size(), 10000);
  std::vector<int> per_class(10, 0);
  for (int64_t i = 0; i < t.size(); ++i) ++per_class[t.label(i)];
  for (int c = 0; c < 10; ++c) EXPECT_EQ(per_class[c], 1000) << FashionMnist::kClasses[c];
}

uint32_t le(const std::vector<uint8_t>& b, size_t at, int bytes) {
  uint32_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | b[at + i];
  return v;
}

TEST(ImageExport, NpyHeaderIsNumpysOwn) {
  const std::vector<uint8_t> v(2 * 3 * 1 * 3, 9);
  const std::vector<uint8_t> npy = encode_npy_u8(v, {2, 3, 1, 3});
  ASSERT_GE(npy.size(), 10u);
  EXPECT_EQ(std::memcmp(npy.data(), "\x93NUMPY\x01\x00", 8), 0);
  const size_t header = le(npy, 8, 2);
  EXPECT_EQ((10 + header) % 64, 0u);
  const std::string h(npy.begin() + 10, npy.begin() + 10 + header);
  EXPECT_EQ(h.substr(0, h.find('}') + 1),
            "{'descr': '|u1', 'fortran_order': False, 'shape': (2, 3, 1, 3), }");
  EXPECT_EQ(h.back(), '\n');
  EXPECT_EQ(npy.size(), 10 + header + v.size());
  const std::vector<uint8_t> one = encode_npy_u8({1, 2}, {2});
  const std::string h1(one.begin() + 10, one.begin() + 10 + le(one, 8, 2));
  EXPECT_NE(h1.find("'shape': (2,)"), std::string::npos) << h1;
  expect_error([] { encode_npy_u8({1, 2, 3}, {2, 2}); }, {"3 values", "4"});
}

TEST(ImageExport, ZipStructuresFollowTheSpecification) {
  const std::vector<uint8_t> data = {1, 2, 3, 4, 5, 250};
  const std::vector<uint8_t> z = encode_zip_stored("arr_0.npy", data);
  const uint32_t crc = static_cast<uint32_t>(crc32(0, data.data(), static_cast<uInt>(data.size())));
  // local file header
  EXPECT_EQ(le(z, 0, 4), 0x04034b50u);
  EXPECT_EQ(le(z, 8, 2), 0u);  // stored
  EXPECT_EQ(le(z, 14, 4), crc);
  EXPECT_EQ(le(z, 18, 4), data.size());
  EXPECT_EQ(le(z, 22, 4), data.size());
  EXPECT_EQ(le(z, 26, 2), 9u);
  EXPECT_EQ(std::string(z.begin() + 30, z.begin() + 39), "arr_0.npy");
  EXPECT_TRUE(std::equal(data.begin(), data.end(), z.begin() + 39));
  // end of central directory, and the entry it points to
  const size_t end = z.size() - 22;
  EXPECT_EQ(le(z, end, 4), 0x06054b50u);
  EXPECT_EQ(le(z, end + 10, 2), 1u);
  const size_t dir = le(z, end + 16, 4);
  EXPECT_EQ(dir, 39 + data.size());
  EXPECT_EQ(le(z, end + 12, 4), end - dir);
  EXPECT_EQ(le(z, dir, 4), 0x02014b50u);
  EXPECT_EQ(le(z, dir + 16, 4), crc);
  EXPECT_EQ(le(z, dir + 42, 4), 0u);  // the local header's offset
  EXPECT_EQ(std::string(z.begin() + dir + 46, z.begin() + dir + 55), "arr_0.npy");
}

TEST(ImageExport, WritesNpzAndPngFoldersAndChecksTheDestination) {
  const std::string d = fresh_dir("export");
  const Tensor grey = Tensor::from_vector(Shape{2, 2, 2, 1}, std::vector<float>{-1, 0, 1, 0.5f, 1, 1, -1, -1});
  ImageWriter npz(d + "/s.npz", ImageFormat::Npz, 3);
  npz.add(grey);
  expect_error([&] { npz.finish(); }, {"2 of 3"});
  npz.add(Tensor::from_vector(Shape{1, 2, 2, 3}, std::vector<float>(12, 1.0f)));
  npz.finish();
  const std::vector<uint8_t> file = read_file(d + "/s.npz");
  const std::vector<uint8_t> expected =
      encode_zip_stored("arr_0.npy", encode_npy_u8({0, 0, 0, 128, 128, 128, 255, 255, 255, 191, 191, 191,
                                                    255, 255, 255, 255, 255, 255, 0, 0, 0, 0, 0, 0,
                                                    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255},
                                                   {3, 2, 2, 3}));
  EXPECT_EQ(file, expected);
  ImageWriter png(d + "/pngs", ImageFormat::Png, 2);
  png.add(grey);
  png.finish();
  EXPECT_TRUE(fs::exists(d + "/pngs/000000.png"));
  EXPECT_TRUE(fs::exists(d + "/pngs/000001.png"));
  expect_error([&] { ImageWriter(d + "/pngs", ImageFormat::Png, 1); }, {"pngs", "not empty"});
  expect_error([&] { ImageWriter(d + "/s.png", ImageFormat::Npz, 1); }, {"s.png", ".npz"});
  expect_error([&] { ImageWriter("/nonexistent/s.npz", ImageFormat::Npz, 1); },
               {"/nonexistent", "does not exist"});
  expect_error([] { parse_image_format("jpeg"); }, {"jpeg", "npz or png"});
}

}  // namespace
}  // namespace ddpm
