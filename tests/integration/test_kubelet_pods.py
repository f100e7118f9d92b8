"""The pod manager with real pods: manifests in through `podhost apply`, the kubelet's lifecycle out.

One podhost daemon (its own root, bridge phkub0, subnet 10.237.0.0/24, CrashLoopBackOff base 1 s, a static
pod directory) serves every test here but the containerd one; after each test its pods and services are
deleted through the manager and the instance is checked for leaks. The containerd test drives Debian's
containerd (bridge phkubc0, 10.238.0.0/24) through the same manager, from a second daemon.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from podhost.cli import kubectl
from podhost.cli.spawn import daemon_command, spawn_daemon
from podhost.cri import api_pb2 as pb
from podhost.cri.client import CRIClient
from podhost.kubelet.client import PodsClient
from podhost.runtime.image import build
from podhost.runtime.image.archive import ImageBlobs, sha256_digest, write_oci_archive
from tests.instance import Instance, OrphanReaper
from tests.leaks import find_leaks

_REPO = str(Path(__file__).resolve().parents[2])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from bench.containerd_peer import ContainerdPeer, build_test_images  # noqa: E402

pytestmark = pytest.mark.root

BRIDGE, SUBNET = "phkub0", "10.237.0.0/24"
CTRD_BRIDGE, CTRD_SUBNET = "phkubc0", "10.238.0.0/24"
CTRD_CGROUP = "/podhost-kub-ctrd"
DEMO = Path(_REPO) / "examples" / "shared-namespace-demo.yaml"
BUSYBOX = "localhost/podhost/busybox:latest"
T = TypeVar("T")


class KubeletInstance(Instance):
    """An Instance whose daemon gets the pod manager's flags, driven through the CLI and PodsClient."""

    def __init__(self, root: Path, bridge: str, subnet: str, extra: list[str], glob_args: list[str]) -> None:
        super().__init__(root, bridge, subnet)
        self.extra, self.glob_args = extra, glob_args
        self.manifests = root / "manifests"
        self.manifests.mkdir()
        self.pods = PodsClient(f"unix://{self.config.socket}", timeout=60)

    def start(self) -> None:
        cmd = daemon_command(self.root, self.bridge, self.subnet, self.config_file)
        at = cmd.index("--root")
        cmd[at:at] = self.glob_args
        self.daemon = spawn_daemon(cmd + self.extra, self.root / "daemon.log", self.client)

    def cli(
        self, *args: str, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "podhost.cli.main", "--root", str(self.root), *args]
        proc = subprocess.run(argv, capture_output=True, text=True, input=stdin, timeout=120, cwd=_REPO)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"podhost {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def apply(self, text: str) -> None:
        path = self.root / f"m-{secrets.token_hex(3)}.yaml"
        path.write_text(text)
        self.cli("apply", "-f", str(path))

    def pod(self, name: str) -> dict[str, Any]:
        return self.pods.pod(name)

    def delete_everything(self) -> None:
        for svc in self.pods.get("services"):
            self.pods.delete("service", svc["metadata"]["name"], svc["metadata"]["namespace"])
        for pod in self.pods.get("pods"):
            if pod["metadata"].get("annotations", {}).get("kubernetes.io/config.source") != "file":
                self.pods.delete("pod", pod["metadata"]["name"], pod["metadata"]["namespace"])


def wait_for(what: str, fn: Callable[[], T | None], timeout: float = 20.0, every: float = 0.02) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            last = fn()
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def condition(pod: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in pod["status"]["conditions"] if c["type"] == type_)


def is_ready(pod: dict[str, Any]) -> bool:
    return condition(pod, "Ready")["status"] == "True"


def container(pod: dict[str, Any], name: str, group: str = "containerStatuses") -> dict[str, Any]:
    return next(c for c in pod["status"].get(group, []) if c["name"] == name)


def endpoints(inst: KubeletInstance, service: str) -> list[str]:
    (ep,) = inst.pods.get("endpoints", "default", service)
    return [
        f"{a['ip']}:{p['port']}" for s in ep["subsets"] for p in s["ports"] for a in s.get("addresses", [])
    ]


def ps_ax(inst: KubeletInstance, pod: str, c: str) -> dict[str, int]:
    """command line -> PID, from `ps ax` run through `podhost exec`."""
    out = inst.cli("exec", pod, "-c", c, "--", "ps", "ax").stdout
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
    the manager and everything it made is removed."""
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


@pytest.fixture(scope="module")
def kube(orphan_reaper: OrphanReaper) -> Iterator[KubeletInstance]:
    def flags(inst: KubeletInstance) -> None:
        inst.extra = ["--restart-backoff", "1", "--manifests", str(inst.manifests)]

    yield from kubelet_instance("ph-kub", BRIDGE, SUBNET, flags)


@pytest.fixture
def k(kube: KubeletInstance) -> Iterator[KubeletInstance]:
    """The shared instance; afterwards its pods are deleted through the manager and nothing may be left."""
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
    out = k.cli("apply", "-f", str(DEMO)).stdout
    assert out.strip() == "pod/shared-namespace-demo created"
    pod = wait_for("demo Ready", lambda: is_ready(p := k.pod("shared-namespace-demo")) and p)
    table = k.cli("get", "pods", "-o", "wide").stdout
    assert re.search(r"shared-namespace-demo\s+2/2\s+Running\s+0\s+\S+\s+10\.237\.0\.\d+", table), table

    procs = ps_ax(k, "shared-namespace-demo", "shell")
    assert procs.get("/pause") == 1, procs  # pause founded the shared PID namespace
    httpd = next(pid for cmd, pid in procs.items() if cmd.startswith("httpd"))
    assert "sleep 3600" in procs
    k.cli("exec", "shared-namespace-demo", "-c", "shell", "--", "kill", "-HUP", str(httpd))
    time.sleep(0.5)
    page = k.cli("exec", "shared-namespace-demo", "-c", "shell", "--", "wget", "-qO-", "http://127.0.0.1:80/")
    assert "Welcome to nginx!" in page.stdout
    after = ps_ax(k, "shared-namespace-demo", "shell")
    assert next(pid for cmd, pid in after.items() if cmd.startswith("httpd")) == httpd  # same process serves
    pod = k.pod("shared-namespace-demo")
    assert container(pod, "nginx")["restartCount"] == 0 and container(pod, "nginx")["state"].get("running")
    assert container(pod, "nginx")["containerID"].startswith("podhost://")
    missing = k.cli("exec", "shared-namespace-demo", "--", "true", check=False)
    assert missing.returncode == 1 and "choose one with -c: nginx, shell" in missing.stderr
    interactive = k.cli(
        "exec", "-i", "shared-namespace-demo", "-c", "shell", "--", "cat", stdin="hello\n", check=False
    )
    assert interactive.returncode == 0 and interactive.stdout == "hello\n", interactive.stderr
    events = k.cli("get", "events").stdout
    assert re.search(r"Normal\s+Started\s+pod/shared-namespace-demo/nginx\s+Started container nginx", events)


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
    sandbox_id = pod["status"]["sandbox"]["id"]
    pause = int(k.sandbox_info(sandbox_id)["pid"])  # type: ignore[call-overload]

    killed = time.monotonic()
    os.kill(pause, signal.SIGKILL)
    down = wait_for(
        "PodReadyToStartContainers=False",
        lambda: condition(p := k.pod("web"), "PodReadyToStartContainers")["status"] == "False" and p,
        timeout=1.0,
        every=0.005,
    )
    detected = time.monotonic() - killed
    assert endpoints(k, "web") == []  # step 2: out of the endpoints at once
    events = k.pods.get("events", "default", "web")
    # What `podhost describe pod web` printed at that instant (the same renderer, on the same object):
    text = kubectl.describe_text(down, events, time.time())
    print(f"\nkill -> PodReadyToStartContainers=False and out of endpoints: {detected * 1000:.0f} ms\n{text}")
    assert re.search(
        r"PodReadyToStartContainers\s+False\s+PauseExited\s+pause \(pid \d+\) killed by signal 9 \(SIGKILL\)",
        text,
    ), text
    assert not is_ready(down) and detected < 1.0
    # The CLI itself, a moment later: the new sandbox may be up already, the event says what happened.
    described = k.cli("describe", "pod", "web").stdout
    assert re.search(
        r"SandboxChanged\s+\S+\s+pod/web\s+Pod sandbox changed, it will be killed and re-created: "
        r"pause \(pid \d+\) killed by signal 9",
        described,
    ), described

    back = wait_for("web Ready again", lambda: is_ready(p := k.pod("web")) and p, timeout=15, every=0.01)
    ready_after = time.monotonic() - killed
    print(
        f"kill -> pod Ready again (new sandbox, containers restarted, probe passed): {ready_after * 1000:.0f} ms"
    )
    assert back["status"]["sandbox"]["attempt"] == 1 and back["status"]["sandbox"]["id"] != sandbox_id
    assert all(c["state"].get("running") for c in back["status"]["containerStatuses"])
    assert container(back, "nginx")["lastState"]["terminated"]["exitCode"] == 137
    assert wait_for("back in endpoints", lambda: endpoints(k, "web")) == [f"{back['status']['podIP']}:80"]
    pods_table = k.cli("cri", "pods", "--name", "^web$").stdout
    assert re.search(r"Ready\s+web\s+default\s+1\s", pods_table), pods_table


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
    sandbox_id = pod["status"]["sandbox"]["id"]
    os.kill(int(k.sandbox_info(sandbox_id)["pid"]), signal.SIGKILL)  # type: ignore[call-overload]
    back = wait_for(
        "stubborn Ready on a new sandbox",
        lambda: is_ready(p := k.pod("stubborn")) and p["status"]["sandbox"]["id"] != sandbox_id and p,
        timeout=6,  # half the grace period the old container would otherwise have been given
    )
    assert back["status"]["sandbox"]["attempt"] == 1
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

    wait_for("three restarts", restarted_three_times, timeout=30, every=0.05)
    assert "CrashLoopBackOff" in seen
    events = k.pods.get("events", "default", "crasher")
    waits = [
        float(m.group(1)) for e in events if (m := re.match(r"Back-off (\d+)s restarting", e["message"]))
    ]
    assert waits[:2] == [1.0, 2.0], events  # base 1 s here (10 s by default), doubling
    table = wait_for(
        "STATUS CrashLoopBackOff", lambda: "CrashLoopBackOff" in (t := k.cli("get", "pods").stdout) and t
    )
    assert re.search(r"crasher\s+0/1\s+CrashLoopBackOff\s+[3-9]", table), table
    logs = k.cli("logs", "crasher", "--previous").stdout
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
    table = k.cli("get", "pods").stdout
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
    order = k.cli("exec", "inits", "--", "cat", "/work/order").stdout
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
    assert "Init:" in k.cli("get", "pods", "retrying").stdout


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

    k.cli("exec", "probed", "--", "rm", "/tmp/ready")
    wait_for("out of endpoints", lambda: endpoints(k, "probed") == [], timeout=5)
    ready = condition(k.pod("probed"), "Ready")
    assert ready["status"] == "False" and "readiness probe failed" in ready["message"], ready
    assert container(k.pod("probed"), "app")["restartCount"] == 0
    k.cli("exec", "probed", "--", "touch", "/tmp/ready")
    assert wait_for("back in endpoints", lambda: endpoints(k, "probed"), timeout=5) == [f"{ip}:8080"]

    k.cli("exec", "probed", "--", "rm", "/tmp/alive")
    restarted = wait_for(
        "liveness restart", lambda: container(p := k.pod("probed"), "app")["restartCount"] == 1 and p
    )
    assert restarted["status"]["podIP"] == ip  # same sandbox: only the container was restarted
    events = " ".join(e["message"] for e in k.pods.get("events", "default", "probed"))
    assert "Liveness probe failed" in events and "failed liveness probe, will be restarted" in events
    wait_for("Ready after restart", lambda: is_ready(k.pod("probed")), timeout=10)


# --- manifests ----------------------------------------------------------------------------------------------


def test_apply_on_a_terminal_follows_the_image_pulls(k: KubeletInstance, tmp_path: Path) -> None:
    """On a tty, apply reports each container's image as the pod manager gets it, then returns."""
    manifest = tmp_path / "pulled.yaml"
    manifest.write_text(_pod("pulled", "sleep 3600"))
    cmd = f"{sys.executable} -m podhost.cli.main --root {k.root} apply -f {manifest}"
    proc = subprocess.run(["script", "-qec", cmd, "/dev/null"], capture_output=True, text=True, timeout=60,
                          cwd=_REPO)  # fmt: skip
    assert proc.returncode == 0, proc.stdout
    assert "pod/pulled created" in proc.stdout
    assert f'pod/pulled/main: Container image "{BUSYBOX}" already present on machine' in proc.stdout


def test_broken_manifests_name_the_field_and_create_nothing(k: KubeletInstance) -> None:
    good = _pod("would-run", "sleep 1")
    broken = "apiVersion: v1\nkind: Pod\nmetadata: {name: broken}\nspec:\n  containers:\n  - name: a\n    image: x\n  - name: b\n"
    path = k.root / "broken.yaml"
    path.write_text(good + "---\n" + broken)
    proc = k.cli("apply", "-f", str(path), check=False)
    assert proc.returncode == 1
    assert "(document 2): spec.containers[1].image: required" in proc.stderr, proc.stderr
    path.write_text(_pod("x", "true").replace("restartPolicy", "nodeSelector: {a: b}\n  restartPolicy"))
    proc = k.cli("apply", "-f", str(path), check=False)
    assert proc.returncode == 1 and "spec.nodeSelector: field is not supported by podhost" in proc.stderr
    with pytest.raises(Exception, match=r"spec.containers\[1\].image: required"):
        k.pods.apply(good + "---\n" + broken)  # the daemon validates as well
    assert k.pods.get("pods") == [] and k.client.list_pod_sandbox() == []
    assert k.cli("get", "pods").stderr.strip() == "No resources found in default namespace."


# --- static pods and restarts of the daemon -----------------------------------------------------------------


def test_static_pods_follow_their_directory(k: KubeletInstance) -> None:
    (k.manifests / "static.yaml").write_text(_pod("static-web", "exec sleep 3600"))
    wait_for("static pod Ready", lambda: is_ready(k.pod("static-web")))
    proc = k.cli("delete", "pod", "static-web", check=False)
    assert proc.returncode == 1 and "is a static pod" in proc.stderr
    (k.manifests / "static.yaml").unlink()
    wait_for("static pod gone", lambda: not k.pods.get("pods"), timeout=15)


def test_daemon_restart_keeps_pods_and_does_not_restart_containers(k: KubeletInstance) -> None:
    k.apply(_pod("keeper", "exec sleep 3600") + "---\n" + WEB.split("---\n")[1])
    before = wait_for("keeper Ready", lambda: is_ready(p := k.pod("keeper")) and p)
    cid = container(before, "main")["containerID"]
    k.kill()  # SIGKILL: a crash
    k.start()
    after = wait_for("keeper Ready after restart", lambda: is_ready(p := k.pod("keeper")) and p)
    assert container(after, "main")["containerID"] == cid and container(after, "main")["restartCount"] == 0
    assert [s["metadata"]["name"] for s in k.pods.get("services")] == ["web"]
    k.stop()  # SIGTERM: a clean stop; then the CLI starts a daemon of its own (the instance's podhost.toml)
    with k.config_file.open("a") as f:
        f.write(f'bridge = "{BRIDGE}"\nsubnet = "{SUBNET}"\n')
    proc = k.cli("get", "pods")
    started = re.search(r"started one \(pid (\d+)", proc.stderr)
    assert started, proc.stderr
    assert re.search(r"keeper\s+1/1\s+Running\s+0", proc.stdout), proc.stdout
    auto = int(started.group(1))
    os.kill(auto, signal.SIGTERM)
    wait_for("auto-started daemon gone", lambda: _reaped(auto), timeout=20, every=0.05)
    k.start()


def _reaped(pid: int) -> bool:
    """True once `pid` (re-parented to this subreaper when its CLI exited) is gone; reaps it."""
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return True
    return not Path(f"/proc/{pid}").exists()


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
        inst.cli("apply", "-f", str(DEMO))
        pod = wait_for(
            "demo Ready on containerd", lambda: is_ready(p := inst.pod("shared-namespace-demo")) and p
        )  # type: ignore[union-attr]
        assert container(pod, "nginx")["containerID"].startswith("containerd://")
        # containerd 1.6 has no GetContainerEvents: the PLEG said so and relists once a second instead.
        assert "the runtime has no GetContainerEvents" in (inst.root / "daemon.log").read_text()
        procs = ps_ax(inst, "shared-namespace-demo", "shell")
        assert procs.get("/pause") == 1, procs
        httpd = next(pid for cmd, pid in procs.items() if cmd.startswith("httpd"))
        inst.cli("exec", "shared-namespace-demo", "-c", "shell", "--", "kill", "-HUP", str(httpd))
        time.sleep(0.5)
        page = inst.cli(
            "exec", "shared-namespace-demo", "-c", "shell", "--", "wget", "-qO-", "http://127.0.0.1/"
        )
        assert "Welcome to nginx!" in page.stdout
        after = ps_ax(inst, "shared-namespace-demo", "shell")
        assert next(pid for cmd, pid in after.items() if cmd.startswith("httpd")) == httpd
        assert container(inst.pod("shared-namespace-demo"), "nginx")["restartCount"] == 0
        with CRIClient(peer.endpoint) as ctrd:
            (sandbox,) = ctrd.list_pod_sandbox()
            assert sandbox.metadata.name == "shared-namespace-demo" and sandbox.state == pb.SANDBOX_READY
        inst.cli("delete", "pod", "shared-namespace-demo")
        with CRIClient(peer.endpoint) as ctrd:
            assert ctrd.list_pod_sandbox() == []
    finally:
        if inst is not None:
            inst.pods.close()
            inst.cleanup()
        peer.stop()
