#!/usr/bin/env bash
# The test command from README.md: installs what it needs, then runs every test tier.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# a lab left by an interrupted earlier run would collide with the test labs
python3 -m pytest -q -p no:cacheprovider "$@"
