#!/usr/bin/env bash
# torchrun-style launcher: starts the local ranks of one node with RANK,
# WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT set,
# prefixes their output with "[rank R] " (and with --log-dir also writes it to
# DIR/rank-R.log), forwards SIGINT/SIGTERM to them, and stops every rank as
# soon as one fails. Exit code: 0, or the first non-zero exit code of a rank.
#
#   scripts/launch.sh --nproc N [--nnodes M --node-rank R --master ADDR[:PORT]]
#                     [--log-dir DIR] [--grace-s S] -- [PROGRAM] ARGS...
#
#   scripts/launch.sh --nproc 8 -- --config configs/llama3_8b.yaml      # liger-train
#   scripts/launch.sh --nproc 2 -- build/apps/liger-train --config ...  # any program
#   scripts/launch.sh --nproc 8 --nnodes 2 --node-rank 1 --master host0:29500 -- --config ...
#
# When the first word after -- is an option, build/apps/liger-train runs with
# all the words as its arguments. Without --master on one node, a free port on
# 127.0.0.1 is picked (29500 when none can be found); with --nnodes > 1,
# --master is required. Other variables (CUDA_VISIBLE_DEVICES,
# CUDA_DEVICE_MAX_CONNECTIONS, OMP_NUM_THREADS, ...) pass through untouched.
#
# Signals: every rank runs in its own process group (job control), so a Ctrl-C
# at the terminal reaches the ranks once, through this script, not twice
# (liger-train saves and exits 0 on the first SIGINT/SIGTERM and dies on the
# second). A second signal is forwarded too; a third one sends SIGKILL.
# When a rank fails, the others get SIGTERM, and SIGKILL after --grace-s
# seconds (default 30). Signals go to a rank's whole process group, so
# processes a rank started go with it.
#
# Needs bash >= 5.1 (wait -n -p) and coreutils/sed; no Python.
set -uo pipefail

me=launch.sh
die_usage() {
  echo "$me: $*. Usage: $me --nproc N [--nnodes M --node-rank R --master ADDR[:PORT]] [--log-dir DIR] [--grace-s S] -- [PROGRAM] ARGS..." >&2
  exit 2
}
if ((BASH_VERSINFO[0] < 5 || (BASH_VERSINFO[0] == 5 && BASH_VERSINFO[1] < 1))); then
  echo "$me: needs bash 5.1 or newer (wait -n -p); this is bash $BASH_VERSION" >&2
  exit 2
fi
is_uint() { [[ $1 =~ ^[0-9]+$ ]] && [ ${#1} -le 9 ]; }

# --- arguments -------------------------------------------------------------
nproc="" nnodes=1 node_rank=0 master="" log_dir="" grace=30
while [ $# -gt 0 ]; do
  opt=$1
  case $opt in
    --) shift; break ;;
    --*=*) value=${opt#*=}; opt=${opt%%=*}; shift ;;
    --nproc | --nnodes | --node-rank | --master | --log-dir | --grace-s)
      [ $# -ge 2 ] || die_usage "$opt needs a value"
      value=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die_usage "unknown option '$opt' (the program and its arguments go after --)" ;;
  esac
  case $opt in
    --nproc) nproc=$value ;;
    --nnodes) nnodes=$value ;;
    --node-rank) node_rank=$value ;;
    --master) master=$value ;;
    --log-dir) log_dir=$value ;;
    --grace-s) grace=$value ;;
    *) die_usage "unknown option '$opt'" ;;
  esac
done
[ -n "$nproc" ] || die_usage "--nproc is required"
is_uint "$nproc" && [ "$nproc" -ge 1 ] || die_usage "--nproc must be a positive integer, got '$nproc'"
is_uint "$nnodes" && [ "$nnodes" -ge 1 ] || die_usage "--nnodes must be a positive integer, got '$nnodes'"
is_uint "$node_rank" || die_usage "--node-rank must be a non-negative integer, got '$node_rank'"
[ "$node_rank" -lt "$nnodes" ] || die_usage "--node-rank $node_rank is out of range: with --nnodes $nnodes it must be 0..$((nnodes - 1))"
is_uint "$grace" || die_usage "--grace-s must be a whole number of seconds, got '$grace'"
[ $# -gt 0 ] || die_usage "nothing to run after --"

# A TCP port nobody on this host uses (listening or connected), from
# /proc/net/tcp{,6}; below the usual ephemeral range (32768+). Prints nothing
# when none is found or /proc is not there.
free_port() {
  local -A used=()
  local f sl local_addr rest port try
  for f in /proc/net/tcp /proc/net/tcp6; do
    [ -r "$f" ] || continue
    while read -r sl local_addr rest; do
      [[ $local_addr == *:* ]] || continue
      used[$((16#${local_addr##*:}))]=1
    done < "$f"
  done
  [ ${#used[@]} -gt 0 ] || [ -r /proc/net/tcp ] || return 0
  for ((try = 0; try < 200; try++)); do
    port=$((20000 + RANDOM % 12000))
    [ -z "${used[$port]:-}" ] && { echo "$port"; return 0; }
  done
}

if [ -z "$master" ]; then
  [ "$nnodes" -eq 1 ] || die_usage "--master ADDR:PORT (the host of node rank 0) is required with --nnodes $nnodes"
  port=$(free_port)
  master=127.0.0.1:${port:-29500}
fi
if [[ $master =~ ^\[(.*)\](:([0-9]+))?$ ]]; then  # [IPv6]:PORT
  master_addr=${BASH_REMATCH[1]} master_port=${BASH_REMATCH[3]:-29500}
elif [[ $master == *:*:* ]]; then                  # a bare IPv6 address
  master_addr=$master master_port=29500
elif [[ $master == *:* ]]; then
  master_addr=${master%:*} master_port=${master##*:}
else
  master_addr=$master master_port=29500
fi
[ -n "$master_addr" ] || die_usage "--master needs a host, got '$master'"
is_uint "$master_port" && [ "$master_port" -ge 1 ] && [ "$master_port" -le 65535 ] \
  || die_usage "the port of --master must be 1..65535, got '$master_port'"

# --- the program: liger-train unless an executable is named ------------------
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ $1 == -* ]]; then
  program=$root/build/apps/liger-train
  [ -x "$program" ] || die_usage "$program is not built (scripts/setup.sh builds it), or name the program after --"
elif [[ $1 == */* ]]; then
  [ -f "$1" ] && [ -x "$1" ] || die_usage "'$1' is not an executable file (options for liger-train start with -, e.g. -- --config FILE)"
  program=$1; shift
elif type -P -- "$1" > /dev/null; then
  program=$1; shift
else
  die_usage "'$1' is not a program on PATH (options for liger-train start with -, e.g. -- --config FILE)"
fi
if [ -n "$log_dir" ]; then
  mkdir -p -- "$log_dir" || die_usage "cannot create --log-dir '$log_dir'"
fi

# --- start -------------------------------------------------------------------
world=$((nproc * nnodes))
first=$((node_rank * nproc))
fifo_dir=$(mktemp -d "${TMPDIR:-/tmp}/liger-launch.XXXXXX") || { echo "$me: cannot create a temporary directory" >&2; exit 1; }
rank_pids=()       # one per local rank; each is the leader of its own process group
declare -A rank_of # pid -> global rank
printer_pids=()    # the "[rank R] " prefixers, process group leaders too
killer=""          # a timer (its own process group) that sends SIGKILL
signals=0

live_ranks() {  # pids of the ranks still running
  local p
  for p in "${rank_pids[@]}"; do [ -n "${rank_of[$p]:-}" ] && echo "$p"; done
}
signal_ranks() {  # SIG: to the process group of every rank still running
  local p
  for p in $(live_ranks); do kill -s "$1" -- "-$p" 2> /dev/null || kill -s "$1" "$p" 2> /dev/null; done
}
on_signal() {
  signals=$((signals + 1))
  if [ $signals -ge 3 ]; then
    echo "$me: SIG$1 again: killing the ranks" >&2
    signal_ranks KILL
  else
    echo "$me: SIG$1: forwarding it to the ranks" >&2
    signal_ranks "$1"
  fi
}
cleanup() {
  trap '' INT TERM
  signal_ranks TERM  # only when this script ends early: normally none is left
  [ -n "$killer" ] && kill -s KILL -- "-$killer" 2> /dev/null
  rm -rf -- "$fifo_dir"
}
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM
trap cleanup EXIT

echo "$me: ranks $first..$((first + nproc - 1)) of $world on node $node_rank/$nnodes, master $master_addr:$master_port: $program $*" >&2
# Each background job below is started with job control on (set -m), which
# makes it the leader of its own process group; foreground commands run with
# it off, so this script never takes the terminal from anyone.
for ((i = 0; i < nproc; i++)); do
  rank=$((first + i))
  fifo=$fifo_dir/rank-$rank
  mkfifo -- "$fifo" || { echo "$me: cannot create a FIFO in $fifo_dir" >&2; exit 1; }
  # The prefixer ignores INT/TERM, so it prints what a stopping rank still
  # writes; it ends when the rank's output closes. sed -u: line by line.
  set -m
  if [ -n "$log_dir" ]; then
    (trap '' INT TERM; tee -- "$log_dir/rank-$rank.log" < "$fifo" | sed -u "s/^/[rank $rank] /") &
  else
    (trap '' INT TERM; exec sed -u "s/^/[rank $rank] /" < "$fifo") &
  fi
  printer_pids+=($!)
  (
    trap - INT TERM EXIT
    export RANK=$rank WORLD_SIZE=$world LOCAL_RANK=$i LOCAL_WORLD_SIZE=$nproc
    export GROUP_RANK=$node_rank NODE_RANK=$node_rank
    export MASTER_ADDR=$master_addr MASTER_PORT=$master_port
    exec "$program" "$@"
  ) > "$fifo" 2>&1 < /dev/null &
  rank_pids+=($!)
  rank_of[$!]=$rank
  set +m
done

# --- wait: the first failure stops the others ----------------------------------
status=0
left=$nproc
start_killer() {  # SECONDS PGID...: SIGKILL to the groups after SECONDS, unless killed first
  local seconds=$1
  shift
  set -m  # its own process group: killing the group takes its sleep along
  (sleep "$seconds"; for p in "$@"; do kill -s KILL -- "-$p" 2> /dev/null; done) &
  killer=$!
  set +m
  disown "$killer"  # no job notice when it is killed
}
rank_ended() {  # PID EXIT_CODE
  local pid=$1 code=$2 rank=${rank_of[$1]:-?} why
  unset "rank_of[$pid]"
  left=$((left - 1))
  { [ "$code" -eq 0 ] || [ $status -ne 0 ]; } && return 0
  status=$code
  why="exit code $code"
  [ "$code" -gt 128 ] && why="$why (SIG$(kill -l $((code - 128)) 2> /dev/null || echo $((code - 128))))"
  if [ $left -eq 0 ]; then
    echo "$me: rank $rank failed with $why" >&2
  else
    echo "$me: rank $rank failed with $why: stopping the other ranks (SIGTERM, SIGKILL after ${grace}s)" >&2
    signal_ranks TERM
    start_killer "$grace" $(live_ranks)
  fi
}
while [ $left -gt 0 ]; do
  # bash drops some finished jobs (those a signal killed) from the set that
  # wait -n watches; a plain wait still knows their exit codes.
  for p in $(live_ranks); do
    if ! kill -0 "$p" 2> /dev/null; then
      wait "$p"
      rank_ended "$p" $?
    fi
  done
  [ $left -gt 0 ] || break
  done_pid=""
  mapfile -t live < <(live_ranks)
  wait -n -p done_pid "${live[@]}" 2> /dev/null
  code=$?
  # Without done_pid, a signal interrupted the wait (on_signal forwarded it)
  # or a rank was dropped as above: look again.
  [ -n "${done_pid:-}" ] && rank_ended "$done_pid" $code
done
[ -n "$killer" ] && kill -s KILL -- "-$killer" 2> /dev/null

# Let the prefixers print the last lines; a process a rank left behind may
# still hold the rank's output open, so give them 5 s at most.
start_killer 5 "${printer_pids[@]}"
for p in "${printer_pids[@]}"; do
  while ! wait "$p" 2> /dev/null && kill -0 "$p" 2> /dev/null; do :; done  # again after a signal
done
exit $status
