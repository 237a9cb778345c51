// The Scheduler's tasks from SUBMIT to SETTLE: accepting, cancelling, forgetting.
#include "scheduler.hpp"

#include <algorithm>
#include <cstring>

#include "internal/proof.hpp"

namespace drover {

using scheduling::k_prefetch_ahead;
using scheduling::TaskEntry;
using scheduling::TaskState;

namespace {

// A task whose outcome goes elsewhere (detached) is answered ACCEPTED.
void accept(Scheduler::Submitted& out, bool detached, std::string_view id) {
    ++out.accepted;
    if (detached) out.acknowledged.emplace_back(id);
}

}  // namespace

// Task records --------------------------------------------------------------

TaskEntry& Scheduler::new_entry(proto::Task&& t, std::string_view reply_to, SubmitContext& ctx, std::uint32_t id_hash) {
    TaskEntry& e = tasks_.add(std::move(t.id), id_hash);
    e.args = std::move(t.args);
    if (ctx.name && *ctx.name == t.name) {
        names_.acquire_again(ctx.name_id);  // the batch's earlier task holds it: not idle
    } else {
        ctx.name_id = names_.acquire(t.name);
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
    e.worker = scheduling::k_none;
    e.attempt = 0;
    e.max_attempts = static_cast<std::uint16_t>(allowed_attempts(t.max_attempts));
    e.timeout_ms = t.timeout_ms;
    e.deaths = 0;
    e.report_sends = 0;
    e.dispatch_seq = 0;
    e.journal_key = 0;
    e.state = TaskState::ended;  // the caller queues or ends it
    e.detached = t.detached;
    e.retry_on_error = t.retry_on_error;
    e.reported.reset();
    std::memcpy(e.secret, t.secret.view().data(), sizeof e.secret);  // submit() made it full
    return e;
}

void Scheduler::free_entry(TaskEntry& e, std::uint32_t id_hash) {
    if (e.state == TaskState::queued) unmark_queued(e);
    if (e.state == TaskState::held) release_held(e);
    leave_retry(e);
    if (journal_ && e.journal_key) journal_->append_settled(e.journal_key);
    e.journal_key = 0;
    strings_.release(e.reply_to);
    strings_.release(e.producer);
    names_.release(e.name);
    tasks_.remove(e, id_hash);
}

void Scheduler::release_held(TaskEntry& e) {
    WorkerState& w = workers_[e.worker];
    --w.held_count;
    --held_total_;
    e.worker = scheduling::k_none;
    e.state = TaskState::ended;
    const auto wslot = workers_.slot_of(w);
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

void Scheduler::enqueue_front(TaskEntry& e) {
    if (e.state == TaskState::held) release_held(e);
    mark_queued(e);
    push_queued(e, true);
}

void Scheduler::push_queued(const TaskEntry& e, bool front) {
    auto& q = names_.queue(e.name);
    // e is counted in its name's queued count already; a ref is stale once its task is not queued.
    if (q.size() >= 64 && q.size() > 2 * names_.queued(e.name))
        q.remove_if([this](const SlotRef& r) {
            const TaskEntry* x = tasks_.live(r);
            return !x || x->state != TaskState::queued;
        });
    if (front) q.push_front(SlotRef{e.slot, e.gen});
    else q.push_back(SlotRef{e.slot, e.gen});
}

// Submitting ------------------------------------------------------------------

Scheduler::Submitted Scheduler::submit(const std::string& producer, std::vector<proto::Task>&& tasks,
                                       Clock::time_point now, std::string_view batch_reply_to) {
    Submitted out;
    SubmitContext ctx;
    ctx.producer = strings_.acquire(producer);  // held for the batch, released at the end
    const auto& hashes = tasks_.hash_batch(tasks, [](const proto::Task& t) -> std::string_view { return t.id; });
    for (std::size_t i = 0; i < tasks.size(); ++i) {
        if (i + k_prefetch_ahead < tasks.size()) tasks_.prefetch(hashes[i + k_prefetch_ahead]);
        auto& t = tasks[i];
        if (!t.problem.empty()) {  // malformed: rejected alone, naming the field
            reject(out, "invalid: " + t.problem, t.id);
            continue;
        }
        t.secret.make_full();  // decode_submit checked it; a caller in-process may not
        if (TaskEntry* known = tasks_.find(t.id, hashes[i])) {
            submit_again(*known, t, producer, now, out);
            continue;
        }
        const std::string_view reply_to = t.reply_to.empty() ? batch_reply_to : std::string_view(t.reply_to);
        if (t.name.empty() || reply_to.empty()) {
            reject(out, "invalid: a task needs a name and a reply_to", t.id);
            continue;
        }
        submit_new(std::move(t), reply_to, ctx, hashes[i], out);
    }
    strings_.release(ctx.producer);
    return out;
}

void Scheduler::reject(Submitted& out, std::string reason, std::string& id) {
    out.rejected[std::move(reason)].push_back(std::move(id));
    ++totals_.rejected;
}

void Scheduler::submit_again(TaskEntry& known, proto::Task& t, const std::string& producer, Clock::time_point now,
                             Submitted& out) {
    // The same secret is the same task again (a producer resends after a
    // broker restart); another is another producer's task under the same
    // id, which must neither join nor replace it.
    if (known.secret_view() != t.secret.view()) return reject(out, "duplicate_id", t.id);
    // It may come over a new connection.
    if (strings_[known.producer] != producer) {
        strings_.release(known.producer);
        known.producer = strings_.acquire(producer);
    }
    accept(out, known.detached, t.id);
    // It was missed. Once a window: a client that submits the id again and
    // again must not fill the sink's queue with copies.
    if (scheduling::Report* r = known.reported.get();
        r && now - r->repeated_at >= limits_.heartbeat * limits_.liveness) {
        r->repeated_at = now;
        out.finals.push_back(r->final);
    }
}

void Scheduler::submit_new(proto::Task&& t, std::string_view reply_to, SubmitContext& ctx, std::uint32_t id_hash,
                           Submitted& out) {
    if (ctx.checked_name != t.name) {  // looked up once per run of one name (never empty here)
        const auto name = names_.find(t.name);
        ctx.name_known = name != scheduling::k_none && names_.announced(name);
        ctx.checked_name = t.name;
    }
    if (!workers_.empty() && !ctx.name_known) {
        if (tasks_.size() >= limits_.max_held) return reject(out, "queue_full", t.id);  // its outcome would wait
        const std::uint64_t key = journal_ ? journal_accepted(t, reply_to, ctx, out) : 0;
        if (journal_ && !key) return;
        TaskEntry& e = new_entry(std::move(t), reply_to, ctx, id_hash);
        e.journal_key = key;
        // The name as given, up to 200 bytes: an error message, not an echo of whatever a client sent.
        std::string_view shown = names_[e.name];
        const bool cut = shown.size() > 200;
        if (cut) shown = shown.substr(0, 200);
        out.finals.push_back(
            end_task(e, proto::Status::error,
                     "unknown task '" + std::string(shown) + (cut ? "…" : "") + "': no worker runs it"));
        accept(out, e.detached, e.id);
        ++totals_.accepted;
        return;
    }
    if (full() || tasks_.size() >= limits_.max_held) return reject(out, "queue_full", t.id);
    const std::uint64_t key = journal_ ? journal_accepted(t, reply_to, ctx, out) : 0;
    if (journal_ && !key) return;
    TaskEntry& e = new_entry(std::move(t), reply_to, ctx, id_hash);
    e.journal_key = key;
    mark_queued(e);
    push_queued(e, false);
    ++totals_.accepted;
    accept(out, e.detached, e.id);
}

std::uint64_t Scheduler::journal_accepted(proto::Task& t, std::string_view reply_to, const SubmitContext& ctx,
                                          Submitted& out) {
    const auto key = journal_->append_accepted(JournalTask::of(t, strings_[ctx.producer], reply_to));
    if (!key) reject(out, "journal_unavailable", t.id);  // never accepted and lost
    return key.value_or(0);
}

// Settling and cancelling -------------------------------------------------------

std::size_t Scheduler::settle(std::string_view producer, const std::vector<std::string>& ids,
                              const std::vector<std::uint64_t>& proofs, std::string* first_refused,
                              IdsByProducer* detached) {
    std::size_t refused = 0;
    const bool proven = !proofs.empty() && proofs.size() == ids.size();
    // Interned once: each id's owner is then one comparison of indexes.
    const std::uint32_t owner = strings_.find(producer);
    const auto& hashes = tasks_.hash_batch(ids, [](const std::string& id) -> std::string_view { return id; });
    for (std::size_t i = 0; i < ids.size(); ++i) {
        if (i + k_prefetch_ahead < ids.size()) tasks_.prefetch(hashes[i + k_prefetch_ahead]);
        TaskEntry* e = tasks_.find(ids[i], hashes[i]);
        if (!e) continue;
        if (proven ? proofs[i] != settle_proof(e->secret_view()) : e->producer != owner) {
            if (refused++ == 0 && first_refused)
                *first_refused = ids[i];  // neither its producer nor its sink: it stays
            continue;
        }
        if (e->state == TaskState::held) ++workers_[e->worker].done;
        if (e->detached && detached) (*detached)[strings_[e->producer]].push_back(ids[i]);
        free_entry(*e, hashes[i]);  // a queue slot or timer naming it is skipped lazily
        ++totals_.settled;
    }
    return refused;
}

std::vector<FinalOutcome> Scheduler::producer_gone(const std::string& producer) {
    std::vector<FinalOutcome> finals;
    for (auto& e : tasks_.slots()) {
        if (e.state == TaskState::free || e.detached || strings_[e.producer] != producer) continue;
        // An ended task's outcome went out already; the others are reported
        // anyway: a producer that was only stalled still gets an outcome.
        // A running one runs on; its result goes nowhere.
        if (e.state != TaskState::ended) {
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
        TaskEntry* e = tasks_.find(id);
        if (!e) continue;
        if (!owned_by(*e, producer)) {
            if (refused) ++*refused;
            continue;
        }
        if (!(e->state == TaskState::queued || e->state == TaskState::waiting_retry)) continue;
        finals.push_back(end_task(*e, proto::Status::cancelled, "cancelled"));
        ++totals_.cancelled;
    }
    return finals;
}

// Results -----------------------------------------------------------------------

bool Scheduler::genuine_result(const std::string& identity, const proto::Outcome& o) {
    const TaskEntry* e = tasks_.find(o.id);
    if (!workers_.contains(identity) || !e || e->state == TaskState::free) return false;
    return o.attempt >= 1 && o.attempt <= e->attempt && genuine(e->secret_view(), o.attempt, false, o.token);
}

std::optional<Scheduler::Route> Scheduler::route_of(std::string_view id) {
    const TaskEntry* e = tasks_.find(id);
    if (!e) return std::nullopt;
    return Route{strings_[e->producer], strings_[e->reply_to], e->detached};
}

// Memory ------------------------------------------------------------------------

bool Scheduler::compact() {
    if (tasks_.size() != 0) return false;
    if (tasks_.slots().empty()) return compact_names();  // workers may have come and gone with their names
    // Every ref (queues, held lists, timers) is stale now, so all of them go
    // and slot numbers and generations may start again.
    tasks_.clear();
    names_.clear_queues();
    for (const auto& [identity, wslot] : workers_) std::deque<HeldRef>().swap(workers_[wslot].held);
    DueQueue().swap(retries_);
    DueQueue().swap(reports_);
    std::vector<SlotRef>().swap(reported_now_);
    compact_names();
    return true;
}

bool Scheduler::compact_names() {
    const auto renamed = names_.compact();
    if (renamed.empty()) return false;
    for (const auto& [identity, wslot] : workers_)
        for (auto& name : workers_[wslot].names) name = renamed[name];
    return true;
}

}  // namespace drover
