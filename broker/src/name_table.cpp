// The Scheduler's task names: interning, remembering, compaction.
#include "name_table.hpp"

namespace drover::scheduling {

std::uint32_t NameTable::acquire(const std::string& name) {
    if (auto it = ids_.find(name); it != ids_.end()) {
        const auto id = it->second;
        if (refs_[id]++ == 0) unlink_idle(id);  // a name without references is idle
        return id;
    }
    std::uint32_t id;
    if (!free_ids_.empty()) {
        id = free_ids_.back();
        free_ids_.pop_back();
        names_[id] = name;
    } else {
        id = static_cast<std::uint32_t>(names_.size());
        names_.push_back(name);
        refs_.push_back(0);
        announced_.push_back(0);
        queues_.emplace_back();
        queued_.push_back(0);
        run_ns_.push_back(0);
        idle_links_.emplace_back();
    }
    ids_.emplace(name, id);
    refs_[id] = 1;
    return id;
}

void NameTable::unused(std::uint32_t id) {
    if (!announced_[id]) return free_name(id);  // nothing to remember about it
    IdleLink& l = idle_links_[id];
    l = IdleLink{idle_tail_, k_none, true};
    (idle_tail_ == k_none ? idle_head_ : idle_links_[idle_tail_].next) = id;
    idle_tail_ = id;
    if (++idle_names_ > remembered_) {
        const auto oldest = idle_head_;
        unlink_idle(oldest);
        free_name(oldest);
    }
}

void NameTable::unlink_idle(std::uint32_t id) {
    IdleLink& l = idle_links_[id];
    if (!l.idle) return;
    (l.prev == k_none ? idle_head_ : idle_links_[l.prev].next) = l.next;
    (l.next == k_none ? idle_tail_ : idle_links_[l.next].prev) = l.prev;
    l = IdleLink{};
    --idle_names_;
}

void NameTable::free_name(std::uint32_t id) {
    ids_.erase(names_[id]);
    std::string().swap(names_[id]);
    announced_[id] = 0;
    queues_[id].clear();  // only refs of tasks that are gone
    queued_[id] = 0;
    run_ns_[id] = 0;
    free_ids_.push_back(id);
}

std::vector<std::uint32_t> NameTable::compact() {
    if (free_ids_.empty()) return {};
    std::vector<char> freed(names_.size(), 0);
    for (const auto id : free_ids_) freed[id] = 1;
    std::vector<std::uint32_t> renamed(names_.size(), k_none);
    std::deque<std::string> names;
    std::vector<std::uint32_t> refs;
    std::vector<char> announced;
    std::vector<std::uint64_t> run_ns;
    for (std::uint32_t id = 0; id < names_.size(); ++id) {
        if (freed[id]) continue;
        renamed[id] = static_cast<std::uint32_t>(names.size());
        names.push_back(std::move(names_[id]));
        refs.push_back(refs_[id]);
        announced.push_back(announced_[id]);
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
    names_ = std::move(names);
    refs_ = std::move(refs);
    announced_ = std::move(announced);
    run_ns_ = std::move(run_ns);
    idle_links_ = std::move(links);
    idle_head_ = head;
    idle_tail_ = tail;
    std::vector<RingQueue<SlotRef>>(names_.size()).swap(queues_);  // no task is held: every queue is empty
    std::vector<std::size_t>(names_.size(), 0).swap(queued_);
    std::vector<std::uint32_t>().swap(free_ids_);
    decltype(ids_) ids;
    ids.reserve(names_.size());
    for (std::uint32_t id = 0; id < names_.size(); ++id) ids.emplace(names_[id], id);
    ids_.swap(ids);
    return renamed;
}

}  // namespace drover::scheduling
