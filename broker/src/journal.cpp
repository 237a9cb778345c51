// The broker's journal: segment files of checksummed records, recovery, compaction (journal.hpp).
#include "journal.hpp"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <thread>

namespace drover {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the journal stores integers as the host does");

namespace {

using Seq = Journal::Seq;

constexpr char k_magic[8] = {'D', 'R', 'O', 'V', 'E', 'R', 'J', '\n'};
constexpr std::size_t k_header_bytes = 32;
constexpr std::size_t k_frame_bytes = 8;  // u32 body length, u32 crc32
constexpr std::size_t k_varint_max = 10;
constexpr std::string_view k_suffix = ".drj";
constexpr std::uint8_t k_detached = 1, k_retry_on_error = 2, k_has_name = 4, k_has_reply_to = 8, k_has_producer = 16;
constexpr std::uint8_t k_task_flags = 31;
// Record kinds (journal.hpp)
constexpr std::uint8_t k_accepted = 1, k_attempt = 2, k_outcome = 3, k_settled = 4, k_relocated = 5, k_synced = 6;
constexpr std::uint8_t k_last_kind = k_synced;
constexpr std::uint32_t k_no_task = 0xffffffff;
// Bytes the search for good records after a bad one may checksum before
// giving up (and calling it damage: refusing is the safe side).
constexpr std::uint64_t k_scan_budget = 256ull << 20;

void store_u32(char* p, std::uint32_t v) noexcept { std::memcpy(p, &v, 4); }
void store_u64(char* p, std::uint64_t v) noexcept { std::memcpy(p, &v, 8); }
std::uint32_t load_u32(const char* p) noexcept {
    std::uint32_t v;
    std::memcpy(&v, p, 4);
    return v;
}
std::uint64_t load_u64(const char* p) noexcept {
    std::uint64_t v;
    std::memcpy(&v, p, 8);
    return v;
}

std::uint32_t crc_of(const char* p, std::size_t n) noexcept {
    return static_cast<std::uint32_t>(crc32_z(0, reinterpret_cast<const Bytef*>(p), n));
}

char* put_varint(char* p, std::uint64_t v) noexcept {
    while (v >= 0x80) {
        *p++ = static_cast<char>(v | 0x80);
        v >>= 7;
    }
    *p++ = static_cast<char>(v);
    return p;
}

char* put_str(char* p, std::string_view s) noexcept {
    p = put_varint(p, s.size());
    std::memcpy(p, s.data(), s.size());
    return p + s.size();
}

void put_header(char* p, Seq first) noexcept {
    std::memcpy(p, k_magic, sizeof k_magic);
    store_u32(p + 8, Journal::k_format_version);
    store_u32(p + 12, k_header_bytes);
    store_u64(p + 16, first);
    store_u32(p + 24, 0);
    store_u32(p + 28, crc_of(p, 28));
}

std::string errno_text(int err) { return std::strerror(err); }

// Bounds-checked reads of one record's body; an overrun clears ok.
struct Reader {
    const char* p;
    const char* end;
    bool ok = true;

    std::uint8_t u8() noexcept {
        if (p == end) return ok = false, 0;
        return static_cast<std::uint8_t>(*p++);
    }
    std::uint64_t varint() noexcept {
        std::uint64_t v = 0;
        for (unsigned shift = 0; shift < 64; shift += 7) {
            if (p == end) return ok = false, 0;
            const auto b = static_cast<std::uint8_t>(*p++);
            v |= static_cast<std::uint64_t>(b & 0x7f) << shift;
            if (!(b & 0x80)) return v;
        }
        return ok = false, 0;
    }
    std::uint32_t u32() noexcept {
        const std::uint64_t v = varint();
        if (v > std::numeric_limits<std::uint32_t>::max()) ok = false;
        return static_cast<std::uint32_t>(v);
    }
    std::string_view str() noexcept {
        const std::uint64_t n = varint();
        if (!ok || n > static_cast<std::uint64_t>(end - p)) return ok = false, std::string_view{};
        const std::string_view s(p, static_cast<std::size_t>(n));
        p += n;
        return s;
    }
};

// One decoded item: for accepted and relocated ones, `seq` is the new key
// and `key` (relocated) the old; for a synced one `key` is the offset; for
// the others `key` names the task.
struct Item {
    std::uint8_t kind = 0;
    Seq seq = 0;
    Seq key = 0;
    JournalState state;
};

// A task; `t` holds the previous item's (for the fields it leaves out).
bool read_task(Reader& r, JournalTask& t, bool& have_previous) {
    const std::uint8_t f = r.u8();
    if (f & ~k_task_flags) return false;
    const std::uint8_t shared = k_has_name | k_has_reply_to | k_has_producer;
    if (!have_previous && (f & shared) != shared) return false;
    t.detached = f & k_detached;
    t.retry_on_error = f & k_retry_on_error;
    t.max_attempts = r.u32();
    t.timeout_ms = r.u32();
    t.id = r.str();
    if (f & k_has_name) t.name = r.str();
    if (f & k_has_reply_to) t.reply_to = r.str();
    if (f & k_has_producer) t.producer = r.str();
    t.args = r.str();
    t.secret = r.str();
    have_previous = true;
    return r.ok;
}

bool read_outcome(Reader& r, JournalOutcome& o) {
    const std::uint8_t status = r.u8();
    if (status > static_cast<std::uint8_t>(proto::Status::rejected)) return false;
    o.status = static_cast<proto::Status>(status);
    o.attempt = r.u32();
    o.error = r.str();
    return r.ok;
}

// Decodes a record's body, calling apply(const Item&) per item; the first
// takes sequence number `seq`. Returns the sequence numbers its items take
// (synced items take none), or -1 if malformed.
template <class Apply>
std::int64_t decode_record(const char* body, std::size_t n, Seq seq, Apply&& apply) {
    Reader r{body, body + n};
    const std::uint8_t kind = r.u8();
    if (kind == 0 || kind > k_last_kind) return -1;
    Item item;
    item.kind = kind;
    bool have_previous = false;
    std::int64_t count = 0;
    for (; r.p != r.end; ++count, ++seq) {
        item.seq = seq;
        item.key = seq;
        if (kind == k_synced) {
            item.key = r.varint();
            if (!r.ok) return -1;
            apply(static_cast<const Item&>(item));
            continue;
        }
        if (kind != k_accepted) {
            const std::uint64_t back = r.varint();
            if (back == 0 || back >= seq) return -1;
            item.key = seq - back;
        }
        bool ok = true;
        if (kind == k_accepted || kind == k_relocated) ok = read_task(r, item.state.task, have_previous);
        if (kind == k_attempt || kind == k_relocated) {
            item.state.attempt = r.u32();
            item.state.deaths = r.u32();
        }
        item.state.outcome.reset();
        bool has_outcome = kind == k_outcome;
        if (kind == k_relocated) {
            const std::uint8_t h = r.u8();
            if (h > 1) return -1;
            has_outcome = h == 1;
        }
        if (has_outcome) {
            JournalOutcome o;
            ok = ok && read_outcome(r, o);
            item.state.outcome = o;
        }
        if (!ok || !r.ok) return -1;
        apply(static_cast<const Item&>(item));
    }
    return kind == k_synced ? 0 : count;
}

std::string segment_name(Seq first) {
    char name[32];
    std::snprintf(name, sizeof name, "%020" PRIu64 "%s", first, k_suffix.data());
    return name;
}

// The sequence number a segment file's name gives, or nullopt for another file.
std::optional<Seq> parse_segment_name(const std::string& name) {
    if (name.size() != 20 + k_suffix.size() || name.compare(20, k_suffix.size(), k_suffix) != 0) return std::nullopt;
    Seq v = 0;
    for (std::size_t i = 0; i < 20; ++i) {
        if (name[i] < '0' || name[i] > '9') return std::nullopt;
        v = v * 10 + static_cast<Seq>(name[i] - '0');
    }
    return v;
}

std::size_t task_bytes(const JournalTask& t) noexcept {
    return 1 + 2 * k_varint_max + 6 * k_varint_max + t.id.size() + t.name.size() + t.reply_to.size() +
           t.producer.size() + t.args.size() + t.secret.size();
}

}  // namespace

const char* fsync_policy_name(FsyncPolicy p) noexcept {
    switch (p) {
        case FsyncPolicy::always: return "always";
        case FsyncPolicy::batch: return "batch";
        case FsyncPolicy::off: return "off";
    }
    return "?";
}

std::optional<FsyncPolicy> parse_fsync_policy(std::string_view s) noexcept {
    if (s == "always") return FsyncPolicy::always;
    if (s == "batch") return FsyncPolicy::batch;
    if (s == "off") return FsyncPolicy::off;
    return std::nullopt;
}

JournalTask JournalTask::of(const proto::Task& t, std::string_view producer, std::string_view batch_reply_to) noexcept {
    JournalTask j;
    j.id = t.id;
    j.name = t.name;
    j.args = t.args;
    j.reply_to = t.reply_to.empty() ? batch_reply_to : std::string_view(t.reply_to);
    j.producer = producer;
    j.secret = t.secret.view();
    j.max_attempts = t.max_attempts;
    j.timeout_ms = t.timeout_ms;
    j.detached = t.detached;
    j.retry_on_error = t.retry_on_error;
    return j;
}

void Journal::Buffer::reserve(std::size_t n) {
    const std::size_t cap = std::max<std::size_t>({n, 2 * cap_, 64 << 10});
    auto data = std::make_unique<char[]>(cap);
    if (size_) std::memcpy(data.get(), data_.get(), size_);
    data_ = std::move(data);
    cap_ = cap;
}

void Journal::Buffer::erase_front(std::size_t n) noexcept {
    n = std::min(n, size_);
    std::memmove(data_.get(), data_.get() + n, size_ - n);
    size_ -= n;
}

// The sync thread (batch) --------------------------------------------------------

// Runs one fdatasync at a time, of what was written when it was asked, off
// the owner's thread; the result waits for take(), and wake_fd says it is there.
class Journal::Syncer {
public:
    struct Ask {
        int fd = -1;
        bool dir = false;  // fsync the directory too (a segment created or deleted)
        Seq seq = 0;       // the last item written when asked
        std::uint64_t offset = 0;
    };
    struct Done {
        Ask ask;
        int error = 0;
    };

    Syncer(int dir_fd, std::function<int(JournalIo, std::size_t&)> fault)
        : dir_fd_(dir_fd), fault_(std::move(fault)), wake_fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
        if (wake_fd_ < 0) throw std::runtime_error("journal: eventfd: " + errno_text(errno));
        thread_ = std::thread([this] { run(); });
    }
    ~Syncer() {
        {
            std::lock_guard<std::mutex> lock(m_);
            stop_ = true;
        }
        cv_.notify_all();
        thread_.join();
        ::close(wake_fd_);
    }
    Syncer(const Syncer&) = delete;
    Syncer& operator=(const Syncer&) = delete;

    void ask(const Ask& a) {
        {
            std::lock_guard<std::mutex> lock(m_);
            asked_ = a;
            busy_ = true;
        }
        cv_.notify_all();
    }
    std::optional<Done> take() {
        std::lock_guard<std::mutex> lock(m_);
        std::optional<Done> d;
        d.swap(done_);
        if (d) {
            std::uint64_t count;
            while (::read(wake_fd_, &count, sizeof count) > 0) {}
        }
        return d;
    }
    void wait() {
        std::unique_lock<std::mutex> lock(m_);
        cv_.wait(lock, [this] { return !busy_; });
    }
    [[nodiscard]] int wake_fd() const noexcept { return wake_fd_; }

private:
    void run() {
        std::unique_lock<std::mutex> lock(m_);
        for (;;) {
            cv_.wait(lock, [this] { return asked_ || stop_; });
            if (!asked_) return;
            const Ask a = *asked_;
            asked_.reset();
            lock.unlock();
            Done d{a, 0};
            if (fault_) {
                std::size_t none = 0;
                d.error = fault_(JournalIo::sync, none);
            }
            if (!d.error && ::fdatasync(a.fd) != 0) d.error = errno;
            if (!d.error && a.dir && ::fsync(dir_fd_) != 0) d.error = errno;
            lock.lock();
            done_ = d;
            busy_ = false;
            cv_.notify_all();
            const std::uint64_t one = 1;
            if (::write(wake_fd_, &one, sizeof one) < 0) {}  // already readable
        }
    }

    const int dir_fd_;
    const std::function<int(JournalIo, std::size_t&)> fault_;
    const int wake_fd_;
    std::mutex m_;
    std::condition_variable cv_;
    std::optional<Ask> asked_;
    std::optional<Done> done_;
    bool busy_ = false;
    bool stop_ = false;
    std::thread thread_;
};

// Recovery ----------------------------------------------------------------------

// What open() reads: the segment files (mapped while their tasks are
// visited) and the tasks their items leave unsettled.
struct Journal::Recovery {
    struct File {
        std::string path;
        Seq first = 0;
        Seq end = 0;
        int fd = -1;
        const char* data = nullptr;
        std::size_t size = 0;
        std::size_t cut = 0;  // bytes kept
        std::uint64_t tasks = 0;
        std::uint64_t synced = 0;  // the largest offset a synced item says was synced
    };
    struct Task {
        Seq key = 0;
        JournalState state;
        bool live = true;
    };
    std::vector<File> files;
    std::vector<Task> tasks;           // in order of first appearance
    std::vector<std::uint32_t> index;  // by seq - base: its place in tasks, or k_no_task
    Seq base = 0;
    std::size_t live = 0;

    Recovery() = default;
    Recovery(const Recovery&) = delete;
    Recovery& operator=(const Recovery&) = delete;
    ~Recovery() { release(); }
    void release() noexcept {
        for (auto& f : files) {
            if (f.data) ::munmap(const_cast<char*>(f.data), f.size);
            if (f.fd >= 0) ::close(f.fd);
            f.data = nullptr;
            f.fd = -1;
        }
    }
    Task* find(Seq key) noexcept {
        if (key < base || key - base >= index.size()) return nullptr;
        const std::uint32_t i = index[key - base];
        return i == k_no_task ? nullptr : &tasks[i];
    }
    void place(Seq seq, std::uint32_t i) {
        if (seq - base >= index.size()) index.resize(seq - base + 1, k_no_task);
        index[seq - base] = i;
    }
    void apply(const Item& item) {
        switch (item.kind) {
            case k_synced: return;
            case k_accepted:
                place(item.seq, static_cast<std::uint32_t>(tasks.size()));
                tasks.push_back(Task{item.seq, item.state, true});
                ++live;
                return;
            case k_relocated:
                if (Task* t = find(item.key)) {
                    index[item.key - base] = k_no_task;
                    t->key = item.seq;
                    t->state = item.state;
                    place(item.seq, static_cast<std::uint32_t>(t - tasks.data()));
                } else {
                    place(item.seq, static_cast<std::uint32_t>(tasks.size()));
                    tasks.push_back(Task{item.seq, item.state, true});
                    ++live;
                }
                return;
            default: break;
        }
        Task* t = find(item.key);
        if (!t) return;  // its task ended in a segment since deleted
        if (item.kind == k_attempt) {
            t->state.attempt = item.state.attempt;
            t->state.deaths = item.state.deaths;
        } else if (item.kind == k_outcome) {
            t->state.outcome = item.state.outcome;
        } else {
            t->live = false;
            index[item.key - base] = k_no_task;
            --live;
        }
    }
};

namespace {

// A good record at `at`: its frame fits, its checksum matches, it decodes.
bool good_record_at(const char* d, std::size_t size, std::size_t at, std::uint64_t& budget) {
    if (size - at < k_frame_bytes + 1) return false;
    const std::uint32_t n = load_u32(d + at);
    if (n == 0 || n > size - at - k_frame_bytes) return false;
    const auto kind = static_cast<std::uint8_t>(d[at + k_frame_bytes]);
    if (kind == 0 || kind > k_last_kind) return false;
    budget = n > budget ? 0 : budget - n;
    if (crc_of(d + at + k_frame_bytes, n) != load_u32(d + at + 4)) return false;
    return decode_record(d + at + k_frame_bytes, n, std::numeric_limits<Seq>::max(), [](const Item&) {}) >= 0;
}

// The largest offset that synced items in good records after the bad one
// at `bad` say was synced (0: none). Past the search budget, the largest offset.
std::uint64_t synced_after(const char* d, std::size_t size, std::size_t bad) {
    std::uint64_t budget = k_scan_budget, synced = 0;
    const auto note = [&synced](const Item& item) {
        if (item.kind == k_synced) synced = std::max(synced, item.key);
    };
    for (std::size_t at = bad + 1; at + k_frame_bytes < size;) {
        if (!good_record_at(d, size, at, budget)) {
            if (budget == 0) return std::numeric_limits<std::uint64_t>::max();
            ++at;
            continue;
        }
        const std::uint32_t n = load_u32(d + at);
        decode_record(d + at + k_frame_bytes, n, std::numeric_limits<Seq>::max(), note);
        at += k_frame_bytes + n;
    }
    return synced;
}

}  // namespace

namespace {

// Why a segment's header is bad, or "". Throws for a newer format version.
std::string check_header(const std::string& path, const char* d, std::size_t size, Seq first, Seq previous_end) {
    if (size < k_header_bytes) return "a header cut short";
    if (std::memcmp(d, k_magic, sizeof k_magic) != 0) return "not a drover journal segment (bad magic)";
    const std::uint32_t version = load_u32(d + 8);
    if (version > Journal::k_format_version)
        throw std::runtime_error("journal segment " + path + " has format version " + std::to_string(version) +
                                 "; this drover reads version " + std::to_string(Journal::k_format_version) +
                                 " and older: run a newer drover, or move the journal away");
    if (crc_of(d, 28) != load_u32(d + 28)) return "a header whose checksum does not match";
    if (version == 0 || load_u32(d + 12) != k_header_bytes) return "a header of an unknown layout";
    if (load_u64(d + 16) != first) return "a header whose first sequence number is not its file name's";
    if (first < previous_end) return "sequence numbers overlapping the previous segment's";
    return {};
}

// Why the record at `at` is bad, or "".
const char* check_record(const char* d, std::size_t size, std::size_t at, Seq seq) {
    if (size - at < k_frame_bytes) return "a record frame cut short";
    const std::uint32_t n = load_u32(d + at);
    const char* body = d + at + k_frame_bytes;
    if (n == 0 || n > size - at - k_frame_bytes) return "a record running past the end of the file";
    if (crc_of(body, n) != load_u32(d + at + 4)) return "a record whose checksum does not match";
    if (decode_record(body, n, seq, [](const Item&) {}) < 0) return "a record that does not decode";
    return "";
}

}  // namespace

void Journal::read_segment(Recovery& rec, std::size_t i, Seq previous_end, JournalRecovery& report) {
    auto& f = rec.files[i];
    f.fd = ::open(f.path.c_str(), O_RDWR | O_CLOEXEC);
    struct stat st {};
    if (f.fd < 0 || ::fstat(f.fd, &st) != 0)
        throw std::runtime_error("journal: cannot open " + f.path + ": " + errno_text(errno));
    f.size = static_cast<std::size_t>(st.st_size);
    if (f.size > 0) {
        void* m = ::mmap(nullptr, f.size, PROT_READ, MAP_PRIVATE, f.fd, 0);
        if (m == MAP_FAILED) throw std::runtime_error("journal: cannot map " + f.path + ": " + errno_text(errno));
        f.data = static_cast<const char*>(m);
        ::madvise(m, f.size, MADV_SEQUENTIAL);
    }
    std::string why = check_header(f.path, f.data, f.size, f.first, previous_end);
    std::size_t at = why.empty() ? k_header_bytes : 0;
    Seq seq = f.first;
    while (why.empty() && at < f.size) {
        why = check_record(f.data, f.size, at, seq);
        if (!why.empty()) break;
        const std::uint32_t n = load_u32(f.data + at);
        const auto count = decode_record(f.data + at + k_frame_bytes, n, seq, [&](const Item& item) {
            if (item.kind == k_accepted || item.kind == k_relocated) ++f.tasks;
            if (item.kind == k_synced) f.synced = std::max(f.synced, item.key);
            rec.apply(item);
        });
        seq += static_cast<Seq>(count);
        report.items += static_cast<std::uint64_t>(count);
        at += k_frame_bytes + n;
    }
    f.cut = at;
    f.end = seq;
    report.bytes += at;
    if (why.empty()) return;
    // A power loss can tear the bytes written since the last sync anywhere
    // (the disk may keep later pages and lose earlier ones): damage there is
    // a torn tail, and what follows it was never acknowledged. Damage the
    // journal had synced past (a synced item says so), or in a segment
    // closed (synced) before the last, is not.
    const std::size_t lost = f.size - at;
    const bool last = i + 1 == rec.files.size();
    const std::uint64_t synced = last ? std::max(f.synced, synced_after(f.data, f.size, at)) : 0;
    if (last && synced <= at) {
        log_->warn("journal.torn_tail file={} offset={} cut_bytes={} why=\"{}\"", f.path, at, lost, why);
        ++report.torn_tails;
        report.torn_bytes += lost;
    } else if (options_.repair) {
        log_->warn("journal.repaired file={} offset={} lost_bytes={} why=\"{}\"", f.path, at, lost, why);
        ++report.repaired;
        report.repaired_bytes += lost;
    } else {
        throw std::runtime_error("journal damaged: " + f.path + " at offset " + std::to_string(at) + ": " + why +
                                 (last ? "; the journal had synced past it (through offset " + std::to_string(synced) +
                                             "), so it is not a torn tail"
                                       : std::string("; it is not the last segment, so it is not a torn tail")) +
                                 ". Start with " + std::string(k_journal_repair_flag) + " to cut the file at offset " +
                                 std::to_string(at) + ", losing the " + std::to_string(lost) +
                                 " bytes after it: tasks accepted there are lost, tasks settled there may run again");
    }
}

void Journal::recover(const Visitor& visit, JournalRecovery& report) {
    const auto started = Clock::now();
    Recovery rec;
    for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
        const auto first = parse_segment_name(entry.path().filename().string());
        if (!first || !entry.is_regular_file()) continue;
        Recovery::File f;
        f.path = entry.path().string();
        f.first = *first;
        rec.files.push_back(std::move(f));
    }
    std::sort(rec.files.begin(), rec.files.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    if (!rec.files.empty()) rec.base = rec.files.front().first;
    Seq previous_end = 0;
    for (std::size_t i = 0; i < rec.files.size(); ++i) {
        read_segment(rec, i, previous_end, report);
        previous_end = std::max(previous_end, rec.files[i].end);
    }
    report.segments = rec.files.size();
    for (const auto& t : rec.tasks)
        if (t.live) visit(t.key, t.state);
    report.tasks = rec.live;
    rec.release();
    adopt_segments(rec);
    report.took = Clock::now() - started;
}

// The files read become closed segments: cut ones truncated, empty ones
// deleted, each live task marked in its segment.
void Journal::adopt_segments(Recovery& rec) {
    for (auto& f : rec.files) {
        next_seq_ = std::max(next_seq_, std::max(f.first, f.end));
        if (f.cut < k_header_bytes || f.end == f.first) {  // no item: nothing to lose
            if (::unlink(f.path.c_str()) != 0 && errno != ENOENT)
                throw std::runtime_error("journal: cannot delete " + f.path + ": " + errno_text(errno));
            continue;
        }
        if (f.cut < f.size) {
            const int fd = ::open(f.path.c_str(), O_RDWR | O_CLOEXEC);
            const bool ok = fd >= 0 && ::ftruncate(fd, static_cast<off_t>(f.cut)) == 0 && ::fsync(fd) == 0;
            const int err = errno;
            if (fd >= 0) ::close(fd);
            if (!ok) throw std::runtime_error("journal: cannot cut " + f.path + ": " + errno_text(err));
        }
        Segment s;
        s.first = f.first;
        s.end = f.end;
        s.bytes = f.cut;
        s.tasks = f.tasks;
        s.closed = true;
        s.live_bits.resize(static_cast<std::size_t>((f.end - f.first + 63) / 64));
        segments_.push_back(std::move(s));
    }
    for (const auto& t : rec.tasks) {
        if (!t.live) continue;
        Segment* s = segment_of(t.key);
        if (!s) continue;
        const Seq i = t.key - s->first;
        s->live_bits[i / 64] |= std::uint64_t{1} << (i % 64);
        ++s->live;
    }
    durable_seq_ = written_seq_ = asked_seq_ = next_seq_ - 1;
}

// Opening and closing --------------------------------------------------------------

Journal::Journal(std::string dir, JournalOptions options, Logger log)
    : dir_(std::move(dir)), options_(std::move(options)), log_(std::move(log)) {}

std::unique_ptr<Journal> Journal::open(const std::string& dir, JournalOptions options, const Visitor& visit,
                                       JournalRecovery* report, Logger log) {
    std::unique_ptr<Journal> j(new Journal(dir, std::move(options), std::move(log)));
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) throw std::runtime_error("journal: cannot create " + dir + ": " + ec.message());
    j->dir_fd_ = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (j->dir_fd_ < 0) throw std::runtime_error("journal: cannot open " + dir + ": " + errno_text(errno));
    const std::string lock = dir + "/LOCK";
    j->lock_fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (j->lock_fd_ < 0) throw std::runtime_error("journal: cannot open " + lock + ": " + errno_text(errno));
    if (::flock(j->lock_fd_, LOCK_EX | LOCK_NB) != 0)
        throw std::runtime_error("journal " + dir + " is in use by another process (it holds " + lock + ")");
    JournalRecovery local;
    JournalRecovery& r = report ? *report : local;
    r = {};
    j->recover(visit, r);
    const auto now = Clock::now();
    j->start_segment();
    if (!j->write_pending(now) || !j->make_durable(now))
        throw std::runtime_error("journal: cannot write " + j->segment_path(j->segments_.back().first) + ": " +
                                 j->error_);
    j->last_sync_ = Clock::time_point::min();  // the first batch commit syncs at once
    if (j->options_.fsync == FsyncPolicy::batch) j->syncer_ = std::make_unique<Syncer>(j->dir_fd_, j->options_.fault);
    j->delete_settled_segments();
    j->plan_relocation();
    j->log_->info("journal.recovered dir={} tasks={} segments={} bytes={} torn_bytes={} repaired_bytes={} took_ms={}",
                  dir, r.tasks, r.segments, r.bytes, r.torn_bytes, r.repaired_bytes,
                  std::chrono::duration_cast<Millis>(r.took).count());
    return j;
}

Journal::~Journal() {
    if (fd_ >= 0 && !unavailable_) flush(Clock::now());  // a clean stop loses nothing appended
    syncer_.reset();
    if (fd_ >= 0) ::close(fd_);
    if (dir_fd_ >= 0) ::close(dir_fd_);
    if (lock_fd_ >= 0) ::close(lock_fd_);
}

std::string Journal::segment_path(Seq first) const { return dir_ + "/" + segment_name(first); }

void Journal::start_segment() {
    Segment s;
    s.first = s.end = next_seq_;
    segments_.push_back(std::move(s));
    base_ = 0;
    written_ = 0;
    buf_.clear();
    char* p = buf_.grow(k_header_bytes);
    put_header(p, next_seq_);
    buf_.advance(p + k_header_bytes);
    fd_ = ::open(segment_path(next_seq_).c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) fail("open", errno, Clock::now());
    dir_sync_pending_ = true;
    synced_through_ = 0;
    synced_due_ = false;
}

// Appending ----------------------------------------------------------------------

char* Journal::begin_item(std::uint8_t kind, std::size_t n) {
    if (record_kind_ == kind && buf_.size() - record_at_ < k_frame_bytes + options_.record_bytes) return buf_.grow(n);
    close_record();
    char* p = buf_.grow(k_frame_bytes + 1 + n);
    record_at_ = buf_.size();
    p[k_frame_bytes] = static_cast<char>(kind);
    record_kind_ = kind;
    record_shares_ = false;
    return p + k_frame_bytes + 1;
}

void Journal::close_record() noexcept {
    if (record_kind_ == 0) return;
    char* frame = buf_.data() + record_at_;
    const std::size_t n = buf_.size() - record_at_ - k_frame_bytes;
    store_u32(frame, static_cast<std::uint32_t>(n));
    store_u32(frame + 4, crc_of(frame + k_frame_bytes, n));
    record_kind_ = 0;
}

char* Journal::put_task(char* p, const JournalTask& t) {
    char* const flags = p++;
    auto f = static_cast<std::uint8_t>((t.detached ? k_detached : 0) | (t.retry_on_error ? k_retry_on_error : 0));
    p = put_varint(p, t.max_attempts);
    p = put_varint(p, t.timeout_ms);
    p = put_str(p, t.id);
    // A name, reply_to or producer equal to the previous task's in this record is left out.
    const auto shared = [&](Shared& last, std::string_view s, std::uint8_t bit) {
        if (record_shares_ && last.size == s.size() && std::memcmp(buf_.data() + last.at, s.data(), s.size()) == 0)
            return;
        f = static_cast<std::uint8_t>(f | bit);
        p = put_varint(p, s.size());
        last = {static_cast<std::size_t>(p - buf_.data()), s.size()};
        std::memcpy(p, s.data(), s.size());
        p += s.size();
    };
    shared(last_name_, t.name, k_has_name);
    shared(last_reply_to_, t.reply_to, k_has_reply_to);
    shared(last_producer_, t.producer, k_has_producer);
    record_shares_ = true;
    p = put_str(p, t.args);
    p = put_str(p, t.secret);
    *flags = static_cast<char>(f);
    return p;
}

void Journal::mark_live(Seq seq) {
    Segment& s = segments_.back();
    const Seq i = seq - s.first;
    const auto word = static_cast<std::size_t>(i / 64);
    if (word >= s.live_bits.size()) s.live_bits.resize(word + 1);
    s.live_bits[word] |= std::uint64_t{1} << (i % 64);
    ++s.live;
    ++s.tasks;
}

bool Journal::unmark_live(Seq key, Seq by) {
    Segment* s = segment_of(key);
    if (!s) return false;
    const Seq i = key - s->first;
    const auto word = static_cast<std::size_t>(i / 64);
    const std::uint64_t bit = std::uint64_t{1} << (i % 64);
    if (word >= s->live_bits.size() || !(s->live_bits[word] & bit)) return false;
    s->live_bits[word] &= ~bit;
    if (--s->live == 0 && s->closed) s->emptied = by;
    return true;
}

bool Journal::is_live(Seq key) noexcept {
    Segment* s = segment_of(key);
    if (!s) return false;
    const Seq i = key - s->first;
    const auto word = static_cast<std::size_t>(i / 64);
    return word < s->live_bits.size() && (s->live_bits[word] >> (i % 64) & 1);
}

Journal::Segment* Journal::segment_of(Seq key) noexcept {
    if (segments_.empty() || key >= next_seq_) return nullptr;
    auto it = std::prev(segments_.end());
    if (key < it->first) {
        it = std::upper_bound(segments_.begin(), segments_.end(), key,
                              [](Seq k, const Segment& s) { return k < s.first; });
        if (it == segments_.begin()) return nullptr;
        --it;
    }
    if (it->closed && key >= it->end) return nullptr;
    return &*it;
}

std::optional<Journal::Seq> Journal::append_accepted(const JournalTask& t) {
    if (unavailable_) return std::nullopt;
    char* p = begin_item(k_accepted, task_bytes(t));
    buf_.advance(put_task(p, t));
    const Seq seq = next_seq_++;
    mark_live(seq);
    return seq;
}

Journal::Seq Journal::append_attempt(Seq key, std::uint32_t attempt, std::uint32_t deaths) {
    if (!is_live(key)) return 0;
    char* p = begin_item(k_attempt, 3 * k_varint_max);
    const Seq seq = next_seq_++;
    p = put_varint(p, seq - key);
    p = put_varint(p, attempt);
    buf_.advance(put_varint(p, deaths));
    return seq;
}

Journal::Seq Journal::append_outcome(Seq key, const JournalOutcome& o) {
    if (!is_live(key)) return 0;
    char* p = begin_item(k_outcome, 1 + 3 * k_varint_max + o.error.size());
    const Seq seq = next_seq_++;
    p = put_varint(p, seq - key);
    *p++ = static_cast<char>(o.status);
    p = put_varint(p, o.attempt);
    buf_.advance(put_str(p, o.error));
    return seq;
}

Journal::Seq Journal::append_settled(Seq key) {
    if (!unmark_live(key, next_seq_)) return 0;
    char* p = begin_item(k_settled, k_varint_max);
    const Seq seq = next_seq_++;
    buf_.advance(put_varint(p, seq - key));
    return seq;
}

void Journal::append_synced() {
    char* p = begin_item(k_synced, k_varint_max);
    buf_.advance(put_varint(p, synced_through_));
    synced_due_ = false;
}

Journal::Seq Journal::relocate(Seq key, const JournalState& state) {
    const Seq seq = next_seq_;
    if (!unmark_live(key, seq)) return key;
    const std::size_t error_bytes = state.outcome ? state.outcome->error.size() : 0;
    char* p = begin_item(k_relocated, task_bytes(state.task) + 6 * k_varint_max + error_bytes);
    p = put_varint(p, seq - key);
    p = put_task(p, state.task);
    p = put_varint(p, state.attempt);
    p = put_varint(p, state.deaths);
    *p++ = static_cast<char>(state.outcome ? 1 : 0);
    if (state.outcome) {
        *p++ = static_cast<char>(state.outcome->status);
        p = put_varint(p, state.outcome->attempt);
        p = put_str(p, state.outcome->error);
    }
    buf_.advance(p);
    ++next_seq_;
    mark_live(seq);
    ++totals_.relocated;
    return seq;
}

// Committing ----------------------------------------------------------------------

Journal::Seq Journal::commit(Clock::time_point now) {
    ++totals_.commits;
    close_record();
    collect_sync(now);
    if (unavailable_) {
        if (now >= next_retry_) retry(now);
        return durable_seq_;
    }
    if (synced_due_ && buf_.size() > written_) {  // only with other records: an idle journal writes nothing
        append_synced();
        close_record();
    }
    if (!write_pending(now)) return durable_seq_;
    if (base_ + written_ >= options_.segment_bytes) {
        if (!make_durable(now)) return durable_seq_;
        roll(now);
    } else if (written_seq_ > asked_seq_ || dir_sync_pending_) {
        if (options_.fsync != FsyncPolicy::batch) {
            make_durable(now);
        } else if (!sync_in_flight_ &&
                   (last_sync_ == Clock::time_point::min() || now - last_sync_ >= options_.batch_interval)) {
            ask_sync(now);
        }
    }
    delete_settled_segments();
    plan_relocation();
    return durable_seq_;
}

Journal::Seq Journal::flush(Clock::time_point now) {
    close_record();
    drain_sync(now);
    if (unavailable_ || !write_pending(now) || !make_durable(now)) return durable_seq_;
    if (synced_due_) {  // so that damage in what a clean stop synced is never taken for a torn tail
        append_synced();
        close_record();
        if (write_pending(now)) make_durable(now);
    }
    return durable_seq_;
}

Clock::time_point Journal::next_commit() const noexcept {
    if (unavailable_) return next_retry_;
    if (sync_in_flight_) return Clock::time_point::max();
    if (written_seq_ > asked_seq_ || dir_sync_pending_) return last_sync_ + options_.batch_interval;
    return Clock::time_point::max();
}

int Journal::wake_fd() const noexcept { return syncer_ ? syncer_->wake_fd() : -1; }

void Journal::ask_sync(Clock::time_point now) {
    syncer_->ask(Syncer::Ask{fd_, dir_sync_pending_, written_seq_, base_ + written_});
    sync_in_flight_ = true;
    asked_seq_ = written_seq_;
    dir_sync_pending_ = false;
    last_sync_ = now;
}

void Journal::collect_sync(Clock::time_point now) {
    if (!sync_in_flight_) return;
    const auto done = syncer_->take();
    if (!done) return;
    sync_in_flight_ = false;
    ++totals_.syncs;
    if (done->error) {
        fail("fdatasync", done->error, now);
        return;
    }
    durable_seq_ = std::max(durable_seq_, done->ask.seq);
    synced_through_ = done->ask.offset;
    synced_due_ = true;
    if (done->ask.offset > base_) {  // no record is open here: nothing in buf_ points at those bytes
        const auto n = static_cast<std::size_t>(done->ask.offset - base_);
        buf_.erase_front(n);
        written_ = written_ > n ? written_ - n : 0;
        base_ = done->ask.offset;
    }
}

void Journal::drain_sync(Clock::time_point now) {
    if (!sync_in_flight_) return;
    syncer_->wait();
    collect_sync(now);
}

bool Journal::write_pending(Clock::time_point now) {
    if (written_ == buf_.size()) {
        written_seq_ = next_seq_ - 1;
        return true;
    }
    std::size_t want = buf_.size() - written_;
    int err = 0;
    if (options_.fault) {
        std::size_t allowed = want;
        err = options_.fault(JournalIo::write, allowed);
        if (err) want = std::min(want, allowed);
    }
    ++totals_.writes;
    while (want > 0) {
        const ssize_t n = ::pwrite(fd_, buf_.data() + written_, want, static_cast<off_t>(base_ + written_));
        if (n <= 0) {
            if (n < 0 && errno == EINTR) continue;
            err = n < 0 ? errno : EIO;
            break;
        }
        written_ += static_cast<std::size_t>(n);
        want -= static_cast<std::size_t>(n);
        totals_.bytes_written += static_cast<std::uint64_t>(n);
    }
    if (err) {
        fail("write", err, now);
        return false;
    }
    written_seq_ = next_seq_ - 1;
    return true;
}

bool Journal::make_durable(Clock::time_point now) {
    drain_sync(now);
    if (unavailable_) return false;
    if (options_.fsync != FsyncPolicy::off) {
        int err = 0;
        if (options_.fault) {
            std::size_t none = 0;
            err = options_.fault(JournalIo::sync, none);
        }
        if (!err && ::fdatasync(fd_) != 0) err = errno;
        if (!err && dir_sync_pending_ && ::fsync(dir_fd_) != 0) err = errno;
        ++totals_.syncs;
        if (err) {
            fail("fdatasync", err, now);
            return false;
        }
    }
    dir_sync_pending_ = false;
    last_sync_ = now;
    durable_seq_ = asked_seq_ = written_seq_;
    base_ += written_;
    buf_.clear();
    written_ = 0;
    if (options_.fsync != FsyncPolicy::off) {
        synced_through_ = base_;
        synced_due_ = true;
    }
    return true;
}

void Journal::fail(const char* op, int err, Clock::time_point now) {
    error_ = std::string(op) + ": " + errno_text(err);
    if (!unavailable_)
        log_->error("journal.unavailable file={} error=\"{}\" pending_bytes={}", segment_path(segments_.back().first),
                    error_, buf_.size());
    unavailable_ = true;
    ++totals_.failures;
    // What was written since the last durable offset may be half there (or
    // dropped from the page cache by a failed fdatasync): it is all written
    // again, after a cut back to that offset.
    written_ = 0;
    written_seq_ = asked_seq_ = durable_seq_;
    truncate_pending_ = true;
    dir_sync_pending_ = true;
    next_retry_ = now + options_.retry_interval;
}

bool Journal::retry(Clock::time_point now) {
    close_record();
    drain_sync(now);
    if (!unavailable_) return true;
    next_retry_ = now + options_.retry_interval;
    if (fd_ < 0) fd_ = ::open(segment_path(segments_.back().first).c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) {
        error_ = "open: " + errno_text(errno);
        return false;
    }
    if (truncate_pending_) {
        if (::ftruncate(fd_, static_cast<off_t>(base_)) != 0) {
            error_ = "ftruncate: " + errno_text(errno);
            return false;
        }
        truncate_pending_ = false;
    }
    unavailable_ = false;  // fail() sets it again
    if (!write_pending(now) || !make_durable(now)) return false;
    error_.clear();
    ++totals_.recoveries;
    log_->info("journal.available file={} durable_seq={}", segment_path(segments_.back().first), durable_seq_);
    return true;
}

// Rolling, deleting, compacting --------------------------------------------------------

void Journal::roll(Clock::time_point now) {
    Segment& old = segments_.back();
    old.closed = true;
    old.end = next_seq_;
    old.bytes = base_;
    if (old.live == 0) old.emptied = next_seq_ - 1;
    ::close(fd_);
    fd_ = -1;
    ++totals_.rolled;
    start_segment();
    if (!unavailable_) write_pending(now);
}

void Journal::delete_settled_segments() {
    bool deleted = false;
    while (segments_.size() > 1) {
        const Segment& s = segments_.front();
        if (!s.closed || s.live != 0 || s.emptied > durable_seq_) break;
        const std::string path = segment_path(s.first);
        if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
            log_->warn("journal.delete_failed file={} error=\"{}\"", path, errno_text(errno));
            break;
        }
        segments_.pop_front();
        ++totals_.deleted;
        deleted = true;
    }
    if (deleted && options_.fsync != FsyncPolicy::off) dir_sync_pending_ = true;
}

void Journal::plan_relocation() noexcept {
    std::uint64_t live = 0, tasks = 0;
    Seq below = 0;
    for (std::size_t i = 0; i + 1 < segments_.size(); ++i) {
        live += segments_[i].live;
        tasks += segments_[i].tasks;
        if (live > 0 && live * 100 <= tasks * options_.compact_percent) below = segments_[i].end;
    }
    relocate_below_ = below;
}

std::uint64_t Journal::bytes_on_disk() const noexcept {
    std::uint64_t n = base_ + written_;
    for (std::size_t i = 0; i + 1 < segments_.size(); ++i) n += segments_[i].bytes;
    return n;
}

std::uint64_t Journal::live_tasks() const noexcept {
    std::uint64_t n = 0;
    for (const auto& s : segments_) n += s.live;
    return n;
}

}  // namespace drover
