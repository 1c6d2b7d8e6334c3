// SIGINT/SIGTERM handling for preemption (SLURM sends SIGTERM): the first
// signal asks the loop to finish its step, save and exit 0; a second one
// restores the default action, so pressing Ctrl-C twice still kills at once.
#pragma once

namespace liger::trainer {

void install_stop_handlers();
// True once SIGINT or SIGTERM has arrived.
bool stop_requested();
// The signal that asked to stop (0 if none).
int stop_signal_number();

}  // namespace liger::trainer
