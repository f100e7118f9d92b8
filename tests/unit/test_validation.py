"""podhost.runtime.validation: one row per rule, each naming the field it refuses; valid configs pass."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from podhost.errors import InvalidArgument
from podhost.runtime.model import (
    ContainerConfig,
    ContainerMetadata,
    ContainerSecurityContext,
    Device,
    DNSConfig,
    IDMapping,
    LinuxContainerResources,
    Mount,
    MountPropagation,
    NamespaceMode,
    NamespaceOption,
    PodSandboxConfig,
    PodSandboxMetadata,
    PortMapping,
    UserNamespace,
)
from podhost.runtime.validation import (
    MAX_ARG_BYTES,
    MAX_CONFIG_BYTES,
    validate_container_config,
    validate_pod_sandbox_config,
)

MB = "x" * (1 << 20)
HOST_TO_CONTAINER = MountPropagation.PROPAGATION_HOST_TO_CONTAINER
BIDIRECTIONAL = MountPropagation.PROPAGATION_BIDIRECTIONAL


def pod() -> PodSandboxConfig:
    """What the kubelet sends for an ordinary pod."""
    return PodSandboxConfig(
        metadata=PodSandboxMetadata(
            name="web-0", namespace="default", uid="0b6f5c1e-8d3a-4c1b-9f7e-2a1d3c4b5e6f", attempt=1
        ),
        hostname="web-0",
        log_directory="/var/log/pods/default_web-0_0b6f5c1e-8d3a-4c1b-9f7e-2a1d3c4b5e6f",
        dns_config=DNSConfig(
            servers=["10.96.0.10"],
            searches=["default.svc.cluster.local", "svc.cluster.local", "cluster.local"],
            options=["ndots:5"],
        ),
        port_mappings=[PortMapping("TCP", 8080, 30080, "127.0.0.1")],
        labels={"app": "web", "io.kubernetes.pod.name": "web-0"},
        annotations={"kubectl.kubernetes.io/last-applied-configuration": '{\n "kind": "Pod"\n}\n'},
        cgroup_parent="/kubepods/burstable/pod0b6f5c1e",
        sysctls={"net.ipv4.ip_local_port_range": "32768\t60999", "kernel.shm_rmid_forced": "1"},
        namespace_options=NamespaceOption(pid=NamespaceMode.CONTAINER),
        run_as_user=0,
        supplemental_groups=[1000],
        seccomp_profile_type="RuntimeDefault",
    )


def ctr() -> ContainerConfig:
    return ContainerConfig(
        metadata=ContainerMetadata(name="nginx", attempt=0),
        image="docker.io/library/nginx:1.25",
        command=["sh", "-c"],
        args=["echo hello\nsleep 3600"],  # a script: newlines are fine in arguments
        working_dir="/srv",
        envs=[("CERT", "-----BEGIN-----\nAAAA\n-----END-----\n"), ("EMPTY", "")],
        mounts=[Mount(container_path="/data", host_path="/var/lib/kubelet/pods/x/volumes/data")],
        devices=[Device(container_path="/dev/fuse", host_path="/dev/fuse", permissions="rwm")],
        labels={"io.kubernetes.container.name": "nginx"},
        annotations={"io.kubernetes.container.hash": "abc123"},
        log_path="nginx/0.log",
        resources=LinuxContainerResources(cpuset_cpus="0-1,3", unified={"memory.high": "max"}),
        security_context=ContainerSecurityContext(
            run_as_user=101, seccomp_profile_type="Localhost", seccomp_localhost_ref="/var/lib/p.json"
        ),
    )


def test_ordinary_configs_pass() -> None:
    validate_pod_sandbox_config(pod())
    validate_container_config(ctr(), pod())
    validate_pod_sandbox_config(PodSandboxConfig(metadata=PodSandboxMetadata("a", "b", "c")))
    # critest-style names (upper case, long) and IPv6 DNS are accepted as containerd accepts them.
    p = pod()
    p.metadata.name = "PodSandbox-for-create-container-test-" + "0" * 36
    p.dns_config = DNSConfig(servers=["fd00::10", "127.0.0.1"], searches=["cluster.local."])
    p.hostname = "a" * 62 + "-"  # a long pod name cut to 63, as the pod manager does
    validate_pod_sandbox_config(p)


PodEdit = Callable[[PodSandboxConfig], None]

# (rule, edit, the field the error must name)
POD_ROWS: list[tuple[str, PodEdit, str]] = [
    ("name required", lambda p: setattr(p.metadata, "name", ""), "metadata.name"),
    ("namespace required", lambda p: setattr(p.metadata, "namespace", ""), "metadata.namespace"),
    ("uid required", lambda p: setattr(p.metadata, "uid", ""), "metadata.uid"),
    ("attempt negative", lambda p: setattr(p.metadata, "attempt", -1), "metadata.attempt"),
    ("NUL in name", lambda p: setattr(p.metadata, "name", "we\0b"), "metadata.name"),
    ("NUL in a label key", lambda p: p.labels.update({"a\0b": "c"}), "labels"),
    ("NUL in an annotation value", lambda p: p.annotations.update({"a": "b\0"}), "annotations"),
    ("NUL in a sysctl value", lambda p: p.sysctls.update({"net.ipv4.tcp_syncookies": "1\0"}), "sysctls"),
    ("megabyte name", lambda p: setattr(p.metadata, "name", MB), "metadata.name"),
    ("name too long", lambda p: setattr(p.metadata, "name", "a" * 254), "metadata.name"),
    ("namespace too long", lambda p: setattr(p.metadata, "namespace", "a" * 64), "metadata.namespace"),
    ("';' in name (CNI_ARGS)", lambda p: setattr(p.metadata, "name", "a;K8S_X=1"), "metadata.name"),
    ("'=' in uid (CNI_ARGS)", lambda p: setattr(p.metadata, "uid", "a=b"), "metadata.uid"),
    ("'/' in namespace", lambda p: setattr(p.metadata, "namespace", "a/b"), "metadata.namespace"),
    ("newline in hostname", lambda p: setattr(p, "hostname", "web\n1.2.3.4 evil"), "hostname"),
    ("hostname too long", lambda p: setattr(p, "hostname", "h" * 64), "hostname"),
    ("space in hostname", lambda p: setattr(p, "hostname", "a b"), "hostname"),
    ("log_directory relative", lambda p: setattr(p, "log_directory", "logs"), "log_directory"),
    ("log_directory with ..", lambda p: setattr(p, "log_directory", "/var/log/../etc"), "log_directory"),
    ("newline in a DNS server", lambda p: dns(p).servers.append("1.1.1.1\nnameserver 9.9.9.9"), "servers[1]"),
    ("DNS server not an IP", lambda p: dns(p).servers.append("dns.example"), "servers[1]"),
    ("more than 3 DNS servers", lambda p: dns(p).servers.extend(["1.1.1.1"] * 3), "servers"),
    ("newline in a DNS search", lambda p: dns(p).searches.append("a.b\noptions x"), "searches[3]"),
    ("DNS search not a domain", lambda p: dns(p).searches.append("a b"), "searches[3]"),
    ("too many DNS searches", lambda p: dns(p).searches.extend(["s.local"] * 30), "searches"),
    ("DNS searches too long together", lambda p: dns(p).searches.extend(["s" * 200] * 10), "searches"),
    ("newline in a DNS option", lambda p: dns(p).options.append("ndots:1\nnameserver 9.9.9.9"), "options[1]"),
    ("space in a DNS option", lambda p: dns(p).options.append("a b"), "options[1]"),
    ("unknown port protocol", lambda p: setattr(p.port_mappings[0], "protocol", "ICMP"), "port_mappings[0]"),
    ("container port 0", lambda p: setattr(p.port_mappings[0], "container_port", 0), "port_mappings[0]"),
    ("host port too big", lambda p: setattr(p.port_mappings[0], "host_port", 70000), "port_mappings[0]"),
    ("host_ip not an IP", lambda p: setattr(p.port_mappings[0], "host_ip", "localhost"), "host_ip"),
    ("label key too long", lambda p: p.labels.update({"k" * 318: "v"}), "labels key"),
    ("label value megabyte", lambda p: p.labels.update({"k": MB}), "labels"),
    ("empty label key", lambda p: p.labels.update({"": "v"}), "labels"),
    (
        "annotations over 256 KiB",
        lambda p: p.annotations.update({f"a{i}": "v" * 4096 for i in range(70)}),
        "annotations",
    ),
    ("cgroup_parent with ..", lambda p: setattr(p, "cgroup_parent", "/kubepods/../../x"), "cgroup_parent"),
    ("sysctl value megabyte", lambda p: p.sysctls.update({"net.ipv4.tcp_syncookies": MB}), "sysctls"),
    ("sysctl name too long", lambda p: p.sysctls.update({"net." + "a" * 260: "1"}), "sysctls"),
    ("newline in a sysctl value", lambda p: p.sysctls.update({"net.ipv4.tcp_syncookies": "1\n"}), "sysctls"),
    ("node-wide sysctl", lambda p: p.sysctls.update({"vm.swappiness": "1"}), "sysctls"),
    ("uid negative", lambda p: setattr(p, "run_as_user", -1), "run_as_user"),
    ("gid too large", lambda p: setattr(p, "supplemental_groups", [1 << 32]), "supplemental_groups"),
    ("relative seccomp profile", lambda p: seccomp(p, "Localhost", "profile.json"), "localhost_ref"),
    ("whole config too big", lambda p: p.annotations.update(big_annotations()), "PodSandboxConfig"),
    ("userns mode CONTAINER", lambda p: userns(p, NamespaceMode.CONTAINER), "userns_options.mode"),
    ("userns mode TARGET", lambda p: userns(p, NamespaceMode.TARGET), "userns_options.mode"),
    (
        "userns two uid mappings",
        lambda p: userns(p, uids=[(0, 1000, 10), (10, 2000, 10)]),
        "userns_options.uids",
    ),
    ("userns no gid mapping", lambda p: userns(p, gids=[]), "userns_options.gids"),
    (
        "userns overlapping host ranges",
        lambda p: userns(p, uids=[(0, 1000, 10), (10, 1005, 10)]),
        "uids[1]: host id ranges overlap",
    ),
    (
        "userns overlapping container ranges",
        lambda p: userns(p, gids=[(0, 1000, 10), (5, 3000, 10)]),
        "gids[1]: container id ranges overlap",
    ),
    ("userns root unmapped", lambda p: userns(p, uids=[(1, 1000, 10)]), "userns_options.uids"),
    ("userns zero length", lambda p: userns(p, gids=[(0, 1000, 0)]), "userns_options.gids"),
    ("userns overflow", lambda p: userns(p, uids=[(0, (1 << 32) - 10, 100)]), "userns_options.uids"),
    ("userns NODE with mappings", lambda p: userns(p, NamespaceMode.NODE), "userns_options"),
    (
        "userns with host network",
        lambda p: (userns(p), setattr(p.namespace_options, "network", NamespaceMode.NODE)),
        "userns_options",
    ),
]


def userns(
    p: PodSandboxConfig,
    mode: NamespaceMode = NamespaceMode.POD,
    uids: list[tuple[int, int, int]] | None = None,
    gids: list[tuple[int, int, int]] | None = None,
) -> None:
    """Give `p` a user namespace; mappings as (container_id, host_id, length), one 0->165536 by default."""
    one = [(0, 165536, 65536)]

    def mappings(given: list[tuple[int, int, int]] | None) -> list[IDMapping]:
        return [
            IDMapping(container_id=c, host_id=h, length=n) for c, h, n in (one if given is None else given)
        ]

    p.namespace_options.userns = UserNamespace(mode=mode, uids=mappings(uids), gids=mappings(gids))


def test_pod_user_namespace_passes() -> None:
    p = pod()
    userns(p)
    validate_pod_sandbox_config(p)
    assert p.namespace_options.userns.host_id(0) == 165536
    assert p.namespace_options.userns.host_id(65536) is None


def dns(p: PodSandboxConfig) -> DNSConfig:
    assert p.dns_config is not None
    return p.dns_config


def seccomp(p: PodSandboxConfig, kind: str, ref: str) -> None:
    p.seccomp_profile_type, p.seccomp_localhost_ref = kind, ref


def big_annotations() -> dict[str, str]:
    """Over MAX_CONFIG_BYTES in strings that each pass their own rule (env-sized annotation values)."""
    return {f"k{i}": "v" * (100 * 1024) for i in range(MAX_CONFIG_BYTES // (100 * 1024) + 1)}


@pytest.mark.parametrize(("rule", "edit", "field"), POD_ROWS, ids=[r[0] for r in POD_ROWS])
def test_pod_sandbox_rules(rule: str, edit: PodEdit, field: str) -> None:
    config = pod()
    edit(config)
    with pytest.raises(InvalidArgument) as err:
        validate_pod_sandbox_config(config)
    assert field in str(err.value), str(err.value)[:300]
    assert len(str(err.value)) < 400, "a megabyte value must not become a megabyte message"


CtrEdit = Callable[[ContainerConfig], None]

CTR_ROWS: list[tuple[str, CtrEdit, str]] = [
    ("name required", lambda c: setattr(c.metadata, "name", ""), "metadata.name"),
    ("NUL in name", lambda c: setattr(c.metadata, "name", "a\0"), "metadata.name"),
    ("megabyte name", lambda c: setattr(c.metadata, "name", MB), "metadata.name"),
    ("image required", lambda c: setattr(c, "image", ""), "image"),
    ("space in image", lambda c: setattr(c, "image", "busybox latest"), "image"),
    ("NUL in an argument", lambda c: c.args.append("a\0b"), "args[1]"),
    ("NUL in the command", lambda c: c.command.append("\0"), "command[2]"),
    ("argument over MAX_ARG_STRLEN", lambda c: c.args.append("a" * (MAX_ARG_BYTES + 1)), "args[1]"),
    ("NUL in an env value", lambda c: c.envs.append(("A", "b\0c")), "envs[2]"),
    ("'=' in an env name", lambda c: c.envs.append(("A=B", "c")), "envs[2].key"),
    ("empty env name", lambda c: c.envs.append(("", "c")), "envs[2].key"),
    ("env entry over MAX_ARG_STRLEN", lambda c: c.envs.append(("A", MB)), "envs[2]"),
    ("relative working_dir", lambda c: setattr(c, "working_dir", "srv"), "working_dir"),
    ("NUL in a mount path", lambda c: setattr(c.mounts[0], "host_path", "/a\0b"), "mounts[0].host_path"),
    ("relative mount source", lambda c: setattr(c.mounts[0], "host_path", "data"), "mounts[0].host_path"),
    ("relative mount target", lambda c: setattr(c.mounts[0], "container_path", "d"), "container_path"),
    ("mount path too long", lambda c: setattr(c.mounts[0], "host_path", "/" + "a" * 4096), "host_path"),
    ("relative device", lambda c: setattr(c.devices[0], "host_path", "fuse"), "devices[0].host_path"),
    ("device permissions", lambda c: setattr(c.devices[0], "permissions", "rwx"), "permissions"),
    ("NUL in a label", lambda c: c.labels.update({"a": "\0"}), "labels"),
    ("NUL in an annotation key", lambda c: c.annotations.update({"\0": "a"}), "annotations"),
    ("label value megabyte", lambda c: c.labels.update({"k": MB}), "labels"),
    ("absolute log_path", lambda c: setattr(c, "log_path", "/etc/passwd"), "log_path"),
    ("log_path with ..", lambda c: setattr(c, "log_path", "../../../etc/passwd"), "log_path"),
    ("log_path with .. inside", lambda c: setattr(c, "log_path", "nginx/../../x.log"), "log_path"),
    ("log_path naming a directory", lambda c: setattr(c, "log_path", "nginx/"), "log_path"),
    ("newline in log_path", lambda c: setattr(c, "log_path", "a\nb.log"), "log_path"),
    ("log_path too long", lambda c: setattr(c, "log_path", "d/" * 2100 + "x.log"), "log_path"),
    ("log_path component too long", lambda c: setattr(c, "log_path", "a" * 256 + ".log"), "log_path"),
    ("cpuset not a list", lambda c: setattr(c.resources, "cpuset_cpus", "0-3\n"), "cpuset_cpus"),
    ("unified key is a path", lambda c: c.resources.unified.update({"../../memory.max": "1"}), "unified"),  # type: ignore[union-attr]
    ("negative memory limit", lambda c: setattr(c.resources, "memory_limit_in_bytes", -1), "memory limit"),
    ("uid too large", lambda c: setattr(c.security_context, "run_as_user", 1 << 31), "run_as_user"),
    (
        "relative seccomp profile",
        lambda c: setattr(c.security_context, "seccomp_localhost_ref", "p"),
        "localhost_ref",
    ),
    (
        "relative masked path",
        lambda c: setattr(c.security_context, "masked_paths", ["proc/kcore"]),
        "masked_paths",
    ),
    (
        "recursive read-only, not read-only",
        lambda c: c.mounts.__setitem__(0, Mount("/d", "/h", readonly=False, recursive_read_only=True)),
        "mounts[0].recursive_read_only: needs ContainerConfig.mounts[0].readonly",
    ),
    (
        "recursive read-only, HOST_TO_CONTAINER",
        lambda c: c.mounts.__setitem__(
            0, Mount("/d", "/h", readonly=True, recursive_read_only=True, propagation=HOST_TO_CONTAINER)
        ),
        "mounts[0].recursive_read_only: needs ContainerConfig.mounts[0].propagation PROPAGATION_PRIVATE",
    ),
    (
        "recursive read-only, BIDIRECTIONAL",
        lambda c: c.mounts.__setitem__(
            0, Mount("/d", "/h", readonly=True, recursive_read_only=True, propagation=BIDIRECTIONAL)
        ),
        "not PROPAGATION_BIDIRECTIONAL",
    ),
]


@pytest.mark.parametrize(("rule", "edit", "field"), CTR_ROWS, ids=[r[0] for r in CTR_ROWS])
def test_container_rules(rule: str, edit: CtrEdit, field: str) -> None:
    config = ctr()
    edit(config)
    with pytest.raises(InvalidArgument) as err:
        validate_container_config(config, pod())
    assert field in str(err.value), str(err.value)[:300]
    assert len(str(err.value)) < 400


def test_recursive_read_only_mount_passes_when_read_only_and_private() -> None:
    config = ctr()
    config.mounts.append(Mount("/rro", "/h", readonly=True, recursive_read_only=True))
    validate_container_config(config, pod())


def test_log_path_is_checked_against_the_sandbox_log_directory() -> None:
    sandbox = pod()
    sandbox.log_directory = "/" + "d" * 4000
    config = ctr()
    config.log_path = "c/" * 45 + "c.log"
    with pytest.raises(InvalidArgument, match="joined with the log directory"):
        validate_container_config(config, sandbox)
    config.log_path = "c.log"
    validate_container_config(config, sandbox)
