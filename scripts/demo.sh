#!/usr/bin/env bash
# Set up, then train a tiny Skip-DiT on scikit-learn's 8x8 digits and sample from it.
# WORKDIR picks the run folder (rerunning resumes); extra arguments go to main,
# e.g. `bash scripts/demo.sh --config.train.num_steps=500`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

exec "$PY" -m skipdit_jax.main --config=configs/digits_skipdit.py \
  --workdir="${WORKDIR:-workdirs/digits_skipdit}" "$@"
