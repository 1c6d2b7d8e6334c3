#!/usr/bin/env bash
# The frame the bench drivers' checks share (sourced): a work folder removed at
# exit, one "ok" or "FAIL" line per check, the count of failures, and a test
# for the fixed texts a command's output must hold.
failures=0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL $*"; failures=$((failures + 1)); }
ok() { echo "ok   $*"; }
# holds TEXT...: whether $out contains every TEXT (fixed strings).
holds() {
  local text
  for text in "$@"; do grep -qF -- "$text" <<< "$out" || return 1; done
}
# finish: prints the count; the status is 0 only without failures.
finish() {
  echo "$failures failure(s)"
  [[ $failures -eq 0 ]]
}
