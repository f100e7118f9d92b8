"""podhost.cri.convert: CRI requests -> model specs, model records -> CRI responses."""

from __future__ import annotations

import json

import pytest

from podhost.cri import api_pb2 as pb
from podhost.cri import convert
from podhost.errors import InvalidArgument
from podhost.runtime import model
from podhost.runtime.model import NamespaceMode
from podhost.runtime.runtime import ContainerStats


def sandbox_request() -> pb.PodSandboxConfig:
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name="web", uid="uid-1", namespace="default", attempt=1),
        hostname="web-host",
        log_directory="/var/log/pods/default_web_uid-1",
        dns_config=pb.DNSConfig(servers=["10.96.0.10"], searches=["svc.cluster.local"], options=["ndots:5"]),
        port_mappings=[
            pb.PortMapping(protocol=pb.UDP, container_port=53, host_port=5353, host_ip="127.0.0.1")
        ],
        labels={"app": "web"},
        annotations={"note": "x"},
        linux=pb.LinuxPodSandboxConfig(
            cgroup_parent="/kubepods/pod1",
            sysctls={"net.ipv4.ping_group_range": "0 2147483647"},
            security_context=pb.LinuxSandboxSecurityContext(
                namespace_options=pb.NamespaceOption(network=pb.POD, pid=pb.CONTAINER, ipc=pb.POD),
                run_as_user=pb.Int64Value(value=0),
                supplemental_groups=[10, 20],
                seccomp=pb.SecurityProfile(profile_type=pb.SecurityProfile.RuntimeDefault),
            ),
            resources=pb.LinuxContainerResources(cpu_shares=512, memory_limit_in_bytes=1 << 26),
        ),
    )


def test_pod_sandbox_config_copies_every_field() -> None:
    c = convert.pod_sandbox_config(sandbox_request())
    assert c.metadata == model.PodSandboxMetadata(name="web", uid="uid-1", namespace="default", attempt=1)
    assert (c.hostname, c.log_directory) == ("web-host", "/var/log/pods/default_web_uid-1")
    assert c.dns_config == model.DNSConfig(["10.96.0.10"], ["svc.cluster.local"], ["ndots:5"])
    assert c.port_mappings == [model.PortMapping("UDP", 53, 5353, "127.0.0.1")]
    assert (c.labels, c.annotations) == ({"app": "web"}, {"note": "x"})
    assert c.cgroup_parent == "/kubepods/pod1"
    assert c.sysctls == {"net.ipv4.ping_group_range": "0 2147483647"}
    assert c.namespace_options == model.NamespaceOption(
        NamespaceMode.POD, NamespaceMode.CONTAINER, NamespaceMode.POD
    )
    assert c.run_as_user == 0 and c.run_as_group is None
    assert c.supplemental_groups == [10, 20]
    assert (c.seccomp_profile_type, c.seccomp_localhost_ref) == ("RuntimeDefault", "")
    assert (
        c.resources is not None
        and c.resources.cpu_shares == 512
        and c.resources.memory_limit_in_bytes == 1 << 26
    )
    assert not c.host_network and not c.shares_pid


def test_absent_namespace_options_mean_pod_for_every_namespace() -> None:
    # proto3 reads an absent NamespaceMode as 0, which is POD: copied as is (a shared PID namespace).
    c = convert.pod_sandbox_config(pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name="p")))
    assert c.namespace_options == model.NamespaceOption(
        NamespaceMode.POD, NamespaceMode.POD, NamespaceMode.POD
    )
    assert c.shares_pid and c.dns_config is None and c.resources is None
    assert c.seccomp_profile_type == "" and c.run_as_user is None


def test_host_network_and_target_namespace() -> None:
    req = pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name="h"))
    req.linux.security_context.namespace_options.network = pb.NODE
    assert convert.pod_sandbox_config(req).host_network
    ctr = pb.ContainerConfig(metadata=pb.ContainerMetadata(name="dbg"), image=pb.ImageSpec(image="busybox"))
    ctr.linux.security_context.namespace_options.pid = pb.TARGET
    ctr.linux.security_context.namespace_options.target_id = "abc"
    opts = convert.container_config(ctr).security_context.namespace_options
    assert (opts.pid, opts.target_id) == (NamespaceMode.TARGET, "abc")


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (pb.PodSandboxConfig(), "PodSandboxConfig.metadata is required"),
        (
            pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(namespace="x")),
            "metadata.name must not be empty",
        ),
    ],
)
def test_sandbox_validation(request_: pb.PodSandboxConfig, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        convert.pod_sandbox_config(request_)


def test_sandbox_config_inside_create_container_is_not_validated() -> None:
    assert convert.pod_sandbox_config(pb.PodSandboxConfig(), validate=False).metadata.name == ""


@pytest.mark.parametrize(
    ("legacy", "expected"),
    [
        ("runtime/default", ("RuntimeDefault", "")),
        ("docker/default", ("RuntimeDefault", "")),
        ("unconfined", ("Unconfined", "")),
        ("localhost/profiles/a.json", ("Localhost", "profiles/a.json")),
        ("", ("", "")),
    ],
)
def test_deprecated_seccomp_path(legacy: str, expected: tuple[str, str]) -> None:
    req = pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name="p"))
    req.linux.security_context.seccomp_profile_path = legacy
    c = convert.pod_sandbox_config(req)
    assert (c.seccomp_profile_type, c.seccomp_localhost_ref) == expected


def container_request() -> pb.ContainerConfig:
    return pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="app", attempt=3),
        image=pb.ImageSpec(image="docker.io/library/busybox:1.36"),
        command=["/bin/sh"],
        args=["-c", "sleep 1"],
        working_dir="/tmp",
        envs=[pb.KeyValue(key="A", value=b"1"), pb.KeyValue(key="BIN", value=b"\xff")],
        mounts=[
            pb.Mount(
                container_path="/data",
                host_path="/srv/data",
                readonly=True,
                propagation=pb.PROPAGATION_HOST_TO_CONTAINER,
            )
        ],
        devices=[pb.Device(container_path="/dev/fuse", host_path="/dev/fuse", permissions="rw")],
        labels={"io.kubernetes.container.name": "app"},
        annotations={"k": "v"},
        log_path="app/3.log",
        stdin=True,
        tty=True,
        linux=pb.LinuxContainerConfig(
            resources=pb.LinuxContainerResources(
                cpu_period=100000,
                cpu_quota=50000,
                oom_score_adj=-997,
                cpuset_cpus="0",
                unified={"memory.high": "1"},
            ),
            security_context=pb.LinuxContainerSecurityContext(
                capabilities=pb.Capability(add_capabilities=["NET_ADMIN"], drop_capabilities=["ALL"]),
                run_as_user=pb.Int64Value(value=1000),
                run_as_group=pb.Int64Value(value=0),
                run_as_username="",
                no_new_privs=True,
                readonly_rootfs=True,
                masked_paths=["/proc/kcore"],
                seccomp=pb.SecurityProfile(
                    profile_type=pb.SecurityProfile.Localhost, localhost_ref="/p.json"
                ),
            ),
        ),
    )


def test_container_config_copies_every_field() -> None:
    c = convert.container_config(container_request())
    assert c.metadata == model.ContainerMetadata("app", 3)
    assert c.image == "docker.io/library/busybox:1.36"
    assert (c.command, c.args, c.working_dir) == (["/bin/sh"], ["-c", "sleep 1"], "/tmp")
    assert c.envs[0] == ("A", "1")
    assert c.envs[1][0] == "BIN" and c.envs[1][1].encode("utf-8", "surrogateescape") == b"\xff"
    assert c.mounts == [
        model.Mount("/data", "/srv/data", True, False, model.MountPropagation.PROPAGATION_HOST_TO_CONTAINER)
    ]
    assert c.devices == [model.Device("/dev/fuse", "/dev/fuse", "rw")]
    assert c.log_path == "app/3.log" and c.stdin and c.tty and not c.stdin_once
    assert c.resources == model.LinuxContainerResources(
        cpu_period=100000, cpu_quota=50000, oom_score_adj=-997, cpuset_cpus="0", unified={"memory.high": "1"}
    )
    sc = c.security_context
    assert sc.capabilities == model.Capability(["NET_ADMIN"], ["ALL"], [])
    assert (sc.run_as_user, sc.run_as_group) == (1000, 0)
    assert sc.no_new_privs and sc.readonly_rootfs
    assert sc.masked_paths == ["/proc/kcore"] and sc.readonly_paths is None
    assert (sc.seccomp_profile_type, sc.seccomp_localhost_ref) == ("Localhost", "/p.json")
    assert sc.namespace_options.pid == NamespaceMode.POD  # left out: shares the pod's
    assert sc.supplemental_groups_policy == model.SupplementalGroupsPolicy.Merge  # the CRI default


def test_recursive_read_only_mount_round_trip() -> None:
    m = convert.mount(pb.Mount(container_path="/d", host_path="/h", readonly=True, recursive_read_only=True))
    assert m.recursive_read_only and m.readonly
    assert convert.pb_mount(m).recursive_read_only
    assert not convert.mount(pb.Mount(container_path="/d", host_path="/h")).recursive_read_only


def test_supplemental_groups_policy_conversion() -> None:
    req = container_request()
    req.linux.security_context.supplemental_groups_policy = pb.Strict
    sc = convert.container_config(req).security_context
    assert sc.supplemental_groups_policy == model.SupplementalGroupsPolicy.Strict
    req.linux.security_context.supplemental_groups_policy = 7  # CRI enums are open; 7 is unknown
    with pytest.raises(InvalidArgument, match="LinuxContainerSecurityContext.supplemental_groups_policy"):
        convert.container_config(req)
    pod = pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name="p"))
    pod.linux.security_context.supplemental_groups_policy = pb.Strict
    policy = convert.pod_sandbox_config(pod).supplemental_groups_policy
    assert policy == model.SupplementalGroupsPolicy.Strict
    pod.linux.security_context.supplemental_groups_policy = 2
    with pytest.raises(InvalidArgument, match="LinuxSandboxSecurityContext.supplemental_groups_policy"):
        convert.pod_sandbox_config(pod)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.ClearField("metadata"), "ContainerConfig.metadata is required"),
        (lambda r: setattr(r.metadata, "name", ""), "ContainerConfig.metadata.name must not be empty"),
        (lambda r: r.ClearField("image"), "ContainerConfig.image.image must not be empty"),
    ],
)
def test_container_validation(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    req = container_request()
    mutate(req)
    with pytest.raises(InvalidArgument, match=message):
        convert.container_config(req)


def test_filters_and_small_requests() -> None:
    f = convert.pod_sandbox_filter(
        pb.PodSandboxFilter(
            id="ab", state=pb.PodSandboxStateValue(state=pb.SANDBOX_NOTREADY), label_selector={"a": "b"}
        )
    )
    assert (f.id, f.state, f.label_selector) == ("ab", model.PodSandboxState.SANDBOX_NOTREADY, {"a": "b"})
    assert convert.pod_sandbox_filter(pb.PodSandboxFilter()).state is None
    cf = convert.container_filter(
        pb.ContainerFilter(
            id="c", pod_sandbox_id="p", state=pb.ContainerStateValue(state=pb.CONTAINER_EXITED)
        )
    )
    assert (cf.id, cf.pod_sandbox_id, cf.state) == ("c", "p", model.ContainerState.CONTAINER_EXITED)
    assert convert.container_filter(pb.ContainerFilter()).state is None
    sf = convert.container_filter(
        pb.ContainerStatsFilter(id="c", pod_sandbox_id="p", label_selector={"x": "y"})
    )
    assert (sf.id, sf.pod_sandbox_id, sf.state, sf.label_selector) == ("c", "p", None, {"x": "y"})
    with pytest.raises(InvalidArgument, match="ImageSpec.image"):
        convert.image_ref(pb.ImageSpec())
    with pytest.raises(InvalidArgument, match="cmd must not be empty"):
        convert.exec_cmd(pb.ExecSyncRequest(container_id="c"))
    with pytest.raises(InvalidArgument, match="container_id must not be empty"):
        convert.required_id("", "container_id")
    res = pb.LinuxContainerResources(memory_swap_limit_in_bytes=7, cpuset_mems="0")
    assert convert.linux_container_resources(res) == model.LinuxContainerResources(
        memory_swap_limit_in_bytes=7, cpuset_mems="0"
    )


def sandbox_record() -> model.PodSandbox:
    config = convert.pod_sandbox_config(sandbox_request())
    return model.PodSandbox(
        id="a" * 64,
        config=config,
        runtime_handler="runc",
        state=model.PodSandboxState.SANDBOX_READY,
        created_at=1_700_000_000_123_456_789,
        pid=4242,
        ns_paths={"net": "/run/podhost/ns/net-a"},
        ip="10.88.0.5",
        additional_ips=["fd00::5"],
    )


def test_pod_sandbox_status_response() -> None:
    s = sandbox_record()
    resp = convert.pod_sandbox_status_response(s, verbose=True, network={"cniVersion": "1.0.0"}, timestamp=5)
    st = resp.status
    assert st.id == "a" * 64 and st.state == pb.SANDBOX_READY and st.created_at == 1_700_000_000_123_456_789
    assert (st.metadata.name, st.metadata.uid, st.metadata.namespace, st.metadata.attempt) == (
        "web",
        "uid-1",
        "default",
        1,
    )
    assert st.network.ip == "10.88.0.5" and [i.ip for i in st.network.additional_ips] == ["fd00::5"]
    ns = st.linux.namespaces.options
    assert (ns.network, ns.pid, ns.ipc) == (pb.POD, pb.CONTAINER, pb.POD)
    assert dict(st.labels) == {"app": "web"} and dict(st.annotations) == {"note": "x"}
    assert st.runtime_handler == "runc" and resp.timestamp == 5
    info = json.loads(resp.info["info"])
    assert info["pid"] == 4242 and info["netNamespacePath"] == "/run/podhost/ns/net-a"
    assert info["config"]["hostname"] == "web-host" and info["network"] == {"cniVersion": "1.0.0"}
    assert not convert.pod_sandbox_status_response(s).info
    listed = convert.pod_sandbox(s)
    assert (listed.id, listed.state, listed.runtime_handler, listed.metadata.name) == (
        "a" * 64,
        0,
        "runc",
        "web",
    )


def container_record() -> model.Container:
    return model.Container(
        id="c" * 64,
        sandbox_id="a" * 64,
        config=convert.container_config(container_request()),
        image_id="sha256:" + "1" * 64,
        image_ref="docker.io/library/busybox@sha256:" + "2" * 64,
        runtime_handler="runc",
        state=model.ContainerState.CONTAINER_EXITED,
        created_at=10,
        started_at=20,
        finished_at=30,
        exit_code=137,
        reason="OOMKilled",
        message="killed",
        pid=99,
        log_path="/var/log/pods/default_web_uid-1/app/3.log",
        user=model.LinuxContainerUser(uid=1000, gid=1001, supplemental_groups=[1001, 50000, 5]),
    )


def test_container_status_response() -> None:
    resp = convert.container_status_response(container_record(), verbose=True)
    st = resp.status
    assert st.id == "c" * 64 and st.state == pb.CONTAINER_EXITED
    assert (st.created_at, st.started_at, st.finished_at, st.exit_code) == (10, 20, 30, 137)
    assert (st.reason, st.message) == ("OOMKilled", "killed")
    assert st.image.image == "docker.io/library/busybox:1.36"
    assert st.image_ref == "docker.io/library/busybox@sha256:" + "2" * 64
    assert st.image_id == "sha256:" + "1" * 64
    assert st.log_path == "/var/log/pods/default_web_uid-1/app/3.log"
    assert [(m.container_path, m.host_path, m.readonly, m.propagation) for m in st.mounts] == [
        ("/data", "/srv/data", True, pb.PROPAGATION_HOST_TO_CONTAINER)
    ]
    assert st.metadata.name == "app" and st.metadata.attempt == 3
    assert st.resources.linux.cpu_quota == 50000
    # ContainerStatus.user: the resolved process ids (image /etc/group included), not the request's.
    assert (st.user.linux.uid, st.user.linux.gid, list(st.user.linux.supplemental_groups)) == (
        1000,
        1001,
        [1001, 50000, 5],
    )
    no_user = container_record()
    no_user.user = None  # a record from before podhost recorded the user
    assert not convert.container_status(no_user).HasField("user")
    info = json.loads(resp.info["info"])
    assert info["pid"] == 99 and info["sandboxID"] == "a" * 64
    c = convert.container(container_record())
    assert (c.pod_sandbox_id, c.image.image, c.image_id, c.state) == (
        "a" * 64,
        "docker.io/library/busybox:1.36",
        "sha256:" + "1" * 64,
        pb.CONTAINER_EXITED,
    )


def test_image_conversions() -> None:
    img = model.Image(
        id="sha256:" + "3" * 64,
        repo_tags=["docker.io/library/busybox:1.36"],
        repo_digests=["docker.io/library/busybox@sha256:" + "4" * 64],
        size=4_860_000,
        config=model.ImageConfig(user="65534:65534"),
        pinned=True,
    )
    m = convert.image(img)
    assert (m.id, list(m.repo_tags), m.size, m.pinned, m.spec.image) == (
        img.id,
        img.repo_tags,
        4_860_000,
        True,
        img.id,
    )
    assert m.HasField("uid") and m.uid.value == 65534 and m.username == ""
    named = convert.image(model.Image(id="sha256:x", config=model.ImageConfig(user="nobody")))
    assert not named.HasField("uid") and named.username == "nobody"
    assert not convert.image_status_response(None).HasField("image")
    assert (
        json.loads(convert.image_status_response(img, verbose=True).info["info"])["imageConfig"]["user"]
        == "65534:65534"
    )
    fs = convert.image_fs_info_response(100, 7, "/var/lib/podhost/images", 9).image_filesystems[0]
    assert (fs.used_bytes.value, fs.inodes_used.value, fs.fs_id.mountpoint, fs.timestamp) == (
        100,
        7,
        "/var/lib/podhost/images",
        9,
    )


def test_events_stats_status_version() -> None:
    event = model.ContainerEvent("c" * 64, model.ContainerEventType.CONTAINER_STOPPED_EVENT, 77, "a" * 64)
    resp = convert.container_event_response(event, sandbox_record(), [container_record()])
    assert resp.container_event_type == pb.CONTAINER_STOPPED_EVENT and resp.created_at == 77
    assert resp.pod_sandbox_status.id == "a" * 64 and resp.containers_statuses[0].exit_code == 137
    bare = convert.container_event_response(event)
    assert not bare.HasField("pod_sandbox_status") and not bare.containers_statuses

    stats = ContainerStats(
        "c" * 64,
        1000,
        cpu_usage_core_nano_seconds=5,
        memory_working_set_bytes=6,
        memory_usage_bytes=7,
        writable_layer_used_bytes=8,
    )
    s = convert.container_stats(stats, container_record())
    assert s.attributes.id == "c" * 64 and s.attributes.metadata.name == "app"
    assert (s.cpu.usage_core_nano_seconds.value, s.memory.working_set_bytes.value) == (5, 6)
    assert (s.memory.usage_bytes.value, s.writable_layer.used_bytes.value, s.cpu.timestamp) == (7, 8, 1000)
    assert convert.container_stats(stats, None).attributes.id == "c" * 64

    from podhost.runtime.runtime import RuntimeCondition

    status = convert.status_response(
        [RuntimeCondition("RuntimeReady", True), RuntimeCondition("NetworkReady", False, "NoCNI", "none")],
        ["runc", "crun"],
        {"config": {"socket": "/run/podhost/podhost.sock"}},
    )
    assert [(c.type, c.status, c.reason) for c in status.status.conditions] == [
        ("RuntimeReady", True, ""),
        ("NetworkReady", False, "NoCNI"),
    ]
    assert [h.name for h in status.runtime_handlers] == ["runc", "crun"]
    assert status.features.supplemental_groups_policy
    assert not any(h.features.recursive_read_only_mounts for h in status.runtime_handlers)
    rro = convert.status_response([], ["runc", "crun"], recursive_read_only_mounts=True)
    assert all(h.features.recursive_read_only_mounts for h in rro.runtime_handlers)
    assert json.loads(status.info["config"]) == {"socket": "/run/podhost/podhost.sock"}
    v = convert.version_response("podhost", "0.1.0")
    assert (v.runtime_name, v.runtime_version, v.runtime_api_version) == ("podhost", "0.1.0", "v1")


def test_update_resources_needs_linux() -> None:
    with pytest.raises(InvalidArgument, match="linux is required"):
        convert.update_resources(pb.UpdateContainerResourcesRequest(container_id="c"))
    req = pb.UpdateContainerResourcesRequest(container_id="c", linux=pb.LinuxContainerResources(cpu_quota=1))
    assert convert.update_resources(req).cpu_quota == 1


def test_sandbox_status_reports_the_user_namespace_and_its_mappings() -> None:
    userns = model.UserNamespace(
        mode=model.NamespaceMode.POD,
        uids=[model.IDMapping(host_id=65536, container_id=0, length=65536)],
        gids=[model.IDMapping(host_id=131072, container_id=0, length=65536)],
    )
    out = convert.pb_namespace_option(model.NamespaceOption(userns=userns))
    assert out.userns_options.mode == pb.POD
    assert [(m.host_id, m.container_id, m.length) for m in out.userns_options.uids] == [(65536, 0, 65536)]
    assert [(m.host_id, m.length) for m in out.userns_options.gids] == [(131072, 65536)]
    assert convert.pb_namespace_option(model.NamespaceOption()).userns_options.mode == pb.NODE
