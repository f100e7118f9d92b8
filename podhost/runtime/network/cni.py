"""PodNetwork: CNI ADD/DEL/CHECK for pod sandboxes, the way containerd's CRI plugin drives go-cni.

Theory of operation
- setup: validate the config and locate every plugin binary (nothing allocated yet, so failures here
  leave nothing behind), record the attachment on disk, then run the loopback network ADD ("lo") in a
  thread while the main conflist ADD chain ("eth0") runs here, each plugin getting the previous
  plugin's result as `prevResult` (CNI SPEC.md "Execution of Network Configuration Lists"). The record
  comes first because a failed ADD may still have allocated: whatever happens next, the record leads to
  a DEL. On failure the chain is DELeted at once and the record is dropped only if that DEL succeeded.
  The error names the ADD failure, the cause; a failed DEL after it is appended, never put in its place.
- the pod's address: when the list's only IPAM is host-local over one IPv4 range set, the ADD names
  the address host-local's own search would find (CNI_ARGS `IP=`, `ip_hint`), so host-local reserves
  it without reading every other reservation; an address another writer took first makes that one ADD
  fail, be undone, and run again without the hint.
- teardown: DEL both networks in reverse plugin order with the cached config and final result as
  `prevResult`, tolerant of a netns that is gone (CNI_NETNS="" then, and the bridge and host-local
  plugins still release the address). The record is deleted only after DEL succeeded, so a failed
  teardown is retried by the next call or the daemon's start-up cleanup (`attachments()`). A failed
  DEL of an attachment that was complete (ADDED) is raised: StopPodSandbox reports it and the kubelet
  retries. A failed DEL of one whose ADD never completed is logged, not raised: its caller is already
  unwinding the ADD failure, which is the error to report.
- a plugin that keeps failing DEL: the attachment is kept, with the count of failed DELs and the last
  error, because dropping it would leak the address, veth and port mappings without a trace. It is
  retried by every later teardown of the sandbox and at every daemon start, never by a background
  loop: each attempt is bounded by the plugin timeout and the number of attempts by those callers (the
  kubelet retries StopPodSandbox of a NotReady sandbox, as containerd keeps a sandbox whose cleanup
  failed as SANDBOX_UNKNOWN), so a permanently failing plugin costs one plugin run per retry, one small
  file and an ERROR line with its count, until the operator fixes the plugin.
- check: CHECK both networks with the cached results (spec >= 0.4.0, unless `disableCheck`).
- node-only egress (`Config.pod_egress`): an iptables FORWARD guard installed once at daemon start, and
  ip_forward put back to 0 after every ADD (`podhost.runtime.network.egress`).

Must never: masquerade, create or delete network namespaces (the sandbox layer owns and pins them), or
exec anything on the setup/teardown path other than the plugins themselves.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podhost.config import Config
from podhost.errors import InvalidArgument, NotFound, PodhostError, RuntimeFailure
from podhost.runtime import model
from podhost.runtime.network import bridge, conflist, egress, ip_hint, plugin
from podhost.runtime.network.attachment import ADDED, ADDING, Attachment, AttachmentStore
from podhost.runtime.network.conflist import NetworkConfigList
from podhost.runtime.network.result import pod_ips, summarize

log = logging.getLogger(__name__)

POD_IFNAME = "eth0"
LOOPBACK_IFNAME = "lo"


@dataclass(frozen=True)
class _Target:
    """One network to run against one interface of one sandbox."""

    netlist: NetworkConfigList
    ifname: str
    netns: str
    sandbox_id: str
    cni_args: str
    capability_args: dict[str, Any]


class _Background:
    """Run one call in a thread and hand back its result or exception (the loopback network runs
    beside the main chain: they touch different interfaces and neither needs the other's result)."""

    def __init__(self, fn: Callable[[], Any], name: str) -> None:
        self._fn: Callable[[], Any] = fn
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        try:
            self._value = self._fn()
        except BaseException as e:  # handed to the joining thread
            self._error = e

    def join(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


def recorded_netns(attachment: Attachment) -> str:
    """The netns path an attachment was made with, if it can still be trusted: a pin path of an older
    podhost's, never a /proc path (a PID or fd number of another time, maybe another process's now)."""
    return "" if attachment.netns.startswith("/proc/") else attachment.netns


def netns_for_del(path: str) -> str:
    """CNI_NETNS for DEL: the path if it still is a network namespace, else "" (SPEC.md: DEL must
    release what it can when the netns is gone). A pin file left behind after its mount went away is
    not a netns; handing it to the bridge plugin would fail the DEL instead of releasing the IP."""
    if not path:
        return ""
    try:
        st = os.stat(path)
        ns_dev = os.stat("/proc/self/ns/net").st_dev
    except OSError:
        return ""
    return path if st.st_dev == ns_dev else ""


def known_false_check_failure(
    plugin_type: str, error: plugin.PluginError, prev_result: dict[str, Any] | None
) -> bool:
    """portmap 1.1.1 CHECK always looks for its IPv6 DNAT chain, which ADD only makes for a pod with an
    IPv6 address, so it fails for every IPv4-only pod with port mappings
    (containernetworking/plugins#819, fixed after 1.1.1). That failure says nothing about the pod."""
    if plugin_type != "portmap" or "could not check ipv6 dnat" not in error.msg:
        return False
    return not any(":" in ip for ip in pod_ips(prev_result))


class PodNetwork:
    """The pod network of one podhost instance (one per daemon; safe to call from many threads)."""

    def __init__(self, config: Config, *, plugin_timeout: float = plugin.DEFAULT_TIMEOUT) -> None:
        self.config = config
        self.plugin_timeout = plugin_timeout
        self._store = AttachmentStore(config.cni_state_dir / "results")
        self._ip_hints = ip_hint.IPHints()

    # --- configuration ------------------------------------------------------------------------------

    def network_config(self) -> NetworkConfigList:
        """The conflist new pods get (re-read each time, like containerd's config-dir watch)."""
        return conflist.load(self.config)

    def new_pod_network(self) -> NetworkConfigList | None:
        """The conflist a pod being made gets, read once for all of its RunPodSandbox (`setup`); None
        when it does not load, which `setup` then reports."""
        try:
            return self.network_config()
        except PodhostError:
            return None

    def _plugin_paths(self, *netlists: NetworkConfigList) -> dict[str, Path]:
        paths: dict[str, Path] = {}
        for netlist in netlists:
            for ptype in netlist.plugin_types:
                if ptype not in paths:
                    paths[ptype] = plugin.find_plugin(ptype, self.config.cni_bin_dirs)
        return paths

    def status(self) -> tuple[bool, str]:
        """CRI NetworkReady: the config loads and every plugin it names (and loopback) is installed."""
        try:
            netlist = self.network_config()
            self._plugin_paths(netlist, conflist.parse_conflist(conflist.loopback_conflist(), "loopback"))
        except PodhostError as e:
            return False, str(e)
        return True, f"network {netlist.name!r} from {netlist.source}"

    # --- setup --------------------------------------------------------------------------------------

    def setup(
        self,
        sandbox_id: str,
        netns: str,
        pod_namespace: str,
        pod_name: str,
        pod_uid: str,
        port_mappings: list[model.PortMapping],
        network: NetworkConfigList | None = None,
    ) -> dict[str, Any]:
        """CNI ADD for a new sandbox, with `network` (else the current conflist); returns {"ip", "ips",
        "interfaces", "result"}."""
        if not netns:
            raise InvalidArgument(f"{sandbox_id}: network setup needs a netns path")
        netlist = conflist.for_pod(
            network if network is not None else self.network_config(), bool(port_mappings)
        )
        cni_args = plugin.build_cni_args(pod_namespace, pod_name, sandbox_id, pod_uid)
        capability_args = {"portMappings": conflist.port_mappings_capability(port_mappings)}
        pod = (sandbox_id, netns, netlist, cni_args, capability_args)
        with self._ip_hints.claim(netlist) as ip:
            try:
                return self._setup(*pod, ip)
            except RuntimeFailure as e:
                # Another writer of host-local's store reserved the address first: that ADD was undone
                # (no record is left), so it runs again with host-local's own search.
                taken = f"requested IP address {ip} is not available"
                if ip is None or taken not in str(e) or self._store.get(sandbox_id) is not None:
                    raise
                log.warning("%s: %s; repeating the ADD without it", sandbox_id, taken)
        return self._setup(*pod, None)

    def _setup(
        self,
        sandbox_id: str,
        netns: str,
        netlist: NetworkConfigList,
        cni_args: str,
        capability_args: dict[str, Any],
        ip: str | None,
    ) -> dict[str, Any]:
        started = time.monotonic()
        loopback = conflist.parse_conflist(conflist.loopback_conflist(), conflist.LOOPBACK_SOURCE)
        paths = self._plugin_paths(netlist, loopback)
        attachment = Attachment(
            sandbox_id=sandbox_id,
            netns=netns,
            ifname=POD_IFNAME,
            cni_args=cni_args,
            capability_args=capability_args,
            network=netlist.raw,
            loopback=loopback.raw,
            network_source=netlist.source,
            state=ADDING,
        )
        if self._store.get(sandbox_id) is not None:
            # Only a caller reusing a sandbox id gets here; host-local refuses a second address for the
            # same id and interface, so release the old attachment first.
            log.warning("%s: stale CNI attachment found; tearing it down before ADD", sandbox_id)
            self.teardown(sandbox_id, netns)
        # Teardown is registered before the first ADD: a failed or interrupted ADD may have allocated.
        try:
            self._store.put(attachment)
        except OSError as e:
            raise RuntimeFailure(f"{sandbox_id}: cannot record the CNI attachment: {e}") from e
        recorded = time.monotonic()
        # The hint goes to this ADD only: DEL (and CHECK) name the container, not the address.
        main_args = cni_args if ip is None else f"{cni_args};IP={ip}"
        main = _Target(netlist, POD_IFNAME, netns, sandbox_id, main_args, capability_args)
        lo = _Target(loopback, LOOPBACK_IFNAME, netns, sandbox_id, cni_args, {})
        timings: dict[str, float] = {}
        lo_timings: dict[str, float] = {}
        try:
            lo_job = _Background(lambda: self._add_chain(lo, paths, lo_timings), f"cni-lo-{sandbox_id[:12]}")
            main_error: BaseException | None = None
            try:
                result = self._add_chain(main, paths, timings)
            except BaseException as e:
                main_error = e
            try:
                lo_result = lo_job.join()
            except BaseException as e:
                main_error = main_error or e
            if main_error is not None:
                raise main_error
        except BaseException as e:
            del_error = self._undo_failed_add(attachment, main, lo, paths, e)
            if isinstance(e, PodhostError):
                message = f"{sandbox_id}: pod network setup failed: {e}"
                if del_error is not None:
                    message += f" (and the DEL after it failed, kept for retry: {del_error})"
                raise RuntimeFailure(message) from e
            raise
        finally:
            if self.config.pod_egress == "node-only":
                egress.disable_ip_forward(sandbox_id)
        timings.update(lo_timings)
        attachment.result = result
        attachment.loopback_result = lo_result
        attachment.state = ADDED
        # Not fsynced: after a reboot the ADDING record written (fsynced) before the ADD is enough to DEL
        # it, without a prevResult as for any ADD a crash interrupted; the result matters while the
        # machine is up.
        self._store.put(attachment, durable=False)
        summary = summarize(result)
        total = (time.monotonic() - started) * 1000
        log.info(
            "%s: pod network ready, ip %s on %s (record %.1f ms, %s, total %.1f ms)",
            sandbox_id,
            summary["ip"] or "-",
            netlist.name,
            (recorded - started) * 1000,
            ", ".join(f"{k} {v:.1f} ms" for k, v in timings.items()),
            total,
        )
        return summary

    def _add_chain(
        self, target: _Target, paths: dict[str, Path], timings: dict[str, float]
    ) -> dict[str, Any] | None:
        prev: dict[str, Any] | None = None
        for index, ptype in enumerate(target.netlist.plugin_types):
            t0 = time.monotonic()
            out = self._run_plugin("ADD", target, paths, index, prev)
            timings[ptype] = (time.monotonic() - t0) * 1000
            if out is None:
                raise RuntimeFailure(f"CNI plugin {ptype} ADD returned no result")
            prev = out
        return prev

    def _undo_failed_add(
        self,
        attachment: Attachment,
        main: _Target,
        lo: _Target,
        paths: dict[str, Path],
        cause: BaseException,
    ) -> PodhostError | None:
        """DEL what a failed ADD may have made. The record stays if that DEL fails too, so a later
        teardown or the start-up cleanup tries again; the DEL's error is returned for the message."""
        log.warning("%s: CNI ADD failed (%s); running DEL", attachment.sandbox_id, cause)
        try:
            self._del_targets([main, lo], paths, None, None)
        except PodhostError as e:
            self._record_del_failure(attachment, e)
            return e
        self._store.delete(attachment.sandbox_id)
        return None

    def _record_del_failure(self, attachment: Attachment, error: PodhostError) -> None:
        """Count the failed DEL in the record (kept for retry) and say so at ERROR, with the count."""
        attachment.del_attempts += 1
        attachment.del_error = str(error)
        try:
            self._store.put(attachment)
        except OSError as e:
            log.warning("%s: cannot update the CNI attachment record: %s", attachment.sandbox_id, e)
        log.error(
            "%s: CNI DEL failed (%d failed so far), attachment kept for retry: %s",
            attachment.sandbox_id,
            attachment.del_attempts,
            error,
        )

    # --- teardown -----------------------------------------------------------------------------------

    def teardown(self, sandbox_id: str, netns: str | None) -> None:
        """CNI DEL for a sandbox, idempotent: no record means nothing to release. Works after the
        netns is gone (pause crashed, pin removed): the IP is still released. A failed DEL keeps the
        record for retry; it raises only for an attachment whose ADD had completed (module docstring)."""
        attachment = self._store.get(sandbox_id)
        if attachment is None:
            log.debug("%s: no CNI attachment recorded; teardown is a no-op", sandbox_id)
            return
        started = time.monotonic()
        path = netns_for_del(netns if netns is not None else recorded_netns(attachment))
        try:
            netlist = self._cached_network(attachment)
            loopback = conflist.parse_conflist(
                attachment.loopback or conflist.loopback_conflist(), conflist.LOOPBACK_SOURCE
            )
            main = _Target(
                netlist,
                attachment.ifname or POD_IFNAME,
                path,
                sandbox_id,
                attachment.cni_args or plugin.build_cni_args("", "", sandbox_id, ""),
                attachment.capability_args or {},
            )
            lo = _Target(loopback, LOOPBACK_IFNAME, path, sandbox_id, main.cni_args, {})
            paths = self._plugin_paths(netlist, loopback)
            self._del_targets([main, lo], paths, attachment.result, attachment.loopback_result)
        except PodhostError as e:
            self._record_del_failure(attachment, e)
            if attachment.state != ADDED:
                return  # the ADD failure that left this behind is the error its caller reports
            raise RuntimeFailure(
                f"{sandbox_id}: pod network teardown failed ({attachment.del_attempts} failed DELs, "
                f"kept for retry): {e}"
            ) from e
        self._store.delete(sandbox_id)
        log.info(
            "%s: pod network torn down (netns %s, %.1f ms)",
            sandbox_id,
            path or "gone",
            (time.monotonic() - started) * 1000,
        )

    def _cached_network(self, attachment: Attachment) -> NetworkConfigList:
        """The config list ADD used; the current one if the record has none it can read."""
        if attachment.network:
            try:
                return conflist.parse_conflist(
                    attachment.network, f"cached config of {attachment.sandbox_id}"
                )
            except InvalidArgument as e:
                log.warning("%s: %s; using the current CNI config", attachment.sandbox_id, e)
        return self.network_config()

    def _del_targets(
        self,
        targets: list[_Target],
        paths: dict[str, Path],
        main_result: dict[str, Any] | None,
        lo_result: dict[str, Any] | None,
    ) -> None:
        """DEL the main network (here) and loopback (in a thread); raise the first failure after both
        ran, so one failing plugin does not keep the others from releasing."""
        main, lo = targets
        lo_job = _Background(
            lambda: self._del_chain(lo, paths, lo_result), f"cni-lo-del-{lo.sandbox_id[:12]}"
        )
        error: BaseException | None = None
        try:
            self._del_chain(main, paths, main_result)
        except BaseException as e:
            error = e
        try:
            lo_job.join()
        except BaseException as e:
            error = error or e
        if error is not None:
            raise error

    def _del_chain(self, target: _Target, paths: dict[str, Path], prev: dict[str, Any] | None) -> None:
        """DEL every plugin in reverse order (SPEC.md), each with the final ADD result as prevResult;
        keep going past a failure and raise the first one at the end."""
        first: BaseException | None = None
        for index in reversed(range(len(target.netlist.plugins))):
            ptype = target.netlist.plugin_types[index]
            try:
                self._run_plugin("DEL", target, paths, index, prev)
            except PodhostError as e:
                log.warning("%s: CNI DEL %s (%s): %s", target.sandbox_id, ptype, target.ifname, e)
                first = first or e
        if first is not None:
            raise first

    # --- check --------------------------------------------------------------------------------------

    def check(self, sandbox_id: str, netns: str | None) -> None:
        """CNI CHECK of both networks against the cached results; raises RuntimeFailure when a plugin
        finds the attachment is not as it left it."""
        attachment = self._store.get(sandbox_id)
        if attachment is None:
            raise NotFound(f"{sandbox_id}: no pod network attachment")
        if attachment.state != ADDED or attachment.result is None:
            raise RuntimeFailure(f"{sandbox_id}: pod network setup never completed")
        netlist = self._cached_network(attachment)
        loopback = conflist.parse_conflist(attachment.loopback, conflist.LOOPBACK_SOURCE)
        path = netns or recorded_netns(attachment)
        paths = self._plugin_paths(netlist, loopback)
        pairs = [
            (
                _Target(
                    netlist,
                    attachment.ifname,
                    path,
                    sandbox_id,
                    attachment.cni_args,
                    attachment.capability_args,
                ),
                attachment.result,
            ),
            (
                _Target(loopback, LOOPBACK_IFNAME, path, sandbox_id, attachment.cni_args, {}),
                attachment.loopback_result,
            ),
        ]
        for target, prev in pairs:
            if not conflist.supports_check(target.netlist):
                log.debug("%s: CHECK skipped for %s (version/disableCheck)", sandbox_id, target.netlist.name)
                continue
            for index, ptype in enumerate(target.netlist.plugin_types):
                try:
                    self._run_plugin("CHECK", target, paths, index, prev)
                except plugin.PluginError as e:
                    if known_false_check_failure(ptype, e, prev):
                        log.debug("%s: ignoring portmap CHECK bug (IPv4-only pod): %s", sandbox_id, e)
                        continue
                    raise RuntimeFailure(f"{sandbox_id}: pod network check failed: {e}") from e
                except PodhostError as e:
                    raise RuntimeFailure(f"{sandbox_id}: pod network check failed: {e}") from e

    # --- recovery and policy ------------------------------------------------------------------------

    def sweep_partial_writes(self) -> None:
        """At daemon start: drop the temp files of attachment writes a killed daemon never finished."""
        self._store.sweep_partial_writes()

    def result(self, sandbox_id: str) -> dict[str, Any]:
        """The CNI result of a sandbox's network as the plugins returned it ({} without one). It lives only
        in the attachment record: a copy in every sandbox's record cost the daemon ~4 KiB a pod."""
        attachment = self._store.get(sandbox_id)
        return (attachment.result or {}) if attachment is not None else {}

    def attachments(self) -> list[str]:
        """Sandbox ids with a recorded attachment (complete or interrupted), for start-up cleanup."""
        return self._store.ids()

    def ensure_egress_guard(self) -> None:
        """Install the node-only FORWARD guard for `Config.bridge` (daemon start; not on the hot path).
        A conflist from the config dir naming another bridge is the operator's to police."""
        if self.config.pod_egress != "node-only":
            log.info("pod_egress=%s: no egress guard", self.config.pod_egress)
            return
        egress.ensure(self.config.bridge)

    def remove_egress_guard(self) -> None:
        egress.remove(self.config.bridge)

    def remove_host_state(self) -> None:
        """What the instance made on the node beside its pods, removed at daemon stop when no sandbox is
        left: the egress guard chain and the built-in network's bridge (`bridge` says when a bridge is
        ours). Both stay while an attachment is recorded (a DEL to retry, possibly a veth on the
        bridge). Never raises: the daemon is stopping, and what stays is harmless and found again."""
        kept = self.attachments()
        if kept:
            log.warning(
                "bridge %s and its egress guard kept: CNI attachment(s) %s still await DEL",
                self.config.bridge,
                ", ".join(k[:13] for k in kept),
            )
            return
        if self.config.pod_egress == "node-only":
            try:
                egress.remove(self.config.bridge)
            except PodhostError as e:
                log.warning("egress guard for %s not removed: %s", self.config.bridge, e)
        try:
            conf_file = conflist.find_conf_file(self.config.cni_conf_dir)
        except InvalidArgument as e:
            log.warning("bridge %s kept: %s", self.config.bridge, e)
            return
        if conf_file is None:  # the built-in network: its bridge is this instance's
            bridge.remove_if_unused(self.config.bridge, self.config.subnet)

    # --- helpers ------------------------------------------------------------------------------------

    def _run_plugin(
        self, command: str, target: _Target, paths: dict[str, Path], index: int, prev: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        """Plugin `index` of the target's list for one command, with `prev` as its prevResult."""
        invocation = plugin.Invocation(
            command=command,
            container_id=target.sandbox_id,
            netns=target.netns,
            ifname=target.ifname,
            cni_args=target.cni_args,
            cni_path=tuple(self.config.cni_bin_dirs),
        )
        ptype = target.netlist.plugin_types[index]
        return plugin.run(
            ptype,
            paths[ptype],
            invocation,
            conflist.plugin_config(target.netlist, index, prev, target.capability_args),
            timeout=self.plugin_timeout,
            log_id=target.sandbox_id,
            instance=self.config.instance_id,
            owner=target.sandbox_id,
        )
