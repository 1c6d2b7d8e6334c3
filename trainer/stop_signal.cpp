#include "trainer/stop_signal.h"

#include <csignal>

namespace liger::trainer {
namespace {

volatile std::sig_atomic_t g_signal = 0;

extern "C" void on_stop_signal(int number) {
  g_signal = number;
  // Next time, the default action (terminate).
  std::signal(number, SIG_DFL);
}

}  // namespace

void install_stop_handlers() {
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
}

bool stop_requested() {
  return g_signal != 0;
}
int stop_signal_number() {
  return g_signal;
}

}  // namespace liger::trainer
