# Sourced by the app tests: same_losses A B checks that the per-step losses
# of two metrics.jsonl files agree within a relative 1e-5 (prints the worst).
same_losses() {
  python3 - "$1" "$2" <<'PY'
import json, sys
a = [json.loads(l)["loss"] for l in open(sys.argv[1])]
b = [json.loads(l)["loss"] for l in open(sys.argv[2])]
assert len(a) == len(b) and a, f"{len(a)} vs {len(b)} steps"
worst = max(abs(x - y) / abs(y) for x, y in zip(a, b))
print(f"{len(a)} steps, max relative loss difference {worst:.2e}")
sys.exit(0 if worst <= 1e-5 else 1)
PY
}
