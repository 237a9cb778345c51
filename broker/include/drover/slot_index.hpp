// SlotIndex: finds a slot number by the string key that slot holds.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string_view>
#include <utility>
#include <vector>

namespace drover {

// An open-addressing hash index of slot numbers, keyed by a string each
// slot holds (KeyOf maps a slot to its key): 4 bytes per bucket and no
// allocation per entry, where a node-based map costs about 50 bytes and a
// malloc per key. Linear probing with backward-shift deletion (no
// tombstones); the table doubles when it is half full.
template <class KeyOf>  // std::string_view KeyOf(std::uint32_t slot) const
class SlotIndex {
public:
    static constexpr std::uint32_t npos = 0xffffffff;

    explicit SlotIndex(KeyOf key_of) : key_of_(std::move(key_of)) {}

    // The slot holding `key`, or npos.
    [[nodiscard]] std::uint32_t find(std::string_view key) const {
        if (table_.empty()) return npos;
        for (std::size_t i = home(key);; i = next(i)) {
            const auto slot = table_[i];
            if (slot == npos || key_of_(slot) == key) return slot;
        }
    }

    // Adds `slot`, whose key must not be in the index yet.
    void insert(std::uint32_t slot) {
        if ((size_ + 1) * 2 > table_.size()) grow();
        place(slot);
        ++size_;
    }

    // Removes `key` if present. The key must still be readable through KeyOf.
    void erase(std::string_view key) {
        if (table_.empty()) return;
        std::size_t hole = home(key);
        while (table_[hole] != npos && key_of_(table_[hole]) != key) hole = next(hole);
        if (table_[hole] == npos) return;
        // Pull later members of the probe run back over the hole, unless
        // their home lies cyclically in (hole, j]: then they stay reachable.
        for (std::size_t j = next(hole); table_[j] != npos; j = next(j)) {
            const std::size_t h = home(key_of_(table_[j]));
            const bool stays = hole <= j ? (hole < h && h <= j) : (hole < h || h <= j);
            if (stays) continue;
            table_[hole] = table_[j];
            hole = j;
        }
        table_[hole] = npos;
        --size_;
    }

    // Forgets every key and gives the table's memory back.
    void clear() {
        std::vector<std::uint32_t>().swap(table_);
        size_ = 0;
    }

    [[nodiscard]] std::size_t size() const { return size_; }

private:
    [[nodiscard]] std::size_t home(std::string_view key) const {
        return std::hash<std::string_view>{}(key) & (table_.size() - 1);
    }
    [[nodiscard]] std::size_t next(std::size_t i) const { return (i + 1) & (table_.size() - 1); }

    void place(std::uint32_t slot) {
        std::size_t i = home(key_of_(slot));
        while (table_[i] != npos) i = next(i);
        table_[i] = slot;
    }

    void grow() {
        std::vector<std::uint32_t> old(table_.empty() ? 16 : table_.size() * 2, npos);
        old.swap(table_);
        for (const auto slot : old)
            if (slot != npos) place(slot);
    }

    KeyOf key_of_;
    std::vector<std::uint32_t> table_;  // a power of two in size, npos where empty
    std::size_t size_ = 0;
};

}  // namespace drover
