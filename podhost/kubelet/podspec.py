"""Pure conversion of a `Pod` into the CRI requests the kubelet would send.

Follows the kubelet's own choices so that a runtime sees from podhost what it sees from a real node: the
io.kubernetes.* labels, CPU shares = millicores * 1024 / 1000 (min 2), quota over a 100 ms period, the
pod PID namespace only with shareProcessNamespace, seccomp RuntimeDefault, no_new_privs from
allowPrivilegeEscalation=false, logs at <log dir>/<container>/<restartCount>.log.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from podhost.cri import api_pb2 as cri
from podhost.kubelet.envvars import expand_command
from podhost.kubelet.manifest import USERNS_LENGTH, ContainerSpec, Pod, Resources

CPU_PERIOD = 100_000
MIN_SHARES = 2
LABEL_POD_NAME = "io.kubernetes.pod.name"
LABEL_POD_NAMESPACE = "io.kubernetes.pod.namespace"
LABEL_POD_UID = "io.kubernetes.pod.uid"
LABEL_CONTAINER_NAME = "io.kubernetes.container.name"
#: The annotation on every sandbox podhost's pod manager makes: the only ones it ever garbage-collects.
MANAGED_BY = "podhost.io/managed-by"
MANAGER_NAME = "podhost-kubelet"
_PROTOCOL = {"TCP": cri.TCP, "UDP": cri.UDP, "SCTP": cri.SCTP}


def pod_log_directory(base: str, pod: Pod) -> str:
    return f"{base.rstrip('/')}/{pod.namespace}_{pod.name}_{pod.uid}"


def sandbox_config(
    pod: Pod, attempt: int, log_directory: str, cgroup_parent: str = ""
) -> cri.PodSandboxConfig:
    """The RunPodSandbox config; `cgroup_parent` is the pod's cgroup (the kubelet's pod<uid> cgroup)."""
    labels = {
        **pod.labels,
        LABEL_POD_NAME: pod.name,
        LABEL_POD_NAMESPACE: pod.namespace,
        LABEL_POD_UID: pod.uid,
    }
    ports = [
        cri.PortMapping(
            protocol=_PROTOCOL[p.protocol],
            container_port=p.container_port,
            host_port=p.host_port,
            host_ip=p.host_ip,
        )
        for c in pod.containers
        for p in c.ports
        if p.host_port
    ]
    dns = None
    if pod.dns_config or pod.dns_policy == "None":
        dns = cri.DNSConfig(
            servers=[str(s) for s in pod.dns_config.get("nameservers", [])],
            searches=[str(s) for s in pod.dns_config.get("searches", [])],
            options=[
                f"{o['name']}:{o['value']}" if o.get("value") else str(o["name"])
                for o in pod.dns_config.get("options", [])
            ],
        )
    pid_mode = cri.POD if pod.share_process_namespace else cri.CONTAINER
    net_mode = cri.NODE if pod.host_network else cri.POD
    return cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name=pod.name, uid=pod.uid, namespace=pod.namespace, attempt=attempt),
        hostname=(pod.hostname or pod.name)[:63],
        log_directory=log_directory,
        dns_config=dns,
        port_mappings=ports,
        labels=labels,
        annotations=pod.annotations,
        linux=cri.LinuxPodSandboxConfig(
            cgroup_parent=cgroup_parent,
            security_context=sandbox_security(pod, net_mode, pid_mode),
            sysctls=pod.sysctls,
        ),
    )


def user_namespace(pod: Pod) -> cri.UserNamespace | None:
    """`hostUsers: false`: the pod's own user namespace, its 0..65535 mapped to the ids the pod manager
    gave it (the kubelet's mapping, KEP-127); None keeps the node's."""
    if pod.host_users:
        return None
    ids = [cri.IDMapping(container_id=0, host_id=pod.userns_host_id, length=USERNS_LENGTH)]
    return cri.UserNamespace(mode=cri.POD, uids=ids, gids=ids)


def pod_groups(pod: Pod) -> list[int]:
    """The pod's supplemental groups, fsGroup included, as the kubelet passes them to every container."""
    return pod.supplemental_groups + ([pod.fs_group] if pod.fs_group is not None else [])


def groups_policy(pod: Pod) -> cri.SupplementalGroupsPolicy:
    return cri.Strict if pod.supplemental_groups_policy == "Strict" else cri.Merge


def sandbox_security(
    pod: Pod, net_mode: cri.NamespaceMode, pid_mode: cri.NamespaceMode
) -> cri.LinuxSandboxSecurityContext:
    security = cri.LinuxSandboxSecurityContext(
        namespace_options=cri.NamespaceOption(
            network=net_mode, pid=pid_mode, ipc=cri.POD, userns_options=user_namespace(pod)
        ),
        seccomp=cri.SecurityProfile(profile_type=cri.SecurityProfile.RuntimeDefault),
        supplemental_groups=pod_groups(pod),
        supplemental_groups_policy=groups_policy(pod),
    )
    if pod.run_as_user is not None:
        security.run_as_user.value = pod.run_as_user
    if pod.run_as_group is not None:
        security.run_as_group.value = pod.run_as_group
    return security


def cpu_shares(milli: int) -> int:
    return max(MIN_SHARES, milli * 1024 // 1000) if milli else MIN_SHARES


def container_mounts(
    c: ContainerSpec, volume_paths: Mapping[str, str], image_volumes: Mapping[str, str] | None = None
) -> list[cri.Mount]:
    """CRI mounts for `c`'s volumeMounts; `volume_paths` maps a pod volume's name to its host path,
    `image_volumes` an image volume's name to its image reference. An image volume is a CRI mount with
    `image` set, no host path, always read-only and its subPath as `image_sub_path` (as the kubelet sends
    it: KEP-4639)."""
    images = image_volumes or {}
    return [
        cri.Mount(
            container_path=m.mount_path,
            readonly=True,
            image=cri.ImageSpec(image=images[m.name]),
            image_sub_path=m.sub_path,
        )
        if m.name in images
        else cri.Mount(container_path=m.mount_path, host_path=volume_paths[m.name], readonly=m.read_only)
        for m in c.volume_mounts
    ]


def linux_resources(res: Resources) -> cri.LinuxContainerResources:
    """The CRI resources of a container's requests and limits (what CreateContainer and an in-place
    resize's UpdateContainerResources send)."""
    return cri.LinuxContainerResources(
        cpu_period=CPU_PERIOD if res.cpu_limit_milli else 0,
        cpu_quota=res.cpu_limit_milli * CPU_PERIOD // 1000 if res.cpu_limit_milli else 0,
        cpu_shares=cpu_shares(res.cpu_request_milli or res.cpu_limit_milli),
        memory_limit_in_bytes=res.memory_limit,
    )


def container_config(
    pod: Pod,
    c: ContainerSpec,
    attempt: int,
    mounts: Sequence[cri.Mount] = (),
    *,
    target_id: str = "",
    envs: Sequence[tuple[str, str]] | None = None,
) -> cri.ContainerConfig:
    """The CreateContainer config for container `c`; `attempt` is its restart count. `target_id`: for an
    ephemeral container with a target, that container's id: it gets PID namespace mode TARGET (its
    net, IPC and UTS namespaces are the pod's, as for every container). `envs` is the container's
    environment as `envvars.make_environment` resolved it (None: the literal values only); the command
    and args are expanded with it."""
    if envs is None:
        envs = [(v.name, v.value) for v in c.env if v.value_from is None]
    command, args = expand_command(c, list(envs))
    resources = linux_resources(c.resources)
    security = cri.LinuxContainerSecurityContext(
        capabilities=cri.Capability(
            add_capabilities=c.capabilities_add, drop_capabilities=c.capabilities_drop
        ),
        privileged=c.privileged,
        namespace_options=cri.NamespaceOption(
            network=cri.NODE if pod.host_network else cri.POD,
            pid=cri.TARGET if target_id else cri.POD if pod.share_process_namespace else cri.CONTAINER,
            target_id=target_id,
            ipc=cri.POD,
            userns_options=user_namespace(pod),
        ),
        readonly_rootfs=c.read_only_root_filesystem,
        no_new_privs=c.allow_privilege_escalation is False,
        seccomp=cri.SecurityProfile(
            profile_type=cri.SecurityProfile.Unconfined
            if c.privileged
            else cri.SecurityProfile.RuntimeDefault
        ),
    )
    # A container's own runAsUser/runAsGroup win over the pod's (the kubelet's determineEffectiveSecurityContext).
    run_as_user = c.run_as_user if c.run_as_user is not None else pod.run_as_user
    run_as_group = c.run_as_group if c.run_as_group is not None else pod.run_as_group
    if run_as_user is not None:
        security.run_as_user.value = run_as_user
    if run_as_group is not None:
        security.run_as_group.value = run_as_group
    security.supplemental_groups.extend(pod_groups(pod))
    security.supplemental_groups_policy = groups_policy(pod)
    return cri.ContainerConfig(
        metadata=cri.ContainerMetadata(name=c.name, attempt=attempt),
        image=cri.ImageSpec(image=c.image),
        command=command,
        args=args,
        working_dir=c.working_dir,
        envs=[cri.KeyValue(key=k, value=v.encode()) for k, v in envs],
        labels={
            LABEL_POD_NAME: pod.name,
            LABEL_POD_NAMESPACE: pod.namespace,
            LABEL_POD_UID: pod.uid,
            LABEL_CONTAINER_NAME: c.name,
        },
        log_path=f"{c.name}/{attempt}.log",
        mounts=list(mounts),
        stdin=c.stdin,
        stdin_once=c.stdin_once,
        tty=c.tty,
        linux=cri.LinuxContainerConfig(resources=resources, security_context=security),
    )
