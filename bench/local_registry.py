"""A local Debian `docker-registry` (distribution 2.8) for tests and benchmarks, on 127.0.0.1 only.

It owns one registry process and one directory: its config, its storage, and (with `tls=True`) a
throwaway CA and a server certificate for 127.0.0.1 made with the `openssl` CLI, and (with `users`) an
htpasswd file of bcrypt hashes (Python's `crypt` with glibc's bcrypt, else `htpasswd -B`). `stop()`
ends the process; the directory is the caller's to remove.

It never listens beyond 127.0.0.1 and never reaches any other registry. Command lines are built by pure
functions.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import shutil
import socket
import subprocess
import time
import warnings
from pathlib import Path

from podhost.errors import FailedPrecondition, RuntimeFailure

log = logging.getLogger(__name__)

REGISTRY_BINARY = "docker-registry"
START_TIMEOUT = 15.0
_BLOB_GET_RE = re.compile(
    r'msg="response completed".* http\.request\.method=GET .*http\.request\.uri="?/v2/(\S+)/blobs/(sha256:[0-9a-f]{64})"?'
)
#: bcrypt cost for test passwords: distribution checks the hash on every request, and the default (12)
#: costs ~250 ms each time.
BCRYPT_ROUNDS = 16


def registry_config(root: Path, port: int, tls: bool, htpasswd: Path | None) -> str:
    """distribution's config.yml (docs/configuration.md of distribution 2.8)."""
    lines = [
        "version: 0.1",
        "log:",
        "  level: info",
        "  formatter: text",
        "  accesslog:",
        "    disabled: true",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {root / 'storage'}",
        "  delete:",
        "    enabled: true",
        "  maintenance:",
        "    uploadpurging:",
        "      enabled: false",
        "http:",
        f"  addr: 127.0.0.1:{port}",
        f"  secret: {secrets.token_hex(16)}",
    ]
    if tls:
        lines += ["  tls:", f"    certificate: {root / 'server.crt'}", f"    key: {root / 'server.key'}"]
    if htpasswd is not None:
        lines += ["auth:", "  htpasswd:", "    realm: podhost-test", f"    path: {htpasswd}"]
    return "\n".join(lines) + "\n"


def ca_argv(key: Path, cert: Path) -> list[str]:
    return [
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=podhost test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    ]  # fmt: skip


def csr_argv(key: Path, csr: Path) -> list[str]:
    return [
        "openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1",
    ]  # fmt: skip


def sign_argv(csr: Path, ca_cert: Path, ca_key: Path, cert: Path, ext: Path) -> list[str]:
    return [
        "openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext),
    ]  # fmt: skip


SERVER_EXTENSIONS = (
    "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
)


def bcrypt_hash(password: str) -> str:
    """A bcrypt hash, which is all distribution's htpasswd accepts."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt  # Python < 3.13; glibc's libxcrypt does bcrypt
        except ImportError:
            crypt = None  # type: ignore[assignment]
    if crypt is not None and hasattr(crypt, "METHOD_BLOWFISH"):
        hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=BCRYPT_ROUNDS))
        if hashed and hashed.startswith("$2"):
            return hashed
    if shutil.which("htpasswd"):
        out = subprocess.run(
            ["htpasswd", "-nbB", "-C", "4", "u", password], capture_output=True, text=True, check=True
        )
        return out.stdout.strip().partition(":")[2]
    raise FailedPrecondition("no bcrypt available: install apache2-utils (htpasswd) or use Python < 3.13")


def free_port(lo: int, hi: int) -> int:
    """A TCP port in [lo, hi] that nothing listens on at 127.0.0.1 right now."""
    ports = list(range(lo, hi + 1))
    secrets.SystemRandom().shuffle(ports)
    for port in ports:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise FailedPrecondition(f"no free port in {lo}-{hi} on 127.0.0.1")


class LocalRegistry:
    """One docker-registry process serving `root/storage` on 127.0.0.1:`port`."""

    def __init__(
        self, root: Path, port: int, *, tls: bool = True, users: dict[str, str] | None = None
    ) -> None:
        self.root = Path(root)
        self.port = port
        self.tls = tls
        self.users = dict(users or {})
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        return self.root / "ca.crt"

    @property
    def storage(self) -> Path:
        return self.root / "storage"

    @property
    def log_path(self) -> Path:
        return self.root / "registry.log"

    def blob_path(self, digest: str) -> Path:
        """Where the filesystem driver keeps a blob's bytes (tests corrupt them here)."""
        hex_ = digest.removeprefix("sha256:")
        return self.storage / "docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data"

    def _run(self, argv: list[str]) -> None:
        try:
            subprocess.run(argv, capture_output=True, check=True, timeout=60)
        except subprocess.CalledProcessError as e:
            raise RuntimeFailure(f"{argv[0]} failed: {e.stderr.decode(errors='replace')[-500:]}") from e

    def _make_certs(self) -> None:
        r = self.root
        self._run(ca_argv(r / "ca.key", self.ca_file))
        self._run(csr_argv(r / "server.key", r / "server.csr"))
        (r / "server.ext").write_text(SERVER_EXTENSIONS)
        self._run(sign_argv(r / "server.csr", self.ca_file, r / "ca.key", r / "server.crt", r / "server.ext"))

    def start(self) -> None:
        if shutil.which(REGISTRY_BINARY) is None:
            raise FailedPrecondition(f"{REGISTRY_BINARY} is not installed (Debian package docker-registry)")
        self.root.mkdir(parents=True, exist_ok=True)
        self.storage.mkdir(exist_ok=True)
        if self.tls and not self.ca_file.exists():
            self._make_certs()
        htpasswd = None
        if self.users:
            htpasswd = self.root / "htpasswd"
            htpasswd.write_text("".join(f"{u}:{bcrypt_hash(p)}\n" for u, p in self.users.items()))
        config = self.root / "config.yml"
        config.write_text(registry_config(self.root, self.port, self.tls, htpasswd))
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(
                [REGISTRY_BINARY, "serve", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeFailure(f"docker-registry on {self.host} did not start:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> LocalRegistry:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def blob_gets(self) -> list[tuple[str, str]]:
        """(repository, digest) of every blob GET served so far, from the registry's own log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        return [(m.group(1), m.group(2)) for m in _BLOB_GET_RE.finditer(text)]
