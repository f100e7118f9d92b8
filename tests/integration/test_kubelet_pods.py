"""The pod manager with real pods, driven as a user drives it: the real kubectl against the daemon's
Kubernetes API (apply, get, describe, logs, exec, delete), the kubelet's lifecycle out.

One podhost daemon (its own root, bridge phkub0, subnet 10.237.0.0/24, CrashLoopBackOff base 1 s, a static
pod directory) serves every test here but the containerd one; after each test its pods and services are
deleted through the API and the instance is checked for leaks. The containerd test drives Debian's
containerd (bridge phkubc0, 10.238.0.0/24) through the same manager, from a second daemon. Status is
watched closely through the same API with `bench.kube_api` (a kubectl process per look is too slow to see
a pause death); pause's PID is found as crictl finds it, by inspecting the pod's sandbox over CRI.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from podhost.cli.spawn import daemon_command, spawn_daemon
from podhost.cri import api_pb2 as pb
from podhost.cri.client import CRIClient
from podhost.runtime.image import build
from podhost.runtime.image.archive import ImageBlobs, sha256_digest, write_oci_archive
from podhost.runtime.network import conflist, plugin
from tests.instance import Instance, OrphanReaper
from tests.leaks import find_leaks
from tests.wait import wait_for

_REPO = str(Path(__file__).resolve().parents[2])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from bench.containerd_peer import ContainerdPeer, build_test_images  # noqa: E402
from bench.kube_api import KubeAPI  # noqa: E402

pytestmark = pytest.mark.root

BRIDGE, SUBNET = "phkub0", "10.237.0.0/24"
CTRD_BRIDGE, CTRD_SUBNET = "phkubc0", "10.238.0.0/24"
CTRD_CGROUP = "/podhost-kub-ctrd"
DEMO = Path(_REPO) / "examples" / "shared-namespace-demo.yaml"
BUSYBOX = "localhost/podhost/busybox:latest"
KUBECTL = shutil.which("kubectl")
T = TypeVar("T")


class Watch:
    """A running `kubectl get -w` and the lines it printed so far."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc, self.lines = proc, list[str]()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def stop(self) -> str:
        self.proc.terminate()
        self.proc.wait(10)
        self._reader.join(10)
        return self.text


class KubeletInstance(Instance):
    """An Instance whose daemon gets the pod manager's flags, driven by the real kubectl (`kubectl()`)
    and watched through its Kubernetes API (`pods`, a `bench.kube_api.KubeAPI`)."""

    def __init__(self, root: Path, bridge: str, subnet: str, extra: list[str], glob_args: list[str]) -> None:
        super().__init__(root, bridge, subnet)
        self.extra, self.glob_args = extra, glob_args
        self.manifests = root / "manifests"
        self.manifests.mkdir()
        self.pods = KubeAPI(self.config.state_dir, timeout=60)
        self.home = root / "home"  # kubectl's discovery cache stays in the instance
        self.home.mkdir()

    def start(self, env: dict[str, str] | None = None) -> None:
        cmd = daemon_command(self.root, self.bridge, self.subnet, self.config_file)
        at = cmd.index("--root")
        cmd[at:at] = self.glob_args
        if env:  # env(1) execs the daemon in its own place: the Popen's pid stays the daemon's
            cmd = ["env", *(f"{key}={value}" for key, value in env.items()), *cmd]
        self.daemon = spawn_daemon(cmd + self.extra, self.root / "daemon.log", self.client)
        wait_for("the Kubernetes API", self.pods.answers, timeout=30)

    def kubectl(
        self, *args: str, check: bool = True, stdin: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """The real kubectl with the instance's kubeconfig."""
        if KUBECTL is None:
            pytest.skip("kubectl is not installed")
        argv = [KUBECTL, "--kubeconfig", str(self.pods.kubeconfig), *args]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.home)}
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            timeout=timeout,
            cwd=_REPO,
            env=env,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}\n"
                + self.log_tail(20)
            )
        return proc

    def kubectl_watch(self, *args: str) -> Watch:
        """A kubectl left running (`get -w`), its lines (stdout and stderr) collected as they come."""
        assert KUBECTL is not None
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.home)}
        proc = subprocess.Popen(
            [KUBECTL, "--kubeconfig", str(self.pods.kubeconfig), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        return Watch(proc)

    def apply(self, text: str) -> str:
        path = self.root / f"m-{secrets.token_hex(3)}.yaml"
        path.write_text(text)
        return self.kubectl("apply", "-f", str(path)).stdout

    def pod(self, name: str) -> dict[str, Any]:
        return self.pods.pod(name)

    def sandbox(self, pod: dict[str, Any]) -> pb.PodSandbox:
        """The pod's Ready sandbox over CRI (by the kubelet's uid label), as `crictl pods` lists it."""
        flt = pb.PodSandboxFilter(
            label_selector={"io.kubernetes.pod.uid": pod["metadata"]["uid"]},
            state=pb.PodSandboxStateValue(state=pb.SANDBOX_READY),
        )
        (sandbox,) = self.client.list_pod_sandbox(flt)
        return sandbox

    def pause_pid(self, pod: dict[str, Any]) -> int:
        """pause's PID, from the sandbox's verbose status (`crictl inspectp`'s info.pid)."""
        return int(self.sandbox_info(self.sandbox(pod).id)["pid"])  # type: ignore[call-overload]

    def client_answers(self) -> bool:
        """True when the instance's CRI socket answers (a daemon runs)."""
        try:
            self.client.version()
        except Exception:
            return False
        return True

    def delete_everything(self) -> None:
        for svc in self.pods.get("services"):
            self.pods.delete("service", svc["metadata"]["name"], svc["metadata"]["namespace"])
        for pod in self.pods.get("pods"):
            if pod["metadata"].get("annotations", {}).get("kubernetes.io/config.source") != "file":
                with contextlib.suppress(Exception):  # already going
                    # At once, as the tests' cleanup: a PID 1 ignoring SIGTERM would hold 30 s each.
                    self.pods.delete("pod", pod["metadata"]["name"], pod["metadata"]["namespace"], 0)


def condition(pod: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in pod["status"]["conditions"] if c["type"] == type_)


def is_ready(pod: dict[str, Any]) -> bool:
    return condition(pod, "Ready")["status"] == "True"


def container(pod: dict[str, Any], name: str, group: str = "containerStatuses") -> dict[str, Any]:
    return next(c for c in pod["status"].get(group, []) if c["name"] == name)


def endpoints(inst: KubeletInstance, service: str) -> list[str]:
    (ep,) = inst.pods.get("endpoints", "default", service)
    return [
        f"{a['ip']}:{p['port']}"
        for s in ep.get("subsets") or []
        for p in s["ports"]
        for a in s.get("addresses", [])
    ]


def page(inst: KubeletInstance) -> str:
    """The demo pod's nginx page, fetched from its shell container over the pod's loopback."""
    argv = ["exec", "shared-namespace-demo", "-c", "shell", "--", "wget", "-qO-", "http://127.0.0.1/"]
    return inst.kubectl(*argv).stdout


def ps_ax(inst: KubeletInstance, pod: str, c: str) -> dict[str, int]:
    """command line -> PID, from `ps ax` run through `kubectl exec`."""
    out = inst.kubectl("exec", pod, "-c", c, "--", "ps", "ax").stdout
    header, *lines = out.splitlines()
    width = len(header.split())  # busybox ps: PID USER [TIME] COMMAND
    procs = {}
    for line in lines:
        fields = line.split(None, width - 1)
        if len(fields) == width:
            procs[fields[-1]] = int(fields[0])
    return procs


def kubelet_instance(
    prefix: str, bridge: str, subnet: str, prepare: Callable[[KubeletInstance], None] | None = None
) -> Iterator[KubeletInstance]:
    """A started daemon with the pod manager under /tmp/<prefix>-*, for module fixtures: `prepare` runs
    before the daemon starts (extra flags, images in its store). Afterwards its pods are deleted through
    the API and everything it made is removed."""
    inst = KubeletInstance(Path(f"/tmp/{prefix}-{secrets.token_hex(4)}"), bridge, subnet, [], [])
    try:
        if prepare is not None:
            prepare(inst)
        inst.start()
        yield inst
    finally:
        with contextlib.suppress(Exception):
            inst.delete_everything()
        inst.pods.close()
        inst.cleanup()


GATED_BRIDGE = """#!/bin/sh
# Debian's bridge plugin, whose ADD waits (30 s at most) while {flag} exists: a test holds a pod's next
# sandbox back with it, to look at the pod between two sandboxes.
if [ "$CNI_COMMAND" = ADD ]; then
  i=0
  while [ -e {flag} ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
fi
exec {bridge} "$@"
"""


def gate_sandbox_networks(inst: Instance) -> Path:
    """Give `inst` (not yet started) a conflist whose bridge plugin waits while the returned flag file
    exists: a real CNI plugin that hangs, for as long as a test wants."""
    bindir, flag = inst.root / "cni-bin", inst.root / "hold-cni-add"
    bindir.mkdir()
    wrapper = bindir / "ph-gated-bridge"
    bridge = plugin.find_plugin("bridge", inst.config.cni_bin_dirs)
    wrapper.write_text(GATED_BRIDGE.format(flag=flag, bridge=bridge))
    wrapper.chmod(0o755)
    net = conflist.default_conflist(inst.config)
    for p in net["plugins"]:
        if p["type"] == "bridge":
            p["type"] = wrapper.name
    inst.config.cni_conf_dir.mkdir(parents=True, exist_ok=True)
    (inst.config.cni_conf_dir / "10-gated.conflist").write_text(json.dumps(net))
    with open(inst.config_file, "a") as f:
        f.write(f"cni_bin_dirs = {json.dumps([str(bindir), *map(str, inst.config.cni_bin_dirs)])}\n")
    return flag


@pytest.fixture(scope="module")
def kube(orphan_reaper: OrphanReaper) -> Iterator[KubeletInstance]:
    def flags(inst: KubeletInstance) -> None:
        inst.extra = ["--restart-backoff", "1", "--manifests", str(inst.manifests)]
        gate_sandbox_networks(inst)

    yield from kubelet_instance("ph-kub", BRIDGE, SUBNET, flags)


@pytest.fixture
def k(kube: KubeletInstance) -> Iterator[KubeletInstance]:
    """The shared instance; afterwards its pods are deleted through the API and nothing may be left."""
    yield kube
    if kube.daemon is None or kube.daemon.poll() is not None:
        kube.start()
    for f in kube.manifests.iterdir():
        f.unlink()
    kube.delete_everything()
    wait_for("static pods gone", lambda: not kube.pods.get("pods"), timeout=30)
    assert kube.client.list_pod_sandbox() == []
    problems = find_leaks(kube.root, kube.bridge, kube.config.cgroup_parent)
    kubelet_dir = kube.config.state_dir / "kubelet"
    for sub in ("logs", "volumes"):
        left = list((kubelet_dir / sub).glob("*")) if (kubelet_dir / sub).is_dir() else []
        if left:
            problems.append(f"{sub}: {left}")
    assert not problems, "leaked: " + "; ".join(problems) + "\n" + kube.log_tail(20)


# --- the article's demo -------------------------------------------------------------------------------------


def test_the_articles_demo_through_apply_and_exec(k: KubeletInstance) -> None:
    out = k.kubectl("apply", "-f", str(DEMO)).stdout
    assert out.strip() == "pod/shared-namespace-demo created"
    pod = wait_for("demo Ready", lambda: is_ready(p := k.pod("shared-namespace-demo")) and p)
    table = k.kubectl("get", "pods", "-o", "wide").stdout
    assert re.search(r"shared-namespace-demo\s+2/2\s+Running\s+0\s+\S+\s+10\.237\.0\.\d+", table), table

    procs = ps_ax(k, "shared-namespace-demo", "shell")
    assert procs.get("/pause") == 1, procs  # pause founded the shared PID namespace
    httpd = next(pid for cmd, pid in procs.items() if cmd.startswith("httpd"))
    assert "sleep 3600" in procs
    k.kubectl("exec", "shared-namespace-demo", "-c", "shell", "--", "kill", "-HUP", str(httpd))
    wait_for("nginx serving after its SIGHUP", lambda: "Welcome to nginx!" in page(k))
    after = ps_ax(k, "shared-namespace-demo", "shell")
    assert next(pid for cmd, pid in after.items() if cmd.startswith("httpd")) == httpd  # same process serves
    pod = k.pod("shared-namespace-demo")
    assert container(pod, "nginx")["restartCount"] == 0 and container(pod, "nginx")["state"].get("running")
    assert container(pod, "nginx")["containerID"].startswith("podhost://")
    # without -c, kubectl picks the first container and says so
    defaulted = k.kubectl("exec", "shared-namespace-demo", "--", "cat", "/proc/1/cmdline")
    assert defaulted.stdout.startswith("/pause"), defaulted
    assert 'Defaulted container "nginx" out of: nginx, shell' in defaulted.stderr, defaulted.stderr
    interactive = k.kubectl(
        "exec", "-i", "shared-namespace-demo", "-c", "shell", "--", "cat", stdin="hello\n", check=False
    )
    assert interactive.returncode == 0 and interactive.stdout == "hello\n", interactive.stderr
    events = k.kubectl("get", "events").stdout
    assert re.search(r"Normal\s+Started\s+pod/shared-namespace-demo\s+Started container nginx", events), (
        events
    )
    described = k.kubectl("describe", "pod", "shared-namespace-demo").stdout
    assert re.search(r"PodReadyToStartContainers\s+True", described), described
    assert k.kubectl("delete", "-f", str(DEMO)).stdout.strip() == 'pod "shared-namespace-demo" deleted'
    assert k.client.list_pod_sandbox() == []  # kubectl delete waited until the pod was gone


# --- sandbox death: the five steps ------------------------------------------------------------------------

WEB = """\
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  shareProcessNamespace: true
  containers:
  - name: nginx
    image: nginx
    ports: [{name: http, containerPort: 80}]
    readinessProbe: {httpGet: {path: /, port: http}, periodSeconds: 1}
  - name: shell
    image: busybox:1.28
    command: ["sleep", "3600"]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
"""


def test_pause_killed_five_steps_and_back(k: KubeletInstance) -> None:
    k.apply(WEB)
    pod = wait_for("web Ready", lambda: is_ready(p := k.pod("web")) and p)
    ip = pod["status"]["podIP"]
    assert wait_for("endpoints", lambda: endpoints(k, "web")) == [f"{ip}:80"]
    old = k.sandbox(pod)
    pause = k.pause_pid(pod)

    killed = time.monotonic()
    os.kill(pause, signal.SIGKILL)
    down = wait_for(
        "PodReadyToStartContainers=False",
        lambda: condition(p := k.pod("web"), "PodReadyToStartContainers")["status"] == "False" and p,
        timeout=1.0,
        interval=0.005,
    )
    detected = time.monotonic() - killed
    assert endpoints(k, "web") == []  # step 2: out of the endpoints at once
    print(f"\nkill -> PodReadyToStartContainers=False and out of endpoints: {detected * 1000:.0f} ms")
    gone = condition(down, "PodReadyToStartContainers")
    assert gone["reason"] == "PauseExited", gone
    assert re.fullmatch(r"pause \(pid \d+\) killed by signal 9 \(SIGKILL\)", gone["message"]), gone
    assert not is_ready(down) and detected < 1.0
    # kubectl describe, a moment later: the new sandbox may be up already, the event says what happened.
    described = k.kubectl("describe", "pod", "web").stdout
    assert re.search(
        r"Normal\s+SandboxChanged\s+\S+\s+kubelet\s+Pod sandbox changed, it will be killed and re-created: "
        r"pause \(pid \d+\) killed by signal 9",
        described,
    ), described

    back = wait_for("web Ready again", lambda: is_ready(p := k.pod("web")) and p, timeout=15, interval=0.01)
    ready_after = time.monotonic() - killed
    print(
        f"kill -> pod Ready again (new sandbox, containers restarted, probe passed): {ready_after * 1000:.0f} ms"
    )
    new = k.sandbox(back)
    assert new.metadata.attempt == 1 and new.id != old.id
    assert all(c["state"].get("running") for c in back["status"]["containerStatuses"])
    assert container(back, "nginx")["lastState"]["terminated"]["exitCode"] == 137
    assert wait_for("back in endpoints", lambda: endpoints(k, "web")) == [f"{back['status']['podIP']}:80"]


#: The web pod, Ready only 3 s after its nginx starts: long enough for a kubectl process to see it out of
#: its Service's endpoints after a pause death.
WATCHED = WEB.replace("periodSeconds: 1}", "periodSeconds: 1, initialDelaySeconds: 3}")
CONDITIONS = (
    "custom-columns=NAME:.metadata.name,"
    'PODREADYTOSTARTCONTAINERS:.status.conditions[?(@.type=="PodReadyToStartContainers")].status,'
    'READY:.status.conditions[?(@.type=="Ready")].status'
)


def test_pause_death_watched_with_kubectl(k: KubeletInstance) -> None:
    """The issue's "pause death, watched": `kubectl get pods -w` runs while pause is killed; the watch shows
    the pod drop and come back, the pod's conditions (watched as kubectl prints them) show
    PodReadyToStartContainers=False, `kubectl get endpoints` drops the pod, `kubectl describe` shows the
    condition False and tells why (the next sandbox's CNI ADD is held meanwhile by a real plugin that waits,
    so describe sees the pod between two sandboxes), and the pod is Ready again on a new sandbox."""
    k.apply(WATCHED)
    pod = wait_for("web Ready", lambda: is_ready(p := k.pod("web")) and p, timeout=30)
    ip = pod["status"]["podIP"]
    wait_for(
        "in endpoints",
        lambda: re.search(rf"^web\s+{re.escape(ip)}:80\s", k.kubectl("get", "endpoints").stdout, re.M),
    )
    table = k.kubectl_watch("get", "pods", "-w")
    conditions = k.kubectl_watch("get", "pods", "-w", "-o", CONDITIONS)
    try:
        wait_for("both watches listed", lambda: len(table.lines) >= 2 and len(conditions.lines) >= 2)
        old = k.sandbox(pod)
        hold = k.root / "hold-cni-add"  # the next sandbox's CNI ADD waits: the pod stays between two
        hold.touch()
        try:
            os.kill(k.pause_pid(pod), signal.SIGKILL)
            wait_for(
                "PodReadyToStartContainers=False",
                lambda: condition(k.pod("web"), "PodReadyToStartContainers")["status"] == "False",
                timeout=1.0,
                interval=0.005,
            )
            out = k.kubectl("get", "endpoints", "web").stdout
            assert re.search(r"^web\s+<none>\s", out, re.M), out
            described = k.kubectl("describe", "pod", "web").stdout
        finally:
            hold.unlink()
        assert re.search(r"^\s+PodReadyToStartContainers\s+False\s*$", described, re.M), described
        assert re.search(r"^\s+Ready\s+False\s*$", described, re.M), described
        assert re.search(
            r"SandboxChanged\s+\S+\s+kubelet\s+Pod sandbox changed, it will be killed and re-created: "
            r"pause \(pid \d+\) killed by signal 9 \(SIGKILL\)",
            described,
        ), described
        back = wait_for("web Ready again", lambda: is_ready(p := k.pod("web")) and p, timeout=30)
        new = k.sandbox(back)
        assert new.id != old.id and new.metadata.attempt == 1
        new_ip = back["status"]["podIP"]
        wait_for(
            "back in endpoints",
            lambda: re.search(
                rf"^web\s+{re.escape(new_ip)}:80\s", k.kubectl("get", "endpoints").stdout, re.M
            ),
        )
        wait_for(
            "the watches show it Ready",
            lambda: (
                re.match(r"web\s+2/2\s+Running\s+2 ", table.lines[-1])
                and conditions.lines[-1].split() == ["web", "True", "True"]
            ),
            timeout=10,
        )
    finally:
        table_out, conditions_out = table.stop(), conditions.stop()
    rows = [line for line in table_out.splitlines() if line.startswith("web ")]
    assert re.match(r"web\s+2/2\s+Running\s+0\s", rows[0]), table_out
    dropped = next(i for i, row in enumerate(rows) if not re.match(r"web\s+2/2\s", row))
    assert re.match(r"web\s+2/2\s+Running\s+2 \(\d+s ago\)\s", rows[-1]), table_out
    assert dropped < len(rows) - 1
    # Ready only once the new containers' readiness probe passed: after the drop, READY climbs to 2/2 and
    # stays (it showed 2/2 for a moment, then 1/2, when a probe without its tracker yet counted as passed)
    after = [row.split()[1] for row in rows[dropped:]]
    assert all(ready == "2/2" for ready in after[after.index("2/2") :]), table_out
    lines = [line.split() for line in conditions_out.splitlines()]
    assert lines[0] == ["NAME", "PODREADYTOSTARTCONTAINERS", "READY"], conditions_out
    assert ["web", "False", "False"] in lines, conditions_out  # PodReadyToStartContainers=False
    assert lines[-1] == ["web", "True", "True"], conditions_out


def test_a_dead_sandbox_s_containers_are_killed_not_drained(k: KubeletInstance) -> None:
    """The article's step 4: the kubelet *forcefully* stops the containers of a pod whose pause died. A main
    process that ignores SIGTERM (sleep as PID 1) must not hold the recovery for its grace period (12 s
    here, so that deleting the pod afterwards, which does honour it, stays short)."""
    k.apply(f"""\
apiVersion: v1
kind: Pod
metadata: {{name: stubborn}}
spec:
  terminationGracePeriodSeconds: 12
  containers:
  - name: main
    image: {BUSYBOX}
    command: ["sleep", "3600"]
""")
    pod = wait_for("stubborn Ready", lambda: is_ready(p := k.pod("stubborn")) and p)
    sandbox_id = k.sandbox(pod).id
    os.kill(k.pause_pid(pod), signal.SIGKILL)
    back = wait_for(
        "stubborn Ready on a new sandbox",
        lambda: is_ready(p := k.pod("stubborn")) and k.sandbox(p).id != sandbox_id and p,
        timeout=6,  # half the grace period the old container would otherwise have been given
    )
    assert k.sandbox(back).metadata.attempt == 1
    assert container(back, "main")["lastState"]["terminated"]["exitCode"] == 137


# --- restarts -----------------------------------------------------------------------------------------------


def _pod(name: str, command: str, policy: str = "Always", extra: str = "") -> str:
    return f"""\
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: {name}}}}}
spec:
  restartPolicy: {policy}
  terminationGracePeriodSeconds: 1
{extra}  containers:
  - name: main
    image: {BUSYBOX}
    command: ["sh", "-c", {command!r}]
"""


def test_crash_loop_backoff_grows(k: KubeletInstance) -> None:
    k.apply(_pod("crasher", "echo crashing; exit 1"))
    seen: set[str] = set()

    def restarted_three_times() -> bool:
        pod = k.pod("crasher")
        c = container(pod, "main")
        seen.add(c["state"].get("waiting", {}).get("reason", ""))
        return c["restartCount"] >= 3

    wait_for("three restarts", restarted_three_times, timeout=30, interval=0.05)
    assert "CrashLoopBackOff" in seen
    events = k.pods.get("events", "default", "crasher")
    waits = [
        float(m.group(1)) for e in events if (m := re.match(r"Back-off (\d+)s restarting", e["message"]))
    ]
    # base 1 s here (10 s by default), doubling; a list of events has no order (the API sorts by name)
    assert sorted(waits)[:2] == [1.0, 2.0], events
    table = wait_for(
        "STATUS CrashLoopBackOff", lambda: "CrashLoopBackOff" in (t := k.kubectl("get", "pods").stdout) and t
    )
    assert re.search(r"crasher\s+0/1\s+CrashLoopBackOff\s+[3-9]", table), table
    logs = k.kubectl("logs", "crasher", "--previous").stdout
    assert logs == "crashing\n"


def test_restart_policies(k: KubeletInstance) -> None:
    k.apply(_pod("ok-onfailure", "exit 0", "OnFailure"))
    k.apply(_pod("bad-onfailure", "exit 3", "OnFailure"))
    k.apply(_pod("bad-never", "exit 3", "Never"))
    ok = wait_for("Succeeded", lambda: (p := k.pod("ok-onfailure"))["status"]["phase"] == "Succeeded" and p)
    assert container(ok, "main")["restartCount"] == 0
    assert container(ok, "main")["state"]["terminated"]["reason"] == "Completed"
    assert condition(ok, "PodReadyToStartContainers")["status"] == "False"  # sandbox given back
    never = wait_for("Failed", lambda: (p := k.pod("bad-never"))["status"]["phase"] == "Failed" and p)
    assert container(never, "main")["restartCount"] == 0
    assert container(never, "main")["state"]["terminated"]["exitCode"] == 3
    bad = wait_for(
        "restarted", lambda: container(p := k.pod("bad-onfailure"), "main")["restartCount"] >= 1 and p
    )
    assert bad["status"]["phase"] == "Running"
    assert container(bad, "main")["lastState"]["terminated"]["exitCode"] == 3
    table = k.kubectl("get", "pods").stdout
    assert re.search(r"ok-onfailure\s+0/1\s+Completed", table) and re.search(
        r"bad-never\s+0/1\s+Error", table
    )


INIT = """\
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  restartPolicy: {policy}
  terminationGracePeriodSeconds: 1
  volumes: [{{name: work, emptyDir: {{}}}}]
  initContainers:
  - name: first
    image: busybox:1.28
    command: ["sh", "-c", "echo first >> /work/order; exit {first_exit}"]
    volumeMounts: [{{name: work, mountPath: /work}}]
  - name: second
    image: busybox:1.28
    command: ["sh", "-c", "echo second >> /work/order"]
    volumeMounts: [{{name: work, mountPath: /work}}]
  containers:
  - name: main
    image: busybox:1.28
    command: ["sh", "-c", "echo main >> /work/order; exec sleep 3600"]
    volumeMounts: [{{name: work, mountPath: /work}}]
"""


def test_init_containers_run_in_order_and_a_failure_blocks(k: KubeletInstance) -> None:
    k.apply(INIT.format(name="inits", policy="Always", first_exit=0))
    k.apply(INIT.format(name="blocked", policy="Never", first_exit=1))
    k.apply(INIT.format(name="retrying", policy="Always", first_exit=1))
    wait_for("inits Ready", lambda: is_ready(k.pod("inits")))
    order = k.kubectl("exec", "inits", "--", "cat", "/work/order").stdout
    assert order.split() == ["first", "second", "main"]
    assert condition(k.pod("inits"), "Initialized")["status"] == "True"

    blocked = wait_for("blocked Failed", lambda: (p := k.pod("blocked"))["status"]["phase"] == "Failed" and p)
    first = container(blocked, "first", "initContainerStatuses")
    assert first["state"]["terminated"]["exitCode"] == 1
    assert not container(blocked, "second", "initContainerStatuses").get("containerID")  # never ran
    assert not container(blocked, "main").get("containerID")
    init_cond = condition(blocked, "Initialized")
    assert init_cond["status"] == "False" and "first" in init_cond["message"]

    retrying = wait_for(
        "init restarted",
        lambda: (
            container(p := k.pod("retrying"), "first", "initContainerStatuses")["restartCount"] >= 1 and p
        ),
    )
    assert retrying["status"]["phase"] == "Pending"
    assert not container(retrying, "main").get("containerID")
    assert "Init:" in k.kubectl("get", "pods", "retrying").stdout


# --- probes -------------------------------------------------------------------------------------------------

PROBED = """\
apiVersion: v1
kind: Pod
metadata:
  name: probed
  labels: {app: probed}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: busybox:1.28
    command: ["sh", "-c", "touch /tmp/alive /tmp/ready; exec httpd -f -p 8080 -h /tmp"]
    ports: [{containerPort: 8080}]
    livenessProbe: {exec: {command: [test, -f, /tmp/alive]}, periodSeconds: 1, failureThreshold: 2}
    readinessProbe: {exec: {command: [test, -f, /tmp/ready]}, periodSeconds: 1, failureThreshold: 1}
    startupProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: probed}
spec:
  selector: {app: probed}
  ports: [{port: 8080}]
"""


def test_readiness_removes_from_endpoints_and_liveness_restarts(k: KubeletInstance) -> None:
    k.apply(PROBED)
    pod = wait_for("probed Ready", lambda: is_ready(p := k.pod("probed")) and p)
    ip = pod["status"]["podIP"]
    assert wait_for("in endpoints", lambda: endpoints(k, "probed")) == [f"{ip}:8080"]

    k.kubectl("exec", "probed", "--", "rm", "/tmp/ready")
    wait_for("out of endpoints", lambda: endpoints(k, "probed") == [], timeout=5)
    ready = condition(k.pod("probed"), "Ready")
    assert ready["status"] == "False" and "readiness probe failed" in ready["message"], ready
    assert container(k.pod("probed"), "app")["restartCount"] == 0
    k.kubectl("exec", "probed", "--", "touch", "/tmp/ready")
    assert wait_for("back in endpoints", lambda: endpoints(k, "probed"), timeout=5) == [f"{ip}:8080"]

    k.kubectl("exec", "probed", "--", "rm", "/tmp/alive")
    restarted = wait_for(
        "liveness restart", lambda: container(p := k.pod("probed"), "app")["restartCount"] == 1 and p
    )
    assert restarted["status"]["podIP"] == ip  # same sandbox: only the container was restarted
    events = " ".join(e["message"] for e in k.pods.get("events", "default", "probed"))
    assert "Liveness probe failed" in events and "failed liveness probe, will be restarted" in events
    wait_for("Ready after restart", lambda: is_ready(k.pod("probed")), timeout=10)


# --- manifests ----------------------------------------------------------------------------------------------


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_image_that_cannot_be_pulled_shows_err_image_pull_then_image_pull_back_off(
    k: KubeletInstance,
) -> None:
    """A failed pull shows as the kubelet shows it: the container waits with ErrImagePull, then with
    ImagePullBackOff while the image's next pull waits (per image, the restart back-off's steps: 1 s
    doubling here), in the status, kubectl's STATUS column (watched) and the events. The registry is
    127.0.0.1 on a port nothing listens on: no pull ever leaves the machine."""
    image = f"127.0.0.1:{closed_port()}/podhost/nothing:1"
    table = k.kubectl_watch("get", "pods", "-w")
    try:
        k.apply(_pod("unpullable", "sleep 3600").replace(BUSYBOX, image))
        waiting = wait_for(
            "ErrImagePull",
            lambda: (
                (w := container(k.pod("unpullable"), "main")["state"].get("waiting", {})).get("reason")
                == "ErrImagePull"
                and w
            ),
            interval=0.05,
        )
        assert waiting["message"].startswith(f'Failed to pull image "{image}"'), waiting
        backing_off = wait_for(
            "ImagePullBackOff",
            lambda: (
                (w := container(k.pod("unpullable"), "main")["state"].get("waiting", {})).get("reason")
                == "ImagePullBackOff"
                and w
            ),
            interval=0.05,
        )
        assert backing_off["message"] == f'Back-off pulling image "{image}"', backing_off
        wait_for(
            "both in the watched STATUS column",
            lambda: (
                re.search(r"^unpullable\s+0/1\s+ErrImagePull\s", table.text, re.M)
                and re.search(r"^unpullable\s+0/1\s+ImagePullBackOff\s", table.text, re.M)
            ),
            timeout=30,
        )
    finally:
        table.stop()
    wait_for(
        "ImagePullBackOff in kubectl get pods",
        lambda: re.search(
            r"^unpullable\s+0/1\s+ImagePullBackOff\s+0\s", k.kubectl("get", "pods").stdout, re.M
        ),
        timeout=30,
        interval=0.1,
    )
    described = k.kubectl("describe", "pod", "unpullable").stdout
    assert re.search(r"State:\s+Waiting\s+Reason:\s+(ErrImagePull|ImagePullBackOff)", described), described
    quoted = re.escape(f'"{image}"')
    for event in (
        rf"Normal\s+Pulling\s+.*Pulling image {quoted}",
        rf"Warning\s+Failed\s+.*Failed to pull image {quoted}",
        r"Warning\s+Failed\s+.*Error: ErrImagePull",
        rf"Normal\s+BackOff\s+.*Back-off pulling image {quoted}",
        r"Warning\s+Failed\s+.*Error: ImagePullBackOff",
    ):
        assert re.search(event, described), (event, described)


def test_broken_manifests_name_the_field(k: KubeletInstance) -> None:
    broken = "apiVersion: v1\nkind: Pod\nmetadata: {name: broken}\nspec:\n  containers:\n  - name: a\n    image: x\n  - name: b\n"
    path = k.root / "broken.yaml"
    path.write_text(broken)
    proc = k.kubectl("apply", "-f", str(path), check=False)
    assert proc.returncode == 1
    assert "spec.containers[1].image" in proc.stderr, proc.stderr
    path.write_text(_pod("x", "true").replace("restartPolicy", "nodeSelector: {a: b}\n  restartPolicy"))
    proc = k.kubectl("apply", "-f", str(path), check=False)
    assert proc.returncode == 1 and "spec.nodeSelector" in proc.stderr, proc.stderr
    assert k.pods.get("pods") == [] and k.client.list_pod_sandbox() == []
    assert k.kubectl("get", "pods").stderr.strip() == "No resources found in default namespace."


# --- static pods and restarts of the daemon -----------------------------------------------------------------


def test_static_pods_follow_their_directory(k: KubeletInstance) -> None:
    (k.manifests / "static.yaml").write_text(_pod("static-web", "exec sleep 3600"))
    wait_for("static pod Ready", lambda: is_ready(k.pod("static-web")))
    proc = k.kubectl("delete", "pod", "static-web", check=False)
    assert proc.returncode == 1 and "is a static pod" in proc.stderr, proc.stderr
    (k.manifests / "static.yaml").unlink()
    wait_for("static pod gone", lambda: not k.pods.get("pods"), timeout=15)


def test_daemon_restart_keeps_pods_and_does_not_restart_containers(k: KubeletInstance) -> None:
    k.apply(_pod("keeper", "exec sleep 3600") + "---\n" + WEB.split("---\n")[1])
    before = wait_for("keeper Ready", lambda: is_ready(p := k.pod("keeper")) and p)
    cid = container(before, "main")["containerID"]
    managers = before["metadata"]["managedFields"]
    assert [m["manager"] for m in managers] == ["kubectl-client-side-apply"], managers
    k.kill()  # SIGKILL: a crash
    k.start()
    after = wait_for("keeper Ready after restart", lambda: is_ready(p := k.pod("keeper")) and p)
    assert container(after, "main")["containerID"] == cid and container(after, "main")["restartCount"] == 0
    assert after["metadata"]["managedFields"] == managers  # stored with the pod, not only in memory
    assert [s["metadata"]["name"] for s in k.pods.get("services")] == ["web"]
    k.stop()  # SIGTERM: a clean stop; kubectl then finds no API and starts nothing
    proc = k.kubectl("get", "pods", "--request-timeout", "5s", check=False)
    assert proc.returncode == 1 and "was refused" in proc.stderr, proc.stderr
    assert not k.client_answers()
    k.start()
    again = wait_for("keeper Ready after a clean restart", lambda: is_ready(p := k.pod("keeper")) and p)
    assert container(again, "main")["containerID"] == cid
    out = k.kubectl("get", "pods").stdout
    assert re.search(r"^keeper\s+1/1\s+Running\s+0\s", out, re.M), out


def test_a_sandbox_change_cut_by_a_crash_still_ends_with_one_sandbox(k: KubeletInstance) -> None:
    """pause dies, the worker makes the next sandbox, and the daemon dies before the old one is removed
    (here: at the new sandbox's CreateContainer). After the restart the old sandbox still goes once the
    pod has settled: the worker removes what it sees, not what it remembered before the crash."""
    k.apply(_pod("changer", "exec sleep 3600"))
    pod = wait_for("changer Ready", lambda: is_ready(p := k.pod("changer")) and p)
    old = k.sandbox(pod).id
    k.kill()
    k.start(env={"PODHOST_KILL_AT": "CreateContainer:bundle"})  # the next create is in the next sandbox
    wait_for("changer Ready after the restart", lambda: is_ready(k.pod("changer")))
    os.kill(k.pause_pid(pod), signal.SIGKILL)
    assert k.wait_exited(30) == -signal.SIGKILL, k.log_tail(20)
    k.start()
    uid = {"io.kubernetes.pod.uid": pod["metadata"]["uid"]}

    def one_ready_sandbox_left() -> bool:
        sandboxes = k.client.list_pod_sandbox(pb.PodSandboxFilter(label_selector=uid))
        return is_ready(k.pod("changer")) and [s.state for s in sandboxes] == [pb.SANDBOX_READY]

    wait_for("the old sandbox removed once the pod settled", one_ready_sandbox_left, timeout=30)
    assert k.sandbox(k.pod("changer")).id != old


# --- the same demo against containerd -----------------------------------------------------------------------


def _demo_images_archive(path: Path) -> Path:
    """The demo look-alikes (nginx, busybox:1.28) as an OCI archive, built exactly as podhost's store has them."""
    layer = build.tar_entries(build.busybox_entries())
    images = []
    for names, cmd, ports in (
        ([build.NGINX_IMAGE], build.NGINX_CMD, ["80/tcp"]),
        ([build.BUSYBOX_128_IMAGE], ["sh"], []),
    ):
        config = build.config_json([sha256_digest(layer)], cmd=cmd, exposed_ports=ports)
        images.append(
            ImageBlobs(
                config=config, layers=[layer], names=names, manifest=build.manifest_json(config, [layer])
            )
        )
    write_oci_archive(path, images)
    return path


def test_the_demo_against_containerd_through_the_same_manager(orphan_reaper: OrphanReaper) -> None:
    # Our own cgroup parent: a peer kills leftovers in its cgroup parent, so sharing the default one with
    # another test's peer running at the same time would be unsafe.
    peer = ContainerdPeer(
        Path(f"/tmp/ph-kub-ctrd-{secrets.token_hex(3)}"), CTRD_BRIDGE, CTRD_SUBNET, cgroup_parent=CTRD_CGROUP
    )
    inst: KubeletInstance | None = None
    try:
        peer.start()
        work = peer.root / "images"
        for tar in build_test_images(work).values():
            peer.import_image(tar)
        peer.import_image(_demo_images_archive(work / "demo.oci.tar"))
        # podhost's own runtime in this daemon runs nothing; the manager drives containerd.
        inst = KubeletInstance(
            Path(f"/tmp/ph-kub-c-{secrets.token_hex(3)}"),
            CTRD_BRIDGE,
            CTRD_SUBNET,
            ["--pod-cgroup-parent", peer.cgroup_parent],
            ["--runtime-endpoint", peer.endpoint],
        )
        inst.start()
        inst.kubectl("apply", "-f", str(DEMO))
        pod = wait_for(
            "demo Ready on containerd", lambda: is_ready(p := inst.pod("shared-namespace-demo")) and p
        )  # type: ignore[union-attr]
        assert container(pod, "nginx")["containerID"].startswith("containerd://")
        # containerd 1.6 has no GetContainerEvents: the PLEG said so and relists once a second instead.
        assert "the runtime has no GetContainerEvents" in (inst.root / "daemon.log").read_text()
        procs = ps_ax(inst, "shared-namespace-demo", "shell")
        assert procs.get("/pause") == 1, procs
        httpd = next(pid for cmd, pid in procs.items() if cmd.startswith("httpd"))
        inst.kubectl("exec", "shared-namespace-demo", "-c", "shell", "--", "kill", "-HUP", str(httpd))
        wait_for("nginx serving after its SIGHUP", lambda: "Welcome to nginx!" in page(inst))
        after = ps_ax(inst, "shared-namespace-demo", "shell")
        assert next(pid for cmd, pid in after.items() if cmd.startswith("httpd")) == httpd
        assert container(inst.pod("shared-namespace-demo"), "nginx")["restartCount"] == 0
        with CRIClient(peer.endpoint) as ctrd:
            (sandbox,) = ctrd.list_pod_sandbox()
            assert sandbox.metadata.name == "shared-namespace-demo" and sandbox.state == pb.SANDBOX_READY
        inst.kubectl("delete", "pod", "shared-namespace-demo")
        with CRIClient(peer.endpoint) as ctrd:
            assert ctrd.list_pod_sandbox() == []
    finally:
        if inst is not None:
            inst.pods.close()
            inst.cleanup()
        peer.stop()
