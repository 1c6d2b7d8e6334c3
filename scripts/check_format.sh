#!/usr/bin/env bash
# Checks that every C++ and CUDA file of the repository is formatted by
# .clang-format (clang-format 14, Debian 12's; scripts/setup.sh installs it).
#   bash scripts/check_format.sh          exit 1 and list the files that differ
#   bash scripts/check_format.sh --fix    rewrite them in place
# Another clang-format major version formats some constructs differently, so
# the check is skipped with a message when clang-format 14 is not found.
set -euo pipefail
cd "$(dirname "$0")/.."

tool=""
for candidate in clang-format-14 clang-format; do
  if command -v "$candidate" >/dev/null 2>&1 &&
     "$candidate" --version | grep -q 'version 14\.'; then
    tool=$candidate
    break
  fi
done
if [ -z "$tool" ]; then
  echo "[format] skipped: clang-format 14 not found (apt-get install clang-format on Debian 12)"
  exit 0
fi

mapfile -t files < <(git ls-files '*.cpp' '*.h' '*.cu' '*.cuh' '*.hpp' 2>/dev/null ||
                     find apps trainer models kernels data tests examples \
                       \( -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \) 2>/dev/null)
if [ "${1:-}" = "--fix" ]; then
  "$tool" -i "${files[@]}"
  echo "[format] formatted ${#files[@]} files"
  exit 0
fi

unformatted=()
for f in "${files[@]}"; do
  "$tool" --dry-run --Werror "$f" >/dev/null 2>&1 || unformatted+=("$f")
done
if [ ${#unformatted[@]} -gt 0 ]; then
  echo "[format] ${#unformatted[@]} file(s) differ from .clang-format; run: bash scripts/check_format.sh --fix"
  printf '  %s\n' "${unformatted[@]}"
  exit 1
fi
echo "[format] ${#files[@]} files formatted as .clang-format says"
