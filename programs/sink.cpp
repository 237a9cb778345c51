// drover-sink: collect results of tasks submitted with --reply-to.
#include "drover/programs/producer_main.hpp"

int main(int argc, char** argv) { return drover::sink_main(argc, argv); }
