"""One typed configuration for a podhost instance.

Defaults work out of the box on a Debian node. One setting isolates an instance completely: `root`
(`PODHOST_ROOT` in the environment, or `podhost --root DIR`). With it, state, run files, the CRI socket,
the CNI config dir, the host-local IPAM dir and the cgroup parent all move under or derive from DIR, so
tests and benchmarks never touch a running daemon.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import shutil
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from podhost.defaults import DEFAULT_RUN_DIR, DEFAULT_STATE_DIR, ROOT_ENV, SOCKET_NAME
from podhost.errors import InvalidArgument

DEFAULT_BRIDGE = "podhost0"
DEFAULT_SUBNET = "10.88.0.0/16"
PAUSE_IMAGE = "localhost/podhost/pause:3.10"


def _which(name: str, *fallbacks: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for candidate in fallbacks:
        if os.access(candidate, os.X_OK):
            return candidate
    return name


@dataclass
class RegistryConfig:
    """One `[registries."HOST"]` table (HOST as references name it: `docker.io`, `127.0.0.1:5000`).

    `mirrors` are endpoints (`host[:port]` or `scheme://host[:port]`) tried in order before HOST
    itself, as containerd's hosts.toml and CRI-O's registries.conf allow; each mirror's own TLS and
    credentials come from its own table. `insecure` allows plain HTTP and unverified TLS.
    """

    insecure: bool = False
    ca_file: Path | None = None
    username: str = ""
    password: str = ""
    #: base64 of "username:password", as ~/.docker/config.json stores it.
    auth: str = ""
    mirrors: list[str] = field(default_factory=list)


def _registry_config(host: str, value: Any) -> RegistryConfig:
    if isinstance(value, RegistryConfig):
        return value
    if not isinstance(value, dict):
        raise InvalidArgument(f"config: registries.{host!r} must be a table")
    known = {f.name for f in fields(RegistryConfig)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise InvalidArgument(f"config: registries.{host!r}: unknown setting(s): {', '.join(unknown)}")
    reg = RegistryConfig(**value)
    if reg.ca_file is not None:
        reg.ca_file = Path(reg.ca_file)
    if not isinstance(reg.mirrors, list) or not all(isinstance(m, str) and m for m in reg.mirrors):
        raise InvalidArgument(f"config: registries.{host!r}.mirrors must be a list of endpoints")
    return reg


#: A subnet must hold the gateway (the bridge's address) and at least one pod beside the network and
#: broadcast addresses, so IPv4 /30 and IPv6 /126 are the smallest.
_MAX_PREFIX = {4: 30, 6: 126}
#: Linux interface names are at most IFNAMSIZ - 1 bytes.
_IFNAMSIZ = 16


def check_subnet(subnet: str) -> str:
    """The pod subnet as the CNI host-local plugin needs it: a network address with a prefix length.
    "10.77.6.0/22" has host bits set and makes every RunPodSandbox fail in CNI ("invalid CIDR"), so
    it is refused at start, naming the network that was probably meant (10.77.4.0/22)."""
    try:
        network = ipaddress.ip_network(subnet, strict=True)
    except ValueError as e:
        try:
            meant = ipaddress.ip_network(subnet, strict=False)
        except ValueError:
            raise InvalidArgument(
                f"config: subnet {subnet!r} is not a network (e.g. 10.88.0.0/16): {e}"
            ) from e
        raise InvalidArgument(
            f"config: subnet {subnet!r} has host bits set; the network is {meant} (did you mean that?)"
        ) from e
    if "/" not in subnet:
        raise InvalidArgument(f"config: subnet {subnet!r} needs a prefix length (e.g. 10.88.0.0/16)")
    if network.prefixlen > _MAX_PREFIX[network.version]:
        raise InvalidArgument(
            f"config: subnet {subnet!r} is too small for a gateway and a pod "
            f"(at most /{_MAX_PREFIX[network.version]})"
        )
    return str(network)


def check_bridge_name(bridge: str) -> None:
    """The bridge is a network interface: the kernel refuses longer names, '/', whitespace, '.', '..'."""
    if (
        not bridge
        or len(bridge.encode()) >= _IFNAMSIZ
        or bridge in (".", "..")
        or any(c == "/" or c == ":" or c.isspace() or not c.isprintable() for c in bridge)
    ):
        raise InvalidArgument(
            f"config: bridge {bridge!r} is not a network interface name "
            f"(1-{_IFNAMSIZ - 1} characters, no '/', ':' or whitespace)"
        )


@dataclass
class Config:
    """Every setting of one podhost instance. Paths are absolute once `resolve()` has run."""

    root: Path | None = None
    state_dir: Path = DEFAULT_STATE_DIR
    run_dir: Path = DEFAULT_RUN_DIR
    socket: Path = DEFAULT_RUN_DIR / SOCKET_NAME
    # Network (CNI).
    bridge: str = DEFAULT_BRIDGE
    subnet: str = DEFAULT_SUBNET
    cni_conf_dir: Path = Path("/etc/cni/net.d")
    cni_bin_dirs: list[Path] = field(default_factory=lambda: [Path("/usr/lib/cni"), Path("/opt/cni/bin")])
    #: "node-only" keeps forwarded pod traffic on this machine (an iptables DROP for traffic forwarded off
    #: the bridge, and net.ipv4.ip_forward put back after every CNI ADD); "allow" leaves routing alone.
    pod_egress: str = "node-only"
    #: resolv.conf copied into pods whose CRI DNSConfig is empty (what containerd does with the host's).
    default_resolv_conf: Path = Path("/etc/resolv.conf")
    # Processes.
    cgroup_parent: str = "/podhost"
    conmon: str = field(
        default_factory=lambda: _which("conmon", "/usr/bin/conmon", "/usr/libexec/podman/conmon")
    )
    runtimes: dict[str, str] = field(
        default_factory=lambda: {
            "runc": _which("runc", "/usr/sbin/runc"),
            "crun": _which("crun", "/usr/bin/crun"),
        }
    )
    default_runtime: str = "runc"
    pause_image: str = PAUSE_IMAGE
    #: where the built pause binary lives; None means the one `podhost.pause.build` made.
    pause_binary: Path | None = None
    #: seconds pause may take to found its namespaces and report; past it, what was started is killed.
    pause_start_timeout: float = 10.0
    #: seconds `<runtime> create` (under conmon) may take; past it conmon, the runtime and all they
    #: started are killed and CreateContainer fails.
    runtime_create_timeout: float = 60.0
    #: seconds a SIGTERMed daemon may take to stop serving before it exits regardless.
    shutdown_timeout: float = 10.0
    # Streaming server (exec/attach/port-forward URLs).
    stream_address: str = "127.0.0.1"
    stream_port: int = 0
    log_level: str = "info"
    # Pod manager (the kubelet role, embedded in the daemon).
    #: the CRI runtime it drives ("unix:///path"); empty: this daemon's own socket.
    kubelet_runtime_endpoint: str = ""
    #: a static pod directory (`podhost daemon --manifests DIR`); empty: none.
    kubelet_manifests_dir: str = ""
    #: CrashLoopBackOff's first wait in seconds, doubling to 5 min.
    kubelet_restart_backoff: float = 10.0
    #: each pod's cgroup parent is <this>/pod<uid>; empty: the runtime's default (containerd needs one).
    kubelet_pod_cgroup_parent: str = ""
    # Images: registries (see RegistryConfig), parallel layer downloads, garbage collection.
    registries: dict[str, RegistryConfig] = field(default_factory=dict)
    max_concurrent_downloads: int = 3
    #: the kubelet's imageGCHighThresholdPercent / imageGCLowThresholdPercent, for the image store's
    #: filesystem: above `high` % used, unused images are removed (oldest first) until below `low` %.
    image_gc_high_threshold_percent: int = 85
    image_gc_low_threshold_percent: int = 80
    # NRI (the Node Resource Interface, podhost.runtime.nri): off unless a socket is given.
    #: where plugins connect (containerd's and CRI-O's default is /var/run/nri/nri.sock); empty: no NRI.
    nri_socket: Path | None = None
    #: seconds a connected plugin has to register and answer Configure before it is dropped.
    nri_registration_timeout: float = 5.0
    #: seconds a plugin has for each call; one that overruns is disconnected and the verb goes on
    #: without it (as NRI's own runtimes do: a hung plugin must not wedge the node).
    nri_request_timeout: float = 5.0
    # The Kubernetes API for kubectl (podhost.apiserver): HTTPS, client certificates under state_dir.
    kube_api: bool = True
    kube_api_address: str = "127.0.0.1"
    #: 0: the port the previous <state_dir>/kubeconfig names if it is free, else any free port.
    kube_api_port: int = 0

    @classmethod
    def load(
        cls,
        root: str | os.PathLike[str] | None = None,
        config_file: str | os.PathLike[str] | None = None,
        **overrides: Any,
    ) -> Config:
        """Build the config: TOML file, then `root` (argument, else PODHOST_ROOT), then explicit overrides."""
        values: dict[str, Any] = {}
        if config_file:
            try:
                with open(config_file, "rb") as f:
                    values.update(tomllib.load(f))
            except (OSError, tomllib.TOMLDecodeError) as e:
                raise InvalidArgument(f"config file {config_file}: {e}") from e
        root = root or values.pop("root", None) or os.environ.get(ROOT_ENV) or None
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidArgument(f"config: unknown setting(s): {', '.join(unknown)}")
        cfg = cls()
        if root:
            cfg.apply_root(Path(root))
        for key, value in values.items():
            setattr(cfg, key, value)
        cfg.resolve()
        return cfg

    def apply_root(self, root: Path) -> None:
        """Move everything instance-specific under `root` (see the module docstring)."""
        root = root.absolute()
        self.root = root
        self.state_dir = root / "state"
        self.run_dir = root / "run"
        self.socket = root / SOCKET_NAME
        self.cni_conf_dir = root / "cni" / "net.d"
        self.cgroup_parent = "/podhost-" + hashlib.sha256(str(root).encode()).hexdigest()[:10]

    def resolve(self) -> None:
        """Coerce strings from TOML into paths and check the values that can be checked early."""
        for name in ("state_dir", "run_dir", "socket", "cni_conf_dir", "default_resolv_conf"):
            setattr(self, name, Path(getattr(self, name)))
        self.cni_bin_dirs = [Path(p) for p in self.cni_bin_dirs]
        if self.pause_binary is not None:
            self.pause_binary = Path(self.pause_binary)
        if self.nri_socket is not None:
            self.nri_socket = Path(self.nri_socket) if str(self.nri_socket) else None
        if not (self.nri_registration_timeout > 0 and self.nri_request_timeout > 0):
            raise InvalidArgument("config: nri_registration_timeout and nri_request_timeout must be positive")
        self.subnet = check_subnet(str(self.subnet))
        check_bridge_name(str(self.bridge))
        if self.pod_egress not in ("node-only", "allow"):
            raise InvalidArgument(
                f"config: pod_egress must be 'node-only' or 'allow', not {self.pod_egress!r}"
            )
        if self.default_runtime not in self.runtimes:
            raise InvalidArgument(f"config: default_runtime {self.default_runtime!r} is not in runtimes")
        if not self.cgroup_parent.startswith("/"):
            self.cgroup_parent = "/" + self.cgroup_parent
        if not isinstance(self.registries, dict):
            raise InvalidArgument("config: registries must be a table of registry hosts")
        self.registries = {str(h): _registry_config(str(h), v) for h, v in self.registries.items()}
        if not self.shutdown_timeout > 0:
            raise InvalidArgument("config: shutdown_timeout must be a positive number of seconds")
        if self.max_concurrent_downloads < 1:
            raise InvalidArgument("config: max_concurrent_downloads must be at least 1")
        if not 0 <= self.image_gc_low_threshold_percent <= self.image_gc_high_threshold_percent <= 100:
            raise InvalidArgument(
                "config: want 0 <= image_gc_low_threshold_percent <= image_gc_high_threshold_percent <= 100"
            )

    @property
    def instance_id(self) -> str:
        """Names this instance in the marks of the processes it starts (podhost.runtime.procs)."""
        return hashlib.sha256(str(self.state_dir.absolute()).encode()).hexdigest()[:12]

    # Derived locations, one place so every layer agrees.
    @property
    def pause_path(self) -> Path:
        from podhost.pause import binary_path

        return self.pause_binary or binary_path()

    @property
    def sandbox_records(self) -> Path:
        return self.state_dir / "records" / "sandboxes"

    @property
    def container_records(self) -> Path:
        return self.state_dir / "records" / "containers"

    @property
    def image_dir(self) -> Path:
        return self.state_dir / "images"

    @property
    def cni_state_dir(self) -> Path:
        return self.state_dir / "cni"

    def sandbox_run_dir(self, sandbox_id: str) -> Path:
        return self.run_dir / "sandboxes" / sandbox_id

    def container_run_dir(self, container_id: str) -> Path:
        return self.run_dir / "containers" / container_id

    def container_state_dir(self, container_id: str) -> Path:
        return self.state_dir / "containers" / container_id
