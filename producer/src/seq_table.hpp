// SeqTable: entries addressed by a sequence number that the table chooses.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

namespace drover {

// The Client's unfinished tasks. Each entry gets the next free sequence
// number whose slot (number mod capacity) is free, so a look-up is one
// index into an array: no hashing, no node to chase, and the tasks of a
// stream sit next to each other in submission order. A number whose slot is
// still held by an old entry (a straggler) is skipped, so numbers rise but
// may have gaps; one is never given twice.
//
// The capacity is a power of two and doubles when three quarters are used,
// never because of a run of held slots: stragglers stay where they are after
// a doubling, and growing for them would grow the table with every lap of
// the numbers instead of with the entries. Two numbers in different slots
// stay in different slots after doubling, so growing moves entries without a
// clash.
// shrink() gives the memory of an empty table back (its owner calls it once
// the table has stayed empty a while: a stream of bursts would otherwise
// grow it again at each one). Not thread-safe.
template <class T>
class SeqTable {
public:
    static constexpr std::size_t k_kept_capacity = 1024;

    SeqTable() : slots_(k_min_capacity) {}

    // A new default-constructed entry, and its number in `seq` (never 0).
    // A quarter of the slots at least is free, so the search ends; it passes
    // a run of held slots once a lap of the numbers.
    T& insert(std::uint64_t& seq) {
        if ((size_ + 1) * 4 > slots_.size() * 3) grow();
        while (true) {
            const std::uint64_t n = ++last_;
            Slot& s = slots_[n & mask()];
            if (s.value) continue;
            s.seq = n;
            s.value.emplace();
            ++size_;
            seq = n;
            return *s.value;
        }
    }

    // Numbers up to n are never given (the Client: a caller chose an id of
    // its own form with that number).
    void skip_to(std::uint64_t n) {
        if (n > last_) last_ = n;
    }

    [[nodiscard]] T* find(std::uint64_t seq) {
        Slot& s = slots_[seq & mask()];
        return s.value && s.seq == seq ? &*s.value : nullptr;
    }
    [[nodiscard]] const T* find(std::uint64_t seq) const { return const_cast<SeqTable*>(this)->find(seq); }

    // Returns whether there was such an entry.
    bool erase(std::uint64_t seq) {
        Slot& s = slots_[seq & mask()];
        if (!s.value || s.seq != seq) return false;
        s.value.reset();
        --size_;
        return true;
    }

    // An empty table keeps at most k_kept_capacity slots.
    void shrink() {
        if (size_ == 0 && slots_.size() > k_kept_capacity) std::vector<Slot>(k_kept_capacity).swap(slots_);
    }

    void clear() {
        std::vector<Slot>(k_min_capacity).swap(slots_);
        size_ = 0;
    }

    // fn(seq, T&) for every entry, in slot order (not number order).
    template <class Fn>
    void for_each(Fn&& fn) {
        for (auto& s : slots_)
            if (s.value) fn(s.seq, *s.value);
    }

    [[nodiscard]] std::size_t size() const { return size_; }
    [[nodiscard]] bool empty() const { return size_ == 0; }
    [[nodiscard]] std::size_t capacity() const { return slots_.size(); }
    // The last number given (or skipped).
    [[nodiscard]] std::uint64_t last() const { return last_; }

private:
    static constexpr std::size_t k_min_capacity = 256;

    struct Slot {
        std::uint64_t seq = 0;
        std::optional<T> value;
    };

    [[nodiscard]] std::size_t mask() const { return slots_.size() - 1; }

    void grow() {
        std::vector<Slot> bigger(slots_.size() * 2);
        const std::size_t m = bigger.size() - 1;
        for (auto& s : slots_) {
            if (!s.value) continue;
            Slot& d = bigger[s.seq & m];
            d.seq = s.seq;
            d.value.emplace(std::move(*s.value));
        }
        slots_.swap(bigger);
    }

    std::vector<Slot> slots_;
    std::size_t size_ = 0;
    std::uint64_t last_ = 0;
};

}  // namespace drover
