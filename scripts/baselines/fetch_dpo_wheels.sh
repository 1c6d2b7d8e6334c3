#!/usr/bin/env bash
# Downloads the wheels TRL's DPOTrainer needs beyond torch, transformers and
# triton into wheels/ (git-ignored), for a GPU machine without network:
# CPython 3.12, manylinux x86_64, no dependencies resolved (the exact list
# below, the versions scripts/baselines/trl_dpo_liger.py was run with), then
# prints their total size. Run it on a machine with network access.
#
#   bash scripts/baselines/fetch_dpo_wheels.sh [DIR]      # DIR default wheels
#
# What TRL imports: trl itself, accelerate (the Trainer), datasets (its
# Dataset) and datasets' own dependencies: dill and multiprocess, which the GPU
# machines' image lacks (about 2 MiB of wheels), and pyarrow, pandas,
# python-dateutil, xxhash and fsspec, which it has (ALL=1 fetches those too:
# about 67 MiB, pyarrow alone 52, more than one carry allows). The rest (numpy,
# packaging, psutil, pyyaml, tqdm, filelock, huggingface_hub, safetensors,
# jinja2) comes with torch and transformers. Liger-Kernel is separate:
#   pip download --no-deps liger-kernel==0.8.5 -d wheels
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR=${1:-wheels}
PIP=${PIP:-.venv/bin/pip}
[[ -x $PIP ]] || PIP="python3 -m pip"
packages=(trl==1.16.0 accelerate==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19)
if [[ ${ALL:-0} == 1 ]]; then
  packages+=(pyarrow==26.0.1 pandas==3.1.1 python-dateutil==4.0.0 xxhash==4.1.0 fsspec==2026.9.0)
fi
mkdir -p "$DIR"
# shellcheck disable=SC2086  # PIP may be "python3 -m pip"
if ! $PIP download -q --no-deps --only-binary=:all: --implementation cp --python-version 3.12 --abi cp312 \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$DIR" "${packages[@]}" > /tmp/fetch_dpo_wheels.log 2>&1; then
  echo "fetch_dpo_wheels.sh: pip download failed: $(tail -n 1 /tmp/fetch_dpo_wheels.log)" >&2
  exit 1
fi
total=0
for p in "${packages[@]}"; do
  name=${p%%==*}
  files=("$DIR"/"${name//-/_}"-"${p##*==}"-*.whl)
  file=${files[0]}
  [[ -f $file ]] || { echo "fetch_dpo_wheels.sh: no wheel for $p in $DIR" >&2; exit 1; }
  size=$(stat -c %s "$file")
  total=$((total + size))
  awk -v f="$(basename "$file")" -v b="$size" 'BEGIN { printf "%-60s %6.1f MiB\n", f, b / 1048576 }'
done
awk -v b="$total" -v d="$DIR" -v n="${#packages[@]}" 'BEGIN { printf "total: %.1f MiB in %s (%d wheels)\n", b / 1048576, d, n }'
