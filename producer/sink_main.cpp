// drover-sink: collect results of tasks submitted with --reply-to.
#include "drover/producer_main.hpp"

int main(int argc, char** argv) { return drover::sink_main(argc, argv); }
