// The baselines: what plain ZeroMQ (cppzmq) does with drover's shape and no tracking.
#include "baselines.hpp"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <stdexcept>

#include <nlohmann/json.hpp>
#include <zmq_addon.hpp>

#include "internal/net.hpp"

namespace drover::bench {

namespace {

constexpr int k_stall_ms = 20000;

using SteadyClock = std::chrono::steady_clock;

double seconds_since(SteadyClock::time_point t0) {
    return std::chrono::duration<double>(SteadyClock::now() - t0).count();
}

// A role on a thread: an error ends the role (the run then stalls and
// reports it) instead of the whole program.
template <class F>
void guarded(F body) {
    try {
        body();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "drover-bench: baseline thread failed: %s\n", e.what());
    }
}

}  // namespace

Transport::Transport(std::string name, std::string dir) : name_(std::move(name)), dir_(std::move(dir)) {
    if (name_ != "tcp" && name_ != "ipc" && name_ != "inproc")
        throw std::invalid_argument("unknown transport '" + name_ + "' (tcp, ipc, inproc)");
}

std::string Transport::bind_endpoint(const std::string& role) {
    const auto n = std::to_string(++next_);
    if (name_ == "tcp") return "tcp://127.0.0.1:*";
    if (name_ == "ipc") return "ipc://" + dir_ + "/" + role + "-" + n;
    return "inproc://bench-" + role + "-" + n + "-" + random_hex(4);
}

void run_pipeline_worker(zmq::context_t& ctx, const std::string& in, const std::string& out, bool behind_proxy) {
    zmq::socket_t source(ctx, behind_proxy ? zmq::socket_type::dealer : zmq::socket_type::pull);
    zmq::socket_t sink(ctx, zmq::socket_type::push);
    source.set(zmq::sockopt::linger, 0);
    sink.set(zmq::sockopt::linger, 0);
    source.connect(in);
    sink.connect(out);
    sink.send(zmq::message_t(), zmq::send_flags::none);  // "connected"
    try {
        zmq::message_t envelope, payload;
        while (true) {
            // Behind the proxy each message is [ventilator identity][payload].
            if (behind_proxy) (void)source.recv(envelope, zmq::recv_flags::none);
            (void)source.recv(payload, zmq::recv_flags::none);
            sink.send(payload, zmq::send_flags::none);
        }
    } catch (const zmq::error_t& e) {
        if (e.num() != ETERM) throw;
    }
}

void run_bare_broker(zmq::context_t& ctx, const std::string& frontend, const std::string& backend,
                     const std::string& endpoints_file) {
    zmq::socket_t front(ctx, zmq::socket_type::router);
    zmq::socket_t back(ctx, zmq::socket_type::dealer);
    front.set(zmq::sockopt::linger, 0);
    back.set(zmq::sockopt::linger, 0);
    front.bind(frontend);
    back.bind(backend);
    {
        const auto tmp = endpoints_file + ".tmp";
        std::ofstream(tmp) << nlohmann::json{{"frontend", connectable(last_endpoint(front))},
                                             {"backend", connectable(last_endpoint(back))}}
                                  .dump()
                           << "\n";
        std::rename(tmp.c_str(), endpoints_file.c_str());
    }
    try {
        zmq::proxy(front, back);
    } catch (const zmq::error_t& e) {
        if (e.num() != ETERM) throw;
    }
}

Baseline::Baseline(Shape shape, const BaselineEnv& env, Transport& transport, unsigned workers)
    : shape_(shape),
      env_(env),
      in_process_(transport.in_process()),
      source_(ctx_, shape == Shape::pipeline ? zmq::socket_type::push : zmq::socket_type::dealer),
      sink_(ctx_, zmq::socket_type::pull) {
    for (auto* s : {&source_, &sink_}) {
        s->set(zmq::sockopt::linger, 0);
        s->set(zmq::sockopt::sndtimeo, k_stall_ms);
        s->set(zmq::sockopt::rcvtimeo, k_stall_ms);
    }
    sink_.bind(transport.bind_endpoint("sink"));
    const auto sink_ep = connectable(last_endpoint(sink_));
    std::string work_ep;  // where workers take their messages from
    try {
        if (shape == Shape::pipeline) {
            source_.bind(transport.bind_endpoint("ventilator"));
            work_ep = connectable(last_endpoint(source_));
        } else {
            const auto file = env_.dir + "/bare-broker-" + random_hex(4) + ".json";
            const auto front = transport.bind_endpoint("bare-frontend");
            const auto back = transport.bind_endpoint("bare-backend");
            if (in_process_) {
                threads_.emplace_back(
                    [this, front, back, file] { guarded([&] { run_bare_broker(ctx_, front, back, file); }); });
            } else {
                children_.push_back(std::make_unique<Child>(
                    std::vector<std::string>{env_.self_exe, "--role", "bare-broker", "--frontend", front, "--backend",
                                             back, "--endpoints-file", file},
                    log_path()));
            }
            auto doc = wait_json_file(file, std::chrono::seconds(10));
            if (!doc) throw std::runtime_error("the bare broker did not start: " + tail_file(log_path(), 5));
            source_.connect((*doc)["frontend"].get<std::string>());
            work_ep = (*doc)["backend"].get<std::string>();
        }
        const bool behind_proxy = shape == Shape::bare_broker;
        for (unsigned i = 0; i < workers; ++i) {
            if (in_process_) {
                threads_.emplace_back([this, work_ep, sink_ep, behind_proxy] {
                    guarded([&] { run_pipeline_worker(ctx_, work_ep, sink_ep, behind_proxy); });
                });
            } else {
                std::vector<std::string> argv{env_.self_exe, "--role", "pipeline-worker", "--in", work_ep,
                                              "--out",       sink_ep};
                if (behind_proxy) argv.push_back("--behind-proxy");
                children_.push_back(std::make_unique<Child>(argv, log_path()));
            }
        }
        zmq::message_t hello;
        for (unsigned i = 0; i < workers; ++i)
            if (!sink_.recv(hello, zmq::recv_flags::none))
                throw std::runtime_error("baseline workers did not connect: " + tail_file(log_path(), 5));
        // The workers connected their input before their output, so once
        // their "connected" message is here their input is (all but) ready;
        // a short pause makes sure the ventilator round-robins over both.
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    } catch (...) {
        ctx_.shutdown();
        for (auto& t : threads_) t.join();
        throw;
    }
}

Baseline::~Baseline() {
    children_.clear();  // kills the processes
    ctx_.shutdown();    // ends the role threads (inproc)
    for (auto& t : threads_) t.join();
}

std::string Baseline::log_path() const { return env_.dir + "/baseline.log"; }

double Baseline::stream(std::size_t n, std::size_t bytes) {
    bytes = std::max<std::size_t>(bytes, 8);
    std::string payload(bytes, 'x');
    bool stalled = false;
    std::size_t received = 0;
    SteadyClock::time_point t_end{};
    std::thread sink_thread([&] {
        zmq::message_t m;
        while (received < n) {
            if (!sink_.recv(m, zmq::recv_flags::none)) {
                stalled = true;
                return;
            }
            if (m.size() > 0) ++received;  // a restarted worker's "connected" message is empty
        }
        t_end = SteadyClock::now();
    });
    const auto t0 = SteadyClock::now();
    std::size_t sent = 0;
    for (; sent < n; ++sent) {
        std::memcpy(payload.data(), &sent, sizeof sent);
        if (!source_.send(zmq::message_t(payload.data(), payload.size()), zmq::send_flags::none)) break;
    }
    sink_thread.join();
    if (sent < n || stalled)
        throw std::runtime_error("baseline stalled: sent " + std::to_string(sent) + ", received " +
                                 std::to_string(received) + " of " + std::to_string(n));
    return std::chrono::duration<double>(t_end - t0).count();
}

std::vector<double> Baseline::round_trips(std::size_t rounds) {
    std::vector<double> us;
    us.reserve(rounds);
    zmq::message_t reply;
    for (std::size_t i = 0; i < rounds; ++i) {
        const auto t0 = SteadyClock::now();
        if (!source_.send(zmq::buffer(&i, sizeof i), zmq::send_flags::none) ||
            !sink_.recv(reply, zmq::recv_flags::none))
            throw std::runtime_error("round trip " + std::to_string(i) + " stalled");
        us.push_back(seconds_since(t0) * 1e6);
    }
    return us;
}

}  // namespace drover::bench
