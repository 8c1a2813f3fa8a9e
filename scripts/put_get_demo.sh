#!/usr/bin/env bash
# Runs a small demonstration: a shmstore daemon, one process that puts tensors, and another
# process that reads them back zero-copy and checks their checksums. The daemon is stopped and
# its segments removed on exit, error or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

name="demo-$$"
daemon_pid=""

stop_daemon() {
  if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
    kill -TERM "$daemon_pid"
    wait "$daemon_pid" || true
  fi
}
trap stop_daemon EXIT

shmstore serve --name "$name" --memory 256M &
daemon_pid=$!

# The daemon is ready once `shmstore status` can read its statistics.
for _ in $(seq 100); do
  if shmstore status --name "$name" >/dev/null 2>&1; then
    break
  fi
  if ! kill -0 "$daemon_pid" 2>/dev/null; then
    echo "put_get_demo.sh: shmstore serve exited before the store was ready" >&2
    exit 1
  fi
  sleep 0.1
done
shmstore status --name "$name"

python3 scripts/demo_put_get.py put --name "$name"
python3 scripts/demo_put_get.py get --name "$name"
