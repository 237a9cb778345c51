// drover-producer: submit tasks and print their results.
#include "drover/programs/producer_main.hpp"

int main(int argc, char** argv) {
    drover::Registry tasks;  // for --inline and --local --pool threads
    drover::add_builtin_tasks(tasks);
    return drover::producer_main(argc, argv, tasks);
}
