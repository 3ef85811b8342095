#include "models/run_report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <vector>

#include "engine/check.h"
#include "engine/file_io.h"

namespace ddpm {

namespace fs = std::filesystem;

std::string base64(const std::string& bytes) {
  static const char* kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  for (size_t i = 0; i < bytes.size(); i += 3) {
    uint32_t v = static_cast<uint8_t>(bytes[i]) << 16;
    if (i + 1 < bytes.size()) v |= static_cast<uint8_t>(bytes[i + 1]) << 8;
    if (i + 2 < bytes.size()) v |= static_cast<uint8_t>(bytes[i + 2]);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += i + 1 < bytes.size() ? kAlphabet[(v >> 6) & 63] : '=';
    out += i + 2 < bytes.size() ? kAlphabet[v & 63] : '=';
  }
  return out;
}

std::string html_escape(const std::string& text) {
  std::string out;
  for (char ch : text) {
    switch (ch) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      default: out += ch;
    }
  }
  return out;
}

namespace {

struct Series {
  std::string name, color;
  std::vector<double> x, y, err;  // err: a +-bar per point (empty: none)
  double width = 1.5;
};

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

// Tick positions at 1, 2 or 5 times a power of ten, about `want` of them over [lo, hi].
std::vector<double> ticks(double lo, double hi, int want) {
  const double raw = (hi - lo) / want, mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double step = raw / mag < 2 ? mag : raw / mag < 5 ? 2 * mag : 5 * mag;
  std::vector<double> t;
  for (double v = std::ceil(lo / step) * step; v <= hi + 1e-9 * step; v += step) t.push_back(v);
  return t;
}

// Ticks for a log axis spanning [lo, hi] in log10: 1, 2 and 5 times powers of ten over more
// than a decade or so, evenly spaced values (in y) within a shorter span; returned in log10.
std::vector<double> log_ticks(double lo, double hi) {
  std::vector<double> t;
  if (hi - lo > 1.3) {
    for (int e = static_cast<int>(std::floor(lo)); e <= static_cast<int>(std::ceil(hi)); ++e)
      for (double m : {1.0, 2.0, 5.0}) {
        const double v = std::log10(m) + e;
        if (v >= lo && v <= hi) t.push_back(v);
      }
    return t;
  }
  for (double v : ticks(std::pow(10.0, lo), std::pow(10.0, hi), 5))
    if (v > 0) t.push_back(std::log10(v));
  return t;
}

// A line plot as inline SVG: series over a shared x axis; log_y plots log10(y) with ticks
// labelled in y (values <= 0 are left out).
std::string svg_plot(const std::string& title, const std::string& x_label,
                     const std::vector<Series>& series, bool log_y = false) {
  constexpr double W = 640, H = 260, L = 64, R = 16, Tp = 28, B = 40;  // size and margins
  auto ty = [log_y](double v) { return log_y ? std::log10(v) : v; };
  double x0 = std::numeric_limits<double>::infinity(), x1 = -x0, y0 = x0, y1 = -x0;
  for (const Series& s : series)
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.y[i]) || (log_y && s.y[i] <= 0)) continue;
      const double e = s.err.empty() ? 0 : s.err[i];
      x0 = std::min(x0, s.x[i]);
      x1 = std::max(x1, s.x[i]);
      y0 = std::min(y0, ty(log_y ? s.y[i] : s.y[i] - e));
      y1 = std::max(y1, ty(s.y[i] + e));
    }
  std::ostringstream o;
  o << "<svg xmlns='http://www.w3.org/2000/svg' width='" << W << "' height='" << H
    << "' viewBox='0 0 " << W << " " << H << "' role='img'><title>" << html_escape(title)
    << "</title><rect width='100%' height='100%' fill='#fff'/>"
    << "<text x='" << L << "' y='18' font-size='14' font-weight='bold'>" << html_escape(title)
    << "</text>";
  if (!std::isfinite(x0)) {
    o << "<text x='" << L << "' y='" << H / 2 << "' font-size='13' fill='#888'>nothing logged yet</text></svg>";
    return o.str();
  }
  if (x1 == x0) x1 = x0 + 1;
  if (y1 == y0) { y0 -= 0.5; y1 += 0.5; }
  const double pad = 0.05 * (y1 - y0);
  y0 -= pad;
  y1 += pad;
  auto px = [&](double x) { return L + (x - x0) / (x1 - x0) * (W - L - R); };
  auto py = [&](double y) { return Tp + (1 - (ty(y) - y0) / (y1 - y0)) * (H - Tp - B); };
  auto py_t = [&](double t) { return Tp + (1 - (t - y0) / (y1 - y0)) * (H - Tp - B); };
  o << "<g font-size='11' fill='#444' stroke='none'>";
  for (double t : log_y ? log_ticks(y0, y1) : ticks(y0, y1, 5)) {
    const double yy = py_t(t);
    o << "<line x1='" << L << "' x2='" << W - R << "' y1='" << yy << "' y2='" << yy
      << "' stroke='#eee'/><text x='" << L - 6 << "' y='" << yy + 4 << "' text-anchor='end'>"
      << number(log_y ? std::pow(10.0, t) : t) << "</text>";
  }
  for (double t : ticks(x0, x1, 6))
    o << "<text x='" << px(t) << "' y='" << H - B + 16 << "' text-anchor='middle'>" << number(t)
      << "</text>";
  o << "<text x='" << (L + W - R) / 2 << "' y='" << H - 6 << "' text-anchor='middle'>"
    << html_escape(x_label) << "</text></g>";
  o << "<rect x='" << L << "' y='" << Tp << "' width='" << W - L - R << "' height='" << H - Tp - B
    << "' fill='none' stroke='#888'/>";
  for (const Series& s : series) {
    std::ostringstream pts;
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.y[i]) || (log_y && s.y[i] <= 0)) continue;
      pts << px(s.x[i]) << "," << py(s.y[i]) << " ";
      if (!s.err.empty() && s.err[i] > 0)
        o << "<line x1='" << px(s.x[i]) << "' x2='" << px(s.x[i]) << "' y1='"
          << py(s.y[i] - (log_y ? 0 : s.err[i])) << "' y2='" << py(s.y[i] + s.err[i])
          << "' stroke='" << s.color << "'/>";
    }
    o << "<polyline fill='none' stroke='" << s.color << "' stroke-width='" << s.width
      << "' points='" << pts.str() << "'/>";
  }
  double legend_x = W - R;  // the legend: on the title's line, from the right
  for (auto it = series.rbegin(); it != series.rend(); ++it) {
    if (it->name.empty()) continue;
    o << "<text x='" << legend_x << "' y='18' font-size='11' text-anchor='end' fill='"
      << it->color << "'>" << html_escape(it->name) << "</text>";
    legend_x -= 6.5 * it->name.size() + 14;
  }
  o << "</svg>";
  return o.str();
}

// The PNG inline, shown at 3x (at most 1300 px wide) so 28-pixel images can be seen.
std::string image_tag(const std::string& path, const std::string& alt) {
  const std::vector<uint8_t> png = read_file(path);
  CHECK(png.size() > 24, "report: '" << path << "' is not a PNG");
  const uint32_t width = static_cast<uint32_t>(png[16]) << 24 | png[17] << 16 | png[18] << 8 | png[19];
  return "<img alt='" + html_escape(alt) + "' width='" +
         std::to_string(std::min<uint32_t>(3 * width, 1300)) + "' src='data:image/png;base64," +
         base64(std::string(png.begin(), png.end())) + "'>";
}

nlohmann::json read_json(const std::string& path) {
  const std::vector<uint8_t> bytes = read_file(path);
  nlohmann::json j = nlohmann::json::parse(bytes.begin(), bytes.end(), nullptr, false);
  CHECK(!j.is_discarded(), "report: '" << path << "' is not valid JSON");
  return j;
}

std::vector<nlohmann::json> read_metrics(const std::string& path) {
  std::vector<nlohmann::json> lines;
  std::ifstream in(path);
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.empty()) continue;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    CHECK(!j.is_discarded() && j.is_object() && j.contains("step"),
          "report: '" << path << "' line " << n << " is not a metrics record");
    lines.push_back(std::move(j));
  }
  return lines;
}

// (x, y) of a metric over the lines that have it as a number.
Series metric(const std::vector<nlohmann::json>& lines, const std::string& key,
              const std::string& name, const std::string& color) {
  Series s{name, color, {}, {}, {}};
  for (const nlohmann::json& l : lines)
    if (l.contains(key) && l[key].is_number()) {
      s.x.push_back(l["step"].get<double>());
      s.y.push_back(l[key].get<double>());
    }
  return s;
}

// An exponential moving average of y, debiased as Adam's moments are (TensorBoard's smoothing).
Series smoothed(const Series& raw, double decay, const std::string& name, const std::string& color) {
  Series s{name, color, raw.x, {}, {}, 2.0};
  double m = 0, w = 0;
  for (double v : raw.y) {
    m = decay * m + (1 - decay) * v;
    w = decay * w + (1 - decay);
    s.y.push_back(m / w);
  }
  return s;
}

std::string text_or(const nlohmann::json& j, const std::string& key, const std::string& fallback) {
  if (!j.is_object() || !j.contains(key)) return fallback;
  return j[key].is_string() ? j[key].get<std::string>() : j[key].dump();
}

}  // namespace

std::string render_run_report(const std::string& run_dir) {
  CHECK(fs::is_directory(run_dir), "report: '" << run_dir << "' is not a folder");
  const std::string dir = fs::path(run_dir).lexically_normal().string();
  const nlohmann::json config = fs::exists(dir + "/config.json") ? read_json(dir + "/config.json")
                                                                  : nlohmann::json::object();
  const nlohmann::json run = fs::exists(dir + "/run.json") ? read_json(dir + "/run.json")
                                                            : nlohmann::json::object();
  const std::vector<nlohmann::json> lines = fs::exists(dir + "/metrics.jsonl")
                                                ? read_metrics(dir + "/metrics.jsonl")
                                                : std::vector<nlohmann::json>{};
  std::ostringstream o;
  o << "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Training report: "
    << html_escape(dir) << "</title><style>"
    << "body{font-family:sans-serif;margin:24px;max-width:1360px;color:#222}"
    << "h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}"
    << "table{border-collapse:collapse}td{padding:2px 12px 2px 0;vertical-align:top}"
    << "img{image-rendering:pixelated;border:1px solid #ccc;max-width:100%}"
    << ".plots{display:flex;flex-wrap:wrap;gap:12px}.grids{display:flex;flex-wrap:wrap;gap:16px}"
    << "figure{margin:0}figcaption{font-size:12px;color:#555}"
    << "pre{background:#f6f6f6;padding:8px;font-size:12px;overflow:auto}</style></head><body>";
  o << "<h1>Training report: " << html_escape(dir) << "</h1><table>";
  auto row = [&](const std::string& k, const std::string& v) {
    o << "<tr><td>" << html_escape(k) << "</td><td>" << html_escape(v) << "</td></tr>";
  };
  row("command", text_or(run, "command", "(not recorded)"));
  row("device", text_or(run, "device", "(not recorded)"));
  row("started", text_or(run, "started", "(not recorded)"));
  row("dataset", text_or(config, "dataset", "?") + ", " + text_or(config, "image_size", "?") +
                     "x" + text_or(config, "image_size", "?") + "x" +
                     text_or(config, "in_channels", "?"));
  row("recipe", "target " + text_or(config, "target", "?") + ", " +
                    text_or(config, "schedule", "?") + " schedule, " + text_or(config, "loss", "?") +
                    " loss, batch " + text_or(config, "batch_size", "?") + ", lr " +
                    text_or(config, "lr", "?"));
  if (!lines.empty()) {
    const nlohmann::json& last = lines.back();
    row("steps", text_or(last, "step", "?") + " of " + text_or(config, "steps", "?") + " (" +
                     number(last.value("time_s", 0.0) / 60) + " min)");
    row("last loss", text_or(last, "loss", "?"));
    for (auto it = lines.rbegin(); it != lines.rend(); ++it)
      if (it->contains("bits_per_dim")) {
        row("bits/dim (test split, variational bound)",
            number((*it)["bits_per_dim"].get<double>()) + " +- " +
                number(it->value("bpd_se", 0.0)) + " at step " + text_or(*it, "step", "?"));
        break;
      }
  } else {
    row("metrics", "nothing logged yet");
  }
  o << "</table>";

  const std::string samples = dir + "/samples";
  o << "<h2>Samples</h2><div class='grids'>";
  if (fs::exists(samples + "/final.png"))
    o << "<figure>" << image_tag(samples + "/final.png", "final samples")
      << "<figcaption>final samples (EMA weights)</figcaption></figure>";
  if (fs::exists(samples + "/progressive.png"))
    o << "<figure>" << image_tag(samples + "/progressive.png", "progressive generation")
      << "<figcaption>progressive generation: each row one sample's predicted x0, from noise "
         "(left) to the end (right)</figcaption></figure>";
  o << "</div>";

  // plots
  const Series loss = metric(lines, "loss", "loss", "#9bb7d4");
  std::vector<Series> by_t;
  for (int b = 0; b < 10; ++b) {
    Series s{"", "", {}, {}, {}};
    const int shade = 40 + 18 * b;  // early t dark blue .. late t light
    char color[16];
    std::snprintf(color, sizeof color, "#%02x%02x%02x", 20 + shade / 2, 60 + shade / 2, 150 + shade / 3);
    s.color = color;
    s.name = b == 0 ? "t < T/10" : b == 9 ? "t >= 9T/10" : "";
    for (const nlohmann::json& l : lines)
      if (l.contains("loss_by_t") && l["loss_by_t"].is_array() && l["loss_by_t"].size() == 10 &&
          l["loss_by_t"][b].is_number()) {
        s.x.push_back(l["step"].get<double>());
        s.y.push_back(l["loss_by_t"][b].get<double>());
      }
    by_t.push_back(s);
  }
  Series bpd = metric(lines, "bits_per_dim", "", "#b03a2e");
  for (const nlohmann::json& l : lines)
    if (l.contains("bits_per_dim")) bpd.err.push_back(l.value("bpd_se", 0.0));
  o << "<h2>Training</h2><div class='plots'>"
    << svg_plot("loss (raw, and smoothed)", "step",
                {loss, smoothed(loss, 0.9, "smoothed", "#1f4e79")}, true)
    << svg_plot("loss per tenth of the timesteps", "step", by_t, true)
    << svg_plot("gradient norm (before clipping)", "step",
                {metric(lines, "grad_norm", "", "#6c3483")}, true)
    << svg_plot("learning rate", "step", {metric(lines, "lr", "", "#117864")})
    << svg_plot("throughput (images/s)", "step", {metric(lines, "img_per_s", "", "#7e5109")})
    << svg_plot("bits/dim on the test split (+- standard error)", "step", {bpd}) << "</div>";

  std::vector<std::string> grids;
  if (fs::is_directory(samples))
    for (const auto& e : fs::directory_iterator(samples)) {
      const std::string name = e.path().filename().string();
      if (name.rfind("step_", 0) == 0 && e.path().extension() == ".png") grids.push_back(name);
    }
  std::sort(grids.begin(), grids.end());
  if (!grids.empty()) {
    o << "<h2>Samples over training</h2><div class='grids'>";
    for (const std::string& g : grids)
      o << "<figure>" << image_tag(samples + "/" + g, g) << "<figcaption>"
        << html_escape(g.substr(0, g.size() - 4)) << "</figcaption></figure>";
    o << "</div>";
  }
  o << "<h2>Config</h2><pre>" << html_escape(config.dump(2)) << "</pre></body></html>\n";
  return o.str();
}

std::string write_run_report(const std::string& run_dir, const std::string& out) {
  const std::string path = out.empty() ? run_dir + "/report.html" : out;
  write_file_atomic(path, render_run_report(run_dir));
  return path;
}

}  // namespace ddpm
