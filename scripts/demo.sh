#!/usr/bin/env bash
# Runs the co-located ML-EKE demo: Fortran ocean-proxy ranks call an eddy kinetic energy model
# through the store's inference workers every step while an analysis process reads the results.
# Arguments go to `python -m shmstore.demo`, for example: bash scripts/demo.sh --ranks 2 --mpi
# Build files, logs, timings and a PNG map go to demo-output/ unless --out names another folder.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m shmstore.demo "$@"
