// The training report: one self-contained HTML page about a run folder, for a person to look
// at (`ddpm report RUN_DIR`; `ddpm train` writes it at the end of every run).
//
// From the folder (models/run_folder.h): run.json (command, device, start), config.json,
// metrics.jsonl and samples/*.png. On the page: the summary (command, device, steps, last
// loss, bits/dim), the final samples and the progressive-generation strip, plots of the loss
// (raw and smoothed), the loss per tenth of the timesteps, the gradient norm, the learning
// rate, the throughput and bits/dim over training (with standard-error bars), the sample
// grids over time, and the config. Plots are inline SVG drawn here, images inline base64 PNG:
// no script, no stylesheet or font from elsewhere, so the page opens offline and can be
// mailed as one file.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace ddpm {

// The page for run_dir (errors name the file that is missing or malformed; a folder without
// metrics yet gets a page that says so).
std::string render_run_report(const std::string& run_dir);
// Writes it to `out` (default run_dir/report.html) atomically; returns the path.
std::string write_run_report(const std::string& run_dir, const std::string& out = "");

// Pieces, exposed for the tests.
std::string base64(const std::string& bytes);
std::string html_escape(const std::string& text);

}  // namespace ddpm
