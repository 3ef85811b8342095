// The training report (models/run_report.h): base64 against RFC 4648's vectors; a page made
// from a hand-built run folder holds every plot as inline SVG with one point per logged
// value, the sample grid inline as the file's own bytes, the recorded command escaped, and
// nothing fetched from elsewhere; a malformed metrics line is an error naming its file and
// line. (tests/cli/report_render.sh renders a real run's page in headless Chromium.)
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "engine/file_io.h"
#include "models/data/image_dataset.h"
#include "models/run_report.h"
#include "tests/test_util.h"

namespace ddpm {
namespace {

namespace fs = std::filesystem;

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

TEST(RunReport, Base64MatchesRfc4648) {
  EXPECT_EQ(base64(""), "");
  EXPECT_EQ(base64("f"), "Zg==");
  EXPECT_EQ(base64("fo"), "Zm8=");
  EXPECT_EQ(base64("foo"), "Zm9v");
  EXPECT_EQ(base64("foob"), "Zm9vYg==");
  EXPECT_EQ(base64("fooba"), "Zm9vYmE=");
  EXPECT_EQ(base64("foobar"), "Zm9vYmFy");
  EXPECT_EQ(base64(std::string("\xff\x00\xfe", 3)), "/wD+");
}

std::string make_run(const std::string& name) {
  const std::string d = ::testing::TempDir() + "/report_" + name;
  fs::remove_all(d);
  fs::create_directories(d + "/samples");
  write_file_atomic(d + "/config.json", R"({"dataset": "fashion_mnist", "image_size": 28,
      "in_channels": 1, "target": "epsilon", "steps": 30, "out_dir": "runs/<b>"})");
  write_file_atomic(d + "/run.json", R"({"command": "ddpm train <script>x</script>",
      "device": "CPU: test", "started": "2026-12-01 00:00:00 UTC"})");
  std::string metrics;
  for (int s = 10; s <= 30; s += 10) {
    metrics += "{\"step\": " + std::to_string(s) + ", \"loss\": " + std::to_string(1.0 / s) +
               ", \"grad_norm\": 0.5, \"lr\": 0.001, \"img_per_s\": 100, \"time_s\": " +
               std::to_string(s) + ", \"loss_by_t\": [0.5, 0.4, 0.3, 0.2, null, 0.1, 0.1, 0.1, 0.1, 0.1]";
    if (s == 30) metrics += ", \"bits_per_dim\": 4.25, \"bpd_se\": 0.05";
    metrics += "}\n";
  }
  write_file_atomic(d + "/metrics.jsonl", metrics);
  write_image_grid(d + "/samples/final.png", Tensor::zeros(Shape{4, 8, 8, 1}), 2);
  write_image_grid(d + "/samples/step_00000010.png", Tensor::zeros(Shape{4, 8, 8, 1}), 2);
  return d;
}

TEST(RunReport, APageOfInlinePlotsAndImages) {
  const std::string d = make_run("page");
  const std::string html = render_run_report(d);
  EXPECT_EQ(count(html, "<svg"), 6u);  // loss, loss by t, grad norm, lr, img/s, bits/dim
  // the loss plot: raw and smoothed, 3 points each
  const size_t loss_plot = html.find("<title>loss (raw, and smoothed)</title>");
  ASSERT_NE(loss_plot, std::string::npos);
  const size_t points = html.find("points='", loss_plot);
  const std::string pts = html.substr(points + 8, html.find('\'', points + 8) - points - 8);
  EXPECT_EQ(count(pts, ","), 3u) << pts;
  const std::vector<uint8_t> png = read_file(d + "/samples/final.png");
  EXPECT_NE(html.find("src='data:image/png;base64," + base64(std::string(png.begin(), png.end())) + "'"),
            std::string::npos);
  EXPECT_EQ(count(html, "<img"), 2u);  // final + step_00000010
  EXPECT_NE(html.find("4.25 +- 0.05 at step 30"), std::string::npos);
  EXPECT_NE(html.find("ddpm train &lt;script&gt;x&lt;/script&gt;"), std::string::npos);
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_NE(html.find("runs/&lt;b&gt;"), std::string::npos);
  // offline: the only URL is the SVG namespace, which is a name, not a fetch
  EXPECT_EQ(count(html, "http"), count(html, "xmlns='http://www.w3.org/2000/svg'"));
  EXPECT_EQ(html.find("href="), std::string::npos);
  const std::string path = write_run_report(d);
  EXPECT_EQ(path, d + "/report.html");
  EXPECT_TRUE(fs::exists(path));
}

TEST(RunReport, AnEmptyRunSaysSoAndBadMetricsNameTheLine) {
  const std::string d = ::testing::TempDir() + "/report_empty";
  fs::remove_all(d);
  fs::create_directories(d);
  const std::string html = render_run_report(d);
  EXPECT_NE(html.find("nothing logged yet"), std::string::npos);
  write_file_atomic(d + "/metrics.jsonl", "{\"step\": 1, \"loss\": 1}\n{\"loss\": 2\n");
  test::expect_error([&] { render_run_report(d); }, {"metrics.jsonl", "line 2"});
  test::expect_error([] { render_run_report("/nonexistent/run"); }, {"/nonexistent/run", "not a folder"});
}

}  // namespace
}  // namespace ddpm
