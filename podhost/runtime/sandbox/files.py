"""The per-pod /etc files: hosts, hostname, resolv.conf. Pure builders; the service writes them."""

from __future__ import annotations

from podhost.runtime.model import DNSConfig

HOSTS_HEADER = """# Kubernetes-managed hosts file (podhost).
127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
fe00::0\tip6-mcastprefix
fe00::1\tip6-allnodes
fe00::2\tip6-allrouters
"""


def hosts_file(hostname: str, ips: list[str]) -> str:
    """/etc/hosts as the kubelet writes it: localhost entries, then the pod's own IPs for its hostname."""
    return HOSTS_HEADER + "".join(f"{ip}\t{hostname}\n" for ip in ips)


def resolv_conf(dns: DNSConfig) -> str:
    """resolv.conf from a CRI DNSConfig (search domains are limited to 6 as by the kubelet's validation)."""
    lines = [f"nameserver {server}" for server in dns.servers]
    if dns.searches:
        lines.append("search " + " ".join(dns.searches[:6]))
    if dns.options:
        lines.append("options " + " ".join(dns.options))
    return "\n".join(lines) + "\n" if lines else ""


def has_dns(dns: DNSConfig | None) -> bool:
    return dns is not None and bool(dns.servers or dns.searches or dns.options)


def pod_hostname(hostname: str, pod_name: str) -> str:
    """The UTS hostname: the CRI hostname, else the pod name, cut to the kernel's 64 bytes."""
    return (hostname or pod_name)[:63]
