"""The pod manager: desired pods and services in, one pod worker per pod, status and endpoints out.

It owns the desired state (applied manifests, persisted by `store.DesiredState`; static pods read from
a manifests directory), starts and ends pod workers, runs the PLEG that wakes them, and answers the
questions the Kubernetes API (podhost.apiserver) asks: pods with status, services, endpoints, events,
where a container's logs are.
It talks to the runtime only through the `CRIClient` it is given, so the runtime may be podhost's own
(the default: the daemon's socket) or containerd's.

What it must never do: start a process per pod (workers are threads), touch a pod it did not make (only
sandboxes annotated `MANAGED_BY` are garbage-collected), or restart a container that still runs when
the daemon restarts (workers observe first, and a running container is left alone).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import platform
import shutil
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podhost.config import Config
from podhost.cri.client import CRIClient
from podhost.errors import FailedPrecondition, InvalidArgument, NotFound, PodhostError
from podhost.kubelet import allocation, tmpfs
from podhost.kubelet import status as st
from podhost.kubelet.configobjects import ConfigObject, ConfigObjects, SecretFiles, immutable_change
from podhost.kubelet.context import WorkerContext
from podhost.kubelet.downward_api import this_node
from podhost.kubelet.endpoints import PodView, endpoints_for
from podhost.kubelet.events import WARNING, EventRecorder
from podhost.kubelet.manifest import (
    USERNS_ANNOTATION,
    USERNS_LENGTH,
    ManifestError,
    Pod,
    Service,
    load_documents,
    load_objects,
)
from podhost.kubelet.pleg import PLEG
from podhost.kubelet.podspec import LABEL_POD_UID, MANAGED_BY, MANAGER_NAME
from podhost.kubelet.store import CONFIGMAPS, PODS, SERVICES, DesiredState
from podhost.kubelet.worker import PodWorker

log = logging.getLogger(__name__)

STATIC_SCAN_SECONDS = 1.0
#: Secrets survive a daemon restart on a tmpfs under here (not a reboot), never on a disk.
SECRETS_RUN_DIR = Path("/run/podhost")
PROBE_WORKERS = 8
API_SOURCE = "api"


@dataclass
class ManagerSettings:
    state_dir: Path  # the manager's own directory (<instance state>/kubelet)
    runtime_endpoint: str
    backoff_base: float = 10.0
    pod_cgroup_parent: str = ""
    manifests_dir: Path | None = None
    relist_period: float = 1.0
    #: where Secrets are kept across a daemon restart: a tmpfs (mounted here when it is not one); None:
    #: in memory only. Never a disk (configobjects.SecretFiles).
    secrets_dir: Path | None = None
    node_name: str = "localhost"  # the downward API's spec.nodeName
    host_ip: str = ""  # and status.hostIP


def settings_from_config(config: Config) -> ManagerSettings:
    """The manager of a daemon: its `kubelet_*` settings, defaults from the instance."""
    return ManagerSettings(
        state_dir=config.state_dir / "kubelet",
        runtime_endpoint=config.kubelet_runtime_endpoint or f"unix://{config.socket}",
        backoff_base=float(config.kubelet_restart_backoff),
        pod_cgroup_parent=config.kubelet_pod_cgroup_parent,
        manifests_dir=Path(config.kubelet_manifests_dir).absolute() if config.kubelet_manifests_dir else None,
        secrets_dir=SECRETS_RUN_DIR / config.instance_id / "secrets",
        node_name=platform.node().lower() or "localhost",
        host_ip=str(ipaddress.ip_network(config.subnet, strict=False).network_address + 1),
    )


@dataclass
class _PodEntry:
    pod: Pod
    manifest: dict[str, Any]
    created_at: float
    source: str  # "api" or the static manifest's path
    worker: PodWorker
    deletion_requested: float = 0.0


@dataclass
class _ServiceEntry:
    service: Service
    manifest: dict[str, Any]
    created_at: float


@dataclass
class _StaticScan:
    signature: dict[str, tuple[int, int]] = field(default_factory=dict)


def static_pod_uid(path: str, manifest_text: str) -> str:
    """A static pod's uid: stable while its file is unchanged (as the kubelet derives it from a hash)."""
    digest = hashlib.sha256(f"{path}\0{manifest_text}".encode()).digest()
    return str(uuid.UUID(bytes=digest[:16]))


class PodManager:
    def __init__(self, settings: ManagerSettings, cri: CRIClient | None = None) -> None:
        self.settings = settings
        # HTTP/2 of its own (cri/h2.py): no grpcio channel polling while the node idles (~20 wake-ups/s)
        self.cri = cri or CRIClient(settings.runtime_endpoint, transport="h2")
        self.events = EventRecorder()
        self.store = DesiredState(settings.state_dir / "desired")
        self.configs = ConfigObjects()  # ConfigMaps and Secrets, which pods read (configobjects.py)
        self.secret_files = SecretFiles(settings.secrets_dir)
        self._pods: dict[tuple[str, str], _PodEntry] = {}
        self._services: dict[tuple[str, str], _ServiceEntry] = {}
        self._lock = threading.RLock()
        self._changed = threading.Condition()
        self.version = 0
        self._probe_pool = ThreadPoolExecutor(max_workers=PROBE_WORKERS, thread_name_prefix="probe")
        self.ctx = WorkerContext(
            cri=self.cri,
            events=self.events,
            probe_pool=self._probe_pool,
            log_root=settings.state_dir / "logs",
            volume_root=settings.state_dir / "volumes",
            backoff_base=settings.backoff_base,
            pod_cgroup_parent=settings.pod_cgroup_parent,
            on_status=self._bump,
            allotted=self._allotted_elsewhere,
            config=self.configs,
            node=this_node(settings.node_name, settings.host_ip),
        )
        self.pleg = PLEG(self.cri, self._wake, self._wake_all, settings.relist_period)
        self._stop = threading.Event()
        self._static = _StaticScan()
        self._static_thread: threading.Thread | None = None
        self._started = threading.Event()

    # --- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> None:
        """Load the desired state, adopt what runs, start the PLEG, the workers and the static scan."""
        try:
            self.ctx.runtime_name = self.cri.version().runtime_name or "cri"
        except PodhostError as e:
            log.warning("the runtime at %s does not answer yet: %s", self.settings.runtime_endpoint, e)
        for doc, created_at in self.secret_files.load():
            self._load_config_object(doc, created_at)
        for stored in self.store.load():
            try:
                if stored.kind == CONFIGMAPS:
                    self._load_config_object(stored.manifest, stored.created_at)
                elif stored.kind == PODS:
                    (pod,) = [o for o in load_objects_from(stored.manifest) if isinstance(o, Pod)]
                    self._add_pod(pod, stored.manifest, stored.created_at, API_SOURCE, start=False)
                else:
                    (svc,) = [o for o in load_objects_from(stored.manifest) if isinstance(o, Service)]
                    self._services[(svc.namespace, svc.name)] = _ServiceEntry(
                        svc, stored.manifest, stored.created_at
                    )
            except (ManifestError, ValueError) as e:
                log.error("stored %s cannot be loaded: %s", stored.kind, e)
        if self.settings.manifests_dir is not None:
            self._scan_static(start=False)
        self._collect_orphans()
        self.pleg.start()
        with self._lock:
            for entry in self._pods.values():
                entry.worker.start()
        if self.settings.manifests_dir is not None:
            self._static_thread = threading.Thread(target=self._static_loop, name="static-pods", daemon=True)
            self._static_thread.start()
        self._started.set()
        log.info(
            "pod manager: %d pod(s), %d service(s); runtime %s",
            len(self._pods),
            len(self._services),
            self.settings.runtime_endpoint,
        )

    def _load_config_object(self, doc: dict[str, Any], created_at: float) -> None:
        try:
            (obj,) = [o for o in load_objects_from(doc) if isinstance(o, ConfigObject)]
        except (ManifestError, ValueError) as e:
            log.error("a stored ConfigMap or Secret cannot be loaded: %s", e)  # names fields, never data
            return
        self.configs.put(obj, created_at)

    def close(self) -> None:
        """Stop managing; pods keep running and are adopted by the next start."""
        self._stop.set()
        self.pleg.close()
        with self._lock:
            workers = [e.worker for e in self._pods.values()]
        for w in workers:
            w.stop(timeout=0)  # all told first, then waited for together
        deadline = time.monotonic() + 5
        for w in workers:
            w.stop(timeout=max(0.0, deadline - time.monotonic()))
        self._probe_pool.shutdown(wait=False, cancel_futures=True)
        if self._static_thread is not None:
            self._static_thread.join(timeout=2)
        self.cri.close()

    def _collect_orphans(self) -> None:
        """Remove sandboxes this manager made for pods that are no longer wanted (deleted while down)."""
        try:
            sandboxes = self.cri.list_pod_sandbox()
        except PodhostError as e:
            log.warning("orphan collection skipped: %s", e)
            return
        wanted = {e.pod.uid for e in self._pods.values()}
        for sb in sandboxes:
            if sb.annotations.get(MANAGED_BY) != MANAGER_NAME:
                continue
            if sb.labels.get(LABEL_POD_UID, sb.metadata.uid) in wanted:
                continue
            log.info(
                "removing sandbox %s of pod %s/%s, which is no longer wanted",
                sb.id[:13],
                sb.metadata.namespace,
                sb.metadata.name,
            )
            try:
                self.cri.stop_pod_sandbox(sb.id)
                self.cri.remove_pod_sandbox(sb.id)
            except PodhostError as e:
                log.warning("removing orphan sandbox %s: %s", sb.id[:13], e)
        self._collect_orphan_volumes(wanted)

    def _collect_orphan_volumes(self, wanted: set[str]) -> None:
        """The volume directories of pods deleted while the daemon was down: their tmpfs mounts (secret
        volumes, emptyDir Memory) unmounted, then the files removed."""
        root = self.ctx.volume_root
        for directory in sorted(root.iterdir()) if root.is_dir() else []:
            if directory.name not in wanted:
                log.info("removing the volumes of pod uid %s, which is no longer wanted", directory.name)
                try:
                    tmpfs.unmount_all(directory)
                except OSError as e:
                    log.warning("unmounting %s: %s", directory, e)
                    continue
                shutil.rmtree(directory, ignore_errors=True)

    # --- change notification -----------------------------------------------------------------------------

    def _bump(self) -> None:
        with self._changed:
            self.version += 1
            self._changed.notify_all()

    def wait_changed(self, version: int, timeout: float) -> int:
        """Block until the version moves past `version` (or `timeout`); the current version."""
        with self._changed:
            self._changed.wait_for(lambda: self.version != version or self._stop.is_set(), timeout)
            return self.version

    def _allotted_elsewhere(self, uid: str) -> allocation.Allotted:
        """What the node's pods other than `uid` (and not finished or going) are allotted: the room an
        in-place resize must fit in, beside them (the kubelet's admission of a resize)."""
        with self._lock:
            workers = [e.worker for e in self._pods.values() if e.pod.uid != uid and not e.deletion_requested]
        allotted = []
        for w in workers:
            if w.status.get().phase not in (st.SUCCEEDED, st.FAILED):
                allotted += [h.allocated for h in list(w.history.values()) if h.allocated is not None]
        return allocation.allotted(allotted)

    def _wake(self, uid: str) -> None:
        with self._lock:
            for entry in self._pods.values():
                if entry.pod.uid == uid:
                    entry.worker.wake()

    def _wake_all(self) -> None:
        with self._lock:
            for entry in self._pods.values():
                entry.worker.wake()

    # --- apply / delete ----------------------------------------------------------------------------------

    def _add_pod(
        self, pod: Pod, manifest: dict[str, Any], created_at: float, source: str, start: bool
    ) -> None:
        if not pod.host_users and not pod.userns_host_id:
            pod.userns_host_id = self._free_userns_host_id()
        worker = PodWorker(pod, self.ctx, created_at)
        self._pods[(pod.namespace, pod.name)] = _PodEntry(pod, manifest, created_at, source, worker)
        if start:
            worker.start()

    def _free_userns_host_id(self) -> int:
        """The lowest multiple of 65536 (from 65536 on) no other pod's user namespace has: pods never
        share host ids, and the host's own ids below 65536 are never handed out (as the kubelet does)."""
        taken = {e.pod.userns_host_id for e in self._pods.values()}
        n = 1
        while n * USERNS_LENGTH in taken:
            n += 1
        return n * USERNS_LENGTH

    def apply(self, text: str, source: str = "") -> list[str]:
        """Create or update every Pod and Service in `text`: all are validated first, so a broken
        document creates nothing. Pods are immutable except for labels and annotations."""
        docs = load_documents(text)
        objects = load_objects(text, source)
        results = []
        with self._lock:
            plan = [self._check_apply(obj) for obj in objects]
            for obj, doc, verdict in zip(objects, docs, plan, strict=True):
                results.append(self._do_apply(obj, doc, verdict))
        if any(isinstance(o, ConfigObject) for o in objects):
            self._wake_all()  # their volumes follow at once (config_volumes.PodVolumes.sync)
        self._bump()
        return results

    def _check_apply(self, obj: Pod | Service | ConfigObject) -> str:
        if isinstance(obj, ConfigObject):
            old = self.configs.get(obj.kind, obj.namespace, obj.name)
            if old is None:
                return "created"
            if forbidden := immutable_change(old[0], obj):  # the API server names the object
                raise InvalidArgument(forbidden)
            return "configured"
        if isinstance(obj, Service):
            return "configured" if (obj.namespace, obj.name) in self._services else "created"
        entry = self._pods.get((obj.namespace, obj.name))
        if entry is None:
            return "created"
        where = f"pod/{obj.name}"
        if entry.source != API_SOURCE:
            raise FailedPrecondition(f"{where}: is a static pod from {entry.source}; edit that file instead")
        if entry.deletion_requested:
            raise FailedPrecondition(f"{where}: is being deleted; apply again once it is gone")
        if obj.uid and obj.uid != entry.pod.uid:
            raise InvalidArgument(f"{where}: metadata.uid: cannot change ({entry.pod.uid})")
        return "compare"

    def _do_apply(self, obj: Pod | Service | ConfigObject, doc: dict[str, Any], verdict: str) -> str:
        now = time.time()
        if isinstance(obj, ConfigObject):
            return self._apply_config_object(obj, verdict, now)
        if isinstance(obj, Service):
            key = (obj.namespace, obj.name)
            old = self._services.get(key)
            if old is not None and old.manifest == doc:
                return f"service/{obj.name} unchanged"
            obj.uid = obj.uid or (old.service.uid if old else str(uuid.uuid4()))
            created = old.created_at if old else now
            self.store.put(SERVICES, obj.namespace, obj.name, doc, created)
            self._services[key] = _ServiceEntry(obj, doc, created)
            return f"service/{obj.name} {verdict}"
        if verdict == "created":
            obj.uid = obj.uid or str(uuid.uuid4())
            if not obj.host_users and not obj.userns_host_id:
                obj.userns_host_id = self._free_userns_host_id()
            doc = _with_userns_host_id(_with_uid(doc, obj.uid), obj.userns_host_id)
            self.store.put(PODS, obj.namespace, obj.name, doc, now)
            self._add_pod(obj, doc, now, API_SOURCE, start=self._started.is_set())
            return f"pod/{obj.name} created"
        entry = self._pods[(obj.namespace, obj.name)]
        if doc.get("spec") != entry.manifest.get("spec"):
            raise InvalidArgument(
                f"pod/{obj.name}: spec: pod updates may not change fields other than metadata.labels "
                "and metadata.annotations (delete the pod and apply it again)"
            )
        doc = _with_userns_host_id(_with_uid(doc, entry.pod.uid), entry.pod.userns_host_id)
        if doc == entry.manifest:
            return f"pod/{obj.name} unchanged"
        entry.pod.labels, entry.pod.annotations = obj.labels, obj.annotations
        entry.manifest = doc
        self.store.put(PODS, obj.namespace, obj.name, doc, entry.created_at)
        entry.worker.wake()  # its downward API volumes follow at once (PodRuntime.sync_volumes)
        return f"pod/{obj.name} configured"

    def update_pod_spec(
        self, namespace: str, name: str, spec: dict[str, Any], managed_fields: list[Any] | None = None
    ) -> None:
        """A spec change the API makes through a pod's subresource (`ephemeralcontainers`, `resize`; it has
        checked that nothing else changed): validated as any manifest, stored, and handed to the running
        pod in place (its ephemeral containers, its containers' resources and resize policies), so the
        worker starts the new ephemeral containers and resizes, and nothing restarts for it."""
        with self._lock:
            entry = self._pods.get((namespace, name))
            if entry is None:
                raise NotFound(f'pods "{name}" not found')
            if entry.source != API_SOURCE:
                raise FailedPrecondition(f"pod/{name}: is a static pod from {entry.source}; edit that file")
            if entry.deletion_requested:
                raise FailedPrecondition(f"pod/{name}: is being deleted")
            doc = {**entry.manifest, "spec": spec}
            if managed_fields is not None:  # the API server's, stored with the manifest
                doc["metadata"] = {**(doc.get("metadata") or {}), "managedFields": managed_fields}
            (pod,) = [o for o in load_objects_from(doc) if isinstance(o, Pod)]
            for running, wanted in zip(entry.pod.containers, pod.containers, strict=True):
                running.resources, running.resize_policy = wanted.resources, wanted.resize_policy
            entry.pod.ephemeral_containers = pod.ephemeral_containers
            entry.manifest = doc
            self.store.put(PODS, namespace, name, doc, entry.created_at)
            entry.worker.wake()
        self._bump()

    def _apply_config_object(self, obj: ConfigObject, verdict: str, now: float) -> str:
        """Keep a ConfigMap (on disk, with the pods) or a Secret (memory and tmpfs only)."""
        old = self.configs.get(obj.kind, obj.namespace, obj.name)
        obj.uid = old[0].uid if old else (obj.uid or str(uuid.uuid4()))
        obj.doc = _with_uid(obj.doc, obj.uid)
        where = f"{obj.kind.lower()}/{obj.name}"
        if old is not None and old[0].doc == obj.doc:
            return f"{where} unchanged"
        created = old[1] if old else now
        if obj.kind == "Secret":
            self.secret_files.put(obj.namespace, obj.name, obj.doc, created)
        else:
            self.store.put(CONFIGMAPS, obj.namespace, obj.name, obj.doc, created)
        self.configs.put(obj, created)
        return f"{where} {verdict}"

    def _delete_config_object(self, kind: str, namespace: str, name: str) -> str:
        with self._lock:
            obj = self.configs.pop(kind, namespace, name)
            if obj is None:
                raise NotFound(f'{kind.lower()}s "{name}" not found')
            if kind == "Secret":
                self.secret_files.delete(namespace, name)
            else:
                self.store.delete(CONFIGMAPS, namespace, name)
        self._wake_all()
        self._bump()
        return f'{kind.lower()} "{name}" deleted'

    def delete(
        self,
        kind: str,
        namespace: str,
        name: str,
        wait: bool = True,
        timeout: float = 300.0,
        grace_period_seconds: int | None = None,
    ) -> str:
        """Delete a service, or begin deleting a pod (its containers get `grace_period_seconds`, else the
        pod's terminationGracePeriodSeconds, as DeleteOptions.gracePeriodSeconds overrides it)."""
        if kind in ("service", "services", "svc"):
            with self._lock:
                if self._services.pop((namespace, name), None) is None:
                    raise NotFound(f'services "{name}" not found')
                self.store.delete(SERVICES, namespace, name)
            self._bump()
            return f'service "{name}" deleted'
        if kind in ("configmap", "configmaps", "cm", "secret", "secrets"):
            return self._delete_config_object(
                "Secret" if kind.startswith("secret") else "ConfigMap", namespace, name
            )
        if kind not in ("pod", "pods", "po"):
            raise InvalidArgument(
                f"cannot delete {kind!r}: podhost deletes pods, services, configmaps and secrets"
            )
        with self._lock:
            entry = self._pods.get((namespace, name))
            if entry is None:
                raise NotFound(f'pods "{name}" not found')
            if entry.source != API_SOURCE and not self._stop.is_set():
                raise FailedPrecondition(f"pod/{name} is a static pod from {entry.source}; remove that file")
            if grace_period_seconds is not None and not entry.deletion_requested:
                entry.pod.termination_grace_period_seconds = max(0, grace_period_seconds)
            self._begin_delete(entry)
        if wait and not entry.worker.finished.wait(timeout):
            raise FailedPrecondition(f"pod/{name}: still terminating after {timeout:.0f} s")
        return f'pod "{name}" deleted'

    def _begin_delete(self, entry: _PodEntry) -> None:
        if entry.deletion_requested:
            return
        entry.deletion_requested = time.time()
        if entry.source == API_SOURCE:
            self.store.delete(PODS, entry.pod.namespace, entry.pod.name)
        if not entry.worker.started:
            entry.worker.start()
        entry.worker.delete()
        threading.Thread(target=self._forget_when_done, args=(entry,), daemon=True).start()
        self._bump()

    def _forget_when_done(self, entry: _PodEntry) -> None:
        entry.worker.finished.wait()
        with self._lock:
            key = (entry.pod.namespace, entry.pod.name)
            if self._pods.get(key) is entry:
                del self._pods[key]
        self.events.forget(entry.pod.namespace, f"pod/{entry.pod.name}")
        self._bump()

    # --- static pods -------------------------------------------------------------------------------------

    def _static_loop(self) -> None:
        while not self._stop.wait(STATIC_SCAN_SECONDS):
            try:
                self._scan_static(start=True)
            except Exception:
                log.exception("static pod scan failed")

    def _scan_static(self, start: bool) -> None:
        directory = self.settings.manifests_dir
        assert directory is not None
        signature: dict[str, tuple[int, int]] = {}
        if directory.is_dir():
            for file in sorted(directory.iterdir()):
                if file.suffix in (".yaml", ".yml", ".json") and file.is_file():
                    stat = file.stat()
                    signature[str(file)] = (stat.st_mtime_ns, stat.st_size)
        if signature == self._static.signature:
            return
        self._static.signature = signature
        wanted: dict[tuple[str, str], tuple[Pod, dict[str, Any], str]] = {}
        for path in signature:
            try:
                text = Path(path).read_text()
                docs = load_documents(text)
                objects = load_objects(text, path)
            except (OSError, ManifestError) as e:
                log.error("static pod manifest %s: %s", path, e)
                self.events.record("default", f"file/{Path(path).name}", WARNING, "FailedToLoad", str(e))
                continue
            for obj, doc in zip(objects, docs, strict=True):
                if not isinstance(obj, Pod):
                    continue  # services come through apply
                obj.uid = static_pod_uid(path, text)
                wanted[(obj.namespace, obj.name)] = (obj, _with_uid(doc, obj.uid), path)
        with self._lock:
            for key, entry in list(self._pods.items()):
                if entry.source == API_SOURCE or entry.deletion_requested:
                    continue
                if key not in wanted or wanted[key][0].uid != entry.pod.uid:
                    log.info("static pod %s/%s: its manifest changed or went away", *key)
                    self._begin_delete(entry)
            pending = False
            for key, (pod, doc, source) in wanted.items():
                existing = self._pods.get(key)
                if existing is None:
                    self._add_pod(pod, doc, time.time(), source, start=start)
                elif existing.source == API_SOURCE:
                    log.error("static pod %s/%s in %s: a pod of that name exists already", *key, source)
                elif existing.deletion_requested:
                    pending = True  # the old version is still terminating
            if pending:
                self._static.signature = {}  # look again on the next scan
        self._bump()

    # --- queries -----------------------------------------------------------------------------------------

    def _entries(self, namespace: str = "") -> list[_PodEntry]:
        with self._lock:
            entries = [e for e in self._pods.values() if not namespace or e.pod.namespace == namespace]
        return sorted(entries, key=lambda e: (e.pod.namespace, e.pod.name))

    def pod_objects(self, namespace: str = "", name: str = "") -> list[dict[str, Any]]:
        entries = [e for e in self._entries(namespace) if not name or e.pod.name == name]
        if name and not entries:
            raise NotFound(f'pods "{name}" not found')
        return [self._pod_object(e) for e in entries]

    def _pod_object(self, e: _PodEntry) -> dict[str, Any]:
        status = e.worker.status.get()
        meta: dict[str, Any] = {
            "name": e.pod.name,
            "namespace": e.pod.namespace,
            "uid": e.pod.uid,
            "creationTimestamp": st.rfc3339(e.created_at),
        }
        if e.pod.labels:
            meta["labels"] = e.pod.labels
        if e.pod.annotations:
            meta["annotations"] = e.pod.annotations
        if managed := (e.manifest.get("metadata") or {}).get("managedFields"):
            meta["managedFields"] = managed  # the API server's, stored with the manifest
        if e.deletion_requested:
            meta["deletionTimestamp"] = st.rfc3339(e.deletion_requested)
            meta["deletionGracePeriodSeconds"] = e.pod.termination_grace_period_seconds  # the deletion's
        if e.source != API_SOURCE:
            meta.setdefault("annotations", {})["kubernetes.io/config.source"] = "file"
        doc = status.to_dict(self.ctx.runtime_name)
        doc["sandbox"] = {"id": status.sandbox_id, "attempt": status.sandbox_attempt}
        for group, statuses in (
            ("initContainerStatuses", status.init_container_statuses),
            ("containerStatuses", status.container_statuses),
            ("ephemeralContainerStatuses", status.ephemeral_container_statuses),
        ):
            for cs, rendered in zip(statuses, doc.get(group, []), strict=False):
                rendered["logPath"] = cs.log_path
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta,
            "spec": e.manifest.get("spec", {}),
            "status": doc,
        }

    def set_pod_conditions(self, namespace: str, name: str, conditions: list[dict[str, Any]]) -> None:
        """The pod's conditions that are not the kubelet's (a readiness gate's), as a status patch set
        them; the pod worker looks again, so Ready follows its readiness gates."""
        with self._lock:
            entry = self._pods.get((namespace, name))
        if entry is None:
            raise NotFound(f'pods "{name}" not found')
        entry.worker.status.set_external_conditions(conditions, time.time())
        entry.worker.wake()
        self._bump()

    def _views(self) -> list[PodView]:
        views = []
        for e in self._entries():
            s = e.worker.status.get()
            views.append(PodView(e.pod, s.pod_ip, s.ready and not e.deletion_requested))
        return views

    def service_objects(self, namespace: str = "", name: str = "") -> list[dict[str, Any]]:
        with self._lock:
            entries = [
                s
                for (ns, n), s in sorted(self._services.items())
                if (not namespace or ns == namespace) and (not name or n == name)
            ]
        if name and not entries:
            raise NotFound(f'services "{name}" not found')
        out = []
        for s in entries:
            doc = dict(s.manifest)
            meta = dict(doc.get("metadata") or {})
            meta.update(
                namespace=s.service.namespace, uid=s.service.uid, creationTimestamp=st.rfc3339(s.created_at)
            )
            doc["metadata"] = meta
            out.append(doc)
        return out

    def config_objects(self, kind: str, namespace: str = "", name: str = "") -> list[dict[str, Any]]:
        """ConfigMaps or Secrets (`kind`) as v1 objects (Secret data base64, as the API serves it)."""
        out = []
        for obj, created_at in self.configs.list(kind):
            if (namespace and obj.namespace != namespace) or (name and obj.name != name):
                continue
            doc = dict(obj.doc)
            meta = dict(doc.get("metadata") or {})
            meta.update(namespace=obj.namespace, uid=obj.uid, creationTimestamp=st.rfc3339(created_at))
            doc["metadata"] = meta
            out.append(doc)
        if name and not out:
            raise NotFound(f'{kind.lower()}s "{name}" not found')
        return out

    def endpoint_objects(self, namespace: str = "", name: str = "") -> list[dict[str, Any]]:
        with self._lock:
            services = [
                s
                for (ns, n), s in sorted(self._services.items())
                if (not namespace or ns == namespace) and (not name or n == name)
            ]
        if name and not services:
            raise NotFound(f'endpoints "{name}" not found')
        views = self._views()
        out = []
        for s in services:
            doc = endpoints_for(s.service, views).to_dict()
            doc["metadata"]["creationTimestamp"] = st.rfc3339(s.created_at)
            out.append(doc)
        return out

    def event_objects(self, namespace: str = "", name: str = "") -> list[dict[str, Any]]:
        return [e.to_dict() for e in self.events.list(namespace, f"pod/{name}" if name else "")]

    def locate(self, namespace: str, pod: str, container: str = "", previous: bool = False) -> dict[str, Any]:
        """Where a container runs and logs: its id, the runtime endpoint, its (previous) log file."""
        with self._lock:
            entry = self._pods.get((namespace, pod))
        if entry is None:
            raise NotFound(f'pods "{pod}" not found')
        names = [c.name for c in entry.pod.containers]
        if not container:
            if len(names) > 1:
                raise InvalidArgument(
                    f"pod/{pod} has {len(names)} containers; choose one with -c: {', '.join(names)}"
                )
            container = names[0]
        status = entry.worker.status.get()
        statuses = [*status.init_container_statuses, *status.container_statuses]
        for cs in [*statuses, *status.ephemeral_container_statuses]:
            if cs.name != container:
                continue
            log_path = cs.previous_log_path if previous else cs.log_path
            if previous and not log_path:
                raise NotFound(f'previous terminated container "{container}" in pod "{pod}" not found')
            return {
                "container_id": cs.container_id,
                "runtime_endpoint": self.settings.runtime_endpoint,
                "log_path": log_path,
                "running": cs.state == "running",
                "container": container,
            }
        raise NotFound(
            f"container {container!r} is not valid for pod/{pod}: choose one of {', '.join(names)}"
        )


def _with_userns_host_id(doc: dict[str, Any], host_id: int) -> dict[str, Any]:
    """`doc` remembering the host ids the pod manager gave the pod's user namespace (0: none), so the
    same pod gets the same ids after a restart."""
    if not host_id:
        return doc
    meta = dict(doc.get("metadata") or {})
    meta["annotations"] = {**(meta.get("annotations") or {}), USERNS_ANNOTATION: str(host_id)}
    return {**doc, "metadata": meta}


def _with_uid(doc: dict[str, Any], uid: str) -> dict[str, Any]:
    meta = dict(doc.get("metadata") or {})
    meta["uid"] = uid
    return {**doc, "metadata": meta}


def load_objects_from(doc: dict[str, Any]) -> list[Pod | Service | ConfigObject]:
    """Parse one stored manifest dict (as applied) again."""
    return load_objects(json.dumps(doc))
