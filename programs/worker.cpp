// drover-worker: a worker with the built-in tasks.
#include "drover/programs/worker_main.hpp"

int main(int argc, char** argv) {
    drover::Registry tasks;
    drover::add_builtin_tasks(tasks);
    return drover::worker_main(argc, argv, tasks);
}
