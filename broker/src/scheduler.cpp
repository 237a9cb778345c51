// The broker's bookkeeping: tasks, queues, workers and credits.
#include "scheduler.hpp"

#include <algorithm>
#include <cstring>

#include "internal/proof.hpp"
#include "internal/stall.hpp"

namespace drover {

namespace {

// A dispatch spreads tasks over idle workers only while a worker's credits
// and held tasks are at most this many a slot: a prefetch of 3 a slot or
// less, tasks of about 0.7 ms or more (docs/design.md).
constexpr std::size_t k_spread_max_credits_per_slot = 4;

// A name whose tasks run this long or longer, or that no worker has timed
// yet, is dispatched only on start credits (free slots): waiting behind one
// such task costs more than a DISPATCH to an idle worker.
constexpr std::uint64_t k_long_task_ns = 1'000'000;
// Shorter tasks fill a worker's plain credits while the expected run time
// of those it was sent on them, not yet credited back, stays under this a
// slot: a worker sizes its prefetch to 2 ms of its mean task, and the
// times reported by name are rougher (a worker reports a change of 4x,
// cold first tasks included), so a tighter bound would cut short tasks'
// batches below what the worker granted.
constexpr std::uint64_t k_prefetched_work_ns = 16'000'000;

// Look-ups of a batch prefetch the index bucket of the id this far ahead, and
// a dispatch the entry of the task this far back in its queue.
constexpr std::size_t k_prefetch_ahead = 8;

// STATUS lists at most this many queues (the busiest) and workers; it says
// how many it left out.
constexpr std::size_t k_status_queues = 1000;
constexpr std::size_t k_status_workers = 10'000;

std::uint64_t pack_ref(std::uint32_t slot, std::uint32_t gen) { return std::uint64_t{slot} << 32 | gen; }

// A free index of `items` (from `free`), or a new one at its end.
template <class Container>
std::uint32_t take_slot(Container& items, std::vector<std::uint32_t>& free) {
    if (!free.empty()) {
        const auto i = free.back();
        free.pop_back();
        return i;
    }
    items.emplace_back();
    return static_cast<std::uint32_t>(items.size() - 1);
}

}  // namespace

// Interned strings ----------------------------------------------------------

std::uint32_t Scheduler::Interned::acquire(std::string_view s) {
    if (auto it = index_.find(s); it != index_.end()) {
        ++items_[it->second].second;
        return it->second;
    }
    std::uint32_t i;
    if (!free_.empty()) {
        i = free_.back();
        free_.pop_back();
        items_[i] = {std::string(s), 1};
    } else {
        i = static_cast<std::uint32_t>(items_.size());
        items_.emplace_back(std::string(s), 1);
    }
    index_.emplace(items_[i].first, i);  // the view points into items_[i], which stays put until released
    return i;
}

void Scheduler::Interned::release(std::uint32_t i) {
    if (--items_[i].second > 0) return;
    index_.erase(items_[i].first);
    items_[i].first.clear();
    items_[i].first.shrink_to_fit();
    free_.push_back(i);
}

// Slots ---------------------------------------------------------------------

Scheduler::Entry* Scheduler::find(std::string_view id) { return find(id, index_.hash(id)); }

Scheduler::Entry* Scheduler::find(std::string_view id, std::uint32_t id_hash) {
    const auto slot = index_.find(id, id_hash);
    return slot == index_.npos ? nullptr : &slots_[slot];
}

template <class Ids, class IdOfItem>
const std::vector<std::uint32_t>& Scheduler::hash_batch(const Ids& items, IdOfItem id_of) {
    batch_hashes_.clear();
    for (const auto& item : items) batch_hashes_.push_back(index_.hash(id_of(item)));
    return batch_hashes_;
}

Scheduler::Entry& Scheduler::new_entry(proto::Task&& t, std::string_view reply_to, SubmitContext& ctx,
                                       std::uint32_t id_hash) {
    const std::uint32_t slot = take_slot(slots_, free_slots_);
    Entry& e = slots_[slot];
    e.slot = slot;
    e.id = std::move(t.id);
    e.args = std::move(t.args);
    if (ctx.name && *ctx.name == t.name) {
        ++name_refs_[ctx.name_id];  // the batch's earlier task holds it: not idle
    } else {
        ctx.name_id = acquire_name(t.name);
        ctx.name = &names_[ctx.name_id];
    }
    e.name = ctx.name_id;
    if (ctx.reply_to && *ctx.reply_to == reply_to) {
        strings_.acquire_again(ctx.reply_to_id);
    } else {
        ctx.reply_to_id = strings_.acquire(reply_to);
        ctx.reply_to = &strings_[ctx.reply_to_id];
    }
    e.reply_to = ctx.reply_to_id;
    strings_.acquire_again(ctx.producer);
    e.producer = ctx.producer;
    e.worker = k_none;
    e.attempt = 0;
    e.max_attempts = static_cast<std::uint16_t>(std::clamp(t.max_attempts, 1u, 0xffffu));
    e.timeout_ms = t.timeout_ms;
    e.deaths = 0;
    e.report_sends = 0;
    e.dispatch_seq = 0;
    e.state = State::ended;  // the caller queues or ends it
    e.detached = t.detached;
    e.retry_on_error = t.retry_on_error;
    e.reported.reset();
    std::memcpy(e.secret, t.secret.view().data(), sizeof e.secret);  // submit() made it full
    index_.insert(slot, id_hash);
    ++live_;
    return e;
}

void Scheduler::free_entry(Entry& e) { free_entry(e, index_.hash(e.id)); }

void Scheduler::free_entry(Entry& e, std::uint32_t id_hash) {
    if (e.state == State::queued) unmark_queued(e);
    if (e.state == State::held) release_held(e);
    leave_retry(e);
    index_.erase(e.id, id_hash);
    strings_.release(e.reply_to);
    strings_.release(e.producer);
    release_name(e.name);
    e.state = State::free;
    ++e.gen;
    e.id.clear();
    e.id.shrink_to_fit();
    e.args.clear();
    e.args.shrink_to_fit();
    e.reported.reset();
    free_slots_.push_back(e.slot);
    --live_;
}

bool Scheduler::genuine_result(const std::string& identity, const proto::Outcome& o) {
    const auto wit = workers_.find(identity);
    const Entry* e = find(o.id);
    if (wit == workers_.end() || !e || e->state == State::free) return false;
    return o.attempt >= 1 && o.attempt <= e->attempt && genuine(secret_of(*e), o.attempt, false, o.token);
}

std::optional<Scheduler::Route> Scheduler::route_of(std::string_view id) {
    const Entry* e = find(id);
    if (!e) return std::nullopt;
    return Route{strings_[e->producer], strings_[e->reply_to], e->detached};
}

bool Scheduler::compact() {
    if (live_ != 0) return false;
    if (slots_.empty()) {  // workers may have come and gone with their names
        const bool freed = !free_names_.empty();
        compact_names();
        return freed;
    }
    // Every Ref (queues, held lists, timers) is stale now, so all of them go
    // and slot numbers and generations may start again.
    std::deque<Entry>().swap(slots_);
    std::vector<std::uint32_t>().swap(free_slots_);
    index_.clear();
    for (auto& q : queues_) q.clear();
    for (auto& w : worker_slots_) std::deque<HeldRef>().swap(w.held);
    DueQueue().swap(retries_);
    DueQueue().swap(reports_);
    std::vector<Ref>().swap(reported_now_);
    compact_names();
    return true;
}

// Task names --------------------------------------------------------------------

std::uint32_t Scheduler::acquire_name(const std::string& name) {
    if (auto it = name_ids_.find(name); it != name_ids_.end()) {
        const auto id = it->second;
        if (name_refs_[id]++ == 0) unlink_idle(id);  // a name without references is idle
        return id;
    }
    std::uint32_t id;
    if (!free_names_.empty()) {
        id = free_names_.back();
        free_names_.pop_back();
        names_[id] = name;
    } else {
        id = static_cast<std::uint32_t>(names_.size());
        names_.push_back(name);
        name_refs_.push_back(0);
        known_names_.push_back(0);
        queues_.emplace_back();
        queued_by_name_.push_back(0);
        run_ns_.push_back(0);
        idle_links_.emplace_back();
    }
    name_ids_.emplace(name, id);
    name_refs_[id] = 1;
    return id;
}

void Scheduler::release_name(std::uint32_t id) {
    if (--name_refs_[id] > 0) return;
    if (!known_names_[id]) return free_name(id);  // nothing to remember about it
    IdleLink& l = idle_links_[id];
    l = IdleLink{idle_tail_, k_none, true};
    (idle_tail_ == k_none ? idle_head_ : idle_links_[idle_tail_].next) = id;
    idle_tail_ = id;
    if (++idle_names_ > limits_.remembered_names) {
        const auto oldest = idle_head_;
        unlink_idle(oldest);
        free_name(oldest);
    }
}

void Scheduler::unlink_idle(std::uint32_t id) {
    IdleLink& l = idle_links_[id];
    if (!l.idle) return;
    (l.prev == k_none ? idle_head_ : idle_links_[l.prev].next) = l.next;
    (l.next == k_none ? idle_tail_ : idle_links_[l.next].prev) = l.prev;
    l = IdleLink{};
    --idle_names_;
}

void Scheduler::free_name(std::uint32_t id) {
    name_ids_.erase(names_[id]);
    std::string().swap(names_[id]);
    known_names_[id] = 0;
    queues_[id].clear();  // only refs of tasks that are gone
    queued_by_name_[id] = 0;
    run_ns_[id] = 0;
    free_names_.push_back(id);
}

void Scheduler::compact_names() {
    if (free_names_.empty()) return;
    std::vector<char> freed(names_.size(), 0);
    for (const auto id : free_names_) freed[id] = 1;
    std::vector<std::uint32_t> renamed(names_.size(), k_none);
    std::deque<std::string> names;
    std::vector<std::uint32_t> refs;
    std::vector<char> known;
    std::vector<std::uint64_t> run_ns;
    for (std::uint32_t id = 0; id < names_.size(); ++id) {
        if (freed[id]) continue;
        renamed[id] = static_cast<std::uint32_t>(names.size());
        names.push_back(std::move(names_[id]));
        refs.push_back(name_refs_[id]);
        known.push_back(known_names_[id]);
        run_ns.push_back(run_ns_[id]);
    }
    std::vector<IdleLink> links(names.size());
    std::uint32_t head = k_none, tail = k_none;
    for (auto id = idle_head_; id != k_none; id = idle_links_[id].next) {
        const auto n = renamed[id];
        links[n] = IdleLink{tail, k_none, true};
        (tail == k_none ? head : links[tail].next) = n;
        tail = n;
    }
    for (const auto& [identity, wslot] : workers_)
        for (auto& name : worker_slots_[wslot].names) name = renamed[name];
    names_ = std::move(names);
    name_refs_ = std::move(refs);
    known_names_ = std::move(known);
    run_ns_ = std::move(run_ns);
    idle_links_ = std::move(links);
    idle_head_ = head;
    idle_tail_ = tail;
    std::vector<RingQueue<Ref>>(names_.size()).swap(queues_);  // no task is held: every queue is empty
    std::vector<std::size_t>(names_.size(), 0).swap(queued_by_name_);
    std::vector<std::uint32_t>().swap(free_names_);
    decltype(name_ids_) ids;
    ids.reserve(names_.size());
    for (std::uint32_t id = 0; id < names_.size(); ++id) ids.emplace(names_[id], id);
    name_ids_.swap(ids);
}

Scheduler::WorkerState* Scheduler::worker(const std::string& identity) {
    auto it = workers_.find(identity);
    return it == workers_.end() ? nullptr : &worker_slots_[it->second];
}

bool Scheduler::holds(std::uint32_t wslot, const HeldRef& h) const {
    const Entry& e = slots_[h.slot];
    return e.gen == h.gen && e.state == State::held && e.worker == wslot && e.dispatch_seq == h.seq;
}

void Scheduler::release_held(Entry& e) {
    WorkerState& w = worker_slots_[e.worker];
    --w.held_count;
    --held_total_;
    e.worker = k_none;
    e.state = State::ended;
    const auto wslot = static_cast<std::uint32_t>(&w - worker_slots_.data());
    while (!w.held.empty() && !holds(wslot, w.held.front())) w.held.pop_front();
    // Behind a task that stays (a long one), the list would keep every
    // settled task dispatched after it.
    if (w.held.size() >= 64 && w.held.size() > 2 * w.held_count) {
        std::deque<HeldRef> kept;
        for (const auto& h : w.held)
            if (holds(wslot, h)) kept.push_back(h);
        w.held.swap(kept);
    }
}

void Scheduler::mark_queued(Entry& e) {
    e.state = State::queued;
    ++queued_;
    ++queued_by_name_[e.name];
}

void Scheduler::unmark_queued(Entry& e) {
    e.state = State::ended;
    --queued_;
    --queued_by_name_[e.name];
}

void Scheduler::enqueue_front(Entry& e) {
    if (e.state == State::held) release_held(e);
    mark_queued(e);
    push_queued(e, true);
}

void Scheduler::push_queued(const Entry& e, bool front) {
    auto& q = queues_[e.name];
    // e is counted in queued_by_name_ already; a Ref is stale once its task is not queued.
    if (q.size() >= 64 && q.size() > 2 * queued_by_name_[e.name])
        q.remove_if([this](const Ref& r) {
            const Entry* x = live(r);
            return !x || x->state != State::queued;
        });
    if (front) q.push_front(Ref{e.slot, e.gen});
    else q.push_back(Ref{e.slot, e.gen});
}

void Scheduler::leave_retry(Entry& e) {
    if (e.state != State::waiting_retry) return;
    --retrying_;
    e.state = State::ended;
}

// Submitting ------------------------------------------------------------------

Scheduler::Submitted Scheduler::submit(const std::string& producer, std::vector<proto::Task>&& tasks,
                                       Clock::time_point now, std::string_view batch_reply_to) {
    Submitted out;
    // A task whose outcome goes elsewhere (detached) is answered ACCEPTED.
    const auto accept = [&out](bool detached, std::string_view id) {
        ++out.accepted;
        if (detached) out.acknowledged.emplace_back(id);
    };
    const auto reject = [&](std::string reason, std::string& id) {
        out.rejected[std::move(reason)].push_back(std::move(id));
        ++totals_.rejected;
    };
    SubmitContext ctx;
    ctx.producer = strings_.acquire(producer);  // held for the batch, released at the end
    const auto& hashes = hash_batch(tasks, [](const proto::Task& t) -> std::string_view { return t.id; });
    for (std::size_t i = 0; i < tasks.size(); ++i) {
        if (i + k_prefetch_ahead < tasks.size()) index_.prefetch(hashes[i + k_prefetch_ahead]);
        auto& t = tasks[i];
        if (!t.problem.empty()) {  // malformed: rejected alone, naming the field
            reject("invalid: " + t.problem, t.id);
            continue;
        }
        t.secret.make_full();  // decode_submit checked it; a caller in-process may not
        if (Entry* known = find(t.id, hashes[i])) {
            // The same secret is the same task again (a producer resends
            // after a broker restart); another is another producer's task
            // under the same id, which must neither join nor replace it.
            if (secret_of(*known) != t.secret.view()) {
                reject("duplicate_id", t.id);
                continue;
            }
            // It may come over a new connection.
            if (strings_[known->producer] != producer) {
                strings_.release(known->producer);
                known->producer = strings_.acquire(producer);
            }
            accept(known->detached, t.id);
            // It was missed. Once a window: a client that submits the id
            // again and again must not fill the sink's queue with copies.
            if (Report* r = known->reported.get(); r && now - r->repeated_at >= limits_.heartbeat * limits_.liveness) {
                r->repeated_at = now;
                out.finals.push_back(r->final);
            }
            continue;
        }
        const std::string_view reply_to = t.reply_to.empty() ? batch_reply_to : std::string_view(t.reply_to);
        if (t.name.empty() || reply_to.empty()) {
            reject("invalid: a task needs a name and a reply_to", t.id);
            continue;
        }
        if (ctx.checked_name != t.name) {  // looked up once per run of one name (never empty here)
            const auto known_name = name_ids_.find(t.name);
            ctx.name_known = known_name != name_ids_.end() && known_names_[known_name->second];
            ctx.checked_name = t.name;
        }
        if (!workers_.empty() && !ctx.name_known) {
            if (live_ >= limits_.max_held) {  // its outcome would wait here for its SETTLE
                reject("queue_full", t.id);
                continue;
            }
            Entry& e = new_entry(std::move(t), reply_to, ctx, hashes[i]);
            out.finals.push_back(
                end_task(e, proto::Status::error, "unknown task '" + names_[e.name] + "': no worker runs it"));
            accept(e.detached, e.id);
            ++totals_.accepted;
            continue;
        }
        if (full() || live_ >= limits_.max_held) {
            reject("queue_full", t.id);
            continue;
        }
        Entry& e = new_entry(std::move(t), reply_to, ctx, hashes[i]);
        mark_queued(e);
        push_queued(e, false);
        ++totals_.accepted;
        accept(e.detached, e.id);
    }
    strings_.release(ctx.producer);
    return out;
}

// Workers ---------------------------------------------------------------------

std::vector<FinalOutcome> Scheduler::hello(const std::string& identity, proto::Hello h, Clock::time_point now,
                                           bool same_process_keeps_tasks) {
    std::vector<FinalOutcome> finals;
    if (workers_.count(identity)) finals = remove_worker(identity, false);
    // The same worker over a new connection (it reconnected): its tasks are
    // still running there, so they go back without counting a death.
    std::vector<std::string> same;
    for (const auto& [other, other_slot] : workers_)
        if (worker_slots_[other_slot].hello.worker == h.worker) same.push_back(other);
    const std::uint32_t wslot = take_slot(worker_slots_, free_worker_slots_);
    worker_slots_[wslot] = WorkerState{};
    for (const auto& other : same) {
        const std::uint32_t oslot = workers_.at(other);
        const auto& earlier = worker_slots_[oslot].hello;
        if (same_process_keeps_tasks && earlier.host == h.host && earlier.pid == h.pid &&
            earlier.restarts == h.restarts) {
            // Handed over in dispatch order, so the new registration blames
            // the same tasks should the worker die after all. It received a
            // prefix of them (a DISPATCH on its way when it dropped the old
            // connection is lost) and says how many it still holds; the rest
            // go back to the queue below. A finished task not yet settled
            // takes the place of one still running there, which then runs
            // twice; a lost one never stays.
            std::size_t keep = h.held;
            for (const auto& held : worker_slots_[oslot].held) {
                if (keep == 0) break;
                if (!holds(oslot, held)) continue;
                --keep;
                Entry& e = slots_[held.slot];
                e.worker = wslot;
                worker_slots_[wslot].held.push_back(held);
                ++worker_slots_[wslot].held_count;
                --worker_slots_[oslot].held_count;
            }
        }
        auto more = remove_worker(other, false);
        finals.insert(finals.end(), more.begin(), more.end());
    }
    WorkerState& w = worker_slots_[wslot];
    w.identity = identity;
    w.hello = std::move(h);
    w.last_seen = now;
    for (const auto& name : w.hello.tasks) {
        const auto id = acquire_name(name);
        known_names_[id] = 1;
        w.names.push_back(id);
    }
    workers_.emplace(identity, wslot);
    return finals;
}

bool Scheduler::ready(const std::string& identity, const proto::Ready& r, Clock::time_point now) {
    WorkerState* w = worker(identity);
    if (!w) return false;
    w->credits += r.credits;
    w->starts += std::min(r.starts, r.credits);
    w->last_seen = now;
    // Credits come back as tasks finish: those tasks leave the queued work.
    if (w->prefetched > 0) {
        const std::uint32_t done = std::min(r.credits, w->prefetched);
        w->prefetched_ns -= w->prefetched_ns / w->prefetched * done;
        w->prefetched -= done;
        if (w->prefetched == 0) w->prefetched_ns = 0;
    }
    for (const auto& [name, ns] : r.run_ns) {
        const auto it = name_ids_.find(name);
        if (it == name_ids_.end() || std::find(w->names.begin(), w->names.end(), it->second) == w->names.end())
            continue;  // only names this worker announced
        // The latest report: a worker reports a change of 4x, and a name
        // taken for long (by a RETURN's report) must not stay so for long.
        run_ns_[it->second] = std::max<std::uint64_t>(1, ns);
    }
    return true;
}

bool Scheduler::seen(const std::string& identity, Clock::time_point now) {
    WorkerState* w = worker(identity);
    if (!w) return false;
    w->last_seen = now;
    return true;
}

std::vector<FinalOutcome> Scheduler::remove_worker(const std::string& identity, bool died,
                                                   const std::vector<std::string>& finished) {
    auto it = workers_.find(identity);
    if (it == workers_.end()) return {};
    return remove_worker_slot(it->second, died, finished);
}

std::vector<FinalOutcome> Scheduler::remove_worker_slot(std::uint32_t wslot, bool died,
                                                        const std::vector<std::string>& finished) {
    std::vector<FinalOutcome> finals;
    WorkerState& w = worker_slots_[wslot];
    // The worker sent their `timeout` just before it left, and it may not
    // arrive (its process exits when its linger runs out, its sink paused
    // meanwhile): the broker sends the same outcome until the sink settles.
    for (const auto& id : finished) {
        Entry* e = find(id);
        if (e && e->state == State::held && e->worker == wslot)
            finals.push_back(
                end_task(*e, proto::Status::timeout, "timed out after " + std::to_string(e->timeout_ms) + " ms"));
    }
    std::vector<Entry*> held;  // in dispatch order; collected first, as requeueing trims w.held
    for (const auto& h : w.held)
        if (holds(wslot, h)) held.push_back(&slots_[h.slot]);
    std::size_t may_run = std::max<std::uint32_t>(1, w.hello.slots);
    std::vector<Entry*> requeue;
    for (Entry* ep : held) {
        Entry& e = *ep;
        const bool blamed = died && may_run > 0;
        if (blamed) {
            --may_run;
            ++e.deaths;
        }
        if (blamed && e.deaths >= e.max_attempts) {
            finals.push_back(
                end_task(e, proto::Status::lost,
                         "worker died " + std::to_string(e.deaths) + (e.deaths == 1 ? " time" : " times")));
            ++totals_.lost;
        } else {
            requeue.push_back(&e);
        }
    }
    // Back to front, so the queue keeps the dispatch order.
    for (auto r = requeue.rbegin(); r != requeue.rend(); ++r) {
        enqueue_front(**r);
        ++totals_.redispatched;
    }
    workers_.erase(w.identity);
    for (const auto name : w.names) release_name(name);  // after the requeue: its tasks hold theirs
    w = WorkerState{};
    free_worker_slots_.push_back(wslot);
    return finals;
}

std::vector<FinalOutcome> Scheduler::remove_worker_by_id(const std::string& worker_id) {
    for (const auto& [identity, wslot] : workers_)
        if (worker_slots_[wslot].hello.worker == worker_id) return remove_worker_slot(wslot, true, {});
    return {};
}

std::vector<std::string> Scheduler::expired(Clock::time_point now) const {
    std::vector<std::string> out;
    const auto window = limits_.heartbeat * limits_.liveness;
    for (const auto& [identity, wslot] : workers_)
        if (now - worker_slots_[wslot].last_seen > window) out.push_back(identity);
    return out;
}

void Scheduler::stalled(Clock::duration stall, Clock::time_point now) {
    for (const auto& [identity, wslot] : workers_) {
        WorkerState& w = worker_slots_[wslot];
        w.last_seen = StallMeter::shifted(w.last_seen, stall, now);
        if (w.idle_upto != 0) w.idle_since = StallMeter::shifted(w.idle_since, stall, now);
    }
    // A sink's SETTLE may be waiting unread: its outcome is not due again yet.
    std::vector<Due> due;
    due.reserve(reports_.size());
    for (; !reports_.empty(); reports_.pop()) due.emplace_back(reports_.top().first + stall, reports_.top().second);
    reports_ = DueQueue(std::greater<>(), std::move(due));
}

// Dispatching -----------------------------------------------------------------

std::vector<Scheduler::Batch> Scheduler::dispatch() {
    std::vector<Batch> batches;
    if (queued_ == 0) return batches;
    std::vector<std::uint32_t> ready;
    for (const auto& [identity, wslot] : workers_)
        if (worker_slots_[wslot].credits > 0) ready.push_back(wslot);
    if (ready.empty()) return batches;
    // Least recently served first.
    std::sort(ready.begin(), ready.end(), [&](std::uint32_t a, std::uint32_t b) {
        return worker_slots_[a].served_seq < worker_slots_[b].served_seq;
    });
    std::vector<std::vector<proto::TaskRef>> taken(ready.size());
    // Few credits a slot: the worker's measured tasks are long (or unknown yet).
    const auto runs_long_tasks = [](const WorkerState& w) {
        return w.held_count + w.credits <= k_spread_max_credits_per_slot * w.hello.slots;
    };
    const auto spreads_to = [&](const WorkerState& w) { return w.held_count < w.hello.slots && runs_long_tasks(w); };
    // Gives ready[i] the next queued task it can run; false if there is none.
    // In the spread, short tasks go only to workers spreads_to() allows.
    const auto take_one = [&](std::size_t i, bool spread) {
        WorkerState& w = worker_slots_[ready[i]];
        const std::uint64_t slots = std::max<std::uint32_t>(1, w.hello.slots);
        for (const auto name : w.names) {
            auto& q = queues_[name];
            if (q.empty()) continue;
            const std::uint64_t run_ns = run_ns_[name];
            const bool long_task = run_ns == 0 || run_ns >= k_long_task_ns;
            bool on_start;
            if (long_task) {
                if (w.starts > 0) on_start = true;
                else if (w.held_count < slots) on_start = false;  // a slot is free there, whatever its credits
                else continue;
            } else {
                if (spread && !spreads_to(w)) continue;
                on_start = w.credits == w.starts;  // plain credits first
                if (!on_start && w.prefetched_ns + run_ns > k_prefetched_work_ns * slots) {
                    if (w.starts == 0) continue;
                    on_start = true;
                }
            }
            while (!q.empty()) {
                if (q.size() > k_prefetch_ahead) {  // its entry was last touched when queued: not in cache
                    const auto* ahead = reinterpret_cast<const char*>(&slots_[q[k_prefetch_ahead].slot]);
                    __builtin_prefetch(ahead);
                    __builtin_prefetch(ahead + 64);
                }
                const Ref r = q.front();
                q.pop_front();
                Entry* e = live(r);
                if (!e || e->state != State::queued) continue;  // settled or cancelled meanwhile
                unmark_queued(*e);
                e->state = State::held;
                e->worker = ready[i];
                e->dispatch_seq = ++dispatch_seq_;
                ++e->attempt;
                w.held.push_back(HeldRef{r.slot, r.gen, e->dispatch_seq});
                ++w.held_count;
                ++held_total_;
                --w.credits;
                e->on_start = on_start;
                if (on_start) {
                    --w.starts;
                } else if (!long_task) {
                    ++w.prefetched;
                    w.prefetched_ns += run_ns;
                }
                taken[i].push_back(proto::TaskRef{e->id,
                                                  names_[e->name],
                                                  e->args,
                                                  strings_[e->reply_to],
                                                  e->attempt,
                                                  e->max_attempts,
                                                  e->timeout_ms,
                                                  e->detached,
                                                  e->retry_on_error,
                                                  {},
                                                  attempt_token(secret_of(*e), e->attempt),
                                                  on_start});
                ++totals_.dispatched;
                return true;
            }
        }
        return false;
    };
    // 1. Spread: a task a round to each worker with a free slot, so that idle
    //    slots start work before any worker queues a task (a short queue of
    //    long tasks runs on as many workers as it can). Only for workers
    //    whose tasks are long: one that grants many credits a slot (its
    //    prefetch covers about 2 ms of its measured tasks) runs short ones,
    //    where a DISPATCH of one task costs more than the wait it saves; with
    //    200 such workers, spreading cut every batch to a few tasks, and the
    //    cost of waking 200 processes with cold caches dominated (W5).
    for (bool progress = true; progress && queued_ > 0;) {
        progress = false;
        for (std::size_t i = 0; i < ready.size(); ++i) {
            if (worker_slots_[ready[i]].credits > 0) progress = take_one(i, true) || progress;
        }
    }
    // 2. Prefetch: what is left fills one worker's credits before the next
    //    one's. A worker that grants many credits (its tasks are short) gets
    //    one big batch instead of a task in each of many small ones; one
    //    that grants few (long tasks) gets few. Workers of long tasks are
    //    filled least recently served first, like the spread; workers of
    //    short tasks most recently served first: while the busiest keep up,
    //    the work stays on processes whose caches are warm rather than going
    //    round 200 cold ones (W5: about +10 %, alternated builds).
    std::vector<std::size_t> order;  // indexes into ready, in the order they are filled
    order.reserve(ready.size());
    for (std::size_t i = 0; i < ready.size(); ++i)
        if (runs_long_tasks(worker_slots_[ready[i]])) order.push_back(i);
    for (std::size_t i = ready.size(); i-- > 0;)
        if (!runs_long_tasks(worker_slots_[ready[i]])) order.push_back(i);
    for (std::size_t k = 0; k < order.size() && queued_ > 0; ++k) {
        const std::size_t i = order[k];
        while (worker_slots_[ready[i]].credits > 0 && queued_ > 0 && take_one(i, false)) {}
    }
    for (std::size_t i = 0; i < ready.size(); ++i) {
        if (taken[i].empty()) continue;
        WorkerState& w = worker_slots_[ready[i]];
        w.served_seq = ++serve_seq_;
        ++totals_.dispatch_batches;
        batches.push_back(Batch{w.identity, std::move(taken[i]), w.hello.max_message_bytes});
    }
    return batches;
}

void Scheduler::undo_dispatch(const Batch& batch) {
    const auto wit = workers_.find(batch.worker);
    // Reverse order keeps the original order at the front of the queue.
    for (auto it = batch.tasks.rbegin(); it != batch.tasks.rend(); ++it) {
        Entry* e = find(it->id);
        if (!e || e->state != State::held) continue;
        --e->attempt;
        if (wit != workers_.end() && e->worker == wit->second) {
            ++worker_slots_[wit->second].credits;
            worker_slots_[wit->second].starts += e->on_start;
        }
        enqueue_front(*e);
        --totals_.dispatched;
    }
    --totals_.dispatch_batches;
}

std::optional<FinalOutcome> Scheduler::refuse_dispatched(const std::string& identity, std::string_view id,
                                                         std::string error) {
    const auto wit = workers_.find(identity);
    Entry* e = find(id);
    if (wit == workers_.end() || !e || e->state != State::held || e->worker != wit->second) return std::nullopt;
    ++worker_slots_[wit->second].credits;
    worker_slots_[wit->second].starts += e->on_start;
    --totals_.dispatched;
    ++totals_.too_large;
    if (e->attempt > 0) --e->attempt;  // it never ran
    return end_task(*e, proto::Status::error, std::move(error));
}

// Retries and outcomes ----------------------------------------------------------

FinalOutcome Scheduler::final_outcome(const Entry& e, proto::Status status, std::string error) const {
    FinalOutcome f;
    f.reply_to = strings_[e.reply_to];
    f.outcome.id = e.id;
    f.outcome.task = names_[e.name];
    f.outcome.status = status;
    f.outcome.error = std::move(error);
    f.outcome.attempt = e.attempt;
    f.outcome.worker = "broker";
    f.outcome.token = broker_token(secret_of(e), e.attempt);
    return f;
}

FinalOutcome Scheduler::end_task(Entry& e, proto::Status status, std::string error) {
    if (e.state == State::queued) unmark_queued(e);
    if (e.state == State::held) release_held(e);
    leave_retry(e);
    e.state = State::ended;
    e.reported = std::make_unique<Report>(Report{final_outcome(e, status, std::move(error)), {}});
    e.report_sends = 1;
    reported_now_.push_back(Ref{e.slot, e.gen});
    return e.reported->final;
}

Millis Scheduler::report_interval(std::uint32_t sends) const {
    const Millis window = limits_.heartbeat * limits_.liveness;
    const auto doubled = window * (1LL << std::min<std::uint32_t>(sends - 1, 10));
    return std::min<Millis>(doubled, Millis(60000));
}

std::vector<FinalOutcome> Scheduler::reports_due(Clock::time_point now) {
    std::vector<FinalOutcome> due;
    for (const auto& r : reported_now_) reports_.emplace(now + report_interval(1), pack_ref(r.slot, r.gen));
    reported_now_.clear();
    while (!reports_.empty() && reports_.top().first <= now) {
        const auto ref = reports_.top().second;
        reports_.pop();
        Entry* e = live(Ref{static_cast<std::uint32_t>(ref >> 32), static_cast<std::uint32_t>(ref)});
        if (!e || !e->reported) continue;  // settled, or gone with its producer
        if (e->report_sends >= static_cast<std::uint32_t>(limits_.report_tries)) {
            ++totals_.reports_abandoned;  // its sink never answered: give up on it
            free_entry(*e);
            continue;
        }
        ++e->report_sends;
        ++totals_.reports_resent;
        due.push_back(e->reported->final);
        reports_.emplace(now + report_interval(e->report_sends), ref);
    }
    return due;
}

std::optional<std::vector<FinalOutcome>> Scheduler::retry(const std::string& identity,
                                                          const std::vector<std::string>& ids, Clock::time_point now) {
    auto wit = workers_.find(identity);
    if (wit == workers_.end()) return std::nullopt;
    worker_slots_[wit->second].last_seen = now;
    std::vector<FinalOutcome> finals;
    for (const auto& id : ids) {
        Entry* e = find(id);
        if (!e || e->state != State::held || e->worker != wit->second) continue;  // not this worker's (any more)
        release_held(*e);
        if (e->attempt >= e->max_attempts) {  // a worker retries only with attempts left; a sink may not
            finals.push_back(
                end_task(*e, proto::Status::lost,
                         "failed " + std::to_string(e->attempt) + " attempts (the last could not reach its sink)"));
            ++totals_.lost;
            continue;
        }
        e->state = State::waiting_retry;
        ++retrying_;
        const auto shift = std::min<std::uint32_t>(std::max<std::uint32_t>(e->attempt, 1) - 1, 16);
        const auto backoff = std::min<Millis>(limits_.retry_base * (1LL << shift), limits_.retry_max);
        retries_.emplace(now + backoff, pack_ref(e->slot, e->gen));
        ++totals_.retried;
    }
    return finals;
}

std::optional<std::vector<FinalOutcome>> Scheduler::worker_holds(const std::string& identity, std::uint32_t held,
                                                                 Clock::time_point now) {
    auto wit = workers_.find(identity);
    if (wit == workers_.end()) return std::nullopt;
    WorkerState& w = worker_slots_[wit->second];
    w.last_seen = now;
    // Tasks dispatched before the previous report reached the worker before
    // it sent this one (a heartbeat period earlier): if it holds none, it
    // has finished them. Later ones may still be on their way to it.
    const std::uint64_t reached = w.report_seq;
    w.report_seq = dispatch_seq_;
    if (w.idle_upto == 0) {
        if (held == 0 && reached > 0 && w.held_count > 0) {  // their outcomes should settle soon
            w.idle_since = now;
            w.idle_upto = reached;
        }
        return std::vector<FinalOutcome>{};
    }
    if (now - w.idle_since < limits_.heartbeat * limits_.liveness * limits_.unsettled_windows)
        return std::vector<FinalOutcome>{};
    // Only tasks with an attempt left: the outcome may be slow, not lost, and
    // a task ended `lost` here could reach its sink before its real outcome.
    std::vector<std::string> ids;
    for (const auto& h : w.held)
        if (h.seq <= w.idle_upto && holds(wit->second, h) && slots_[h.slot].attempt < slots_[h.slot].max_attempts)
            ids.push_back(slots_[h.slot].id);
    w.idle_upto = 0;
    totals_.recovered += ids.size();
    return retry(identity, ids, now);
}

bool Scheduler::give_back(const std::string& identity, const std::vector<std::string>& ids, Clock::time_point now) {
    const auto wit = workers_.find(identity);
    if (wit == workers_.end()) return false;
    worker_slots_[wit->second].last_seen = now;
    std::vector<Entry*> back;
    for (const auto& id : ids) {
        Entry* e = find(id);
        if (!e || e->state != State::held || e->worker != wit->second) continue;  // not this worker's (any more)
        back.push_back(e);
    }
    // Back to front, so the queue keeps their order.
    for (auto it = back.rbegin(); it != back.rend(); ++it) {
        Entry& e = **it;
        if (e.attempt > 0) --e.attempt;  // it never ran
        enqueue_front(e);
        --totals_.dispatched;
        ++totals_.returned;
    }
    return true;
}

Clock::time_point Scheduler::release_retries(Clock::time_point now) {
    while (!retries_.empty() && retries_.top().first <= now) {
        const auto ref = retries_.top().second;
        retries_.pop();
        const Ref r{static_cast<std::uint32_t>(ref >> 32), static_cast<std::uint32_t>(ref)};
        Entry* e = live(r);
        if (!e || e->state != State::waiting_retry) continue;  // settled or cancelled meanwhile
        leave_retry(*e);
        mark_queued(*e);
        push_queued(*e, false);
    }
    return retries_.empty() ? Clock::time_point::max() : retries_.top().first;
}

bool Scheduler::owned_by(const Entry& e, std::string_view producer) const { return strings_[e.producer] == producer; }

std::size_t Scheduler::settle(std::string_view producer, const std::vector<std::string>& ids,
                              const std::vector<std::uint64_t>& proofs, std::string* first_refused) {
    std::size_t refused = 0;
    const bool proven = !proofs.empty() && proofs.size() == ids.size();
    // Interned once: each id's owner is then one comparison of indexes.
    const std::uint32_t owner = strings_.find(producer);
    const auto& hashes = hash_batch(ids, [](const std::string& id) -> std::string_view { return id; });
    for (std::size_t i = 0; i < ids.size(); ++i) {
        if (i + k_prefetch_ahead < ids.size()) index_.prefetch(hashes[i + k_prefetch_ahead]);
        Entry* e = find(ids[i], hashes[i]);
        if (!e) continue;
        if (proven ? proofs[i] != settle_proof(secret_of(*e)) : e->producer != owner) {
            if (refused++ == 0 && first_refused)
                *first_refused = ids[i];  // neither its producer nor its sink: it stays
            continue;
        }
        if (e->state == State::held) ++worker_slots_[e->worker].done;
        free_entry(*e, hashes[i]);  // a queue slot or timer naming it is skipped lazily
        ++totals_.settled;
    }
    return refused;
}

std::vector<FinalOutcome> Scheduler::producer_gone(const std::string& producer) {
    std::vector<FinalOutcome> finals;
    for (auto& e : slots_) {
        if (e.state == State::free || e.detached || strings_[e.producer] != producer) continue;
        // An ended task's outcome went out already; the others are reported
        // anyway: a producer that was only stalled still gets an outcome.
        // A running one runs on; its result goes nowhere.
        if (e.state != State::ended) {
            finals.push_back(final_outcome(e, proto::Status::cancelled, std::string(proto::k_producer_gone)));
            ++totals_.cancelled;
        }
        free_entry(e);
    }
    return finals;
}

std::vector<FinalOutcome> Scheduler::cancel(std::string_view producer, const std::vector<std::string>& ids,
                                            std::size_t* refused) {
    std::vector<FinalOutcome> finals;
    for (const auto& id : ids) {
        Entry* e = find(id);
        if (!e) continue;
        if (!owned_by(*e, producer)) {
            if (refused) ++*refused;
            continue;
        }
        if (!(e->state == State::queued || e->state == State::waiting_retry)) continue;
        finals.push_back(end_task(*e, proto::Status::cancelled, "cancelled"));
        ++totals_.cancelled;
    }
    return finals;
}

// Looking -----------------------------------------------------------------------

std::vector<std::string> Scheduler::worker_identities() const {
    std::vector<std::string> out;
    out.reserve(workers_.size());
    for (const auto& [identity, wslot] : workers_) out.push_back(identity);
    return out;
}

std::uint32_t Scheduler::credits_of(const std::string& identity) const {
    auto it = workers_.find(identity);
    return it == workers_.end() ? 0 : worker_slots_[it->second].credits;
}

std::string Scheduler::describe_worker(const std::string& identity) const {
    auto it = workers_.find(identity);
    if (it == workers_.end()) return {};
    const auto& h = worker_slots_[it->second].hello;
    return h.worker + " host=" + h.host;
}

std::size_t Scheduler::held_by(const std::string& identity) const {
    auto it = workers_.find(identity);
    return it == workers_.end() ? 0 : worker_slots_[it->second].held_count;
}

nlohmann::json Scheduler::status(Clock::time_point now) const {
    using nlohmann::json;
    std::vector<std::size_t> running(names_.size(), 0), can_run(names_.size(), 0);
    for (const auto& e : slots_)
        if (e.state == State::held) ++running[e.name];
    for (const auto& [identity, wslot] : workers_)
        for (const auto name : worker_slots_[wslot].names) ++can_run[name];

    // The busiest k_status_queues names: a reply must not grow with every
    // name a client made up.
    std::vector<std::uint32_t> shown;
    for (std::uint32_t n = 0; n < names_.size(); ++n)
        if (queued_by_name_[n] != 0 || running[n] != 0 || can_run[n] != 0) shown.push_back(n);
    const std::size_t listed = std::min(shown.size(), k_status_queues);
    const auto busier = [&](std::uint32_t a, std::uint32_t b) {
        return queued_by_name_[a] + running[a] + can_run[a] > queued_by_name_[b] + running[b] + can_run[b];
    };
    std::partial_sort(shown.begin(), shown.begin() + static_cast<std::ptrdiff_t>(listed), shown.end(), busier);
    json queues = json::object();
    json waiting = json::array();
    for (std::size_t i = 0; i < listed; ++i) {
        const auto n = shown[i];
        const std::size_t queued = queued_by_name_[n];
        queues[names_[n]] = {{"queued", queued},
                             {"in_flight", running[n]},
                             {"workers", can_run[n]},
                             {"run_us", static_cast<double>(run_ns_[n]) / 1000.0}};
        if (queued > 0 && can_run[n] == 0) waiting.push_back(names_[n]);
    }
    json workers = json::array();
    for (const auto& [identity, wslot] : workers_) {
        if (workers.size() >= k_status_workers) break;
        const WorkerState& w = worker_slots_[wslot];
        workers.push_back({{"id", w.hello.worker},
                           {"host", w.hello.host},
                           {"pid", w.hello.pid},
                           {"pool", w.hello.pool},
                           {"slots", w.hello.slots},
                           {"credits", w.credits},
                           {"starts", w.starts},
                           {"held", w.held_count},
                           {"done", w.done},
                           {"restarts", w.hello.restarts},
                           {"last_heartbeat_ms", std::chrono::duration_cast<Millis>(now - w.last_seen).count()}});
    }
    std::sort(workers.begin(), workers.end(),
              [](const json& a, const json& b) { return a["id"].get<std::string>() < b["id"].get<std::string>(); });
    // The fleet by host: how many workers, slots and tasks each machine has.
    json hosts = json::object();
    for (const auto& w : workers) {
        auto& h = hosts[w["host"].get<std::string>()];
        if (h.is_null()) h = {{"workers", 0}, {"slots", 0}, {"held", 0}, {"done", 0}, {"pools", json::array()}};
        h["workers"] = h["workers"].get<std::size_t>() + 1;
        h["slots"] = h["slots"].get<std::uint64_t>() + w["slots"].get<std::uint64_t>();
        h["held"] = h["held"].get<std::size_t>() + w["held"].get<std::size_t>();
        h["done"] = h["done"].get<std::uint64_t>() + w["done"].get<std::uint64_t>();
        auto& pools = h["pools"];
        if (std::find(pools.begin(), pools.end(), w["pool"]) == pools.end()) pools.push_back(w["pool"]);
    }
    return {{"queues", queues},
            {"waiting_for_workers", waiting},
            {"workers", workers},
            {"hosts", hosts},
            {"queues_omitted", shown.size() - listed},
            {"workers_omitted", workers_.size() - workers.size()},
            {"names", name_ids_.size()},
            {"queued", queued_},
            {"in_flight", held_total_},
            {"retrying", retrying_},
            {"awaiting_settle", live_ - queued_ - held_total_ - retrying_},
            {"held", live_},
            {"totals",
             {{"accepted", totals_.accepted},
              {"rejected", totals_.rejected},
              {"dispatched", totals_.dispatched},
              {"settled", totals_.settled},
              {"redispatched", totals_.redispatched},
              {"retried", totals_.retried},
              {"lost", totals_.lost},
              {"cancelled", totals_.cancelled},
              {"timed_out", totals_.timed_out},
              {"workers_expired", totals_.workers_expired},
              {"reports_resent", totals_.reports_resent},
              {"reports_abandoned", totals_.reports_abandoned},
              {"results_forwarded", totals_.results_forwarded},
              {"dispatch_batches", totals_.dispatch_batches},
              {"recovered", totals_.recovered},
              {"too_large", totals_.too_large},
              {"returned", totals_.returned}}}};
}

}  // namespace drover
