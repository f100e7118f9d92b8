"""The instance's credentials for its Kubernetes API: a CA, a serving certificate, a client certificate.

Made on the daemon's first start with `cryptography` (no openssl) in a child process (certmaker), and
kept under `<state_dir>/kube-api/`, every file mode 0600: whoever can read them is the cluster's
administrator, as with kube-apiserver's `/etc/kubernetes/pki`. They are reused on later starts, so a
kubeconfig copied elsewhere keeps working; a leaf certificate close to expiry is remade from the same CA.

Keys are ECDSA P-256: made in milliseconds (RSA-2048 takes ~100 ms each) and accepted by Go's TLS, which
is what kubectl uses. The client certificate names `podhost-admin` in group `system:masters`, the
kubeadm admin's shape; the server authorizes any certificate its CA signed.

`<state_dir>/kubeconfig` (cluster, user and context `podhost`, credentials embedded) is rewritten on each
start, since the port may change when it is chosen freely.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from podhost.errors import RuntimeFailure

CONTEXT = "podhost"
USER = "podhost-admin"
ADMIN_GROUP = "system:masters"
CA_DAYS = 3650
LEAF_DAYS = 365
#: A leaf certificate with less than this left is made again at start.
RENEW_BEFORE = datetime.timedelta(days=30)
#: What was made, and until when it needs no look (ensure_credentials).
STAMP = "stamp.json"
#: A Python start and cryptography's import, then milliseconds of work.
MAKE_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Credentials:
    """Paths of the PEM files of one instance (all 0600)."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.directory / "server.key"

    @property
    def client_cert(self) -> Path:
        return self.directory / "client.crt"

    @property
    def client_key(self) -> Path:
        return self.directory / "client.key"


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically, readable by its owner only from the first byte on."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def ensure_credentials(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> Credentials:
    """The instance's credentials, made where missing, unreadable or about to expire (certmaker).

    `stamp.json` records, when they were made, the files' digests, the hosts and when the first needs
    renewing: while all of that still holds, nothing is parsed and `cryptography` is never imported."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    creds = Credentials(directory)
    files = (
        creds.ca_cert,
        creds.ca_key,
        creds.server_cert,
        creds.server_key,
        creds.client_cert,
        creds.client_key,
    )
    stamp = directory / STAMP
    try:
        recorded = json.loads(stamp.read_text())
        current = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
        if (
            recorded.get("files") == current
            and recorded.get("hosts") == sorted(hosts)
            and time.time() < float(recorded.get("renew_at", 0))
        ):
            return creds
    except (OSError, ValueError, AttributeError):
        pass
    renew_at = _renew_in_child(directory, hosts)
    digests = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    doc = {"files": digests, "hosts": sorted(hosts), "renew_at": renew_at}
    write_private(stamp, json.dumps(doc, indent=1).encode())
    return creds


def _renew_in_child(directory: Path, hosts: tuple[str, ...]) -> float:
    """certmaker in a child process, so cryptography's native code never enters the daemon; when the
    first certificate needs renewing (Unix time). A timeout kills the child (subprocess.run)."""
    argv = [sys.executable, "-m", "podhost.apiserver.certmaker", str(os.getpid()), str(directory), *hosts]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=MAKE_TIMEOUT_S, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as e:
        raise RuntimeFailure(
            f"making the Kubernetes API's certificates took over {MAKE_TIMEOUT_S:g} s"
        ) from e
    try:
        if done.returncode == 0:
            return float(done.stdout.strip())
    except ValueError:
        pass
    said = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
    raise RuntimeFailure(f"making the Kubernetes API's certificates in {directory} failed: {said[0]}")


def kubeconfig(creds: Credentials, server_url: str) -> dict[str, object]:
    """A kubeconfig with the credentials embedded (one file to copy), context `podhost`."""

    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [
            {
                "name": CONTEXT,
                "cluster": {"server": server_url, "certificate-authority-data": b64(creds.ca_cert)},
            }
        ],
        "users": [
            {
                "name": USER,
                "user": {
                    "client-certificate-data": b64(creds.client_cert),
                    "client-key-data": b64(creds.client_key),
                },
            }
        ],
        "contexts": [
            {"name": CONTEXT, "context": {"cluster": CONTEXT, "user": USER, "namespace": "default"}}
        ],
        "current-context": CONTEXT,
    }


def write_kubeconfig(path: Path, config: dict[str, object]) -> None:
    write_private(path, yaml.safe_dump(config, sort_keys=False).encode())


def port_in_kubeconfig(path: Path) -> int:
    """The port the instance's previous kubeconfig names (0 if none): a freely chosen port is kept
    across restarts when it is still free, so copies of the kubeconfig stay valid."""
    try:
        doc = yaml.safe_load(path.read_text())
        server = str(doc["clusters"][0]["cluster"]["server"])
        return int(server.rsplit(":", 1)[1].rstrip("/"))
    except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError, ValueError):
        return 0
