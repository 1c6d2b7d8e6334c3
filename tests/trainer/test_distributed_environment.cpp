// Where a process stands in a job: torchrun-style and SLURM variables, SLURM's
// compressed node lists, and one-line errors for malformed values.
#include "tests/catch.h"

#include "trainer/distributed/environment.h"

#include <map>
#include <string>

using liger::trainer::distributed::detect_environment;
using liger::trainer::distributed::EnvironmentError;
using liger::trainer::distributed::expand_slurm_nodelist;
using liger::trainer::distributed::ProcessEnvironment;
using Vars = std::map<std::string, std::string>;

namespace {

ProcessEnvironment detect(const Vars& vars) {
  return detect_environment([&vars](const char* name) -> const char* {
    const auto found = vars.find(name);
    return found == vars.end() ? nullptr : found->second.c_str();
  });
}

// The message of the EnvironmentError that detect(vars) throws ("" if none).
std::string error_of(const Vars& vars) {
  try {
    detect(vars);
  } catch (const EnvironmentError& error) {
    return error.what();
  }
  return "";
}

}  // namespace

TEST_CASE("no launcher variables: one process") {
  const ProcessEnvironment env = detect({});
  CHECK(env.rank == 0);
  CHECK(env.world_size == 1);
  CHECK_FALSE(env.distributed());
  CHECK(env.source == "single");
}

TEST_CASE("torchrun variables") {
  const ProcessEnvironment env = detect({{"RANK", "5"},
                                         {"WORLD_SIZE", "8"},
                                         {"LOCAL_RANK", "1"},
                                         {"LOCAL_WORLD_SIZE", "4"},
                                         {"MASTER_ADDR", "node7"},
                                         {"MASTER_PORT", "29411"}});
  CHECK(env.source == "torchrun");
  CHECK(env.rank == 5);
  CHECK(env.world_size == 8);
  CHECK(env.local_rank == 1);
  CHECK(env.local_world_size == 4);
  CHECK(env.master_addr == "node7");
  CHECK(env.master_port == 29411);
  CHECK(env.distributed());
  CHECK(env.describe() == "rank 5 of 8 (local 1 of 4), master node7:29411, from torchrun");
}

TEST_CASE("torchrun defaults: local rank = rank, loopback master, port 29500") {
  const ProcessEnvironment env = detect({{"RANK", "1"}, {"WORLD_SIZE", "2"}});
  CHECK(env.local_rank == 1);
  CHECK(env.local_world_size == 2);
  CHECK(env.master_addr == "127.0.0.1");
  CHECK(env.master_port == 29500);
}

TEST_CASE("SLURM variables: first host is the master, the port comes from the job id") {
  const ProcessEnvironment env = detect({{"SLURM_PROCID", "9"},
                                         {"SLURM_NTASKS", "16"},
                                         {"SLURM_LOCALID", "1"},
                                         {"SLURM_NODEID", "1"},
                                         {"SLURM_TASKS_PER_NODE", "8(x2)"},
                                         {"SLURM_JOB_NODELIST", "gpu[07-08]"},
                                         {"SLURM_JOB_ID", "123456"}});
  CHECK(env.source == "slurm");
  CHECK(env.rank == 9);
  CHECK(env.world_size == 16);
  CHECK(env.local_rank == 1);
  CHECK(env.local_world_size == 8);
  CHECK(env.master_addr == "gpu07");
  CHECK(env.master_port == 20000 + 123456 % 20000);
  CHECK(env.hosts == std::vector<std::string>{"gpu07", "gpu08"});
}

TEST_CASE("SLURM: uneven tasks per node, MASTER_ADDR/MASTER_PORT override") {
  const ProcessEnvironment env = detect({{"SLURM_PROCID", "4"},
                                         {"SLURM_NTASKS", "5"},
                                         {"SLURM_LOCALID", "0"},
                                         {"SLURM_NODEID", "2"},
                                         {"SLURM_TASKS_PER_NODE", "2(x2),1"},
                                         {"SLURM_NODELIST", "a[1-2],b3"},
                                         {"MASTER_ADDR", "head"},
                                         {"MASTER_PORT", "31000"}});
  CHECK(env.local_world_size == 1);
  CHECK(env.master_addr == "head");
  CHECK(env.master_port == 31000);
}

TEST_CASE("torchrun variables win over SLURM's") {
  const ProcessEnvironment env =
      detect({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"SLURM_PROCID", "3"}, {"SLURM_NTASKS", "4"}});
  CHECK(env.source == "torchrun");
  CHECK(env.world_size == 2);
}

TEST_CASE("SLURM node lists expand as SLURM does") {
  CHECK(expand_slurm_nodelist("gpu01") == std::vector<std::string>{"gpu01"});
  CHECK(expand_slurm_nodelist("gpu[01-04,07]") ==
        std::vector<std::string>{"gpu01", "gpu02", "gpu03", "gpu04", "gpu07"});
  CHECK(expand_slurm_nodelist("a[1-2],b3,c[10-11]") ==
        std::vector<std::string>{"a1", "a2", "b3", "c10", "c11"});
  CHECK(expand_slurm_nodelist("node-[1-3]-ib") ==
        std::vector<std::string>{"node-1-ib", "node-2-ib", "node-3-ib"});
  CHECK(expand_slurm_nodelist("rack[1-2]-gpu[1-2]") ==
        std::vector<std::string>{"rack1-gpu1", "rack1-gpu2", "rack2-gpu1", "rack2-gpu2"});
  CHECK(expand_slurm_nodelist("n[8-11]") == std::vector<std::string>{"n8", "n9", "n10", "n11"});
}

TEST_CASE("malformed node lists are errors naming SLURM_JOB_NODELIST") {
  for (const std::string bad : {"gpu[01-", "gpu[3-1]", "", "gpu[]", "gpu[a-b]", "x,,y"}) {
    INFO(bad);
    try {
      expand_slurm_nodelist(bad);
      FAIL("no error");
    } catch (const EnvironmentError& error) {
      CHECK(std::string(error.what()).find("SLURM_JOB_NODELIST=" + bad) != std::string::npos);
    }
  }
}

TEST_CASE("bad values are one-line errors naming the variable") {
  CHECK(error_of({{"RANK", "2"}, {"WORLD_SIZE", "2"}}).find("RANK=2 is not in 0..1") !=
        std::string::npos);
  CHECK(error_of({{"RANK", "0x"}, {"WORLD_SIZE", "2"}}).find("RANK=0x is not an integer") !=
        std::string::npos);
  CHECK(error_of({{"RANK", "0"}, {"WORLD_SIZE", "0"}}).find("WORLD_SIZE=0") != std::string::npos);
  CHECK(
      error_of({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "3"}, {"LOCAL_WORLD_SIZE", "2"}})
          .find("LOCAL_RANK=3") != std::string::npos);
  CHECK(error_of({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "70000"}})
            .find("MASTER_PORT=70000") != std::string::npos);
  CHECK(error_of({{"SLURM_PROCID", "4"}, {"SLURM_NTASKS", "4"}}).find("SLURM_PROCID=4") !=
        std::string::npos);
  const std::string message = error_of({{"RANK", "2"}, {"WORLD_SIZE", "2"}});
  CHECK(message.find('\n') == std::string::npos);
}
