#!/usr/bin/env bash
# Train (or sample / compile) on a Cloud TPU pod slice: create or reuse the TPU VM, copy
# and install this checkout on every worker, run the same command on all workers with
# --worker=all (logs stream here, each worker also appends to ~/skipdit.log), optionally
# delete the VM afterwards. JAX finds the other workers itself; the command gets
# --config.distributed.enabled=True so every worker joins before touching the devices.
#
#   launch/tpu_pod.sh --name NAME --zone ZONE [--accelerator v5p-64] [--version VERSION]
#       [--project PROJECT] [--create] [--no-install] [--teardown] [--dry-run]
#       -- --config=configs/imagenet256_skipdit_xl2.py --workdir=gs://BUCKET/run ...
#
# --dry-run prints every command instead of running it.
set -euo pipefail

NAME="" ZONE="" ACCEL="v5p-64" VERSION="tpu-ubuntu2204-base" PROJECT=""
CREATE=0 INSTALL=1 TEARDOWN=0 DRY=0 REMOTE_DIR="skipdit-jax"
usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) NAME="$2"; shift 2 ;;
    --zone) ZONE="$2"; shift 2 ;;
    --accelerator) ACCEL="$2"; shift 2 ;;
    --version) VERSION="$2"; shift 2 ;;
    --project) PROJECT="$2"; shift 2 ;;
    --create) CREATE=1; shift ;;
    --no-install) INSTALL=0; shift ;;
    --teardown) TEARDOWN=1; shift ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) usage 0 ;;
    --) shift; break ;;
    *) echo "tpu_pod.sh: unknown option $1 (arguments for main.py go after --)" >&2; usage ;;
  esac
done
[[ -n "$NAME" && -n "$ZONE" ]] || { echo "tpu_pod.sh: --name and --zone are required" >&2; usage; }
[[ $# -gt 0 ]] || { echo "tpu_pod.sh: give main.py's arguments after --, e.g. -- --config=configs/imagenet256_skipdit_xl2.py --workdir=gs://b/run" >&2; usage; }

HERE="$(cd "$(dirname "$0")/.." && pwd)"
TARBALL="/tmp/skipdit-jax-$NAME.tgz"
GC=(gcloud compute tpus tpu-vm)
LOC=(--zone="$ZONE")
[[ -n "$PROJECT" ]] && LOC+=(--project="$PROJECT")

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"  # shq
run() {  # print (dry run) or execute one command
  if [[ $DRY -eq 1 ]]; then shq "$@"; echo; else "$@"; fi
}

# 1. create the VM unless it exists
if [[ $DRY -eq 1 ]] || ! "${GC[@]}" describe "$NAME" "${LOC[@]}" >/dev/null 2>&1; then
  if [[ $CREATE -eq 1 ]]; then
    run "${GC[@]}" create "$NAME" "${LOC[@]}" --accelerator-type="$ACCEL" --version="$VERSION"
  elif [[ $DRY -eq 0 ]]; then
    echo "tpu_pod.sh: TPU VM $NAME not found in $ZONE; pass --create to create it" >&2; exit 1
  fi
fi

# 2. copy this checkout to every worker and install it (with JAX for TPU)
if [[ $INSTALL -eq 1 ]]; then
  run tar czf "$TARBALL" -C "$HERE" --exclude=.git --exclude=.venv --exclude=__pycache__ .
  run "${GC[@]}" scp "$TARBALL" "$NAME:skipdit-jax.tgz" "${LOC[@]}" --worker=all
  run "${GC[@]}" ssh "$NAME" "${LOC[@]}" --worker=all --command="mkdir -p $REMOTE_DIR && tar xzf skipdit-jax.tgz -C $REMOTE_DIR && pip install -q -U 'jax[tpu]' -e './$REMOTE_DIR[gcs]'"
fi

# 3. the same command on all workers; output streams back here (pipefail: tee must not
#    hide a failed run's exit status)
CMD="set -o pipefail; cd $REMOTE_DIR && python3 -m skipdit_jax.main $(shq "$@") --config.distributed.enabled=True 2>&1 | tee -a ~/skipdit.log"
run "${GC[@]}" ssh "$NAME" "${LOC[@]}" --worker=all --command="$CMD"

# 4. optional teardown
if [[ $TEARDOWN -eq 1 ]]; then
  run "${GC[@]}" delete "$NAME" "${LOC[@]}" --quiet
fi
