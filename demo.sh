#!/usr/bin/env bash
# The demo: installs what is missing, then runs the article's shared-namespace-demo pod on a private
# podhost instance and shows `crictl pods`, `crictl ps` and `ps ax` from the shell container.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"
bash scripts/setup.sh
exec .venv/bin/podhost demo "$@"
