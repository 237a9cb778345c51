// The broker's journal: accepted tasks, their deaths, broker-made outcomes and settlements, on disk.
#pragma once

// Journal is an append-only log of segment files in one directory. The
// broker appends a record for each change recovery needs (a task accepted,
// an attempt counted, an outcome it made, the task's end) and calls
// commit(now) once a poll-loop turn: the records reach the file in one
// write, and the fsync policy decides when they are synced. Every append
// returns a sequence number; durable_seq() says up to which one records
// are on disk, so the broker answers ACCEPTED only then.
//
// Open() reads the segments back and hands every task not yet settled to
// the caller (its task, attempts, deaths and pending outcome), in
// acceptance order. A torn tail is cut: in the last segment, damage past
// the last offset a synced item vouches for, and all after it (a power
// loss can tear unsynced bytes anywhere, not only at the end). Damage
// anywhere else refuses to open unless `repair` is set.
//
// Disk stays bounded: a segment rolls past segment_bytes; a closed
// segment is deleted once its tasks are all settled (oldest first, so a
// settlement is never lost while the task it ends is still on disk); and a
// run of old segments held by few live tasks is compacted: the caller
// rewrites those tasks (take_relocation(), relocate()) into the active
// segment and the old segments go.
//
// A failed write or fdatasync (ENOSPC, EIO) makes the journal unavailable:
// append_accepted() refuses (the caller rejects the SUBMIT
// journal_unavailable), other appends are kept in memory, and
// commit()/retry() rewrite everything not yet durable from the last durable
// offset once the disk takes it.
//
// Not thread-safe: one thread (the broker's loop) owns a Journal. Under
// `batch`, a thread of its own runs the fdatasync calls (group commit: the
// loop goes on writing while one runs) and makes wake_fd() readable when
// one ends; everything else runs on the owner's thread.
//
// On disk (all integers little-endian; varint = LEB128):
//   segment file  DIR/<first seq, 20 digits>.drj
//     header (32 bytes): "DROVERJ\n", u32 version, u32 header size (32),
//                        u64 first seq, u32 0, u32 crc32 of the 28 before
//     records:  u32 n, u32 crc32(body), body (n bytes) = u8 kind, items...
//   Each item but a synced one takes the next sequence number (the
//   header's first seq, then + 1 an item). Consecutive appends of one kind
//   share a record up to record_bytes. A key is the sequence number of the
//   task's accepted or relocated item; other items name it as seq - key.
//   kind 1 accepted   item = task
//   kind 2 attempt    item = varint back, varint attempt, varint deaths
//   kind 3 outcome    item = varint back, u8 status, varint attempt, str error
//   kind 4 settled    item = varint back
//   kind 5 relocated  item = varint back (the old key), task, varint attempt,
//                            varint deaths, u8 has outcome, [u8 status,
//                            varint attempt, str error]
//   kind 6 synced     item = varint offset: this segment was synced through
//                            it (written with the next records after a sync)
//   task = u8 flags (1 detached, 2 retry_on_error, 4 name, 8 reply_to,
//          16 producer: present, else the previous item's in this record),
//          varint max_attempts, varint timeout_ms, str id, [str name],
//          [str reply_to], [str producer], str args, str secret
//   str  = varint length, bytes

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "drover/common/clock.hpp"
#include "drover/common/logging.hpp"
#include "drover/common/protocol.hpp"

namespace drover {

enum class FsyncPolicy : std::uint8_t {
    always,  // fdatasync every commit
    batch,   // fdatasync on a sync thread, at most every batch_interval; after a quiet spell at once
    off,     // write only: survives the broker's crash, not the machine's
};

[[nodiscard]] const char* fsync_policy_name(FsyncPolicy p) noexcept;
[[nodiscard]] std::optional<FsyncPolicy> parse_fsync_policy(std::string_view s) noexcept;

// The command-line flag the damage message tells the user to add.
inline constexpr std::string_view k_journal_repair_flag = "--journal-repair";

// An I/O call the test hook may fail.
enum class JournalIo : std::uint8_t { write, sync };

struct JournalOptions {
    FsyncPolicy fsync = FsyncPolicy::batch;
    Millis batch_interval{2};                   // batch: the longest a written record waits for its sync
    std::uint64_t segment_bytes = 64ull << 20;  // a segment rolls once it is this big
    std::size_t record_bytes = 64 << 10;        // appends of one kind share a record up to this body size
    // The oldest closed segments are compacted once their live tasks are at
    // most this % of the tasks written in them.
    unsigned compact_percent = 25;
    Millis retry_interval{500};  // unavailable: how often commit() tries the disk again
    bool repair = false;         // open(): cut damage instead of refusing (records after it lost)
    // Test hook: called before each write (`bytes` is its size; lower it to
    // let only that much through) and each fdatasync. A non-zero errno
    // fails the call as the kernel would.
    std::function<int(JournalIo, std::size_t& bytes)> fault;
};

// A task as the journal keeps it. Views: into the caller's strings when
// appending, into the segment being read when recovering.
struct JournalTask {
    std::string_view id, name, args, reply_to;
    std::string_view producer;  // the frontend identity that submitted it
    std::string_view secret;    // the broker keeps proto::k_task_secret_bytes
    std::uint32_t max_attempts = proto::k_default_max_attempts;
    std::uint32_t timeout_ms = 0;
    bool detached = false;
    bool retry_on_error = false;

    // The fields of `t`; reply_to is `batch_reply_to` when `t` names none.
    [[nodiscard]] static JournalTask of(const proto::Task& t, std::string_view producer,
                                        std::string_view batch_reply_to = {}) noexcept;
};

// An outcome the broker made (lost, cancelled, timeout, error), to send until settled.
struct JournalOutcome {
    proto::Status status = proto::Status::lost;
    std::uint32_t attempt = 0;  // the task's attempt when it ended (its broker_token derives from it)
    std::string_view error;
};

// All recovery needs of one unsettled task.
struct JournalState {
    JournalTask task;
    std::uint32_t attempt = 0;  // times dispatched, as last appended
    std::uint32_t deaths = 0;   // attempts counted against max_attempts
    std::optional<JournalOutcome> outcome;
};

// What open() found and did.
struct JournalRecovery {
    std::size_t tasks = 0;             // unsettled tasks handed to the visitor
    std::size_t segments = 0;          // segment files read
    std::uint64_t items = 0;           // items read
    std::uint64_t bytes = 0;           // bytes read (after cuts)
    std::size_t torn_tails = 0;        // torn tails cut (0 or 1)
    std::uint64_t torn_bytes = 0;      // bytes they held
    std::size_t repaired = 0;          // damaged places cut under `repair`
    std::uint64_t repaired_bytes = 0;  // bytes lost to them
    Clock::duration took{};
};

class Journal {
public:
    using Seq = std::uint64_t;  // 0: none; the first item of a new journal is 1
    using Visitor = std::function<void(Seq key, const JournalState& state)>;
    static constexpr std::uint32_t k_format_version = 1;

    // Opens (creating if need be) the journal in `dir`, locks it against a
    // second process, reads every segment and calls `visit` once for each
    // unsettled task, in acceptance order (a task compaction rewrote, whose
    // original record is gone, at its rewrite); the views in the state are
    // valid during the call only. Then starts a new active segment.
    // Throws std::runtime_error: the directory cannot be used or locked; a
    // segment of a newer format version; damage other than a torn tail
    // (without options.repair), naming the file, offset and repair flag.
    static std::unique_ptr<Journal> open(const std::string& dir, JournalOptions options, const Visitor& visit,
                                         JournalRecovery* report = nullptr, Logger log = null_logger());
    ~Journal();
    Journal(const Journal&) = delete;
    Journal& operator=(const Journal&) = delete;

    // Appends (buffered until commit). Each returns the item's sequence
    // number. append_accepted returns the task's key for the calls below,
    // or nullopt while the journal is unavailable (nothing appended).
    [[nodiscard]] std::optional<Seq> append_accepted(const JournalTask& t);
    // The task's attempt and death counts changed (a death, a retry).
    Seq append_attempt(Seq key, std::uint32_t attempt, std::uint32_t deaths);
    // The broker ended the task with this outcome; kept until settled.
    Seq append_outcome(Seq key, const JournalOutcome& o);
    // The task is over: settled by its sink, or forgotten by the broker.
    // A key not live (settled already, unknown) appends nothing: returns 0.
    Seq append_settled(Seq key);

    // Compaction. Nonzero once per plan: every live task whose key is below
    // it should be relocated; the segments that held them are then deleted.
    [[nodiscard]] Seq take_relocation() noexcept {
        const Seq below = relocate_below_ > relocation_issued_ ? relocate_below_ : 0;
        if (below) relocation_issued_ = below;
        return below;
    }
    // Rewrites a live task's current state into the active segment; returns
    // its new key (the old one is dead). A key not live is returned as is.
    Seq relocate(Seq key, const JournalState& state);

    // Writes what was appended (one write), syncs as the policy says
    // (`always`: here; `batch`: asks the sync thread, and takes the result
    // of the one that ended), rolls, deletes and plans compaction. While
    // unavailable, retries the disk once retry_interval has passed.
    // Returns durable_seq().
    Seq commit(Clock::time_point now);
    // Writes and syncs everything appended, here and now, whatever the
    // policy (a clean stop). Returns durable_seq().
    Seq flush(Clock::time_point now);
    // Unavailable: rewrites everything not yet durable from the last durable
    // offset and syncs. Returns whether the journal is available again.
    bool retry(Clock::time_point now);

    // Every item up to this one is on disk (as far as the policy promises).
    [[nodiscard]] Seq durable_seq() const noexcept { return durable_seq_; }
    // The last sequence number handed out.
    [[nodiscard]] Seq last_seq() const noexcept { return next_seq_ - 1; }
    // When commit() must run again for appended records to become durable
    // (the next batch sync, a retry), or time_point::max() if nothing waits
    // on time: a batch sync in flight makes wake_fd() readable instead.
    [[nodiscard]] Clock::time_point next_commit() const noexcept;
    // `batch`: an eventfd, readable once a sync has ended (commit() reads
    // it): poll it with the sockets. -1 under other policies.
    [[nodiscard]] int wake_fd() const noexcept;
    [[nodiscard]] bool syncing() const noexcept { return sync_in_flight_; }  // a batch sync in flight
    [[nodiscard]] bool available() const noexcept { return !unavailable_; }
    // The error that made it unavailable ("" when available).
    [[nodiscard]] const std::string& last_error() const noexcept { return error_; }

    [[nodiscard]] std::uint64_t bytes_on_disk() const noexcept;
    [[nodiscard]] std::size_t segment_count() const noexcept { return segments_.size(); }
    [[nodiscard]] std::uint64_t live_tasks() const noexcept;
    [[nodiscard]] const std::string& dir() const noexcept { return dir_; }
    [[nodiscard]] const JournalOptions& options() const noexcept { return options_; }

    struct Totals {
        std::uint64_t commits = 0, writes = 0, syncs = 0, bytes_written = 0, rolled = 0, deleted = 0, relocated = 0,
                      failures = 0, recoveries = 0;
    };
    [[nodiscard]] const Totals& totals() const noexcept { return totals_; }

private:
    struct Segment {
        Seq first = 0;
        Seq end = 0;  // one past its last item (the active segment's grows with next_seq_)
        std::uint64_t bytes = 0;
        std::uint64_t tasks = 0;  // accepted and relocated items in it
        std::uint64_t live = 0;   // of those, neither settled nor relocated
        Seq emptied = 0;          // closed with no live task since this item: deleted once it is durable
        bool closed = false;
        std::vector<std::uint64_t> live_bits;  // by item - first
    };
    // The bytes not yet durable, growing; appends encode straight into it.
    class Buffer {
    public:
        char* grow(std::size_t n) {  // room for n more bytes; commit with advance()
            if (cap_ - size_ < n) reserve(size_ + n);
            return data_.get() + size_;
        }
        void advance(char* to) noexcept { size_ = static_cast<std::size_t>(to - data_.get()); }
        [[nodiscard]] char* data() noexcept { return data_.get(); }
        [[nodiscard]] const char* data() const noexcept { return data_.get(); }
        [[nodiscard]] std::size_t size() const noexcept { return size_; }
        void clear() noexcept { size_ = 0; }
        void erase_front(std::size_t n) noexcept;

    private:
        void reserve(std::size_t n);
        std::unique_ptr<char[]> data_;
        std::size_t size_ = 0, cap_ = 0;
    };
    struct Recovery;
    class Syncer;

    Journal(std::string dir, JournalOptions options, Logger log);
    void recover(const Visitor& visit, JournalRecovery& report);
    void read_segment(Recovery& rec, std::size_t i, Seq previous_end, JournalRecovery& report);
    void adopt_segments(Recovery& rec);
    void start_segment();  // a new active segment at next_seq_, its header buffered
    // The item about to be appended goes in a record of `kind` (journal.cpp); returns
    // where to encode it, with room for `n` bytes (the caller advances buf_).
    char* begin_item(std::uint8_t kind, std::size_t n);
    void close_record() noexcept;
    void append_synced();  // a synced item: the segment is on disk through synced_through_
    char* put_task(char* p, const JournalTask& t);
    Segment* segment_of(Seq key) noexcept;
    bool is_live(Seq key) noexcept;
    void mark_live(Seq seq);
    bool unmark_live(Seq key, Seq by);  // `by`: the item that ends it
    bool write_pending(Clock::time_point now);
    bool make_durable(Clock::time_point now);  // fdatasync here (not under `off`)
    void ask_sync(Clock::time_point now);      // batch: the sync thread syncs what is written
    void collect_sync(Clock::time_point now);  // batch: the result of a sync that ended, if any
    void drain_sync(Clock::time_point now);    // batch: waits for a sync in flight and takes its result
    void fail(const char* op, int err, Clock::time_point now);
    void roll(Clock::time_point now);
    void delete_settled_segments();
    void plan_relocation() noexcept;
    [[nodiscard]] std::string segment_path(Seq first) const;

    std::string dir_;
    JournalOptions options_;
    Logger log_;
    int dir_fd_ = -1;
    int lock_fd_ = -1;
    int fd_ = -1;                   // the active segment
    std::deque<Segment> segments_;  // oldest first; back() is the active one
    Buffer buf_;
    std::uint64_t base_ = 0;        // the active segment's offset of buf_[0]: its durable size
    std::size_t written_ = 0;       // of buf_, bytes in the file (not all synced)
    std::size_t record_at_ = 0;     // the open record's frame in buf_
    std::uint8_t record_kind_ = 0;  // the open record's kind (journal.cpp), 0: none open
    // The open accepted/relocated record's last name, reply_to and producer (offsets in buf_).
    struct Shared {
        std::size_t at = 0, size = 0;
    };
    Shared last_name_, last_reply_to_, last_producer_;
    bool record_shares_ = false;  // the open record holds a task: the Shared above are set
    Seq next_seq_ = 1;
    Seq written_seq_ = 0;
    Seq durable_seq_ = 0;
    Seq asked_seq_ = 0;  // batch: the last item a sync was asked for
    bool sync_in_flight_ = false;
    std::unique_ptr<Syncer> syncer_;
    Seq relocate_below_ = 0;
    Seq relocation_issued_ = 0;
    bool unavailable_ = false;
    bool dir_sync_pending_ = false;
    bool truncate_pending_ = false;
    std::uint64_t synced_through_ = 0;  // the active segment is synced through this offset
    bool synced_due_ = false;  // ... and no synced item says so yet  // a failed write or sync: cut the file back to
                               // base_ before writing again
    std::string error_;
    Clock::time_point last_sync_{};
    Clock::time_point next_retry_{};
    Totals totals_;
};

}  // namespace drover
