"""One CNI plugin execution: find the binary, build its environment, run it, read its answer.

Owns the CNI execution protocol (SPEC.md "Section 3: Execution Protocol"): parameters go in the
environment (CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_ARGS, CNI_PATH), the network
configuration on stdin; on success a plugin prints a result (ADD) or nothing (DEL, CHECK) and exits 0; on
failure it exits non-zero and prints an error object `{"cniVersion", "code", "msg", "details"}` on
stdout. The environment and CNI_ARGS are built by pure functions; running goes through `subprocess` with
a timeout, never a shell.

Nothing a plugin starts outlives a failed call. Each exec carries the mark of its sandbox and of this one
call (`PODHOST_OWNER=<instance>/<sandbox id>`, `PODHOST_CALL=<token>`, podhost.runtime.procs), and runs
in a session of its own. The call ends when the plugin exits, never waiting for EOF on its pipes (a child
it left could hold them for ever, and the daemon with them). On a timeout or an interrupt the plugin,
its process tree and group, and whatever carries the call's mark are killed (`procs.kill_session`); the
sandbox's other processes (its pause, a plugin running beside this one) carry other call marks or none.

Must never: decide which plugins run or in what order (that is `podhost.runtime.network.cni`), or keep
any state.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podhost.errors import InvalidArgument, RuntimeFailure
from podhost.runtime import procs

log = logging.getLogger(__name__)

#: Seconds a plugin may run. The bridge plugin takes ~20 ms here; a minute means a stuck plugin.
DEFAULT_TIMEOUT = 60.0
#: Variables a plugin legitimately needs from our own environment (portmap runs `iptables` by PATH).
_INHERITED = ("PATH", "LANG", "LC_ALL", "XTABLES_LIBDIR")
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class PluginError(RuntimeFailure):
    """A plugin reported failure. `code` is the CNI error code (SPEC.md "Error"; 0 when the plugin
    printed no error object), so callers can tell e.g. 11 "try again later" from a real failure."""

    def __init__(self, plugin: str, command: str, code: int, msg: str, details: str = "") -> None:
        self.plugin = plugin
        self.command = command
        self.code = code
        self.msg = msg
        self.details = details
        text = f"CNI plugin {plugin} {command} failed (code {code}): {msg}"
        if details and details != msg:
            text += f": {details}"
        super().__init__(text)


@dataclass(frozen=True)
class Invocation:
    """The per-call parameters of the execution protocol."""

    command: str  # ADD, DEL, CHECK, VERSION
    container_id: str
    netns: str
    ifname: str
    cni_args: str
    cni_path: Sequence[Path]


def build_cni_args(pod_namespace: str, pod_name: str, sandbox_id: str, pod_uid: str) -> str:
    """CNI_ARGS as the kubelet/containerd pass them; IgnoreUnknown=1 lets plugins that know none of
    the K8S_* keys accept them anyway."""
    pairs = [
        ("IgnoreUnknown", "1"),
        ("K8S_POD_NAMESPACE", pod_namespace),
        ("K8S_POD_NAME", pod_name),
        ("K8S_POD_INFRA_CONTAINER_ID", sandbox_id),
        ("K8S_POD_UID", pod_uid),
    ]
    for key, value in pairs:
        if ";" in value or "=" in value:
            raise InvalidArgument(f"CNI_ARGS: {key} value {value!r} may not contain ';' or '='")
    return ";".join(f"{k}={v}" for k, v in pairs)


def build_env(
    inv: Invocation, base_env: Mapping[str, str], marks: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The plugin's whole environment: the CNI_* protocol variables, the few host ones it needs, and
    `marks` (procs.mark_env: which podhost instance, sandbox and call the exec belongs to)."""
    env = {k: base_env[k] for k in _INHERITED if k in base_env}
    env.update(marks or {})
    env.setdefault("PATH", _DEFAULT_PATH)
    env.update(
        {
            "CNI_COMMAND": inv.command,
            "CNI_CONTAINERID": inv.container_id,
            "CNI_NETNS": inv.netns,
            "CNI_IFNAME": inv.ifname,
            "CNI_ARGS": inv.cni_args,
            "CNI_PATH": ":".join(str(p) for p in inv.cni_path),
        }
    )
    return env


def find_plugin(plugin_type: str, bin_dirs: Sequence[Path]) -> Path:
    """The first executable named `plugin_type` in the CNI bin dirs (CNI_PATH order)."""
    if not plugin_type or "/" in plugin_type:
        raise InvalidArgument(f"CNI plugin type {plugin_type!r} is invalid")
    for directory in bin_dirs:
        candidate = Path(directory) / plugin_type
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    searched = ", ".join(str(d) for d in bin_dirs)
    raise RuntimeFailure(f"CNI plugin {plugin_type!r} not found in {searched}")


def parse_output(
    plugin: str, command: str, returncode: int, stdout: bytes, stderr: bytes
) -> dict[str, Any] | None:
    """Turn what a plugin printed into its result (None when it printed nothing) or a PluginError."""
    text = stdout.strip()
    if returncode == 0:
        if not text:
            return None
        try:
            result = json.loads(text)
        except ValueError as e:
            raise RuntimeFailure(f"CNI plugin {plugin} {command}: unreadable result: {e}") from e
        if not isinstance(result, dict):
            raise RuntimeFailure(f"CNI plugin {plugin} {command}: result is not a JSON object")
        return result
    err: Any = None
    if text:
        try:
            err = json.loads(text)
        except ValueError:
            err = None
    if isinstance(err, dict) and ("code" in err or "msg" in err):
        try:
            code = int(err.get("code") or 0)
        except (TypeError, ValueError):
            code = 0
        raise PluginError(plugin, command, code, str(err.get("msg", "")), str(err.get("details", "")))
    said = (stderr.strip() or text).decode(errors="replace")[-2000:]
    raise PluginError(plugin, command, 0, f"exit status {returncode}", said)


def run(
    plugin_type: str,
    path: Path,
    inv: Invocation,
    conf: dict[str, Any],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    log_id: str = "",
    instance: str = "",
    owner: str = "",
) -> dict[str, Any] | None:
    """Execute one plugin with `conf` on stdin; return its result, or raise PluginError/RuntimeFailure.

    `instance` and `owner` (Config.instance_id, the sandbox id) mark the exec and all it starts; with no
    `instance` it runs unmarked (its own process tree and group are still killed on failure)."""
    call = uuid.uuid4().hex[:12]
    env = build_env(inv, os.environ, procs.mark_env(instance, owner, call) if instance else None)
    started = time.monotonic()
    try:
        popen = subprocess.Popen(
            [str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=env, start_new_session=True, close_fds=True,
        )  # fmt: skip
    except OSError as e:
        raise RuntimeFailure(f"CNI plugin {plugin_type} {inv.command}: cannot execute {path}: {e}") from e
    report = None
    try:
        report = procs.communicate(popen, json.dumps(conf).encode(), started + timeout)
        if report is None:
            raise RuntimeFailure(f"CNI plugin {plugin_type} {inv.command} timed out after {timeout:g}s")
    finally:
        if report is None:  # timed out or interrupted: the plugin and all it started die, not only it
            killed = procs.kill_session(popen, instance, owner, call)
            log.warning(
                "%s: CNI %s %s (%s) failed to finish: %d process(es) killed",
                log_id or inv.container_id,
                inv.command,
                plugin_type,
                inv.ifname,
                len(killed),
            )
        else:
            for stream in (popen.stdin, popen.stdout, popen.stderr):
                if stream is not None:
                    stream.close()
    stdout, stderr = report
    elapsed = (time.monotonic() - started) * 1000
    log.debug(
        "%s: CNI %s %s (%s) took %.1f ms, exit %d",
        log_id or inv.container_id,
        inv.command,
        plugin_type,
        inv.ifname,
        elapsed,
        popen.returncode,
    )
    if stderr.strip():
        log.debug(
            "%s: CNI %s stderr: %s",
            log_id or inv.container_id,
            plugin_type,
            stderr[-2000:].decode(errors="replace"),
        )
    return parse_output(plugin_type, inv.command, popen.returncode, stdout, stderr)
