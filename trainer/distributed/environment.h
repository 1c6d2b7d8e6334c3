// Where this process stands in a distributed job, read from the environment:
// torchrun style (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR,
// MASTER_PORT) or SLURM (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID,
// SLURM_JOB_NODELIST, ...). With neither, a single process. Torch-free.
#pragma once

#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace liger::trainer::distributed {

struct ProcessEnvironment {
  int64_t rank = 0, world_size = 1, local_rank = 0, local_world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::string source = "single";   // "torchrun", "slurm" or "single"
  std::vector<std::string> hosts;  // SLURM: the expanded node list; else empty
  bool distributed() const { return world_size > 1; }
  // "rank 3 of 8 (local 1 of 4), master gpu01:29500, from slurm"
  std::string describe() const;
};

// A variable that is malformed or inconsistent: one line naming it, its value
// and what to do.
class EnvironmentError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

using EnvLookup = std::function<const char*(const char*)>;  // nullptr when unset

ProcessEnvironment detect_environment(const EnvLookup& lookup);
ProcessEnvironment detect_environment();  // from the process environment

// SLURM's compressed host lists: "gpu[01-04,07]", "a[1-2],b3", "rack[1-2]-gpu[1-2]".
std::vector<std::string> expand_slurm_nodelist(const std::string& nodelist);

}  // namespace liger::trainer::distributed
