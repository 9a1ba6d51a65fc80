#!/usr/bin/env bash
# Set up .venv if needed, then run the test suite. Extra arguments go to pytest,
# e.g. `bash scripts/test.sh -x -k template` or a test file's path.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# pyproject.toml already passes -q; a second -q would also hide the "N passed" line
exec .venv/bin/python -m pytest "$@"
