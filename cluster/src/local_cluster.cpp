// LocalCluster: embedded broker, and worker threads or a worker process.
#include "drover/cluster/local_cluster.hpp"

#include "internal/net.hpp"

#include <csignal>
#include <cstdlib>
#include <stdexcept>

#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

namespace drover {

std::string sibling_executable(const std::string& name) {
    char buf[4096];
    const auto n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n > 0) {
        std::string self(buf, static_cast<std::size_t>(n));
        const auto dir = self.substr(0, self.rfind('/') + 1);
        if (::access((dir + name).c_str(), X_OK) == 0) return dir + name;
        // Tests live in a sibling folder of the executables.
        const auto up = dir.substr(0, dir.rfind('/', dir.size() - 2) + 1);
        for (const char* sub : {"worker/", "producer/", "broker/"})
            if (::access((up + sub + name).c_str(), X_OK) == 0) return up + sub + name;
    }
    return name;
}

LocalCluster::LocalCluster(zmq::context_t& ctx, const Registry& registry, LocalClusterOptions options, Logger log)
    : options_(std::move(options)), log_(std::move(log)) {
    BrokerConfig bc;
    const auto tag = random_hex(6);
    bc.frontend = "inproc://drover-frontend-" + tag;
    if (options_.pool == "processes") {
        ipc_dir_ = "/tmp/drover-" + std::to_string(::getpid()) + "-" + tag;
        if (::mkdir(ipc_dir_.c_str(), 0700) != 0) throw std::runtime_error("cannot create " + ipc_dir_);
        bc.backend = "ipc://" + ipc_dir_ + "/backend";
    } else if (options_.pool == "threads") {
        bc.backend = "inproc://drover-backend-" + tag;
    } else {
        throw std::invalid_argument("--pool: a local cluster runs threads or processes, not '" + options_.pool + "'");
    }
    try {
        broker_ = std::make_unique<Broker>(ctx, bc, log_);
        broker_->bind();
        broker_thread_ = std::thread([this] { broker_->run(broker_stop_); });
        if (options_.pool == "threads") start_worker_thread(ctx, registry);
        else start_worker_process();
        wait_for_workers();
    } catch (...) {
        stop_all();  // the destructor will not run: join threads, reap the child
        throw;
    }
    log_->info("local.ready pool={} workers={}", options_.pool, options_.workers);
}

void LocalCluster::start_worker_thread(zmq::context_t& ctx, const Registry& registry) {
    WorkerOptions wo;
    wo.broker = broker_->backend_endpoint();
    wo.pool = "threads";
    wo.concurrency = options_.workers;
    wo.prefetch = options_.prefetch;
    worker_ = std::make_unique<Worker>(ctx, registry, wo, log_);
    worker_thread_ = std::thread([this] { (void)worker_->run(worker_stop_); });
}

void LocalCluster::start_worker_process() {
    const auto exe = options_.worker_exe.empty() ? sibling_executable("drover-worker") : options_.worker_exe;
    std::vector<std::string> args{exe,
                                  "--broker",
                                  broker_->backend_endpoint(),
                                  "--pool",
                                  "processes",
                                  "-c",
                                  std::to_string(options_.workers),
                                  "--prefetch",
                                  std::to_string(options_.prefetch),
                                  "--log-level",
                                  log_->level() <= spdlog::level::debug ? "debug" : "warn"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const pid_t parent = ::getpid();
    child_ = ::fork();
    if (child_ == 0) {
        ::setpgid(0, 0);
        ::prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (::getppid() != parent) ::_exit(1);
        ::execvp(argv[0], argv.data());
        ::_exit(127);
    }
    if (child_ < 0) throw std::runtime_error("cannot fork the worker process");
}

void LocalCluster::wait_for_workers() {
    const auto deadline = Clock::now() + std::chrono::seconds(10);
    while (broker_->live_workers() < (options_.pool == "threads" ? 1u : options_.workers)) {
        if (child_ > 0) {
            int status = 0;
            if (::waitpid(child_, &status, WNOHANG) == child_) {
                child_ = -1;
                throw std::runtime_error("the worker process exited at start (is drover-worker installed?)");
            }
        }
        if (Clock::now() > deadline) throw std::runtime_error("local workers did not register within 10 s");
        std::this_thread::sleep_for(Millis(2));
    }
}

std::string LocalCluster::sink_endpoint() const {
    if (ipc_dir_.empty()) return "inproc://drover-sink-" + random_hex(6);
    return "ipc://" + ipc_dir_ + "/sink-" + random_hex(4);
}

LocalCluster::~LocalCluster() { stop_all(); }

void LocalCluster::stop_all() {
    if (child_ > 0) {
        ::kill(child_, SIGTERM);
        int status = 0;
        ::waitpid(child_, &status, 0);
        child_ = -1;
    }
    if (worker_thread_.joinable()) {
        worker_stop_.request();
        worker_thread_.join();
    }
    worker_.reset();
    broker_stop_.request();
    if (broker_thread_.joinable()) broker_thread_.join();
    broker_.reset();
    if (!ipc_dir_.empty()) {
        ::unlink((ipc_dir_ + "/backend").c_str());
        ::rmdir(ipc_dir_.c_str());  // the client removes its own sink file
        ipc_dir_.clear();
    }
}

}  // namespace drover
