// Interned strings with reference counts: the endpoints many tasks share.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace drover::scheduling {

// A task keeps its reply_to and producer as indexes here: one copy of each
// endpoint however many tasks name it. Single-threaded.
class Interned {
public:
    static constexpr std::uint32_t npos = 0xffffffff;

    // The index of `s`, with one more reference.
    std::uint32_t acquire(std::string_view s) {
        if (auto it = index_.find(s); it != index_.end()) {
            ++items_[it->second].second;
            return it->second;
        }
        return add(s);
    }
    void acquire_again(std::uint32_t index) { ++items_[index].second; }
    // One reference less: a string nobody holds is forgotten.
    void release(std::uint32_t index) {
        if (--items_[index].second == 0) forget(index);
    }
    // The index of `s` if it is held, else npos (never an index).
    [[nodiscard]] std::uint32_t find(std::string_view s) const {
        const auto it = index_.find(s);
        return it == index_.end() ? npos : it->second;
    }
    [[nodiscard]] const std::string& operator[](std::uint32_t index) const { return items_[index].first; }

private:
    std::uint32_t add(std::string_view s) {
        std::uint32_t i;
        if (!free_.empty()) {
            i = free_.back();
            free_.pop_back();
            items_[i] = {std::string(s), 1};
        } else {
            i = static_cast<std::uint32_t>(items_.size());
            items_.emplace_back(std::string(s), 1);
        }
        index_.emplace(items_[i].first, i);  // the view points into items_[i], which stays put until forgotten
        return i;
    }
    void forget(std::uint32_t i) {
        index_.erase(items_[i].first);
        items_[i].first.clear();
        items_[i].first.shrink_to_fit();
        free_.push_back(i);
    }

    std::deque<std::pair<std::string, std::size_t>> items_;  // a deque: index_ views its strings
    std::unordered_map<std::string_view, std::uint32_t> index_;
    std::vector<std::uint32_t> free_;
};

}  // namespace drover::scheduling
