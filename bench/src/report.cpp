// Figures of a benchmark run, their targets, and the table and JSON made of them.
#include "report.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iomanip>
#include <sstream>

namespace drover::bench {

namespace {

// 1234567.8 -> "1,234,568"; small values keep some decimals.
std::string format_value(double v) {
    char buf[64];
    const double a = std::fabs(v);
    if (a >= 10000) {
        std::snprintf(buf, sizeof buf, "%.0f", v);
        std::string s = buf;
        const auto digits_start = s[0] == '-' ? 1u : 0u;
        for (auto i = static_cast<long>(s.size()) - 3; i > static_cast<long>(digits_start); i -= 3)
            s.insert(static_cast<std::size_t>(i), ",");
        return s;
    }
    if (a >= 100) std::snprintf(buf, sizeof buf, "%.0f", v);
    else if (a >= 10) std::snprintf(buf, sizeof buf, "%.1f", v);
    else std::snprintf(buf, sizeof buf, "%.2f", v);
    return buf;
}

std::string format_ratio(double r) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.3f", r);  // 0.396 must not read as a met 0.40
    return buf;
}

std::string describe(const Target& t) {
    char buf[64];
    switch (t.kind) {
        case Target::Kind::none: return "";
        case Target::Kind::ratio_at_least: std::snprintf(buf, sizeof buf, "ratio >= %.2f", t.threshold); break;
        case Target::Kind::ratio_at_most: std::snprintf(buf, sizeof buf, "ratio <= %.2f", t.threshold); break;
        case Target::Kind::value_at_least: return ">= " + format_value(t.threshold);
        case Target::Kind::value_at_most: return "<= " + format_value(t.threshold);
    }
    return buf;
}

}  // namespace

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const auto n = v.size();
    return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double percentile(std::vector<double> v, double p) {
    std::sort(v.begin(), v.end());
    const auto rank = static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
    return v[std::clamp<std::size_t>(rank, 1, v.size()) - 1];
}

void Report::add(Figure f) {
    auto it = std::find_if(figures_.begin(), figures_.end(), [&](const Figure& g) { return g.key == f.key; });
    if (it != figures_.end()) *it = std::move(f);
    else figures_.push_back(std::move(f));
}

const Figure* Report::find(const std::string& key) const {
    auto it = std::find_if(figures_.begin(), figures_.end(), [&](const Figure& g) { return g.key == key; });
    return it == figures_.end() ? nullptr : &*it;
}

bool Report::any_failed() const {
    return std::any_of(figures_.begin(), figures_.end(),
                       [](const Figure& f) { return !f.error.empty() || f.samples.empty(); });
}

std::optional<double> Report::ratio(const Figure& f) const {
    if (f.baseline.empty() || f.samples.empty()) return std::nullopt;
    const Figure* b = find(f.baseline);
    if (!b || b->samples.empty()) return std::nullopt;
    const double m = median(f.samples), bm = median(b->samples);
    if (f.inverted_ratio) return m == 0 ? std::nullopt : std::optional<double>(bm / m);
    return bm == 0 ? std::nullopt : std::optional<double>(m / bm);
}

std::optional<bool> Report::met(const Figure& f) const {
    if (f.samples.empty()) return std::nullopt;
    const double m = median(f.samples);
    const auto r = ratio(f);
    switch (f.target.kind) {
        case Target::Kind::none: return std::nullopt;
        case Target::Kind::value_at_least: return m >= f.target.threshold;
        case Target::Kind::value_at_most: return m <= f.target.threshold;
        case Target::Kind::ratio_at_least: return r ? std::optional<bool>(*r >= f.target.threshold) : std::nullopt;
        case Target::Kind::ratio_at_most: return r ? std::optional<bool>(*r <= f.target.threshold) : std::nullopt;
    }
    return std::nullopt;
}

void Report::print_table(std::ostream& out) const {
    std::vector<std::vector<std::string>> rows;
    rows.push_back({"figure", "median", "min", "max", "unit", "baseline", "ratio", "target", "met?"});
    for (const auto& f : figures_) {
        if (f.samples.empty()) {
            rows.push_back({f.key, "FAILED", "", "", f.unit, f.baseline, "", describe(f.target), "no"});
            continue;
        }
        const auto [lo, hi] = std::minmax_element(f.samples.begin(), f.samples.end());
        const auto r = ratio(f);
        const auto m = met(f);
        rows.push_back({f.key, format_value(median(f.samples)), format_value(*lo), format_value(*hi), f.unit,
                        f.baseline.empty() ? "-" : f.baseline, r ? format_ratio(*r) : "-", describe(f.target),
                        m ? (*m ? "yes" : "no") : "-"});
    }
    std::vector<std::size_t> width(rows[0].size(), 0);
    for (const auto& row : rows)
        for (std::size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
    for (const auto& row : rows) {
        std::string line;
        for (std::size_t i = 0; i < row.size(); ++i) {
            // Text columns left-aligned, numbers right-aligned.
            const bool left = i == 0 || i == 4 || i == 5 || i == 7 || i == 8;
            const auto pad = std::string(width[i] - row[i].size(), ' ');
            line += left ? row[i] + pad : pad + row[i];
            if (i + 1 < row.size()) line += "  ";
        }
        while (!line.empty() && line.back() == ' ') line.pop_back();
        out << line << "\n";
    }
    for (const auto& f : figures_)
        if (!f.error.empty()) out << "FAILED " << f.key << ": " << f.error << "\n";
}

nlohmann::json Report::to_json() const {
    nlohmann::json figures = nlohmann::json::array();
    for (const auto& f : figures_) {
        nlohmann::json j{{"figure", f.key}, {"unit", f.unit}, {"samples", f.samples}};
        if (!f.samples.empty()) {
            const auto [lo, hi] = std::minmax_element(f.samples.begin(), f.samples.end());
            j["median"] = median(f.samples);
            j["min"] = *lo;
            j["max"] = *hi;
        }
        j["baseline"] = f.baseline.empty() ? nlohmann::json(nullptr) : nlohmann::json(f.baseline);
        const auto r = ratio(f);
        j["ratio"] = r ? nlohmann::json(*r) : nlohmann::json(nullptr);
        if (f.inverted_ratio) j["ratio_is"] = "baseline / figure";
        j["target"] =
            f.target.kind == Target::Kind::none ? nlohmann::json(nullptr) : nlohmann::json(describe(f.target));
        const auto m = met(f);
        j["met"] = m ? nlohmann::json(*m) : nlohmann::json(nullptr);
        if (!f.note.empty()) j["note"] = f.note;
        if (!f.error.empty()) j["error"] = f.error;
        figures.push_back(std::move(j));
    }
    return figures;
}

}  // namespace drover::bench
