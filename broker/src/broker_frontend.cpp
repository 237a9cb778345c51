// The broker's producers: their requests (SUBMIT, SETTLE, CANCEL, STATUS,
// HEARTBEAT, BYE) and the replies kept for them while they cannot take them.
#include "broker_impl.hpp"
#include "internal/proof.hpp"

#include <algorithm>

namespace drover {

namespace {

// ACCEPTED and REJECTED ids kept for one producer while its connection is
// full; more are dropped and counted.
constexpr std::size_t k_max_unsent_reply_ids = 100'000;
// Ids in one ACCEPTED or REJECTED message, and their bytes at most (a
// client's --max-message-bytes may be as low as 4 KiB; a SUBMIT's answer
// fits in about as much as its SUBMIT took).
constexpr std::size_t k_reply_ids = 1000;
constexpr std::size_t k_reply_bytes = 64 * 1024;

// Sends `ids` from the front in messages of at most k_reply_ids ids and
// k_reply_bytes; erases what was sent. Returns false once the peer is full.
template <class Encode>
bool send_ids(zmq::socket_t& router, const std::string& peer, proto::Command c, std::vector<std::string>& ids,
              Encode encode) {
    std::size_t sent = 0;
    bool room = true;
    while (sent < ids.size()) {
        std::size_t end = sent, bytes = 0;
        while (end < ids.size() && end - sent < k_reply_ids &&
               (end == sent || bytes + ids[end].size() <= k_reply_bytes))
            bytes += ids[end++].size() + 2;
        std::vector<std::string> batch(ids.begin() + static_cast<std::ptrdiff_t>(sent),
                                       ids.begin() + static_cast<std::ptrdiff_t>(end));
        if (send_to(router, peer, c, encode(batch)) != SendStatus::sent) {
            room = false;
            break;
        }
        sent = end;
    }
    ids.erase(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(sent));
    return room;
}

}  // namespace

void BrokerImpl::handle_frontend(const std::string& peer, proto::Command c, std::string_view body) {
    using proto::Command;
    const auto now = Clock::now();
    switch (c) {
        case Command::submit: return producer_submit(peer, body, now);
        case Command::settle: {
            auto m = proto::decode_settle(body);
            if (!m) return drop(peer, Side::frontend, m.error(), c);
            std::string first;
            IdsByProducer detached;
            const auto refused = scheduler_.settle(producer_of(peer), m->ids, m->proofs, &first, &detached);
            if (refused > 0) refuse(peer, "settle", refused, !m->proofs.empty(), first);
            tell_settled(detached);
            scheduler_.totals().timed_out += m->timed_out;
            return;
        }
        case Command::cancel: {
            auto m = proto::decode_ids(body);
            if (!m) return drop(peer, Side::frontend, m.error(), c);
            std::size_t refused = 0;
            report(scheduler_.cancel(producer_of(peer), m->ids, &refused));
            if (refused > 0) refuse(peer, "cancel", refused, false, {});
            return;
        }
        case Command::status: {
            if (const auto m = proto::decode_empty(body); !m) return drop(peer, Side::frontend, m.error(), c);
            const auto doc = nlohmann::json::to_msgpack(status_json(now));
            reply(peer, Command::status_reply, std::string_view(reinterpret_cast<const char*>(doc.data()), doc.size()));
            return;
        }
        case Command::heartbeat: {
            if (const auto m = proto::decode_empty(body); !m) return drop(peer, Side::frontend, m.error(), c);
            producers_[peer] = now;
            reply(peer, Command::heartbeat, proto::encode_heartbeat(instance_));
            return;
        }
        case Command::bye: forget_producer(peer); return;
        default: return drop(peer, Side::frontend, proto::DecodeError::unexpected, c);
    }
}

void BrokerImpl::producer_submit(const std::string& peer, std::string_view body, Clock::time_point now) {
    std::string_view reply_to;  // the batch's, in `body`
    auto m = proto::decode_submit(body, reply_to);
    if (!m) return drop(peer, Side::frontend, m.error(), proto::Command::submit);
    const std::string producer = producer_of(peer);
    producers_[producer] = now;
    auto result = scheduler_.submit(producer, std::move(m->tasks), now, reply_to);
    report(std::move(result.finals));
    if (!result.acknowledged.empty()) {
        if (journal_) hold_accepted(producer, std::move(result.acknowledged));
        else keep_reply(producer, accepted_[producer], result.acknowledged);
    }
    for (auto& [reason, ids] : result.rejected) {
        log_->debug("broker.rejected n={} reason={}", ids.size(), reason);
        keep_reply(producer, rejected_[producer][reason], ids);
    }
}

// A client's callers send lone tasks on a connection of their own:
// its routing id is the client's, "P" and 8 characters, with "S" for "P".
std::string BrokerImpl::producer_of(const std::string& peer) {
    if (peer.size() != 9 || peer[0] != 'S') return peer;
    std::string producer = peer;
    producer[0] = 'P';
    return producer;
}

void BrokerImpl::forget_producer(const std::string& peer) {
    producers_.erase(peer);
    accepted_.erase(peer);
    rejected_.erase(peer);
    settled_.erase(peer);
}

void BrokerImpl::tell_settled(IdsByProducer& detached) {
    // A producer that is gone keeps nothing to resend; one that does not
    // read loses notices past the limit and resends those tasks after a
    // restart, which their sink drops as duplicates.
    for (auto& [producer, ids] : detached)
        if (producers_.count(producer)) keep_reply(producer, settled_[producer], ids);
}

void BrokerImpl::reply(const std::string& peer, proto::Command c, std::string_view body) {
    if (send_to(frontend_, peer, c, body) == SendStatus::would_block) ++dropped_["unread_replies"];
}

void BrokerImpl::keep_reply(const std::string& producer, std::vector<std::string>& kept,
                            std::vector<std::string>& ids) {
    std::size_t held = 0;
    for (const auto& [reason, r] : rejected_[producer]) held += r.size();
    held += accepted_[producer].size();
    if (const auto it = settled_.find(producer); it != settled_.end()) held += it->second.size();
    const std::size_t room = k_max_unsent_reply_ids - std::min(held, k_max_unsent_reply_ids);
    const std::size_t n = std::min(room, ids.size());
    kept.insert(kept.end(), std::make_move_iterator(ids.begin()),
                std::make_move_iterator(ids.begin() + static_cast<std::ptrdiff_t>(n)));
    if (n < ids.size()) {
        if (count_drop(producer, "unread_replies", ids.size() - n))
            log_->warn(
                "broker.unread_replies peer={} (it does not read its answers: more than {} ids wait for "
                "it; the rest are dropped and counted; logged once per peer)",
                to_hex_text(producer), k_max_unsent_reply_ids);
    }
}

void BrokerImpl::flush_replies() {
    // A reply its producer cannot take now is kept and sent again at the
    // next turn, until the producer is gone: its tasks may have come on its
    // submit connection, back from a break before its own connection is.
    for (auto& [peer, ids] : accepted_) {
        if (ids.empty()) continue;
        (void)send_ids(frontend_, peer, proto::Command::accepted, ids,
                       [](std::vector<std::string>& batch) { return proto::encode(proto::Ids{std::move(batch)}); });
    }
    for (auto it = settled_.begin(); it != settled_.end();) {
        (void)send_ids(frontend_, it->first, proto::Command::settled, it->second,
                       [](std::vector<std::string>& batch) { return proto::encode(proto::Ids{std::move(batch)}); });
        it = it->second.empty() ? settled_.erase(it) : std::next(it);
    }
    for (auto it = rejected_.begin(); it != rejected_.end();) {
        auto& by_reason = it->second;
        for (auto r = by_reason.begin(); r != by_reason.end();) {
            const std::string& reason = r->first;
            (void)send_ids(frontend_, it->first, proto::Command::rejected, r->second,
                           [&](std::vector<std::string>& batch) {
                               return proto::encode(proto::Rejected{std::move(batch), reason});
                           });
            r = r->second.empty() ? by_reason.erase(r) : std::next(r);
        }
        it = by_reason.empty() ? rejected_.erase(it) : std::next(it);
    }
}

}  // namespace drover
