#!/usr/bin/env bash
# The demo: installs what is missing, then runs the article's shared-namespace-demo pod on a private
# podhost instance with the real kubectl (apply, get pods, exec ps ax: /pause is PID 1, logs, delete).
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"
bash scripts/setup.sh
exec .venv/bin/podhost demo "$@"
