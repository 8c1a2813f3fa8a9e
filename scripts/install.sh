#!/usr/bin/env bash
# Installs everything shmstore needs on a Debian machine with Python 3.11: the system packages
# (compilers, MPI, Redis for the benchmark), the CPU build of PyTorch 2.13.0, and shmstore itself
# in editable mode with its test extras. Run it as root, or as a user who may use sudo.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "install.sh: installing Debian packages needs root; run it as root or install sudo" >&2
  exit 1
fi

# Another apt-get may hold the dpkg lock for a while (unattended upgrades), so wait for it.
apt_options=(-q -y -o DPkg::Lock::Timeout=300)
"${as_root[@]}" apt-get "${apt_options[@]}" update
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${apt_options[@]}" install \
  --no-install-recommends gcc gfortran make openmpi-bin libopenmpi-dev redis-server

# Only this pinned release: it is the CPU build, and a bare "torch" would fetch a CUDA build.
python3 -m pip install -q torch==2.13.0

python3 -m pip install -q -e ".[test]"
