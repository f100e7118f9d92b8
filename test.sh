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
# The test modules run in parallel workers (pytest-xdist; the tests mostly wait on processes, not on the
# CPU), each module whole in one worker (--dist loadfile: its module fixtures, e.g. a daemon of its own);
# each worker's shared instance has a bridge and subnet of its own (tests/conftest.py). The tests marked
# `alone` check machine-wide state the others change (ip_forward, /run/netns, the FORWARD chain): they run
# afterwards, by themselves. The ip_forward value both runs restore is read once, before either.
export PODHOST_TEST_IP_FORWARD=${PODHOST_TEST_IP_FORWARD:-$(cat /proc/sys/net/ipv4/ip_forward)}
workers=${PODHOST_TEST_WORKERS:-3}
# No test reads the terminal: a tty on stdin must not be able to stall one.
parallel=0
.venv/bin/pytest -p no:cacheprovider -n "$workers" --dist loadfile -m "not alone" "$@" < /dev/null ||
  parallel=$?
alone=0
.venv/bin/pytest -p no:cacheprovider -m alone "$@" < /dev/null || alone=$?
# 5 is "no test selected": arguments such as -k sandbox may select none of one part.
[ "$parallel" = 5 ] && parallel=0
[ "$alone" = 5 ] && alone=0
[ "$parallel" != 0 ] && exit "$parallel"
exit "$alone"
