#!/usr/bin/env bash
# The project's test command (README, CI): set up, then run the whole test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/test_data.py`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

# Two workers (pytest-xdist), whole files per worker so module fixtures stay together: most
# of the suite is single-threaded XLA compilation, so the second core halves the wall time.
rc=0
"$PY" -m pytest -q -n 2 --dist loadfile "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
  echo "test.sh: pytest collected no tests; failing on purpose" >&2
fi
exit "$rc"
