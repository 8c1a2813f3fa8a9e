#!/usr/bin/env bash
# Installs shmstore in editable mode with its test extras and runs the test suite, listing the
# reason of every skipped test.
# Extra arguments go to pytest, for example: bash scripts/test.sh -k put -x
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install -q -e ".[test]"

status=0
python3 -m pytest -q -rfEs tests "$@" || status=$?

# pytest exits with 5 when it collected no test; a run that tested nothing must not pass.
if [ "$status" -eq 5 ]; then
  echo "test.sh: pytest collected no tests" >&2
fi
exit "$status"
