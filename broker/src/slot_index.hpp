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
// slot holds (KeyOf maps a slot to its key): 8 bytes per bucket (the slot and
// its key's hash) and no allocation per entry, where a node-based map costs
// about 50 bytes and a malloc per key. Linear probing with backward-shift
// deletion (no tombstones); the table doubles when it is half full. A key is
// hashed once per call: moving buckets (deletion, growth) uses the stored
// hashes, and a probe compares keys only where the hashes match.
template <class KeyOf>  // std::string_view KeyOf(std::uint32_t slot) const
class SlotIndex {
public:
    static constexpr std::uint32_t npos = 0xffffffff;

    explicit SlotIndex(KeyOf key_of) : key_of_(std::move(key_of)) {}

    // The hash of a key as this index computes it. A batch of look-ups
    // hashes each key once, and passes the hash to the calls below.
    [[nodiscard]] static std::uint32_t hash(std::string_view key) {
        const std::uint64_t h = std::hash<std::string_view>{}(key);
        return static_cast<std::uint32_t>(h ^ (h >> 32));
    }

    // The slot holding `key`, or npos.
    [[nodiscard]] std::uint32_t find(std::string_view key) const { return find(key, hash(key)); }
    [[nodiscard]] std::uint32_t find(std::string_view key, std::uint32_t h) const {
        if (table_.empty()) return npos;
        for (std::size_t i = h & mask();; i = next(i)) {
            const Bucket b = table_[i];
            if (b.slot == npos || (b.hash == h && key_of_(b.slot) == key)) return b.slot;
        }
    }

    // Starts loading the bucket where a look-up of `key` begins. A batch of
    // look-ups (SUBMIT, SETTLE) prefetches a few keys ahead: the table is
    // larger than the caches, and a bucket load is most of a look-up's cost.
    void prefetch(std::uint32_t h) const {
        if (!table_.empty()) __builtin_prefetch(&table_[h & mask()]);
    }

    // Adds `slot`, whose key must not be in the index yet.
    void insert(std::uint32_t slot) { insert(slot, hash(key_of_(slot))); }
    void insert(std::uint32_t slot, std::uint32_t h) {  // h: the hash of the slot's key
        if ((size_ + 1) * 2 > table_.size()) grow();
        place(Bucket{slot, h});
        ++size_;
    }

    // Removes `key` if present. The key must still be readable through KeyOf.
    void erase(std::string_view key) { erase(key, hash(key)); }
    void erase(std::string_view key, std::uint32_t h) {
        if (table_.empty()) return;
        std::size_t hole = h & mask();
        while (table_[hole].slot != npos && !(table_[hole].hash == h && key_of_(table_[hole].slot) == key))
            hole = next(hole);
        if (table_[hole].slot == npos) return;
        // Pull later members of the probe run back over the hole, unless
        // their home lies cyclically in (hole, j]: then they stay reachable.
        for (std::size_t j = next(hole); table_[j].slot != npos; j = next(j)) {
            const std::size_t home = table_[j].hash & mask();
            const bool stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
            if (stays) continue;
            table_[hole] = table_[j];
            hole = j;
        }
        table_[hole].slot = npos;
        --size_;
    }

    // Forgets every key and gives the table's memory back.
    void clear() {
        std::vector<Bucket>().swap(table_);
        size_ = 0;
    }

    [[nodiscard]] std::size_t size() const { return size_; }

private:
    struct Bucket {
        std::uint32_t slot;
        std::uint32_t hash;  // of the slot's key; its low bits pick the home bucket
    };

    [[nodiscard]] std::size_t mask() const { return table_.size() - 1; }
    [[nodiscard]] std::size_t next(std::size_t i) const { return (i + 1) & mask(); }

    void place(Bucket b) {
        std::size_t i = b.hash & mask();
        while (table_[i].slot != npos) i = next(i);
        table_[i] = b;
    }

    void grow() {
        std::vector<Bucket> old(table_.empty() ? 16 : table_.size() * 2, Bucket{npos, 0});
        old.swap(table_);
        for (const auto b : old)
            if (b.slot != npos) place(b);
    }

    KeyOf key_of_;
    std::vector<Bucket> table_;  // a power of two in size, slot npos where empty
    std::size_t size_ = 0;
};

}  // namespace drover
