"""The OCI spec of a CRI container, built without root: args merge, env, user, caps, mounts, namespaces."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from podhost.errors import InvalidArgument
from podhost.runtime.container import seccomp, spec
from podhost.runtime.container.user import resolve_user
from podhost.runtime.model import (
    Capability,
    Container,
    ContainerConfig,
    ContainerMetadata,
    ContainerSecurityContext,
    IDMapping,
    Image,
    ImageConfig,
    LinuxContainerResources,
    Mount,
    MountPropagation,
    NamespaceMode,
    NamespaceOption,
    PodSandbox,
    PodSandboxConfig,
    PodSandboxMetadata,
    SupplementalGroupsPolicy,
    UserNamespace,
)

PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n"
GROUP = "root:x:0:\napp:x:1001:\nwheel:x:10:app,other\nvideo:x:44:root\n"
LIMITS = spec.HostLimits(nofile_hard=20000, min_oom_score_adj=0, node_hostname="node1")


def sandbox(shares_pid: bool = False, host_network: bool = False) -> PodSandbox:
    ns = {"ipc": "/run/p/ns/ipc"}
    if not host_network:
        ns |= {"net": "/run/p/ns/net", "uts": "/run/p/ns/uts"}
    if shares_pid:
        ns["pid"] = "/run/p/ns/pid"
    options = NamespaceOption(
        network=NamespaceMode.NODE if host_network else NamespaceMode.POD,
        pid=NamespaceMode.POD if shares_pid else NamespaceMode.CONTAINER,
    )
    config = PodSandboxConfig(
        metadata=PodSandboxMetadata(name="web", uid="u", namespace="ns"),
        hostname="web-0",
        namespace_options=options,
    )
    return PodSandbox(id="s" * 64, config=config, cgroup="/podhost/pod-s", ns_paths=ns)


def container(**kwargs: Any) -> Container:
    config = ContainerConfig(metadata=ContainerMetadata(name="c"), image="busybox", **kwargs)
    return Container(id="c" * 64, sandbox_id="s" * 64, config=config)


def build(c: Container, sb: PodSandbox | None = None, image: ImageConfig | None = None) -> dict:  # type: ignore[type-arg]
    image = image or ImageConfig(env=["PATH=/bin:/usr/bin", "A=image"], cmd=["sh"], user="")
    return spec.build_oci_spec(
        c, sb or sandbox(), Image(id="sha256:x", config=image), Path("/b/rootfs"), Path("/run/p"), LIMITS,
        passwd=PASSWD, group=GROUP,
    )  # fmt: skip


# --- process.args ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "args", "entrypoint", "cmd", "expected"),
    [
        ([], [], ["/ep"], ["c1"], ["/ep", "c1"]),  # image only
        (["/x"], [], ["/ep"], ["c1"], ["/x"]),  # command replaces entrypoint and drops cmd
        (["/x"], ["a"], ["/ep"], ["c1"], ["/x", "a"]),
        ([], ["a", "b"], ["/ep"], ["c1"], ["/ep", "a", "b"]),  # args replace cmd
        ([], ["a"], [], ["c1"], ["a"]),
        ([], [], [], ["c1", "c2"], ["c1", "c2"]),
    ],
)
def test_args_merge(command: list[str], args: list[str], entrypoint: list[str], cmd: list[str],
                    expected: list[str]) -> None:  # fmt: skip
    config = ContainerConfig(command=command, args=args)
    assert spec.process_args(config, ImageConfig(entrypoint=entrypoint, cmd=cmd)) == expected


def test_missing_command_is_invalid() -> None:
    with pytest.raises(InvalidArgument, match="no command"):
        build(container(), image=ImageConfig())


def test_env_order_and_overrides() -> None:
    env = build(container(envs=[("A", "cri"), ("B", "2")]))["process"]["env"]
    assert env == ["PATH=/bin:/usr/bin", "A=cri", "HOSTNAME=web-0", "B=2"]
    env = build(container(command=["x"]), image=ImageConfig(env=["X=1"]))["process"]["env"]
    assert env[1] == spec.DEFAULT_PATH and env[2] == "HOSTNAME=web-0"
    env = build(container(command=["x"]), sb=sandbox(host_network=True))["process"]["env"]
    assert "HOSTNAME=node1" in env


def test_cwd() -> None:
    assert build(container())["process"]["cwd"] == "/"
    assert build(container(), image=ImageConfig(cmd=["x"], working_dir="/srv"))["process"]["cwd"] == "/srv"
    assert (
        build(container(working_dir="/w"), image=ImageConfig(cmd=["x"], working_dir="/srv"))["process"]["cwd"]
        == "/w"
    )


# --- user --------------------------------------------------------------------------------------------------


def test_user_resolution() -> None:
    def r(image_user: str = "", uid: int | None = None, gid: int | None = None, name: str = "",
          sup: list[int] | None = None) -> tuple[int, int, list[int]]:  # fmt: skip
        u = resolve_user(image_user, uid, gid, name, sup or [], PASSWD, GROUP)
        return u.uid, u.gid, u.additional_gids

    assert r() == (0, 0, [0, 44])
    assert r("app") == (1000, 1001, [1001, 10])
    assert r("1000") == (1000, 1001, [1001, 10])
    assert r("4242") == (4242, 0, [0])
    assert r("app:video") == (1000, 44, [44, 10])
    assert r("5:7") == (5, 7, [7])
    assert r("app", uid=7) == (7, 0, [0])  # run_as_user wins over the image
    assert r(uid=1000, gid=3, sup=[99, 3]) == (1000, 3, [3, 10, 99])
    assert r(name="app") == (1000, 1001, [1001, 10])
    with pytest.raises(InvalidArgument, match="unable to find user nobody"):
        r("nobody")
    with pytest.raises(InvalidArgument, match="unable to find group"):
        r("app:nogroup")


def test_user_in_spec() -> None:
    sc = ContainerSecurityContext(run_as_user=1000, supplemental_groups=[5])
    user = build(container(security_context=sc))["process"]["user"]
    assert user == {"uid": 1000, "gid": 1001, "additionalGids": [1001, 10, 5]}


def test_supplemental_groups_policy() -> None:
    """KEP-3619 as critest checks it: an image whose /etc/group puts the user in 50000."""
    passwd = "root:x:0:0:root:/root:/bin/sh\ndefault-user:x:1000:1000::/home:/bin/sh\n"
    group = "default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\nother:x:7:someone\n"

    def gids(policy: SupplementalGroupsPolicy, **kw: Any) -> tuple[int, int, list[int]]:
        args: dict[str, Any] = {"image_user": "", "run_as_user": 1000, "run_as_group": None,
                                "run_as_username": "", "supplemental_groups": [1234]} | kw  # fmt: skip
        u = resolve_user(**args, passwd=passwd, group=group, policy=policy)
        return u.uid, u.gid, u.additional_gids

    merge, strict = SupplementalGroupsPolicy.Merge, SupplementalGroupsPolicy.Strict
    # Merge (the default): primary gid, the image's /etc/group memberships, then the spec's groups.
    assert gids(merge) == (1000, 1000, [1000, 50000, 1234])
    # Strict: the image's /etc/group adds nothing; the primary gid (from /etc/passwd) stays.
    assert gids(strict) == (1000, 1000, [1000, 1234])
    assert gids(strict, run_as_group=3000, supplemental_groups=[4000, 3000]) == (1000, 3000, [3000, 4000])
    assert gids(merge, run_as_group=3000, supplemental_groups=[4000]) == (1000, 3000, [3000, 50000, 4000])
    # The same by the image's User, by name.
    assert gids(strict, run_as_user=None, image_user="default-user") == (1000, 1000, [1000, 1234])
    assert gids(merge, run_as_user=None, image_user="default-user")[2] == [1000, 50000, 1234]
    # The default policy is Merge.
    assert resolve_user("", 1000, None, "", [], passwd, group).additional_gids == [1000, 50000]
    sc = ContainerSecurityContext(run_as_user=1000, supplemental_groups=[5],
                                  supplemental_groups_policy=strict)  # fmt: skip
    user = build(container(security_context=sc))["process"]["user"]
    assert user == {"uid": 1000, "gid": 1001, "additionalGids": [1001, 5]}  # no wheel (10) from GROUP


# --- capabilities, privileges, limits ------------------------------------------------------------------------


def test_capabilities() -> None:
    caps = build(container())["process"]["capabilities"]
    assert caps["bounding"] == spec.DEFAULT_CAPABILITIES == caps["effective"] == caps["permitted"]
    sc = ContainerSecurityContext(
        capabilities=Capability(add_capabilities=["NET_ADMIN"], drop_capabilities=["KILL"])
    )
    caps = spec.capabilities(ContainerConfig(security_context=sc))
    assert "CAP_NET_ADMIN" in caps and "CAP_KILL" not in caps and len(caps) == len(spec.DEFAULT_CAPABILITIES)
    sc = ContainerSecurityContext(
        capabilities=Capability(add_capabilities=["CHOWN"], drop_capabilities=["ALL"])
    )
    assert spec.capabilities(ContainerConfig(security_context=sc)) == ["CAP_CHOWN"]
    sc = ContainerSecurityContext(
        capabilities=Capability(add_capabilities=["ALL"], drop_capabilities=["SYS_ADMIN"])
    )
    caps = spec.capabilities(ContainerConfig(security_context=sc))
    assert len(caps) == len(spec.ALL_CAPABILITIES) - 1 and "CAP_SYS_ADMIN" not in caps
    assert spec.capabilities(ContainerConfig(security_context=ContainerSecurityContext(privileged=True))) == (
        spec.ALL_CAPABILITIES
    )


def test_ambient_capabilities_are_applied_as_containerd_does() -> None:
    """CRI add_ambient_capabilities: ambient and inheritable, and in the bounding, effective and permitted
    sets too (a capability outside them cannot be ambient), even when the default set lacks it."""
    sc = ContainerSecurityContext(
        capabilities=Capability(add_ambient_capabilities=["NET_BIND_SERVICE", "CAP_SYS_TIME"]),
        run_as_user=1000,
    )
    caps = build(container(security_context=sc))["process"]["capabilities"]
    assert caps["ambient"] == caps["inheritable"] == ["CAP_NET_BIND_SERVICE", "CAP_SYS_TIME"]
    for kind in ("bounding", "effective", "permitted"):
        assert {"CAP_NET_BIND_SERVICE", "CAP_SYS_TIME"} <= set(caps[kind]), kind
    assert "ambient" not in build(container())["process"]["capabilities"]


def test_privileged_and_all_grant_only_the_capabilities_podhost_holds() -> None:
    """On a node whose bounding set lacks CAP_SYS_RESOURCE, asking runc for it fails (critest's privileged
    specs did); like containerd, "all" means all that the runtime itself holds."""
    held = [c for c in spec.ALL_CAPABILITIES if c != "CAP_SYS_RESOURCE"]
    privileged = ContainerConfig(security_context=ContainerSecurityContext(privileged=True))
    assert spec.capabilities(privileged, held) == held
    add_all = ContainerConfig(
        security_context=ContainerSecurityContext(capabilities=Capability(add_capabilities=["ALL"]))
    )
    assert "CAP_SYS_RESOURCE" not in spec.capabilities(add_all, held)
    c = container(security_context=ContainerSecurityContext(privileged=True))
    image = Image(id="sha256:x", config=ImageConfig(cmd=["sh"]))
    limits = spec.HostLimits(capabilities=held)
    oci = spec.build_oci_spec(
        c, sandbox(), image, Path("/b/rootfs"), Path("/run/p"), limits, passwd=PASSWD, group=GROUP
    )
    assert oci["process"]["capabilities"]["bounding"] == held


def test_privileged_has_no_masks_or_seccomp() -> None:
    sc = ContainerSecurityContext(privileged=True, seccomp_profile_type="RuntimeDefault")
    linux = build(container(security_context=sc))["linux"]
    assert linux["maskedPaths"] == [] and linux["readonlyPaths"] == [] and "seccomp" not in linux
    assert linux["resources"]["devices"] == [{"allow": True, "access": "rwm"}]


def test_masked_paths_default_and_given() -> None:
    linux = build(container())["linux"]
    assert linux["maskedPaths"] == spec.DEFAULT_MASKED_PATHS
    assert linux["readonlyPaths"] == spec.DEFAULT_READONLY_PATHS
    sc = ContainerSecurityContext(masked_paths=["/proc/kcore"], readonly_paths=[])
    linux = build(container(security_context=sc))["linux"]
    assert linux["maskedPaths"] == ["/proc/kcore"] and linux["readonlyPaths"] == []


def test_no_new_privs_rlimits_oom_score_clamped() -> None:
    s = build(container(security_context=ContainerSecurityContext(no_new_privs=True),
                        resources=LinuxContainerResources(oom_score_adj=-998)))  # fmt: skip
    assert s["process"]["noNewPrivileges"] is True
    assert s["process"]["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 20000, "soft": 20000}]
    assert s["process"]["oomScoreAdj"] == 0  # the host does not let us go below our own value
    s = build(container(resources=LinuxContainerResources(oom_score_adj=1000)))
    assert s["process"]["oomScoreAdj"] == 1000 and s["process"]["noNewPrivileges"] is False


def test_resources_and_cgroup_path() -> None:
    res = LinuxContainerResources(memory_limit_in_bytes=64 << 20, cpu_shares=512, cpu_quota=50000,
                                  cpu_period=100000, cpuset_cpus="0")  # fmt: skip
    linux = build(container(resources=res))["linux"]
    assert linux["cgroupsPath"] == "/podhost/pod-s/" + "c" * 64
    assert linux["resources"]["memory"] == {"limit": 64 << 20}
    assert linux["resources"]["cpu"] == {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0"}


@pytest.mark.parametrize("limit", [-1, 1, 5 << 20])
def test_bad_memory_limit(limit: int) -> None:
    with pytest.raises(InvalidArgument, match="memory limit"):
        build(container(resources=LinuxContainerResources(memory_limit_in_bytes=limit)))


# --- mounts and namespaces --------------------------------------------------------------------------------


def test_default_mounts() -> None:
    s = build(container())
    dests = [m["destination"] for m in s["mounts"]]
    assert dests == ["/proc", "/dev", "/dev/pts", "/dev/mqueue", "/sys", "/sys/fs/cgroup", "/dev/shm",
                     "/etc/hosts", "/etc/hostname", "/etc/resolv.conf"]  # fmt: skip
    by = {m["destination"]: m for m in s["mounts"]}
    assert by["/dev/shm"]["source"] == "/run/p/shm"
    assert (
        by["/etc/resolv.conf"]["source"] == "/run/p/resolv.conf" and "ro" in by["/etc/resolv.conf"]["options"]
    )
    assert "ro" in by["/etc/hostname"]["options"] and "rw" in by["/etc/hosts"]["options"]
    assert "ro" in by["/sys"]["options"] and "newinstance" in by["/dev/pts"]["options"]
    assert s["root"] == {"path": "/b/rootfs", "readonly": False}


def test_cri_mounts_override_and_propagation() -> None:
    mounts = [
        Mount(container_path="/data/sub", host_path="/h/sub", readonly=True),
        Mount(
            container_path="/data",
            host_path="/h/data",
            propagation=MountPropagation.PROPAGATION_HOST_TO_CONTAINER,
        ),
        Mount(container_path="/etc/hosts", host_path="/kubelet/etc-hosts"),
    ]
    s = build(container(mounts=mounts))
    cri = [m for m in s["mounts"] if m["source"].startswith(("/h/", "/kubelet"))]
    assert [m["destination"] for m in cri] == ["/data", "/data/sub", "/etc/hosts"]
    assert cri[0]["options"] == ["rbind", "rw", "rslave"] and cri[1]["options"] == ["rbind", "ro", "rprivate"]
    assert [m["destination"] for m in s["mounts"]].count("/etc/hosts") == 1
    assert s["linux"]["rootfsPropagation"] == "rslave"


def test_recursive_read_only_mount_binds_its_prepared_copy() -> None:
    mounts = [
        Mount(container_path="/a/b", host_path="/h/b", readonly=True),
        Mount(container_path="/a", host_path="/h/a", readonly=True, recursive_read_only=True),
    ]
    cri = spec.cri_mounts(ContainerConfig(mounts=mounts), {1: "/b/rro/1"})
    assert [(m["destination"], m["source"]) for m in cri] == [("/a", "/b/rro/1"), ("/a/b", "/h/b")]
    assert cri[0]["options"] == ["rbind", "ro", "rprivate"]
    with pytest.raises(InvalidArgument, match=r"mounts\[1\].recursive_read_only: not prepared"):
        build(container(mounts=mounts))  # never the host path itself, whose submounts stay writable


def test_namespaces_unshared_pid() -> None:
    ns = build(container())["linux"]["namespaces"]
    assert ns == [{"type": "pid"}, {"type": "network", "path": "/run/p/ns/net"},
                  {"type": "ipc", "path": "/run/p/ns/ipc"}, {"type": "uts", "path": "/run/p/ns/uts"},
                  {"type": "mount"}]  # fmt: skip


def test_namespaces_shared_pid() -> None:
    ns = build(container(), sb=sandbox(shares_pid=True))["linux"]["namespaces"]
    assert ns[0] == {"type": "pid", "path": "/run/p/ns/pid"}


def test_pod_user_namespace_joined_with_its_mappings() -> None:
    sb = sandbox()
    sb.ns_paths["user"] = "/run/p/ns/user"
    one = [IDMapping(host_id=165536, container_id=0, length=65536)]
    sb.config.namespace_options.userns = UserNamespace(mode=NamespaceMode.POD, uids=one, gids=one)
    linux = build(container(), sb=sb)["linux"]
    assert linux["namespaces"][0] == {"type": "user", "path": "/run/p/ns/user"}  # first: it owns the rest
    assert (
        linux["uidMappings"] == linux["gidMappings"] == [{"containerID": 0, "hostID": 165536, "size": 65536}]
    )


def test_no_user_namespace_by_default() -> None:
    linux = build(container())["linux"]
    assert "user" not in [n["type"] for n in linux["namespaces"]]
    assert "uidMappings" not in linux and "gidMappings" not in linux


def test_namespaces_host_network() -> None:
    ns = build(container(), sb=sandbox(host_network=True))["linux"]["namespaces"]
    assert [n["type"] for n in ns] == ["pid", "ipc", "mount"]


def test_seccomp_choice() -> None:
    rd = ContainerSecurityContext(seccomp_profile_type="RuntimeDefault")
    profile = build(container(security_context=rd))["linux"]["seccomp"]
    assert profile["defaultAction"] == "SCMP_ACT_ALLOW"
    blocked = profile["syscalls"][0]["names"]
    for name in (
        "kexec_load",
        "init_module",
        "mount",
        "unshare",
        "setns",
        "bpf",
        "ptrace",
        "perf_event_open",
    ):
        assert name in blocked
    assert "seccomp" not in build(container())["linux"]  # "" is unconfined, as in containerd
    unconfined = ContainerSecurityContext(seccomp_profile_type="Unconfined")
    assert "seccomp" not in build(container(security_context=unconfined))["linux"]


def test_seccomp_capability_lifts_rules() -> None:
    profile = seccomp.default_profile({"CAP_SYS_ADMIN", "CAP_SYS_PTRACE"}, "x86_64")
    blocked = profile["syscalls"][0]["names"]
    assert "mount" not in blocked and "ptrace" not in blocked and "kexec_load" in blocked
    assert all(rule["names"] != ["clone"] for rule in profile["syscalls"])
    assert profile["architectures"][0] == "SCMP_ARCH_X86_64"
    assert seccomp.default_profile(set(), "aarch64")["architectures"] == [
        "SCMP_ARCH_AARCH64",
        "SCMP_ARCH_ARM",
    ]


def test_seccomp_localhost(tmp_path: Path) -> None:
    f = tmp_path / "p.json"
    f.write_text('{"defaultAction": "SCMP_ACT_ERRNO"}')
    assert seccomp.profile_for("Localhost", str(f), set()) == {"defaultAction": "SCMP_ACT_ERRNO"}
    with pytest.raises(InvalidArgument):
        seccomp.profile_for("Localhost", str(tmp_path / "missing.json"), set())


def test_exec_process_keeps_user_env_caps() -> None:
    s = build(container(security_context=ContainerSecurityContext(run_as_user=1000)))
    p = spec.exec_process(s, ["ls", "-l"])
    assert p["args"] == ["ls", "-l"] and p["user"]["uid"] == 1000 and "oomScoreAdj" not in p
    assert p["env"] == s["process"]["env"] and s["process"]["args"] == ["sh"]
