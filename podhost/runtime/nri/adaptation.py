"""NRI in podhost: the socket plugins connect to, their registration, and the lifecycle events.

A plugin connects to `Config.nri_socket`, registers (name and two-digit index), is configured (it
answers which events it wants), and is synchronized: it gets every pod and container podhost knows,
and from then on the events it subscribed to, in index order. Its answers may adjust a container being
created (objects.Adjuster) and update other containers' resources.

Three rules keep a plugin from losing or corrupting anything:
- **No event is lost around a synchronization.** Events are delivered under the shared side of a gate
  and a synchronization holds the exclusive side from its snapshot until the plugin has answered and
  joined the active set. What the snapshot holds is this module's own registry of the pods and
  containers it has announced, updated under the same gate, so a container is either in the snapshot
  or its CreateContainer reaches the plugin after Synchronize, never neither and never both. A create
  that arrives meanwhile waits for the synchronization (bounded by the request timeout).
- **A hung or dead plugin costs one timeout, once.** A call that overruns `nri_request_timeout` or
  finds the connection gone disconnects that plugin and the verb goes on without it, as containerd and
  CRI-O do. A plugin's explicit error fails the verbs that may be refused (RunPodSandbox,
  CreateContainer, StartContainer, UpdateContainerResources); for the others it is logged.
- **The socket is the runtime's.** It is made 0600 in a 0700 directory; an existing socket another
  process answers on is refused, a stale one replaced.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf.message import Message

from podhost.config import Config
from podhost.errors import FailedPrecondition, RuntimeFailure
from podhost.runtime.hooks import LifecycleHooks
from podhost.runtime.model import Container, LinuxContainerResources, PodSandbox
from podhost.runtime.nri import api_pb2 as nri
from podhost.runtime.nri import objects
from podhost.runtime.nri.protocol import (
    PLUGIN_SERVICE,
    PLUGIN_SERVICE_CONN,
    RUNTIME_SERVICE,
    RUNTIME_SERVICE_CONN,
    event_bit,
)
from podhost.runtime.nri.transport import (
    INVALID_ARGUMENT,
    UNIMPLEMENTED,
    ConnectionClosed,
    Trunk,
    TtrpcError,
)

log = logging.getLogger(__name__)

#: The NRI protocol version podhost implements (sent in ConfigureRequest.NRI_version).
NRI_VERSION = "v0.12.0"
#: Every event a plugin may subscribe to (ConfigureResponse.events == 0 means these).
VALID_EVENTS = (1 << (nri.LAST - 1)) - 1

#: Applies a plugin's resource update to a container (container id, NRI resources); raises on failure.
UpdateFn = Callable[[str, nri.LinuxResources], None]
#: Stops a container a plugin evicts (container id, reason).
EvictFn = Callable[[str, str], None]


class _Gate:
    """Many event deliveries at once, or one synchronization; a waiting synchronization goes first."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0
        self._exclusive = False
        self._waiting = 0

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._exclusive and not self._waiting)
            self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            self._cond.wait_for(lambda: not self._exclusive and not self._shared)
            self._waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


@dataclass
class Plugin:
    trunk: Trunk
    name: str = ""
    index: str = ""
    events: int = 0
    registered: threading.Event = field(default_factory=threading.Event)

    def __str__(self) -> str:
        return f"{self.index}-{self.name}" if self.name else "(unregistered plugin)"

    def wants(self, event: int) -> bool:
        return bool(self.events & event_bit(event))

    def call(self, method: str, request: Message, response: Message, timeout: float) -> Any:
        return self.trunk.call(PLUGIN_SERVICE_CONN, PLUGIN_SERVICE, method, request, response, timeout)


#: Events that may refuse the verb they belong to.
_REFUSABLE = {nri.RUN_POD_SANDBOX, nri.CREATE_CONTAINER, nri.START_CONTAINER, nri.UPDATE_CONTAINER}
#: The dedicated method of each notification, and its request/response types; older plugins take them
#: as StateChange(event) instead.
_NOTIFICATIONS: dict[int, tuple[str, type[Message], type[Message]]] = {
    nri.RUN_POD_SANDBOX: ("RunPodSandbox", nri.RunPodSandboxRequest, nri.RunPodSandboxResponse),
    nri.STOP_POD_SANDBOX: ("StopPodSandbox", nri.StopPodSandboxRequest, nri.StopPodSandboxResponse),
    nri.REMOVE_POD_SANDBOX: ("RemovePodSandbox", nri.RemovePodSandboxRequest, nri.RemovePodSandboxResponse),
    nri.POST_CREATE_CONTAINER: (
        "PostCreateContainer", nri.PostCreateContainerRequest, nri.PostCreateContainerResponse),
    nri.START_CONTAINER: ("StartContainer", nri.StartContainerRequest, nri.StartContainerResponse),
    nri.POST_START_CONTAINER: (
        "PostStartContainer", nri.PostStartContainerRequest, nri.PostStartContainerResponse),
    nri.POST_UPDATE_CONTAINER: (
        "PostUpdateContainer", nri.PostUpdateContainerRequest, nri.PostUpdateContainerResponse),
    nri.REMOVE_CONTAINER: ("RemoveContainer", nri.RemoveContainerRequest, nri.RemoveContainerResponse),
}  # fmt: skip


class Adaptation(LifecycleHooks):
    """The NRI side of one runtime. `start` seeds the registry with what runs and opens the socket."""

    def __init__(self, config: Config, runtime_version: str, update: UpdateFn, evict: EvictFn) -> None:
        assert config.nri_socket is not None
        self.config = config
        self.socket_path: Path = config.nri_socket
        self.runtime_version = runtime_version
        self._update = update
        self._evict = evict
        self._gate = _Gate()
        self._lock = threading.Lock()  # guards _plugins and the registry maps
        self._plugins: list[Plugin] = []  # active (synchronized), in call order
        self._pods: dict[str, nri.PodSandbox] = {}
        self._containers: dict[str, nri.Container] = {}
        self._listener: socket.socket | None = None
        self._closed = threading.Event()
        self._connections: set[Trunk] = set()

    # --- life ------------------------------------------------------------------------------------

    def start(self, sandboxes: list[PodSandbox], containers: list[Container]) -> None:
        pods = {sandbox.id: self._pod(sandbox) for sandbox in sandboxes}
        known = {record.id: self._container(record) for record in containers}  # takes the lock itself
        with self._lock:
            self._pods.update(pods)
            self._containers.update(known)
        self._listener = _listen(self.socket_path)
        threading.Thread(target=self._accept_loop, name="nri-accept", daemon=True).start()
        log.info("NRI: serving plugins on %s", self.socket_path)

    def close(self) -> None:
        self._closed.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            with contextlib.suppress(OSError):
                self.socket_path.unlink()
        with self._lock:
            connections = list(self._connections)
        for trunk in connections:
            trunk.close()

    def plugins(self) -> list[str]:
        """The active plugins, "index-name", in call order."""
        with self._lock:
            return [str(p) for p in self._plugins]

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._closed.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                if self._closed.is_set():
                    return
                continue
            threading.Thread(target=self._admit, args=(sock,), name="nri-admit", daemon=True).start()

    def _admit(self, sock: socket.socket) -> None:
        """Register, configure and synchronize one connecting plugin; drop it if any step fails."""
        plugin: Plugin | None = None

        def closed() -> None:
            with self._lock:
                self._connections.discard(trunk)
                if plugin in self._plugins:
                    self._plugins.remove(plugin)
            log.info("NRI: plugin %s disconnected", plugin)

        trunk = Trunk(sock, {RUNTIME_SERVICE_CONN: lambda *a: self._serve_runtime(plugin, *a)}, closed, "new")
        plugin = Plugin(trunk)
        with self._lock:
            self._connections.add(trunk)
        trunk.start()
        try:
            if not plugin.registered.wait(self.config.nri_registration_timeout):
                raise TimeoutError(f"did not register within {self.config.nri_registration_timeout:g} s")
            self._configure(plugin)
            self._synchronize(plugin)
        except (TimeoutError, ConnectionClosed, TtrpcError, RuntimeFailure) as e:
            log.warning("NRI: dropping plugin %s: %s", plugin, e)
            trunk.close()

    def _serve_runtime(self, plugin: Plugin | None, service: str, method: str, payload: bytes) -> bytes:
        """The Runtime service a plugin calls: RegisterPlugin and UpdateContainers."""
        assert plugin is not None
        if service != RUNTIME_SERVICE:
            raise TtrpcError(UNIMPLEMENTED, f"unknown service {service}")
        if method == "RegisterPlugin":
            request = nri.RegisterPluginRequest.FromString(payload)
            name, index = request.plugin_name, request.plugin_idx
            if not name or "/" in name or len(index) != 2 or not index.isdigit():
                raise TtrpcError(INVALID_ARGUMENT, f"invalid plugin name {name!r} or index {index!r}")
            plugin.name, plugin.index = name, index
            plugin.trunk.name = str(plugin)
            plugin.registered.set()
            log.info("NRI: plugin %s registered (pid %d)", plugin, plugin.trunk.peer_pid())
            return nri.Empty().SerializeToString()
        if method == "UpdateContainers":
            updates = nri.UpdateContainersRequest.FromString(payload)
            failed = self._apply_updates(plugin, updates.update, raise_on_failure=False)
            for eviction in updates.evict:
                self._evict(eviction.container_id, eviction.reason)
            return nri.UpdateContainersResponse(failed=failed).SerializeToString()
        raise TtrpcError(UNIMPLEMENTED, f"unknown method {method}")

    def _configure(self, plugin: Plugin) -> None:
        timeout = self.config.nri_request_timeout
        request = nri.ConfigureRequest(
            runtime_name="podhost",
            runtime_version=self.runtime_version,
            registration_timeout=int(self.config.nri_registration_timeout * 1000),
            request_timeout=int(timeout * 1000),
            NRI_version=NRI_VERSION,
        )
        reply = plugin.call("Configure", request, nri.ConfigureResponse(), timeout)
        events = reply.events or VALID_EVENTS
        if events & ~VALID_EVENTS:
            raise RuntimeFailure(f"subscribed to unknown events 0x{events & ~VALID_EVENTS:x}")
        plugin.events = events

    def _synchronize(self, plugin: Plugin) -> None:
        with self._gate.exclusive():
            with self._lock:
                pods, containers = list(self._pods.values()), list(self._containers.values())
            request = nri.SynchronizeRequest(pods=pods, containers=containers)
            reply = plugin.call(
                "Synchronize", request, nri.SynchronizeResponse(), self.config.nri_request_timeout
            )
            with self._lock:
                if plugin.trunk.closed:
                    raise ConnectionClosed("closed during Synchronize")
                self._plugins.append(plugin)
                self._plugins.sort(key=lambda p: (p.index, p.name))
        log.info("NRI: plugin %s synchronized (%d pods, %d containers)", plugin, len(pods), len(containers))
        self._apply_updates(plugin, reply.update, raise_on_failure=False)

    # --- delivery --------------------------------------------------------------------------------

    def _active(self, event: int) -> list[Plugin]:
        with self._lock:
            return [p for p in self._plugins if p.wants(event)]

    def _drop(self, plugin: Plugin, method: str, error: Exception) -> None:
        log.warning("NRI: plugin %s failed %s (%s): disconnecting it", plugin, method, error)
        plugin.trunk.close()

    def _call(
        self,
        plugin: Plugin,
        event: int,
        method: str,
        request: Message,
        response: Message,
        unimplemented: Callable[[], Any] | None = None,
    ) -> Any:
        """One call; None when the plugin was dropped (timeout, connection gone). A plugin's error is
        raised as RuntimeFailure for refusable events, logged for the others; a method the plugin lacks
        refuses nothing, and `unimplemented` (an older form of the call) is tried instead."""
        try:
            return plugin.call(method, request, response, self.config.nri_request_timeout)
        except (TimeoutError, ConnectionClosed) as e:
            self._drop(plugin, method, e)
            return None
        except TtrpcError as e:
            if e.code == UNIMPLEMENTED and unimplemented is not None:
                return unimplemented()
            if event in _REFUSABLE and e.code != UNIMPLEMENTED:
                raise RuntimeFailure(f"NRI plugin {plugin} refused {method}: {e}") from e
            log.warning("NRI: plugin %s: %s failed: %s", plugin, method, e)
            return None

    def _notify(self, event: int, pod: nri.PodSandbox, container: nri.Container | None = None) -> None:
        """A notification to every subscribed plugin, by its dedicated method (StateChange for plugins
        that lack it). Call with the gate held."""
        method, request_type, response_type = _NOTIFICATIONS[event]
        request = request_type(pod=pod) if container is None else request_type(pod=pod, container=container)
        state = nri.StateChangeEvent(event=event, pod=pod, container=container)  # type: ignore[arg-type]
        for plugin in self._active(event):

            def older(p: Plugin = plugin) -> Any:  # plugins before the dedicated methods
                return self._call(p, event, "StateChange", state, nri.Empty())

            self._call(plugin, event, method, request, response_type(), unimplemented=older)

    def _apply_updates(
        self, plugin: object, updates: Any, raise_on_failure: bool
    ) -> list[nri.ContainerUpdate]:
        """Apply plugins' resource updates to other containers; the failed ones are returned (or raised,
        with `raise_on_failure`), except those the plugin said may fail."""
        failed = []
        for update in updates:
            try:
                self._update(update.container_id, update.linux.resources)
            except Exception as e:
                if update.ignore_failure:
                    log.info(
                        "NRI: plugin %s: update of %s failed (ignored): %s",
                        plugin,
                        update.container_id[:13],
                        e,
                    )
                    continue
                if raise_on_failure:
                    raise RuntimeFailure(
                        f"NRI plugin {plugin}: update of container {update.container_id[:13]}: {e}"
                    ) from e
                log.warning("NRI: plugin %s: update of %s failed: %s", plugin, update.container_id[:13], e)
                failed.append(update)
        return failed

    # --- registry --------------------------------------------------------------------------------

    def _pod(self, sandbox: PodSandbox) -> nri.PodSandbox:
        return objects.pod_sandbox(sandbox, self.config.cgroup_parent)

    def _container(self, record: Container) -> nri.Container:
        """The NRI view of `record`: the one announced at create, refreshed; config.json is read only for
        a container the registry does not know yet (at start-up)."""
        with self._lock:
            known = self._containers.get(record.id)
        if known is not None:
            return objects.refreshed(known, record)
        return objects.container(record, objects.read_spec(self.config.container_run_dir(record.id)))

    def _pod_of(self, container: Container) -> nri.PodSandbox:
        with self._lock:
            return self._pods.get(container.sandbox_id) or nri.PodSandbox(id=container.sandbox_id)

    # --- the hooks (podhost.runtime.hooks) ---------------------------------------------------------

    def run_pod_sandbox(self, sandbox: PodSandbox) -> None:
        pod = self._pod(sandbox)
        with self._gate.shared():
            with self._lock:
                self._pods[sandbox.id] = pod
            self._notify(nri.RUN_POD_SANDBOX, pod)

    def pod_sandbox_undone(self, sandbox: PodSandbox) -> None:
        with self._gate.shared():
            with self._lock:
                pod = self._pods.pop(sandbox.id, None)
            if pod is not None:
                self._notify(nri.REMOVE_POD_SANDBOX, pod)

    def stop_pod_sandbox(self, sandbox: PodSandbox) -> None:
        with self._gate.shared():
            with self._lock:
                pod = self._pods.get(sandbox.id) or self._pod(sandbox)
            self._notify(nri.STOP_POD_SANDBOX, pod)

    def remove_pod_sandbox(self, sandbox: PodSandbox) -> None:
        with self._gate.shared():
            with self._lock:
                pod = self._pods.pop(sandbox.id, None) or self._pod(sandbox)
            self._notify(nri.REMOVE_POD_SANDBOX, pod)

    def create_container(self, sandbox: PodSandbox, container: Container, spec: dict[str, Any]) -> None:
        updates: list[nri.ContainerUpdate] = []
        evictions: list[nri.ContainerEviction] = []
        with self._gate.shared():
            with self._lock:
                pod = self._pods.get(sandbox.id) or self._pod(sandbox)
                self._containers[container.id] = pristine = objects.container(container, spec)
            adjuster = objects.Adjuster(spec, container.config.annotations)
            consulted = []
            for plugin in self._active(nri.CREATE_CONTAINER):
                request = nri.CreateContainerRequest(pod=pod, container=pristine)
                reply = self._call(
                    plugin, nri.CREATE_CONTAINER, "CreateContainer", request, nri.CreateContainerResponse()
                )
                if reply is None:
                    continue
                consulted.append(plugin)
                try:
                    adjuster.apply(reply.adjust, str(plugin))
                except objects.AdjustmentRefused as e:
                    raise FailedPrecondition(f"NRI plugin {plugin}: {e}") from e
                updates.extend(reply.update)
                evictions.extend(reply.evict)
            self._validate(pod, pristine, adjuster, updates, consulted)
            with self._lock:
                self._containers[container.id] = objects.container(container, spec)
        self._apply_updates("/".join(map(str, consulted)), updates, raise_on_failure=True)
        for eviction in evictions:
            self._evict(eviction.container_id, eviction.reason)

    def _validate(
        self,
        pod: nri.PodSandbox,
        container: nri.Container,
        adjuster: objects.Adjuster,
        updates: list[nri.ContainerUpdate],
        consulted: list[Plugin],
    ) -> None:
        validators = self._active(nri.VALIDATE_CONTAINER_ADJUSTMENT)
        if not validators:
            return
        request = nri.ValidateContainerAdjustmentRequest(
            pod=pod,
            container=container,
            adjust=adjuster.merged,
            update=updates,
            plugins=[nri.PluginInstance(name=p.name, index=p.index) for p in consulted],
        )
        for (what, key), owner in adjuster.owners.items():
            request.owners.owners[container.id].compound[0].owners[f"{what}:{key}"] = owner
        for plugin in validators:
            reply = self._call(
                plugin, nri.CREATE_CONTAINER, "ValidateContainerAdjustment", request,
                nri.ValidateContainerAdjustmentResponse(),
            )  # fmt: skip
            if reply is not None and reply.reject:
                raise FailedPrecondition(f"NRI plugin {plugin} rejected the adjustments: {reply.reason}")

    def container_undone(self, container: Container) -> None:
        with self._gate.shared():
            with self._lock:
                ctr = self._containers.pop(container.id, None)
            if ctr is not None:
                self._notify(nri.REMOVE_CONTAINER, self._pod_of(container), ctr)

    def _container_event(self, event: int, container: Container, forget: bool = False) -> None:
        with self._gate.shared():
            ctr = self._container(container)
            with self._lock:
                if forget:
                    self._containers.pop(container.id, None)
                else:
                    self._containers[container.id] = ctr
            self._notify(event, self._pod_of(container), ctr)

    def post_create_container(self, container: Container) -> None:
        self._container_event(nri.POST_CREATE_CONTAINER, container)

    def start_container(self, container: Container) -> None:
        self._container_event(nri.START_CONTAINER, container)

    def post_start_container(self, container: Container) -> None:
        self._container_event(nri.POST_START_CONTAINER, container)

    def update_container(self, container: Container, resources: LinuxContainerResources) -> None:
        updates: list[nri.ContainerUpdate] = []
        with self._gate.shared():
            ctr = self._container(container)
            pod = self._pod_of(container)
            for plugin in self._active(nri.UPDATE_CONTAINER):
                request = nri.UpdateContainerRequest(
                    pod=pod, container=ctr, linux_resources=objects.resources_from_cri(resources)
                )
                reply = self._call(
                    plugin, nri.UPDATE_CONTAINER, "UpdateContainer", request, nri.UpdateContainerResponse()
                )
                if reply is not None:
                    updates.extend(u for u in reply.update if u.container_id != container.id)
        self._apply_updates("UpdateContainer", updates, raise_on_failure=False)

    def post_update_container(self, container: Container) -> None:
        self._container_event(nri.POST_UPDATE_CONTAINER, container)

    def stop_container(self, container: Container) -> None:
        updates: list[nri.ContainerUpdate] = []
        with self._gate.shared():
            ctr = self._container(container)
            with self._lock:
                self._containers[container.id] = ctr
            pod = self._pod_of(container)
            for plugin in self._active(nri.STOP_CONTAINER):
                request = nri.StopContainerRequest(pod=pod, container=ctr)
                reply = self._call(
                    plugin, nri.STOP_CONTAINER, "StopContainer", request, nri.StopContainerResponse()
                )
                if reply is not None:
                    updates.extend(reply.update)
        self._apply_updates("StopContainer", updates, raise_on_failure=False)

    def remove_container(self, container: Container) -> None:
        self._container_event(nri.REMOVE_CONTAINER, container, forget=True)


def _listen(path: Path) -> socket.socket:
    """A listening unix socket at `path`, 0600 in a 0700 directory. A socket another process answers on
    is refused (another runtime owns it); a stale one is replaced."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.is_socket():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()
        else:
            raise FailedPrecondition(f"NRI socket {path} is served by another process; refusing to take it")
        finally:
            probe.close()
    elif path.exists():
        raise FailedPrecondition(f"NRI socket path {path} exists and is not a socket")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    # Made 0600 after bind, not with a umask: the umask is the whole process's (an image unpack relies
    # on it); until the chmod the 0700 directory keeps everyone else out.
    listener.bind(str(path))
    os.chmod(path, 0o600)
    listener.listen(16)
    return listener
