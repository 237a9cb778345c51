// Figures of a benchmark run, their targets, and the table and JSON made of them.
#pragma once

// A Figure is one measured quantity (e.g. "W1 throughput" over tcp) with one
// sample per repetition. Its summary is the median with the min and max. A
// drover figure names its baseline (another figure of the same run) and
// compares with it as a ratio, because on a shared machine absolute numbers
// move between runs while ratios hold. A Report keeps figures in the order
// they were measured and prints them.

#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace drover::bench {

// What a figure must reach to meet its target.
struct Target {
    enum class Kind { none, ratio_at_least, ratio_at_most, value_at_least, value_at_most };
    Kind kind = Kind::none;
    double threshold = 0;

    static Target none() { return {}; }
    static Target ratio_at_least(double t) { return {Kind::ratio_at_least, t}; }
    static Target ratio_at_most(double t) { return {Kind::ratio_at_most, t}; }
    static Target value_at_least(double t) { return {Kind::value_at_least, t}; }
    static Target value_at_most(double t) { return {Kind::value_at_most, t}; }
};

struct Figure {
    std::string key;   // unique, e.g. "W1 throughput tcp"; baselines are named by it
    std::string unit;  // "tasks/s", "us", "MiB/s", "ms", "B/task", "MiB", "x"
    std::vector<double> samples;
    std::string baseline;  // key of the figure this one is compared with, or empty
    // ratio = median / baseline median; inverted: baseline median / median
    // (a speed-up from wall times).
    bool inverted_ratio = false;
    Target target;
    std::string note;   // shown in the JSON only
    std::string error;  // set when the figure could not be produced
};

// Median (mean of the middle two for an even count). Requires samples.
double median(std::vector<double> v);
// Nearest-rank percentile p in (0, 100]. Requires samples.
double percentile(std::vector<double> v, double p);

class Report {
public:
    // Adds a figure (measured or failed); a later one with the same key replaces it.
    void add(Figure f);
    [[nodiscard]] const Figure* find(const std::string& key) const;
    [[nodiscard]] bool any_failed() const;

    // The ratio to the baseline, if both have samples.
    [[nodiscard]] std::optional<double> ratio(const Figure& f) const;
    // Whether the target is met: nullopt if there is no target or no value.
    [[nodiscard]] std::optional<bool> met(const Figure& f) const;

    void print_table(std::ostream& out) const;
    [[nodiscard]] nlohmann::json to_json() const;

private:
    std::vector<Figure> figures_;
};

}  // namespace drover::bench
