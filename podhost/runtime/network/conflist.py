"""The CNI network configuration: which conflist a pod gets, and the exact stdin each plugin is given.

Owns: finding the config the way containerd (go-cni over libcni) does, i.e. the lexically first
`*.conf`, `*.conflist` or `*.json` in `Config.cni_conf_dir`, a single-plugin `.conf`/`.json` wrapped
into a one-element list; otherwise the built-in default (bridge + host-local + portmap, never any
masquerade). Also the loopback network, which containerd runs as a network of its own for "lo".
Validation names the file and the field, so an operator can fix a broken file from the error alone.

Must never: execute anything, touch the network, or write files. Everything here is pure apart from
reading the config directory, so tests check it without root.

CNI spec facts used (SPEC.md "Network configuration lists" and "Execution of Network Configurations"):
- a list carries `cniVersion`, `name`, `plugins` and optionally `disableCheck`;
- the runtime injects the list's `name` and `cniVersion` into each plugin's config, `prevResult` where the
  operation needs one, and `runtimeConfig` holding only the capabilities the plugin declares in
  `capabilities`.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from podhost.config import Config
from podhost.errors import InvalidArgument
from podhost.runtime.model import PortMapping

#: File name endings containerd accepts in the CNI config dir (libcni.ConfFiles with go-cni's list).
CONF_EXTENSIONS = (".conf", ".conflist", ".json")
#: The network name must be usable as a file name (host-local keeps its reservations under it).
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
BUILTIN_SOURCE = "<built-in default>"
LOOPBACK_SOURCE = "<built-in loopback>"


@dataclass(frozen=True)
class NetworkConfigList:
    """A validated network configuration list, with the raw JSON kept so DEL can replay it exactly."""

    name: str
    cni_version: str | None
    plugins: list[dict[str, Any]]
    raw: dict[str, Any] = field(repr=False)
    source: str = BUILTIN_SOURCE
    disable_check: bool = False

    @property
    def plugin_types(self) -> list[str]:
        return [str(p["type"]) for p in self.plugins]


def for_pod(netlist: NetworkConfigList, has_port_mappings: bool) -> NetworkConfigList:
    """The list as one pod's ADD runs it: without `portmap` when the pod maps no ports. portmap does
    nothing then (no mappings, no chains to add or remove), yet its exec costs 3-4 ms of every
    RunPodSandbox and StopPodSandbox; the attachment records this list, so DEL replays the same one."""
    if has_port_mappings or "portmap" not in netlist.plugin_types or len(netlist.plugins) < 2:
        return netlist
    plugins = [p for p in netlist.plugins if p.get("type") != "portmap"]
    raw = {
        **netlist.raw,
        "plugins": [p for p in netlist.raw.get("plugins", []) if p.get("type") != "portmap"],
    }
    return replace(netlist, plugins=plugins, raw=raw)


def ipv4_only(netlist: NetworkConfigList) -> bool:
    """Whether the list can only give the pod IPv4 addresses: some plugin's IPAM is host-local, and
    every plugin with an IPAM is host-local with IPv4 subnets only. Any other IPAM (or none anywhere)
    might hand out IPv6, so the answer is then False."""
    subnets: list[str] = []
    for plugin in netlist.plugins:
        ipam = plugin.get("ipam")
        if ipam is None:
            continue
        if not isinstance(ipam, dict) or ipam.get("type") != "host-local":
            return False
        ranges = ipam.get("ranges")
        if ranges is None:
            subnets.append(str(ipam.get("subnet", "")))
            continue
        if not isinstance(ranges, list):
            return False
        for range_set in ranges:
            if not isinstance(range_set, list):
                return False
            subnets += [str(r.get("subnet", "")) if isinstance(r, dict) else "" for r in range_set]
    return bool(subnets) and all(_is_ipv4_network(s) for s in subnets)


def _is_ipv4_network(subnet: str) -> bool:
    try:
        return ipaddress.ip_network(subnet, strict=False).version == 4
    except ValueError:
        return False


def default_conflist(config: Config) -> dict[str, Any]:
    """The built-in network: a gateway bridge with host-local IPAM and portmap. ipMasq stays false:
    podhost never rewrites pod traffic leaving the node (see Config.pod_egress)."""
    return {
        "cniVersion": "1.0.0",
        "name": "podhost",
        "plugins": [
            {
                "type": "bridge",
                "bridge": config.bridge,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": config.subnet}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(config.cni_state_dir / "ipam"),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def loopback_conflist() -> dict[str, Any]:
    """containerd brings "lo" up with a network of its own rather than a plugin in the main chain."""
    return {"cniVersion": "1.0.0", "name": "cni-loopback", "plugins": [{"type": "loopback"}]}


def find_conf_file(conf_dir: Path) -> Path | None:
    """The file containerd would pick: the lexically first regular file with a CNI config ending."""
    try:
        entries = sorted(conf_dir.iterdir(), key=lambda p: p.name)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise InvalidArgument(f"CNI config dir {conf_dir}: {e.strerror}") from e
    for path in entries:
        if path.name.endswith(CONF_EXTENSIONS) and path.is_file():
            return path
    return None


def load(config: Config) -> NetworkConfigList:
    """The network config list pods get now: the config dir's first file, else the built-in default."""
    path = find_conf_file(config.cni_conf_dir)
    if path is None:
        return parse_conflist(default_conflist(config), BUILTIN_SOURCE)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InvalidArgument(f"CNI config {path}: {e.strerror}") from e
    if path.name.endswith(".conflist"):
        return parse_conflist(_decode(data, str(path)), str(path))
    return parse_conf(_decode(data, str(path)), str(path))


def _decode(data: bytes, source: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidArgument(f"CNI config {source}: malformed JSON: {e}") from e


def parse_conf(conf: Any, source: str) -> NetworkConfigList:
    """Wrap a single-plugin network config into a list, as libcni's ConfListFromConf does."""
    if not isinstance(conf, dict):
        raise InvalidArgument(f"CNI config {source}: expected a JSON object")
    if not conf.get("type"):
        hint = " (a network config list belongs in a .conflist file)" if "plugins" in conf else ""
        raise InvalidArgument(f"CNI config {source}: missing field 'type'{hint}")
    wrapped = {"name": conf.get("name"), "plugins": [conf]}
    if "cniVersion" in conf:
        wrapped["cniVersion"] = conf["cniVersion"]
    return parse_conflist(wrapped, source)


def parse_conflist(raw: Any, source: str) -> NetworkConfigList:
    """Validate a network configuration list (already decoded JSON)."""
    if not isinstance(raw, dict):
        raise InvalidArgument(f"CNI config {source}: expected a JSON object")
    name = raw.get("name")
    if not name:
        raise InvalidArgument(f"CNI config {source}: missing field 'name'")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InvalidArgument(f"CNI config {source}: field 'name' {name!r} is not a valid network name")
    version = raw.get("cniVersion")
    if version is not None and not isinstance(version, str):
        raise InvalidArgument(f"CNI config {source}: field 'cniVersion' must be a string")
    plugins = raw.get("plugins")
    if plugins is None:
        raise InvalidArgument(f"CNI config {source}: missing field 'plugins'")
    if not isinstance(plugins, list) or not plugins:
        raise InvalidArgument(f"CNI config {source}: field 'plugins' must be a non-empty list")
    for i, plugin in enumerate(plugins):
        if not isinstance(plugin, dict):
            raise InvalidArgument(f"CNI config {source}: plugins[{i}] must be a JSON object")
        ptype = plugin.get("type")
        if not ptype:
            raise InvalidArgument(f"CNI config {source}: plugins[{i}]: missing field 'type'")
        if not isinstance(ptype, str) or "/" in ptype or ptype in (".", ".."):
            raise InvalidArgument(f"CNI config {source}: plugins[{i}]: field 'type' {ptype!r} is invalid")
        caps = plugin.get("capabilities", {})
        if not isinstance(caps, dict):
            raise InvalidArgument(
                f"CNI config {source}: plugins[{i}]: field 'capabilities' must be an object"
            )
    return NetworkConfigList(
        name=name,
        cni_version=version,
        plugins=[dict(p) for p in plugins],
        raw=copy.deepcopy(raw),
        source=source,
        disable_check=bool(raw.get("disableCheck", False)),
    )


def version_tuple(version: str | None) -> tuple[int, ...]:
    """Parse "1.0.0" into (1, 0, 0). A missing version is 0.1.0, as libcni reads it."""
    parts = []
    for piece in (version or "0.1.0").split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def supports_check(netlist: NetworkConfigList) -> bool:
    """CHECK exists from spec 0.4.0 on, and a list may opt out of it with `disableCheck`."""
    return not netlist.disable_check and version_tuple(netlist.cni_version) >= (0, 4, 0)


def plugin_config(
    netlist: NetworkConfigList,
    index: int,
    prev_result: dict[str, Any] | None,
    capability_args: dict[str, Any],
) -> dict[str, Any]:
    """The stdin of plugin `index` of the list: its own config with the list's name and version, the
    previous result, and runtimeConfig restricted to the capabilities it declares."""
    conf = copy.deepcopy(netlist.plugins[index])
    conf["name"] = netlist.name
    if netlist.cni_version is not None:
        conf["cniVersion"] = netlist.cni_version
    if prev_result is not None:
        conf["prevResult"] = prev_result
    else:
        conf.pop("prevResult", None)
    declared = conf.get("capabilities") or {}
    runtime = {k: v for k, v in capability_args.items() if declared.get(k)}
    if runtime:
        existing = conf.get("runtimeConfig")
        conf["runtimeConfig"] = {**(existing if isinstance(existing, dict) else {}), **runtime}
    return conf


def port_mappings_capability(mappings: list[PortMapping]) -> list[dict[str, Any]]:
    """CRI port mappings in containerd's portMappings capability format. Like containerd, mappings
    without a host port are skipped: there is nothing for portmap to publish."""
    out: list[dict[str, Any]] = []
    for m in mappings:
        if m.host_port <= 0:
            continue
        entry: dict[str, Any] = {
            "hostPort": m.host_port,
            "containerPort": m.container_port,
            "protocol": (m.protocol or "TCP").lower(),
        }
        if m.host_ip:
            entry["hostIP"] = m.host_ip
        out.append(entry)
    return out
