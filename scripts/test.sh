#!/usr/bin/env bash
# Sets up (scripts/setup.sh), checks the C++ formatting (scripts/check_format.sh)
# and runs every test with ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/check_format.sh
cd "${BUILD_DIR:-build}"
ctest --output-on-failure --timeout 900 "$@"
