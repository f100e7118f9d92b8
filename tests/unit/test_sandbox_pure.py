"""Pure parts of the sandbox layer: the pod's files, sysctl validation, namespaces, name keys."""

import pytest

from podhost.errors import InvalidArgument
from podhost.runtime.model import (
    DNSConfig,
    NamespaceMode,
    NamespaceOption,
    PodSandboxConfig,
    PodSandboxMetadata,
)
from podhost.runtime.sandbox import files, sysctls
from podhost.runtime.sandbox.pause import PauseSpec, pause_env
from podhost.runtime.sandbox.service import pod_namespaces, sandbox_name_key
from podhost.runtime.validation import validate_pod_sandbox_config


def config(**ns: NamespaceMode) -> PodSandboxConfig:
    return PodSandboxConfig(
        metadata=PodSandboxMetadata("web", "uid-1", "default", 2), namespace_options=NamespaceOption(**ns)
    )


def test_hosts_file_lists_localhost_then_the_pod_ips() -> None:
    text = files.hosts_file("web", ["10.88.0.7"])
    assert "127.0.0.1\tlocalhost\n" in text
    assert text.endswith("10.88.0.7\tweb\n")


def test_resolv_conf_from_dns_config() -> None:
    dns = DNSConfig(servers=["127.0.0.53"], searches=["a.svc", "svc"], options=["ndots:5"])
    assert files.resolv_conf(dns) == "nameserver 127.0.0.53\nsearch a.svc svc\noptions ndots:5\n"
    assert not files.has_dns(DNSConfig())
    assert not files.has_dns(None)


def test_hostname_defaults_to_the_pod_name_and_fits_the_kernel_limit() -> None:
    assert files.pod_hostname("", "web") == "web"
    assert len(files.pod_hostname("x" * 100, "web")) == 63


def test_namespaced_sysctls_are_encoded_for_pause() -> None:
    encoded = sysctls.pause_sysctls(
        {"net.ipv4.ip_unprivileged_port_start": "0", "kernel.shm_rmid_forced": "1"},
        host_network=False,
        host_ipc=False,
    )
    assert encoded == ("/proc/sys/kernel/shm_rmid_forced=1;/proc/sys/net/ipv4/ip_unprivileged_port_start=0")


def test_an_ipv4_only_network_turns_ipv6_off_for_new_interfaces_unless_the_pod_says() -> None:
    own = {"net.ipv4.ip_unprivileged_port_start": "0"}
    assert sysctls.for_ipv4_only_network(own) == {**own, "net.ipv6.conf.default.disable_ipv6": "1"}
    assert own == {"net.ipv4.ip_unprivileged_port_start": "0"}  # the pod's config is not changed
    for asks in ({"net.ipv6.conf.all.disable_ipv6": "0"}, {"net/ipv6/conf/default/disable_ipv6": "0"}):
        assert sysctls.for_ipv4_only_network(asks) == asks
    encoded = sysctls.pause_sysctls(sysctls.for_ipv4_only_network({}), host_network=False, host_ipc=False)
    assert encoded == "/proc/sys/net/ipv6/conf/default/disable_ipv6=1"


@pytest.mark.parametrize(
    ("name", "host_network", "host_ipc", "needle"),
    [
        ("kernel.panic", False, False, "not a namespaced sysctl"),
        ("vm.swappiness", False, False, "not a namespaced sysctl"),
        ("net.ipv4.ip_forward", True, False, "hostNetwork"),
        ("kernel.shmmax", False, True, "hostIPC"),
        ("net/../../kernel/panic", False, False, "invalid sysctl name"),
    ],
)
def test_node_wide_or_malformed_sysctls_are_refused(
    name: str, host_network: bool, host_ipc: bool, needle: str
) -> None:
    with pytest.raises(InvalidArgument, match=needle):
        sysctls.pause_sysctls({name: "1"}, host_network, host_ipc)


def test_sysctl_values_cannot_smuggle_another_entry() -> None:
    with pytest.raises(InvalidArgument):
        sysctls.pause_sysctls({"net.ipv4.tcp_syncookies": "1;/proc/sys/kernel/panic=1"}, False, False)


def test_pod_namespaces_follow_the_namespace_options() -> None:
    assert pod_namespaces(config(pid=NamespaceMode.CONTAINER)) == ["net", "uts", "ipc"]
    assert pod_namespaces(config(pid=NamespaceMode.POD)) == ["net", "uts", "ipc", "pid"]
    assert pod_namespaces(config(network=NamespaceMode.NODE, pid=NamespaceMode.CONTAINER)) == ["ipc"]
    assert pod_namespaces(config(ipc=NamespaceMode.NODE, pid=NamespaceMode.CONTAINER)) == ["net", "uts"]


def test_sandbox_name_key_is_name_namespace_uid_attempt() -> None:
    assert sandbox_name_key(config()) == "web_default_uid-1_2"


@pytest.mark.parametrize("missing", ["name", "namespace", "uid"])
def test_metadata_fields_are_required(missing: str) -> None:
    c = config()
    setattr(c.metadata, missing, "")
    with pytest.raises(InvalidArgument, match=f"metadata.{missing} is required"):
        validate_pod_sandbox_config(c)


def test_pause_env_carries_the_launch_protocol() -> None:
    env = pause_env(PauseSpec(["net", "ipc"], "web", [], "/proc/sys/a=1"))
    assert env == {
        "PODHOST_PAUSE_NS": "net,ipc",
        "PODHOST_PAUSE_HOSTNAME": "web",
        "PODHOST_PAUSE_CGROUPS": "",
        "PODHOST_PAUSE_SYSCTLS": "/proc/sys/a=1",
    }
