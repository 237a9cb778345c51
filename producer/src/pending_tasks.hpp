// PendingTasks: the client's unfinished tasks, found by their ids.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "drover/client/client.hpp"
#include "drover/common/protocol.hpp"
#include "internal/proof.hpp"
#include "seq_table.hpp"

namespace drover {

namespace detail {

// Digits in ascending ASCII order, so that for numbers written with them a
// shorter string is smaller and equal lengths compare as the numbers do.
inline constexpr std::string_view k_digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~";

// The value of each digit of k_digits, -1 for other characters.
inline constexpr auto k_digit_values = [] {
    std::array<std::int8_t, 256> v{};
    for (auto& x : v) x = -1;
    for (std::size_t i = 0; i < k_digits.size(); ++i)
        v[static_cast<unsigned char>(k_digits[i])] = static_cast<std::int8_t>(i);
    return v;
}();

// Writes n in k_digits right to left, ending just before `end` (at most 11
// digits); returns where the number starts.
inline char* write_number(char* end, std::uint64_t n) {
    do {
        *--end = k_digits[n % 64];
        n /= 64;
    } while (n > 0);
    return end;
}

}  // namespace detail

// What a SUBMIT carries of a task, kept until its outcome: no more than
// that (the I/O thread walks thousands of these a second).
struct Submitted {
    std::string id, name, args;
    std::string reply_to;  // "" for this client's sink (its reply_to, added when sent)
    std::uint32_t max_attempts = proto::k_default_max_attempts;
    std::uint32_t timeout_ms = 0;
    bool detached = false;
    bool retry_on_error = false;
    char secret[k_secret_bytes] = {};  // task_secret of id under its sink's key
};

struct Pending {
    Submitted task;
    ResultCallback done;
    bool accepted = false;   // kept for tasks that go elsewhere only: the others end at their result
    bool elsewhere = false;  // outcome goes to another sink
    bool named = false;      // its id was chosen by the caller
    bool again = false;      // accepted before, sent again after a broker restart (no callback)
    bool settled = false;    // detached: its sink settled it before its ACCEPTED came
};

// The unfinished tasks by their number. An id of the client's own form,
// "<session>.<n>" with n in detail::k_digits, carries its number, so finding
// its task costs no hashing (seq_table.hpp); a task whose id the caller chose
// is found through an index of those ids. Own ids are never given twice.
// Not thread-safe: the Client calls it with its mutex held, except
// elsewhere(), which any thread may read.
class PendingTasks {
public:
    struct Found {
        std::uint64_t seq = 0;
        Pending* pending = nullptr;
    };

    // `session`: the first part of every own id (8 digits keep an id within
    // std::string's own bytes up to 2^36 tasks).
    explicit PendingTasks(std::string session) : session_(std::move(session)) {}

    // A new entry, its number in `seq`, its id `id` (the caller's: not
    // pending, find() first) or, when `id` is empty, the own id of `seq`.
    Pending& add(std::string&& id, bool elsewhere, std::uint64_t& seq) {
        const bool named = !id.empty();
        // A caller's id of our own form: its number is never given to another task.
        if (named) table_.skip_to(own_seq(id));
        Pending& p = table_.insert(seq);
        if (named) {
            p.task.id = std::move(id);
            p.named = true;
            named_.emplace(p.task.id, seq);
        } else {
            p.task.id = own_id(seq);
        }
        p.elsewhere = elsewhere;
        if (elsewhere) ++elsewhere_;
        return p;
    }

    // The unfinished task with this id; `pending` is nullptr if there is none.
    [[nodiscard]] Found find(std::string_view id) {
        if (const auto seq = own_seq(id); seq != 0)
            if (Pending* p = table_.find(seq); p && p->task.id == id) return {seq, p};
        if (named_.empty()) return {};
        const auto it = named_.find(std::string(id));
        if (it == named_.end()) return {};
        return {it->second, table_.find(it->second)};
    }
    [[nodiscard]] Pending* find(std::uint64_t seq) { return table_.find(seq); }
    [[nodiscard]] const Pending* find(std::uint64_t seq) const { return table_.find(seq); }

    // `f` from find(), with a task.
    void erase(const Found& f) {
        if (f.pending->named) named_.erase(f.pending->task.id);
        if (f.pending->elsewhere) --elsewhere_;
        table_.erase(f.seq);
    }

    // Forgets every task.
    void clear() {
        table_.clear();
        named_.clear();
        elsewhere_ = 0;
    }

    // fn(seq, Pending&) for every task, in no particular order.
    template <class Fn>
    void for_each(Fn&& fn) {
        table_.for_each(std::forward<Fn>(fn));
    }

    // Gives the memory of a burst back once no task has come since the
    // previous call and none is left: called once a heartbeat period.
    void shrink_when_idle() {
        if (table_.empty() && table_.last() == last_at_shrink_) table_.shrink();
        last_at_shrink_ = table_.last();
    }

    [[nodiscard]] const std::string& session() const { return session_; }
    [[nodiscard]] std::size_t size() const { return table_.size(); }
    [[nodiscard]] bool empty() const { return table_.empty(); }
    // Whether a task has an id its caller chose.
    [[nodiscard]] bool any_named() const { return !named_.empty(); }
    // Tasks whose outcome goes to another sink; read by any thread.
    [[nodiscard]] std::size_t elsewhere() const { return elsewhere_.load(); }

    // The own id of number `seq`: "<session>.<seq in k_digits>".
    [[nodiscard]] std::string own_id(std::uint64_t seq) const {
        // Written right to left into one buffer, then made a string once.
        char buf[32];
        char* end = buf + sizeof buf;
        char* start = detail::write_number(end, seq);
        *--start = '.';
        const std::size_t n = std::min(session_.size(), static_cast<std::size_t>(start - buf));
        start -= n;
        std::memcpy(start, session_.data(), n);
        return std::string(start, end);
    }

    // The number in an own id; 0 for an id of another form.
    [[nodiscard]] std::uint64_t own_seq(std::string_view id) const {
        const std::size_t start = session_.size() + 1;
        if (id.size() <= start || id.size() > start + 11 || id[session_.size()] != '.' ||
            id.compare(0, session_.size(), session_) != 0)
            return 0;
        std::uint64_t n = 0;
        for (std::size_t i = start; i < id.size(); ++i) {
            const int d = detail::k_digit_values[static_cast<unsigned char>(id[i])];
            if (d < 0 || n > (std::numeric_limits<std::uint64_t>::max() >> 6))
                return 0;  // not a digit, or past 64 bits
            n = n * 64 + static_cast<std::uint64_t>(d);
        }
        return n;
    }

private:
    std::string session_;
    SeqTable<Pending> table_;
    std::unordered_map<std::string, std::uint64_t> named_;  // caller's id -> number
    // While none go elsewhere, ACCEPTED needs no look-up.
    std::atomic<std::size_t> elsewhere_{0};
    std::uint64_t last_at_shrink_ = 0;
};

}  // namespace drover
