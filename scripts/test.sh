#!/usr/bin/env bash
# The test command from README.md: installs what it needs, then runs every test tier.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# Lab tests use their own lab names and tear their labs down in fixtures, even on failure;
# they need root (CI runs as root) and skip otherwise.
# The VM tier (marker vm: QEMU lab hosts, about 10 minutes under TCG) runs alone on the
# machine's cores; `-m "not vm"` leaves it out, `-m vm` runs only it.
# Modules run in 3 workers (lab tests mostly wait on daemons and SSH, not on the CPU); lab
# modules with machine-wide checks run alone (tests/conftest.py).
python3 -m pytest -q -p no:cacheprovider -n 3 --dist loadfile "$@"
