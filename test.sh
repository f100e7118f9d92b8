#!/usr/bin/env bash
# The test command: installs what is missing, then lint, type-check, unit and real-pod integration tests.
# Run as root on Debian 12. Extra arguments go to pytest (e.g. ./test.sh -k sandbox).
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"
bash scripts/setup.sh
echo "== ruff"
.venv/bin/ruff check podhost tests bench
.venv/bin/ruff format --check podhost tests bench
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
# No test reads the terminal: a tty on stdin must not be able to stall one.
exec .venv/bin/pytest -p no:cacheprovider "$@" < /dev/null
