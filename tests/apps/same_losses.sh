# Sourced by the app tests: same_losses A B [TOLERANCE] checks that the
# per-step losses of two metrics.jsonl files agree within a relative TOLERANCE
# (default 1e-5; 0: equal to the last bit) and prints the worst difference.
same_losses() {
  python3 - "$1" "$2" "${3:-1e-5}" <<'PY'
import json, sys
a = [json.loads(l)["loss"] for l in open(sys.argv[1])]
b = [json.loads(l)["loss"] for l in open(sys.argv[2])]
assert len(a) == len(b) and a, f"{len(a)} vs {len(b)} steps"
worst = max(abs(x - y) / abs(y) for x, y in zip(a, b))
print(f"{len(a)} steps, max relative loss difference {worst:.2e}")
sys.exit(0 if worst <= float(sys.argv[3]) else 1)
PY
}
