#!/usr/bin/env bash
# scripts/launch.sh with a fake rank (a bash script), no build needed:
#  a) 3 ranks get RANK/WORLD_SIZE/LOCAL_RANK/MASTER_*, prefixed output, --log-dir;
#  b) a failing rank stops the others at once, exit code of the failure;
#  c) SIGTERM to the launcher reaches every rank once, exit 0;
#  d) --nnodes 2 --node-rank 1: global ranks 2 and 3 of 4;
#  e) usage errors: one line, exit 2;  f) SIGKILL after --grace-s.
# Usage: test_launch.sh [SOURCE_DIR]   (default: $LIGER_SOURCE_DIR, else this checkout)
set -uo pipefail
SRC=${1:-${LIGER_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}}
LAUNCH=$SRC/scripts/launch.sh
failures=0
work=$(mktemp -d)
bg_pids=()
cleanup() {
  for p in "${bg_pids[@]}"; do kill -9 "$p" 2> /dev/null; done
  for f in "$work"/pid.*; do [ -f "$f" ] && kill -9 "$(cat "$f")" 2> /dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL $*"; failures=$((failures + 1)); }
ok() { echo "ok   $*"; }

# The fake rank: records its environment, then behaves as $FAKE_MODE says.
# Every process it starts writes its pid to $work/pid.* so that the test can
# tell whether one survived.
fake=$work/fake_rank.sh
cat > "$fake" << 'EOF'
#!/usr/bin/env bash
out=$FAKE_DIR/env.$RANK
echo "RANK=$RANK WORLD_SIZE=$WORLD_SIZE LOCAL_RANK=$LOCAL_RANK LOCAL_WORLD_SIZE=$LOCAL_WORLD_SIZE MASTER_ADDR=$MASTER_ADDR MASTER_PORT=$MASTER_PORT" > "$out"
echo $$ > "$FAKE_DIR/pid.rank.$RANK"
echo "hello from rank $RANK"
echo "to stderr from rank $RANK" >&2
sleep_60() { sleep 60 & echo $! > "$FAKE_DIR/pid.sleep.$RANK"; wait $!; }
case ${FAKE_MODE:-} in
  fail)       # rank 1 fails with 3, the others would sleep for a minute
    if [ "$RANK" = 1 ]; then sleep 0.3; echo "rank 1 fails" >&2; exit 3; fi
    sleep_60 ;;
  term)       # save-and-exit-0 on SIGTERM, like liger-train
    trap 'echo term >> "$FAKE_DIR/term.$RANK"; exit 0' TERM
    touch "$FAKE_DIR/ready.$RANK"
    sleep_60
    exit 9 ;;  # not reached when SIGTERM arrives
  stubborn)   # rank 0 fails; rank 1 ignores SIGTERM
    if [ "$RANK" = 0 ]; then sleep 0.5; exit 4; fi
    trap 'echo "ignoring SIGTERM"' TERM
    touch "$FAKE_DIR/ready.$RANK"
    for _ in $(seq 1 300); do sleep 0.2; done ;;
esac
exit 0
EOF
chmod +x "$fake"
export FAKE_DIR=$work

# field KEY FILE: the value of KEY=... in a one-line env file
field() { tr ' ' '\n' < "$2" | sed -n "s/^$1=//p"; }
running() {  # PID: runs and is not a zombie (an orphan's exit may wait for init to reap it)
  local stat
  kill -0 "$1" 2> /dev/null || return 1
  [ -r "/proc/$1/stat" ] || return 0
  read -r stat < "/proc/$1/stat" 2> /dev/null || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}
survivors() {  # pids recorded in pid.* that still run
  local f p
  for f in "$work"/pid.*; do
    [ -f "$f" ] || continue
    p=$(cat "$f")
    running "$p" && echo "$p($(basename "$f"))"
  done
}
reset() { rm -f "$work"/env.* "$work"/pid.* "$work"/ready.* "$work"/term.*; }

# --- a) three local ranks ----------------------------------------------------
reset
out=$(FAKE_MODE=ok timeout 30 bash "$LAUNCH" --nproc 3 --log-dir "$work/logs" -- "$fake" 2>&1); code=$?
problems=""
for r in 0 1 2; do
  f=$work/env.$r
  [ -f "$f" ] || { problems+=" rank $r did not run;"; continue; }
  [ "$(field RANK "$f")" = $r ] || problems+=" RANK of rank $r is '$(field RANK "$f")';"
  [ "$(field WORLD_SIZE "$f")" = 3 ] || problems+=" WORLD_SIZE of rank $r is '$(field WORLD_SIZE "$f")';"
  [ "$(field LOCAL_RANK "$f")" = $r ] || problems+=" LOCAL_RANK of rank $r is '$(field LOCAL_RANK "$f")';"
  [ "$(field LOCAL_WORLD_SIZE "$f")" = 3 ] || problems+=" LOCAL_WORLD_SIZE of rank $r;"
  [ "$(field MASTER_ADDR "$f")" = 127.0.0.1 ] || problems+=" MASTER_ADDR of rank $r is '$(field MASTER_ADDR "$f")';"
  [[ $(field MASTER_PORT "$f") =~ ^[0-9]+$ ]] || problems+=" MASTER_PORT of rank $r is '$(field MASTER_PORT "$f")';"
  grep -qx "\[rank $r\] hello from rank $r" <<< "$out" || problems+=" no '[rank $r] hello' line;"
  grep -qx "\[rank $r\] to stderr from rank $r" <<< "$out" || problems+=" rank $r's stderr is not prefixed;"
  grep -qx "hello from rank $r" "$work/logs/rank-$r.log" 2> /dev/null || problems+=" $work/logs/rank-$r.log lacks the output;"
done
ports=$(cat "$work"/env.* 2> /dev/null | tr ' ' '\n' | grep '^MASTER_PORT=' | sort -u | wc -l)
[ "$ports" = 1 ] || problems+=" the ranks got $ports different MASTER_PORTs;"
if [ $code -eq 0 ] && [ -z "$problems" ]; then
  ok "a) 3 ranks: RANK 0..2, WORLD_SIZE 3, LOCAL_RANK, MASTER_ADDR:PORT $(field MASTER_PORT "$work/env.0"), prefixed output, --log-dir"
else
  fail "a) 3 ranks: exit $code;$problems"; echo "$out" | tail -8
fi

# --- b) a failing rank stops the others ----------------------------------------
reset
start=$SECONDS
out=$(FAKE_MODE=fail timeout 60 bash "$LAUNCH" --nproc 3 -- "$fake" 2>&1); code=$?
took=$((SECONDS - start))
sleep 0.2
left=$(survivors)
if [ $code -eq 3 ] && [ $took -le 10 ] && [ -z "$left" ] && grep -q "rank 1 failed with exit code 3" <<< "$out"; then
  ok "b) rank 1 exits 3: launch.sh exits 3 in ${took}s, no rank or sleep left"
else
  fail "b) failing rank: exit $code (wanted 3) after ${took}s, still running: '${left}'"; echo "$out" | tail -8
fi

# --- c) SIGTERM reaches every rank once ---------------------------------------
reset
FAKE_MODE=term bash "$LAUNCH" --nproc 3 -- "$fake" > "$work/c.log" 2>&1 &
launcher=$!
bg_pids+=($launcher)
for _ in $(seq 1 100); do
  [ "$(ls "$work"/ready.* 2> /dev/null | wc -l)" -eq 3 ] && break
  sleep 0.1
done
start=$SECONDS
kill -TERM $launcher
# wait returns early when the launcher is still running after 30 s (then it fails below)
( sleep 30; kill -9 $launcher 2> /dev/null ) &
watchdog=$!
wait $launcher; code=$?
kill $watchdog 2> /dev/null; wait $watchdog 2> /dev/null
took=$((SECONDS - start))
problems=""
for r in 0 1 2; do
  [ "$(cat "$work/term.$r" 2> /dev/null | wc -l)" -eq 1 ] \
    || problems+=" rank $r got SIGTERM $(cat "$work/term.$r" 2> /dev/null | wc -l) times;"
done
left=$(survivors)
if [ $code -eq 0 ] && [ -z "$problems" ] && [ -z "$left" ] && [ $took -le 10 ]; then
  ok "c) SIGTERM to launch.sh: every rank got it once and exited 0, launch.sh exits 0 in ${took}s"
else
  fail "c) SIGTERM: exit $code after ${took}s;$problems still running: '${left}'"; tail -8 "$work/c.log"
fi

# --- d) the second of two nodes --------------------------------------------------
reset
out=$(FAKE_MODE=ok timeout 30 bash "$LAUNCH" --nnodes 2 --node-rank 1 --nproc 2 --master 127.0.0.1:29555 -- "$fake" 2>&1)
code=$?
got=$(for r in 2 3; do [ -f "$work/env.$r" ] && cat "$work/env.$r"; done)
want="RANK=2 WORLD_SIZE=4 LOCAL_RANK=0 LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29555
RANK=3 WORLD_SIZE=4 LOCAL_RANK=1 LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29555"
if [ $code -eq 0 ] && [ "$got" = "$want" ] && ! ls "$work"/env.[01] > /dev/null 2>&1; then
  ok "d) --nnodes 2 --node-rank 1 --nproc 2: RANK 2,3 of WORLD_SIZE 4, LOCAL_RANK 0,1"
else
  fail "d) node rank 1: exit $code, got: $got"; echo "$out" | tail -5
fi

# --- e) usage errors ---------------------------------------------------------------
# usage NAME PATTERN -- ARGS...: exit 2 and one line matching PATTERN (grep -E)
usage() {
  local name=$1 pattern=$2
  shift 3
  local out code
  out=$(timeout 10 bash "$LAUNCH" "$@" 2>&1); code=$?
  if [ $code -ne 2 ]; then fail "e) $name: exit $code, wanted 2: $out"; return; fi
  if [ "$(printf '%s\n' "$out" | wc -l)" -ne 1 ] || ! grep -Eq -- "$pattern" <<< "$out"; then
    fail "e) $name: wanted one line matching /$pattern/, got: $out"; return
  fi
  ok "e) $name: $(cut -c1-90 <<< "$out")"
}
reset
usage "missing --nproc" "--nproc is required" -- -- "$fake"
usage "non-numeric --nproc" "--nproc must be a positive integer, got 'two'" -- --nproc two -- "$fake"
usage "zero --nproc" "--nproc must be a positive integer" -- --nproc 0 -- "$fake"
usage "non-numeric --nnodes" "--nnodes must be a positive integer, got 'x'" -- --nproc 1 --nnodes x -- "$fake"
usage "node rank >= nnodes" "--node-rank 2 is out of range.*0\.\.1" -- \
  --nproc 1 --nnodes 2 --node-rank 2 --master 127.0.0.1:29555 -- "$fake"
usage "several nodes need --master" "--master .*required with --nnodes 2" -- --nproc 1 --nnodes 2 -- "$fake"
usage "bad port" "port of --master must be 1\.\.65535, got 'http'" -- --nproc 1 --master host:http -- "$fake"
usage "non-numeric --grace-s" "--grace-s must be a whole number" -- --nproc 1 --grace-s soon -- "$fake"
usage "option without a value" "--nproc needs a value" -- --nproc
usage "unknown option" "unknown option '--nprocs'" -- --nprocs 2 -- "$fake"
usage "nothing to run" "nothing to run after --" -- --nproc 2 --
usage "program not executable" "is not an executable file" -- --nproc 1 -- "$work/missing.sh"
[ -z "$(ls "$work"/env.* 2> /dev/null)" ] || fail "e) a usage error still started a rank"

# --- f) SIGKILL after the grace period -----------------------------------------
reset
start=$SECONDS
out=$(FAKE_MODE=stubborn timeout 60 bash "$LAUNCH" --nproc 2 --grace-s 2 -- "$fake" 2>&1); code=$?
took=$((SECONDS - start))
sleep 0.2
left=$(survivors)
if [ $code -eq 4 ] && [ $took -ge 2 ] && [ $took -le 10 ] && [ -z "$left" ]; then
  ok "f) a rank that ignores SIGTERM is killed after --grace-s 2 (${took}s), exit 4"
else
  fail "f) grace: exit $code (wanted 4) after ${took}s, still running: '${left}'"; echo "$out" | tail -5
fi

if [ $failures -ne 0 ]; then echo "$failures launch check(s) failed"; exit 1; fi
echo "all launch checks passed"
