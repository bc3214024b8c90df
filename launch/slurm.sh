#!/usr/bin/env bash
# Train on a SLURM GPU cluster: one task per node, each owning all of its node's GPUs;
# `srun` starts the same command on every node and JAX reads the SLURM environment
# (jax.distributed.initialize finds the coordinator, process count and id itself).
#
#   launch/slurm.sh --nodes 4 [--gpus-per-node 8] [--partition P] [--time 48:00:00]
#       [--job-name skipdit] [--account A] [--venv .venv] [--dry-run]
#       -- --config=configs/imagenet256_skipdit_xl2.py --workdir=/shared/runs/xl2 ...
#
# Writes the batch script next to the logs (slurm-<name>.sbatch) and submits it with
# sbatch; --dry-run prints the script and the sbatch command instead.
set -euo pipefail

NODES=1 GPUS=8 PARTITION="" TIME="48:00:00" JOB="skipdit" ACCOUNT="" VENV=".venv" DRY=0
usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --nodes) NODES="$2"; shift 2 ;;
    --gpus-per-node) GPUS="$2"; shift 2 ;;
    --partition) PARTITION="$2"; shift 2 ;;
    --time) TIME="$2"; shift 2 ;;
    --job-name) JOB="$2"; shift 2 ;;
    --account) ACCOUNT="$2"; shift 2 ;;
    --venv) VENV="$2"; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) usage 0 ;;
    --) shift; break ;;
    *) echo "slurm.sh: unknown option $1 (arguments for main.py go after --)" >&2; usage ;;
  esac
done
[[ $# -gt 0 ]] || { echo "slurm.sh: give main.py's arguments after --, e.g. -- --config=configs/imagenet256_skipdit_xl2.py --workdir=/shared/runs/xl2" >&2; usage; }
[[ "$NODES" =~ ^[1-9][0-9]*$ ]] || { echo "slurm.sh: --nodes must be a positive integer, got $NODES" >&2; exit 2; }

HERE="$(cd "$(dirname "$0")/.." && pwd)"
SCRIPT="slurm-$JOB.sbatch"
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"  # shq
ARGS="$(shq "$@")"
render() {
  echo "#!/usr/bin/env bash"
  echo "#SBATCH --job-name=$JOB"
  echo "#SBATCH --nodes=$NODES"
  echo "#SBATCH --ntasks-per-node=1"
  echo "#SBATCH --gpus-per-node=$GPUS"
  echo "#SBATCH --cpus-per-task=$((GPUS * 8))"
  echo "#SBATCH --time=$TIME"
  echo "#SBATCH --output=slurm-$JOB-%j.out"
  if [[ -n "$PARTITION" ]]; then echo "#SBATCH --partition=$PARTITION"; fi
  if [[ -n "$ACCOUNT" ]]; then echo "#SBATCH --account=$ACCOUNT"; fi
  echo "set -euo pipefail"
  echo "cd $(shq "$HERE")"
  echo "source $(shq "$VENV")/bin/activate"
  echo "srun --kill-on-bad-exit=1 python -m skipdit_jax.main $ARGS"
}
if [[ $DRY -eq 1 ]]; then
  echo "# $SCRIPT"
  render
  echo "sbatch $SCRIPT"
else
  render > "$SCRIPT"
  sbatch "$SCRIPT"
fi
