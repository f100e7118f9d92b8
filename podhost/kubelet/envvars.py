"""A container's environment, as the kubelet makes it (pkg/kubelet/kubelet_pods.go makeEnvironmentVariables).

Pure over its inputs: the container spec, the pod, the ConfigMaps and Secrets (`ConfigSource`) and the
pod's facts (IPs, node). In order: every `envFrom` source (its keys, prefixed; a later source wins), then
every `env` entry, each value with `$(VAR)` references to the variables before it expanded (`$$` is a
literal `$`, an unknown reference stays as written). A missing ConfigMap, Secret or key that is not
`optional` fails the container's creation with CreateContainerConfigError and the kubelet's words
(`configmap "cfg" not found`, `couldn't find key k in ConfigMap default/cfg`); no message ever holds a
value. The command and args are expanded with the result (ExpandContainerCommandAndArgs).
"""

from __future__ import annotations

from podhost.kubelet.configobjects import ConfigSource
from podhost.kubelet.downward_api import FieldError, PodFacts, field_value, resource_value
from podhost.kubelet.manifest import ContainerSpec, Pod

CREATE_CONTAINER_CONFIG_ERROR = "CreateContainerConfigError"
_KINDS = {
    "configMapRef": "ConfigMap",
    "secretRef": "Secret",
    "configMapKeyRef": "ConfigMap",
    "secretKeyRef": "Secret",
}


class ContainerConfigError(Exception):
    """Why a container's config cannot be made (its waiting reason is CreateContainerConfigError)."""


def not_found(kind: str, name: str) -> str:
    """kube-apiserver's NotFound words, as the kubelet passes them on: `configmap "cfg" not found`."""
    return f'{kind.lower()} "{name}" not found'


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion (third_party/forked/golang/expansion)."""
    out, i = [], 0
    while i < len(text):
        if text[i] != "$" or i + 1 >= len(text):
            out.append(text[i])
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "(":
            end = text.find(")", i + 2)
            if end < 0:
                out.append("$(")
                i += 2
                continue
            name = text[i + 2 : end]
            out.append(env.get(name, f"$({name})"))
            i = end + 1
        else:
            out.append("$" + nxt)
            i += 2
    return "".join(out)


def _lookup(source: ConfigSource, kind: str, namespace: str, name: str) -> dict[str, bytes] | None:
    return source.config_data(kind, namespace, name, for_env=True)


def make_environment(
    pod: Pod, c: ContainerSpec, source: ConfigSource, facts: PodFacts
) -> list[tuple[str, str]]:
    """The container's variables in order; raises ContainerConfigError."""
    env: dict[str, str] = {}
    for ref in c.env_from:
        kind = _KINDS[ref.kind]
        data = _lookup(source, kind, pod.namespace, ref.name)
        if data is None:
            if ref.optional:
                continue
            raise ContainerConfigError(not_found(kind, ref.name))
        for key, value in data.items():
            env[ref.prefix + key] = value.decode(errors="replace")
    for var in c.env:
        src = var.value_from
        if src is None:
            env[var.name] = expand(var.value, env)
            continue
        try:
            if src.kind == "fieldRef":
                env[var.name] = field_value(pod, src.field_path, facts)
            elif src.kind == "resourceFieldRef":
                assert src.resource is not None
                env[var.name] = resource_value(pod, src.resource, c, facts.node)
            else:
                kind = _KINDS[src.kind]
                data = _lookup(source, kind, pod.namespace, src.name)
                if data is None:
                    if src.optional:
                        continue
                    raise ContainerConfigError(not_found(kind, src.name))
                if src.key not in data:
                    if src.optional:
                        continue
                    raise ContainerConfigError(
                        f"couldn't find key {src.key} in {kind} {pod.namespace}/{src.name}"
                    )
                env[var.name] = data[src.key].decode(errors="replace")
        except FieldError as e:
            raise ContainerConfigError(str(e)) from None
    return list(env.items())


def expand_command(c: ContainerSpec, env: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """The container's command and args with `$(VAR)` references expanded."""
    values = dict(env)
    return [expand(x, values) for x in c.command], [expand(x, values) for x in c.args]
