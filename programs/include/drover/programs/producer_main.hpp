// The drover-producer and drover-sink command lines, callable from a user's main.
#pragma once

#include "drover/worker/registry.hpp"

namespace drover {

// drover-producer: submit / map against --broker, --local N or --inline.
// `registry` serves --inline and --local --pool threads. Returns the exit status.
int producer_main(int argc, char** argv, const Registry& registry);

// drover-sink: collect results pushed to --bind and print them as JSON lines.
int sink_main(int argc, char** argv);

}  // namespace drover
