#!/usr/bin/env bash
# torchrun-style launcher: starts the local ranks of one node with RANK,
# WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT set,
# prefixes their output with [rank R], forwards SIGINT/SIGTERM to them, and
# stops every rank as soon as one fails (exit code: the first failure's).
#
#   scripts/launch.sh --nproc N [--nnodes M --node-rank R --master ADDR:PORT]
#                     [--log-dir DIR] [--grace-s S] -- [PROGRAM] ARGS...
# Without PROGRAM (the first word after -- is an option), build/apps/liger-train runs.
set -uo pipefail

usage() { echo "launch.sh: $*; usage: launch.sh --nproc N [--nnodes M --node-rank R --master ADDR:PORT] [--log-dir DIR] [--grace-s S] -- [PROGRAM] ARGS..." >&2; exit 2; }
is_count() { [[ $1 =~ ^[0-9]+$ ]]; }

nproc="" nnodes=1 node_rank=0 master="" log_dir="" grace=30
while [ $# -gt 0 ]; do
  case $1 in
    --nproc) nproc=${2:-}; shift 2 || usage "--nproc needs a value" ;;
    --nnodes) nnodes=${2:-}; shift 2 || usage "--nnodes needs a value" ;;
    --node-rank) node_rank=${2:-}; shift 2 || usage "--node-rank needs a value" ;;
    --master) master=${2:-}; shift 2 || usage "--master needs ADDR:PORT" ;;
    --log-dir) log_dir=${2:-}; shift 2 || usage "--log-dir needs a directory" ;;
    --grace-s) grace=${2:-}; shift 2 || usage "--grace-s needs seconds" ;;
    --) shift; break ;;
    *) usage "unknown option '$1'" ;;
  esac
done
[ -n "$nproc" ] || usage "--nproc is required"
is_count "$nproc" && [ "$nproc" -ge 1 ] || usage "--nproc must be a positive integer (got '$nproc')"
is_count "$nnodes" && [ "$nnodes" -ge 1 ] || usage "--nnodes must be a positive integer (got '$nnodes')"
is_count "$node_rank" && [ "$node_rank" -lt "$nnodes" ] || usage "--node-rank must be in 0..$((nnodes - 1)) (got '$node_rank')"
is_count "$grace" || usage "--grace-s must be a whole number of seconds (got '$grace')"
[ $# -gt 0 ] || usage "nothing to run after --"

if [ -z "$master" ]; then
  [ "$nnodes" -eq 1 ] || usage "--master ADDR:PORT is required with --nnodes > 1"
  # A free port on this host (the kernel picks one).
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null || echo 29500)
  master="127.0.0.1:$port"
fi
[[ $master == *:* ]] || usage "--master must be ADDR:PORT (got '$master')"
master_addr=${master%:*}
master_port=${master##*:}
is_count "$master_port" || usage "the port of --master must be a number (got '$master_port')"

# The program: liger-train unless an executable is named.
if [[ $1 == -* ]]; then
  program=("$(cd "$(dirname "$0")/.." && pwd)/build/apps/liger-train")
else
  program=("$1"); shift
fi
[ -n "$log_dir" ] && mkdir -p "$log_dir"

pids=()
stop_all() {  # SIGTERM every rank still running, SIGKILL after the grace period
  local sig=$1
  for p in "${pids[@]}"; do kill -"$sig" "$p" 2>/dev/null; done
}
forward() { stop_all "$1"; }
trap 'forward INT' INT
trap 'forward TERM' TERM

world=$((nproc * nnodes))
for ((i = 0; i < nproc; i++)); do
  rank=$((node_rank * nproc + i))
  (
    trap - INT TERM
    export RANK=$rank WORLD_SIZE=$world LOCAL_RANK=$i LOCAL_WORLD_SIZE=$nproc
    export MASTER_ADDR=$master_addr MASTER_PORT=$master_port
    if [ -n "$log_dir" ]; then
      exec > >(tee "$log_dir/rank-$rank.log" | sed -u "s/^/[rank $rank] /") 2>&1
    else
      exec > >(sed -u "s/^/[rank $rank] /") 2>&1
    fi
    exec "${program[@]}" "$@"
  ) &
  pids+=($!)
done

# Wait for every rank; the first failure stops the others.
status=0
remaining=${#pids[@]}
while [ "$remaining" -gt 0 ]; do
  wait -n -p done_pid "${pids[@]}" 2>/dev/null
  code=$?
  [ -z "${done_pid:-}" ] && { [ $code -eq 127 ] && break; continue; }  # a trapped signal interrupted wait
  remaining=$((remaining - 1))
  if [ $code -ne 0 ] && [ $status -eq 0 ]; then
    status=$code
    echo "launch.sh: a rank exited with $code: stopping the others" >&2
    stop_all TERM
    ( sleep "$grace"; stop_all KILL ) &
    killer=$!
  fi
  unset done_pid
done
[ -n "${killer:-}" ] && kill "$killer" 2>/dev/null
exit $status
