"""ConfigMaps and Secrets: the API objects pods read configuration from, and where the pod manager keeps them.

A ConfigMap or Secret is parsed (`parse_config_object`) by the one validator every manifest goes
through (`manifest._validate`: the upstream schema, then `_SUPPORTED`), then checked as kube-apiserver's
validation checks it (keys are config keys, Secret data is base64, at most 1 MiB, `immutable` holds,
the type's required keys). A Secret's `stringData` is merged into `data` and dropped, as the API server
does on every write.

Where they live (`ConfigObjects`):
- ConfigMaps with the desired pods, on disk (`store.DesiredState`, kind "configmaps").
- Secrets in memory, and copied to a tmpfs that the pod manager mounts itself when none is there
  (`/run/podhost/<instance id>/secrets` by default), so that they survive a daemon restart but never
  reach a disk, as kube-apiserver's etcd is not on this node. The tmpfs is unmounted once the last
  Secret goes. Without a tmpfs (no root) Secrets are kept in memory only and a restart forgets them.
No Secret value is ever logged or put into an error message or event: errors name keys, never data.

The pod workers read both through `ConfigSource`, a small read interface: the kubelet's
configMap/secret managers (pkg/kubelet/configmap, pkg/kubelet/secret) watch the API; here the objects
are in the same process, so a read is a dict lookup and a change wakes the pods (the manager's business).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from podhost.atomicfile import write_atomic
from podhost.kubelet import tmpfs
from podhost.kubelet.manifest import ManifestError, _kind, _metadata, config_key_error

log = logging.getLogger(__name__)

CONFIG_KINDS = ("ConfigMap", "Secret")
MAX_SIZE = 1024 * 1024  # corev1.MaxSecretSize, and the ConfigMap limit (RuntimeObjectsSizeLimit)
SECRETS_TMPFS_SIZE = 64 * 1024 * 1024
OPAQUE = "Opaque"
#: Secret types and the keys each must have (ValidateSecret).
_TYPE_KEYS = {
    "kubernetes.io/tls": ("tls.crt", "tls.key"),
    "kubernetes.io/dockerconfigjson": (".dockerconfigjson",),
    "kubernetes.io/dockercfg": (".dockercfg",),
    "kubernetes.io/ssh-auth": ("ssh-privatekey",),
}


@dataclass
class ConfigObject:
    """A ConfigMap or Secret as the pod manager keeps it: `doc` is the object (Secret data in base64,
    `stringData` merged), `data` its decoded values by key."""

    kind: str  # "ConfigMap" or "Secret"
    name: str
    namespace: str
    uid: str
    doc: dict[str, Any]
    data: dict[str, bytes] = field(default_factory=dict)
    immutable: bool = False
    binary_keys: frozenset[str] = frozenset()  # a ConfigMap's binaryData keys: files only, never env

    @property
    def resource(self) -> str:
        return "configmaps" if self.kind == "ConfigMap" else "secrets"


def _b64(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise ManifestError(f"{where}: Invalid value: expected a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ManifestError(f"{where}: Invalid value: illegal base64 data") from None  # never the value


def _check_keys(keys: list[str], where: str) -> None:
    for key in keys:
        if problem := config_key_error(key):
            raise ManifestError(f"{where}[{key}]: Invalid value: {key!r}: {problem}")


def parse_config_object(doc: dict[str, Any]) -> ConfigObject:
    """One ConfigMap or Secret document, validated, Secret `stringData` folded into `data`."""
    kind = str(doc.get("kind", ""))
    r = _kind(doc, kind, "expected v1/ConfigMap or v1/Secret")
    name, namespace, uid, _, _ = _metadata(r)
    out = dict(doc)
    obj = ConfigObject(kind, name, namespace, uid, out, immutable=bool(doc.get("immutable", False)))
    if kind == "ConfigMap":
        data, binary = doc.get("data") or {}, doc.get("binaryData") or {}
        _check_keys(list(data), "data")
        _check_keys(list(binary), "binaryData")
        for key in data:
            if key in binary:
                raise ManifestError(
                    f"data[{key}]: Invalid value: {key!r}: duplicate of key present in binaryData"
                )
        obj.data = {k: str(v).encode() for k, v in data.items()}
        obj.data.update({k: _b64(v, f"binaryData[{k}]") for k, v in binary.items()})
        obj.binary_keys = frozenset(binary)
    else:
        encoded = dict(doc.get("data") or {})
        _check_keys(list(encoded), "data")
        strings = doc.get("stringData") or {}
        _check_keys(list(strings), "stringData")
        obj.data = {k: _b64(v, f"data[{k}]") for k, v in encoded.items()}
        for key, value in strings.items():  # stringData wins over data, and is write-only
            obj.data[key] = str(value).encode()
            encoded[key] = base64.b64encode(obj.data[key]).decode()
        out.pop("stringData", None)
        if encoded:
            out["data"] = encoded
        type_ = out["type"] = out.get("type") or OPAQUE  # the API's default for an empty type
        for key in _TYPE_KEYS.get(type_, ()):
            if key not in obj.data:
                raise ManifestError(f"data[{key}]: Required value")
    if sum(len(k) + len(v) for k, v in obj.data.items()) > MAX_SIZE:
        raise ManifestError(f"data: Too long: may not be more than {MAX_SIZE} bytes")
    return obj


def immutable_change(old: ConfigObject, new: ConfigObject) -> str:
    """Why updating `old` to `new` is refused (ValidateConfigMapUpdate / ValidateSecretUpdate), or ""."""
    if old.immutable and not new.immutable:
        return "immutable: Forbidden: field is immutable when `immutable` is set"
    if old.immutable and old.data != new.data:
        what = "data" if old.kind == "Secret" or not old.doc.get("binaryData") else "binaryData"
        return f"{what}: Forbidden: field is immutable when `immutable` is set"
    if old.kind == "Secret" and old.doc.get("type") != new.doc.get("type"):
        return "type: Invalid value: field is immutable"
    return ""


class ConfigSource(Protocol):
    """What a pod worker reads: the data of a ConfigMap or Secret by namespace and name (None: none), and
    a counter that moves whenever any of them changes."""

    @property
    def version(self) -> int: ...

    def config_data(
        self, kind: str, namespace: str, name: str, for_env: bool = False
    ) -> dict[str, bytes] | None: ...


class SecretFiles:
    """Secrets on a tmpfs, one JSON file each (`<namespace>_<name>.json`, mode 0600, directory 0700).

    The directory is used only when it is on a tmpfs; podhost mounts one there when it is not (as root),
    and unmounts it once it holds no Secret. Without either, `enabled` is False: memory only."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.enabled = directory is not None

    def _ready(self) -> bool:
        if not self.enabled or self.directory is None:
            return False
        if tmpfs.is_tmpfs(self.directory):
            return True
        try:
            self.directory.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmpfs.mount_tmpfs(self.directory, SECRETS_TMPFS_SIZE, mode=0o700, private=True)
        except OSError as e:
            log.warning("secrets: no tmpfs at %s (%s): kept in memory only", self.directory, e.strerror)
            self.enabled = False
        return self.enabled

    def put(self, namespace: str, name: str, doc: dict[str, Any], created_at: float) -> None:
        if self._ready() and self.directory is not None:
            record = json.dumps({"manifest": doc, "createdAt": created_at}).encode()
            write_atomic(self.directory / f"{namespace}_{name}.json", record, durable=False)

    def delete(self, namespace: str, name: str) -> None:
        if not self.enabled or self.directory is None or not tmpfs.is_tmpfs(self.directory):
            return
        (self.directory / f"{namespace}_{name}.json").unlink(missing_ok=True)
        if not any(self.directory.glob("*.json")) and tmpfs.is_mount_point(self.directory):
            tmpfs.unmount(self.directory)
            for path in (self.directory, self.directory.parent):
                try:
                    path.rmdir()
                except OSError:
                    break

    def load(self) -> list[tuple[dict[str, Any], float]]:
        """The Secrets kept by an earlier daemon (none unless the directory is a tmpfs)."""
        if self.directory is None or not tmpfs.is_tmpfs(self.directory):
            return []
        out = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                record = json.loads(path.read_bytes())
                out.append((record["manifest"], float(record.get("createdAt", 0.0))))
            except (OSError, ValueError, KeyError, TypeError):
                log.error("secrets: %s cannot be read: removed", path.name)  # no content in the log
                path.unlink(missing_ok=True)
        return out


class ConfigObjects:
    """Every ConfigMap and Secret of the node, by (kind, namespace, name), with their creation times.
    Thread-safe; `version` moves on every change (the pod workers' cue to sync their volumes)."""

    def __init__(self) -> None:
        self._objects: dict[tuple[str, str, str], tuple[ConfigObject, float]] = {}
        self._lock = threading.Lock()
        self._version = 0

    @property
    def version(self) -> int:
        return self._version

    def get(self, kind: str, namespace: str, name: str) -> tuple[ConfigObject, float] | None:
        with self._lock:
            return self._objects.get((kind, namespace, name))

    def put(self, obj: ConfigObject, created_at: float) -> None:
        with self._lock:
            self._objects[(obj.kind, obj.namespace, obj.name)] = (obj, created_at)
            self._version += 1

    def pop(self, kind: str, namespace: str, name: str) -> ConfigObject | None:
        with self._lock:
            found = self._objects.pop((kind, namespace, name), None)
            self._version += 1
        return found[0] if found else None

    def list(self, kind: str) -> list[tuple[ConfigObject, float]]:
        with self._lock:
            return [v for (k, _, _), v in sorted(self._objects.items()) if k == kind]

    def config_data(
        self, kind: str, namespace: str, name: str, for_env: bool = False
    ) -> dict[str, bytes] | None:
        """The object's values by key; `for_env` leaves out a ConfigMap's binaryData (the kubelet reads
        env from `data` only)."""
        found = self.get(kind, namespace, name)
        if found is None:
            return None
        obj = found[0]
        return {k: v for k, v in obj.data.items() if not (for_env and k in obj.binary_keys)}
