"""Endpoints: for each Service, the IP:port of every Ready pod its selector matches. Pure.

As the endpoints controller does it: a service without a selector has no endpoints; a pod is listed
under `addresses` when its Ready condition is True and it has an IP, under `notReadyAddresses` when it
matches but is not Ready; a named targetPort is resolved per pod from its containers' ports, and a pod
without a port of that name is left out of that port.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from podhost.kubelet.manifest import Pod, Service, ServicePort


@dataclass
class PodView:
    """What endpoints need to know of a pod."""

    pod: Pod
    ip: str
    ready: bool


@dataclass
class Endpoints:
    service: Service
    ready: list[tuple[str, str, int, str]] = field(default_factory=list)  # (pod, ip, port, port name)
    not_ready: list[tuple[str, str, int, str]] = field(default_factory=list)

    def addresses(self) -> list[str]:
        return [f"{ip}:{port}" for _, ip, port, _ in self.ready]

    def to_dict(self) -> dict[str, Any]:
        """The v1 Endpoints shape (one subset per port, which is how podhost groups them)."""
        subsets = []
        for sp in self.service.ports or [ServicePort(port=0, target_port=0)]:
            ready = [(p, ip) for p, ip, port, name in self.ready if name == sp.name]
            not_ready = [(p, ip) for p, ip, port, name in self.not_ready if name == sp.name]
            ports = {port for _, _, port, name in self.ready + self.not_ready if name == sp.name}
            if not ready and not not_ready:
                continue
            subset: dict[str, Any] = {
                "addresses": [{"ip": ip, "targetRef": {"kind": "Pod", "name": p}} for p, ip in ready],
                "ports": [{"name": sp.name, "port": port, "protocol": sp.protocol} for port in sorted(ports)],
            }
            if not_ready:
                subset["notReadyAddresses"] = [
                    {"ip": ip, "targetRef": {"kind": "Pod", "name": p}} for p, ip in not_ready
                ]
            subsets.append(subset)
        return {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": self.service.name, "namespace": self.service.namespace},
            "subsets": subsets,
        }


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def target_port(sp: ServicePort, pod: Pod) -> int | None:
    if isinstance(sp.target_port, int):
        return sp.target_port
    for c in pod.containers:
        for p in c.ports:
            if p.name == sp.target_port and p.protocol == sp.protocol:
                return p.container_port
    return None


def endpoints_for(service: Service, pods: list[PodView]) -> Endpoints:
    out = Endpoints(service)
    members = sorted(
        (v for v in pods if v.pod.namespace == service.namespace and selects(service.selector, v.pod.labels)),
        key=lambda v: v.pod.name,
    )
    for view in members:
        if not view.ip:
            continue
        for sp in service.ports:
            port = target_port(sp, view.pod)
            if port is None:
                continue
            entry = (view.pod.name, view.ip, port, sp.name)
            (out.ready if view.ready else out.not_ready).append(entry)
    return out
