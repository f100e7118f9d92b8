#!/usr/bin/env bash
# Install everything podhost needs on a Debian 12 machine, as root. Idempotent: a second run changes
# nothing and takes a second or two. Used by ./demo.sh and ./test.sh; safe to run by hand.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."

if [ "$(id -u)" != 0 ]; then
  echo "podhost setup: run as root (pods need namespaces, mounts and cgroups)" >&2
  exit 1
fi

DEBS=(runc crun conmon containernetworking-plugins busybox-static docker-registry containerd skopeo
      iptables iproute2 procps util-linux tmux gcc libc6-dev python3 python3-venv python3-dev curl
      ca-certificates podman)
missing=()
for p in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "podhost setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The real kubectl drives podhost's Kubernetes API: Debian's kubernetes-client when no kubectl is on PATH.
if ! command -v kubectl >/dev/null 2>&1; then
  echo "podhost setup: no kubectl on PATH; installing Debian's kubernetes-client"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null ||
    echo "podhost setup: kubernetes-client did not install; put any kubectl on PATH (README)" >&2
fi
# The second client the Kubernetes API is tested with: Debian's kubernetes-client (kubectl 1.20, SPDY only),
# unpacked under .tools/ (not installed: it would replace the kubectl on PATH). Best effort.
OLD_KUBECTL=.tools/kubernetes-client/usr/bin/kubectl
if [ ! -x "$OLD_KUBECTL" ]; then
  ls /var/cache/apt/archives/kubernetes-client_*.deb >/dev/null 2>&1 ||
    (cd /var/cache/apt/archives && apt-get download -qq kubernetes-client >/dev/null 2>&1) ||
    echo "podhost setup: could not download Debian's kubernetes-client (its tests will be skipped)" >&2
  deb=$(ls /var/cache/apt/archives/kubernetes-client_*.deb 2>/dev/null | head -n1)
  if [ -n "$deb" ]; then mkdir -p .tools && dpkg-deb -x "$deb" .tools/kubernetes-client; fi
fi
# The demo's nginx is Debian's, built into an image offline from its .deb: keep one in apt's cache.
if ! ls /var/cache/apt/archives/nginx_*.deb >/dev/null 2>&1; then
  apt-get install -y -qq --download-only --no-install-recommends nginx >/dev/null ||
    echo "podhost setup: could not download Debian's nginx package (the demo needs it)" >&2
fi
# The containerd package ships a systemd unit; podhost runs its own instances, never the system one.
systemctl disable --now containerd >/dev/null 2>&1 || true
# podman is the benchmark's second peer (bench/podman_peer.py); its socket unit is not wanted either.
systemctl disable --now podman.socket >/dev/null 2>&1 || true

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.podhost-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip >/dev/null
  # compat: a path in a .pth file, not setuptools' import finder (10 ms of every `podhost` command)
  .venv/bin/pip install -q -e '.[dev]' --config-settings editable_mode=compat
  touch "$stamp"
fi
# Generated CRI stubs and the pause binary (both rebuilt only when their sources change).
.venv/bin/python -m podhost.cri.codegen --if-stale 2>/dev/null || true
.venv/bin/python -m podhost.pause.build
# Bytecode for podhost itself, so a `podhost` command does not compile its modules on every run even
# where PYTHONDONTWRITEBYTECODE is set (about 45 ms of a CLI call); stale entries are rebuilt.
.venv/bin/python -m compileall -q podhost >/dev/null
