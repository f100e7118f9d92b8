"""Issue 14's debug containers and in-place resize, with the real kubectl against a real daemon.

`kubectl debug -it shared-namespace-demo --image=busybox:1.28 --target=nginx -- ps ax` adds an ephemeral
container through `pods/ephemeralcontainers` (a strategic merge patch: the request is checked here as
kubectl sends it), which joins the pod's namespaces and nginx's PID namespace, so `ps ax` shows nginx's
master process; it shows in `kubectl describe pod` and in `status.ephemeralContainerStatuses`, and is not
restarted after it exits. `kubectl patch pod --subresource resize` changes a running container's cgroup
(cpu quota, memory limit) without a restart.

One daemon (root /tmp/ph-dbg-*, bridge phd0, subnet 10.231.44.0/24) serves the module; after each test its
pods are deleted and the instance is checked for leaks.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from bench.kube_api import KubeAPIError
from podhost.runtime.cgroups import Cgroups
from podhost.runtime.image.build import demo_image_archive, find_deb
from tests.instance import OrphanReaper
from tests.integration.test_kube_api import KUBECTL, kube_checked
from tests.integration.test_kube_api_streaming import StreamingKube
from tests.integration.test_kubelet_pods import DEMO, KubeletInstance, condition, container, kubelet_instance
from tests.wait import wait_for

pytestmark = pytest.mark.root

BRIDGE, SUBNET = "phd0", "10.231.44.0/24"
BUSYBOX = "busybox:1.28"  # the store's local look-alike (podhost.runtime.image.build), never pulled
DEMO_POD = "shared-namespace-demo"
RESIZE_POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: resize-demo
spec:
  containers:
  - name: c
    image: busybox:1.28
    command: ["sleep", "3600"]
    resizePolicy:
    - {resourceName: cpu, restartPolicy: NotRequired}
    - {resourceName: memory, restartPolicy: NotRequired}
    resources:
      requests: {cpu: 100m, memory: 64Mi}
      limits: {cpu: 100m, memory: 64Mi}
  - name: restarts
    image: busybox:1.28
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
    resizePolicy:
    - {resourceName: memory, restartPolicy: RestartContainer}
    resources:
      requests: {cpu: 100m, memory: 64Mi}
      limits: {cpu: 100m, memory: 64Mi}
"""


@pytest.fixture(scope="module")
def instance(orphan_reaper: OrphanReaper) -> Iterator[KubeletInstance]:
    """The module's daemon, with the demo's real nginx (Debian's, from apt's cache: never downloaded here)
    loaded over its look-alike, so `ps ax` shows nginx's master process as in the article."""
    if KUBECTL is None:
        pytest.skip("kubectl is not installed")
    deb = find_deb("nginx")
    if deb is None:
        pytest.skip("no nginx .deb in apt's cache for the demo's real nginx")
    for inst in kubelet_instance("ph-dbg", BRIDGE, SUBNET):
        archive = demo_image_archive(inst.root / "demo-images.oci.tar", deb)
        inst.client.load_image(str(archive))
        archive.unlink()
        yield inst


@pytest.fixture
def kube(instance: KubeletInstance) -> Iterator[StreamingKube]:
    yield from kube_checked(instance, StreamingKube(instance))


def _demo(k: StreamingKube) -> None:
    k("apply", "-f", str(DEMO))
    k("wait", "--for=condition=Ready", f"pod/{DEMO_POD}", "--timeout=90s", timeout=120)


def _ephemeral(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in pod["status"].get("ephemeralContainerStatuses") or []}


def _debug_patch(stderr: str) -> tuple[str, str, dict[str, Any]]:
    """(URL, Content-Type, body) of the PATCH `kubectl debug -v=8` logged: its `"Request Body" body=...`
    line (a Go-quoted string), then `PATCH <url>` and the request headers."""
    lines = stderr.splitlines()
    at = next(i for i, line in enumerate(lines) if re.search(r"\] PATCH https://", line))
    url = lines[at].split("] PATCH ", 1)[1].strip()
    headers = [
        m.group(1) for line in lines[at + 1 : at + 8] if (m := re.search(r"Content-Type: (\S+)", line))
    ]
    quoted = next(
        m.group(1) for line in reversed(lines[:at]) if (m := re.search(r'"Request Body" body=(".*")$', line))
    )
    return url, headers[0] if headers else "", json.loads(json.loads(quoted))


def test_kubectl_debug_with_a_target_shows_nginxs_processes_and_is_never_restarted(
    kube: StreamingKube,
) -> None:
    _demo(kube)
    # -i (no terminal), with kubectl's own request log: what it sends for the ephemeral container.
    args = ["debug", "-i", DEMO_POD, f"--image={BUSYBOX}", "--target=nginx", "-v=8", "--", "ps", "ax"]
    proc = kube(*args, timeout=120)
    assert "nginx: master process" in proc.stdout, proc.stdout + proc.stderr[-3000:]
    url, content_type, body = _debug_patch(proc.stderr)
    assert url.endswith(f"/api/v1/namespaces/default/pods/{DEMO_POD}/ephemeralcontainers"), url
    assert content_type == "application/strategic-merge-patch+json", content_type
    (sent,) = body["spec"]["ephemeralContainers"]
    assert list(body) == ["spec"] and list(body["spec"]) == ["ephemeralContainers"], body
    assert sent["targetContainerName"] == "nginx" and sent["image"] == BUSYBOX, sent
    assert sent["command"] == ["ps", "ax"] and sent["stdin"] is True and sent["name"].startswith("debugger-")
    first = sent["name"]
    # -it: in a terminal, as a user types it. kubectl attaches once the container runs; what a terminal
    # container printed before that is not replayed (nor by the kubelet), so `ps` waits a moment.
    code, shown = kube.in_terminal(
        "debug", "-it", DEMO_POD, f"--image={BUSYBOX}", "--target=nginx", "--", "sh", "-c", "sleep 1; ps ax",
        typed=b"",
    )  # fmt: skip
    text = shown.decode(errors="replace")
    assert code == 0 and "nginx: master process" in text, text
    # -it with a shell: kubectl waits for it to run, then attaches to it (pods/attach); typed, it answers.
    code, shown = kube.in_terminal(
        "debug", "-it", DEMO_POD, f"--image={BUSYBOX}", "--target=nginx", "--", "sh",
        typed=b"echo attached-$((6*7)); exit\r",
    )  # fmt: skip
    assert code == 0 and "attached-42" in shown.decode(errors="replace"), shown
    pod = kube.inst.pod(DEMO_POD)
    names = [c["name"] for c in pod["spec"]["ephemeralContainers"]]
    assert len(names) == 3 and names[0] == first, names
    for name in names:
        wait_for(
            f"{name} terminated",
            lambda n=name: "terminated" in _ephemeral(kube.inst.pod(DEMO_POD))[n]["state"],
        )
    statuses = _ephemeral(kube.inst.pod(DEMO_POD))
    done = {n: (s["containerID"], s["state"]["terminated"]["exitCode"]) for n, s in statuses.items()}
    assert all(code == 0 for _, code in done.values()), statuses
    assert all(s["restartCount"] == 0 and s["ready"] is False for s in statuses.values()), statuses
    described = kube("describe", "pod", DEMO_POD).stdout
    section = described.split("Ephemeral Containers:", 1)
    assert len(section) == 2, described
    blocks = re.split(r"^  (\S+):$", section[1].split("\nConditions:", 1)[0], flags=re.M)[1:]
    described_as = dict(zip(blocks[::2], blocks[1::2], strict=True))
    assert list(described_as) == names, described
    for block in described_as.values():
        assert re.search(r"State:\s+Terminated\n\s+Reason:\s+Completed", block), block
        assert re.search(r"Restart Count:\s+0\n", block) and "Image:         busybox:1.28" in block, block
    # Never restarted: several syncs later (a PLEG relist each second) the same exited containers.
    relists = time.monotonic() + 3
    wait_for("three relists", lambda: time.monotonic() > relists)
    later = _ephemeral(kube.inst.pod(DEMO_POD))
    assert {n: (s["containerID"], s["state"]["terminated"]["exitCode"]) for n, s in later.items()} == done
    assert condition(kube.inst.pod(DEMO_POD), "Ready")["status"] == "True"  # the pod itself is untouched


def test_ephemeral_containers_are_refused_as_kube_apiserver_refuses_them(kube: StreamingKube) -> None:
    _demo(kube)
    api = kube.inst.pods
    path = f"/api/v1/namespaces/default/pods/{DEMO_POD}/ephemeralcontainers"
    pod = api.request("GET", path)
    assert pod["kind"] == "Pod" and pod["metadata"]["name"] == DEMO_POD
    smp = "application/strategic-merge-patch+json"
    with pytest.raises(KubeAPIError) as refused:
        bad = {"name": "dbg", "image": BUSYBOX, "ports": [{"containerPort": 80}]}
        api.request("PATCH", path, {"spec": {"ephemeralContainers": [bad]}}, smp)
    assert refused.value.code == 422
    assert "spec.ephemeralContainers[0].ports: Forbidden: cannot be set for an Ephemeral Container" in str(
        refused.value
    )
    with pytest.raises(KubeAPIError) as missing:
        bad = {"name": "dbg", "image": BUSYBOX, "targetContainerName": "nope"}
        api.request("PATCH", path, {"spec": {"ephemeralContainers": [bad]}}, smp)
    assert 'spec.ephemeralContainers[0].targetContainerName: Not found: "nope"' in str(missing.value)
    ok = {"name": "dbg", "image": BUSYBOX, "command": ["sleep", "3600"]}
    added = api.request("PATCH", path, {"spec": {"ephemeralContainers": [ok]}}, smp)
    assert [c["name"] for c in added["spec"]["ephemeralContainers"]] == ["dbg"]
    wait_for(
        "dbg running",
        lambda: "running" in _ephemeral(kube.inst.pod(DEMO_POD)).get("dbg", {}).get("state", {}),
    )
    current = api.request("GET", path)
    for change, words in (
        ([], 'existing ephemeral containers "dbg" may not be removed'),
        ([{**ok, "command": ["sh"]}], 'existing ephemeral containers "dbg" may not be changed'),
    ):
        with pytest.raises(KubeAPIError) as caught:
            api.request("PUT", path, {**current, "spec": {**current["spec"], "ephemeralContainers": change}})
        assert caught.value.code == 422 and words in str(caught.value), caught.value
    # A plain update may not add one; a create may not have one.
    spec = {**current["spec"], "ephemeralContainers": [ok, {**ok, "name": "dbg2"}]}
    with pytest.raises(KubeAPIError) as plain:
        api.request("PUT", f"/api/v1/namespaces/default/pods/{DEMO_POD}", {**current, "spec": spec})
    assert plain.value.code == 422, plain.value
    new = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "with-debug"}, "spec": spec}
    with pytest.raises(KubeAPIError) as create:
        api.request("POST", "/api/v1/namespaces/default/pods", new)
    assert "spec.ephemeralContainers: Forbidden: cannot be set on create" in str(create.value)
    # `kubectl exec` into it works like any running container's.
    out = kube("exec", DEMO_POD, "-c", "dbg", "--", "hostname").stdout
    assert out.strip() == DEMO_POD


def _cgroup_limits(inst: KubeletInstance, container_id: str) -> tuple[str, int]:
    """(cpu limit as "quota period", memory limit in bytes) of the container's cgroup: cpu.max and
    memory.max on cgroup v2, cpu.cfs_quota_us/cpu.cfs_period_us and memory.limit_in_bytes on v1."""
    info = inst.client.container_status(container_id, verbose=True).info
    sandbox_id = json.loads(info["info"])["sandboxID"]
    path = f"{inst.sandbox_info(sandbox_id)['cgroup']}/{container_id}"
    cgroups = Cgroups()
    cpu, memory = cgroups.controller_dir("cpu", path), cgroups.controller_dir("memory", path)
    assert cpu is not None and memory is not None
    if cgroups.version == 2:
        quota, period = (cpu / "cpu.max").read_text().split()
        return f"{quota} {period}", int((memory / "memory.max").read_text())
    quota = (cpu / "cpu.cfs_quota_us").read_text().strip()
    period = (cpu / "cpu.cfs_period_us").read_text().strip()
    return f"{quota} {period}", int((memory / "memory.limit_in_bytes").read_text())


def _resize(
    k: StreamingKube, container_name: str, cpu: str, memory: str
) -> subprocess.CompletedProcess[bytes]:
    both = {"cpu": cpu, "memory": memory}
    patch = {
        "spec": {"containers": [{"name": container_name, "resources": {"requests": both, "limits": both}}]}
    }
    return k.run("patch", "pod", "resize-demo", "--subresource", "resize", "-p", json.dumps(patch))


def test_resize_changes_the_cgroup_without_a_restart(kube: StreamingKube) -> None:
    kube("apply", "-f", kube.write("resize.yaml", RESIZE_POD))
    kube("wait", "--for=condition=Ready", "pod/resize-demo", "--timeout=90s", timeout=120)
    pod = kube.inst.pod("resize-demo")
    before = container(pod, "c")
    container_id = before["containerID"].split("://")[1]
    assert _cgroup_limits(kube.inst, container_id) == ("10000 100000", 64 * 2**20)
    assert before["allocatedResources"] == {"cpu": "100m", "memory": "64Mi"}, before
    assert before["resources"] == {
        "limits": {"cpu": "100m", "memory": "64Mi"},
        "requests": {"cpu": "100m", "memory": "64Mi"},
    }, before
    # A plain update of resources stays refused, as kube-apiserver refuses it.
    plain = kube.run("patch", "pod", "resize-demo", "-p", json.dumps({"spec": {"containers": [
        {"name": "c", "resources": {"limits": {"cpu": "200m"}, "requests": {"cpu": "200m"}}}]}}))  # fmt: skip
    assert plain.returncode != 0 and b"Forbidden" in plain.stderr, plain.stderr
    done = _resize(kube, "c", "200m", "128Mi")
    assert done.returncode == 0, done.stderr
    assert b"pod/resize-demo patched" in done.stdout, done.stdout

    def resized() -> dict[str, Any] | None:
        cs = container(kube.inst.pod("resize-demo"), "c")
        return cs if cs.get("resources", {}).get("limits") == {"cpu": "200m", "memory": "128Mi"} else None

    after = wait_for("the new resources in the status", resized)
    assert _cgroup_limits(kube.inst, container_id) == ("20000 100000", 128 * 2**20)
    assert after["restartCount"] == 0 and after["containerID"] == before["containerID"], after
    assert after["allocatedResources"] == {"cpu": "200m", "memory": "128Mi"}, after
    assert after["resources"]["requests"] == {"cpu": "200m", "memory": "128Mi"}, after
    pod = kube.inst.pod("resize-demo")
    types = [c["type"] for c in pod["status"]["conditions"]]
    assert "PodResizePending" not in types, pod["status"]["conditions"]
    wait_for("no resize in progress", lambda: "PodResizeInProgress" not in [
        c["type"] for c in kube.inst.pod("resize-demo")["status"]["conditions"]])  # fmt: skip
    assert pod["spec"]["containers"][0]["resources"]["limits"] == {"cpu": "200m", "memory": "128Mi"}
    # More than the node has: Infeasible, and nothing changes.
    assert _resize(kube, "c", "100000", "128Mi").returncode == 0
    pending = wait_for(
        "PodResizePending",
        lambda: next((c for c in kube.inst.pod("resize-demo")["status"]["conditions"]
                      if c["type"] == "PodResizePending"), None),
    )  # fmt: skip
    assert pending["reason"] == "Infeasible", pending
    capacity = (os.cpu_count() or 1) * 1000  # the pod's requests are 100000 cpus and the other's 100m
    wanted = f"Node didn't have enough capacity: cpu, requested: 100000100, capacity: {capacity}"
    assert pending["message"] == wanted, pending
    assert _cgroup_limits(kube.inst, container_id) == ("20000 100000", 128 * 2**20)
    assert container(kube.inst.pod("resize-demo"), "c")["allocatedResources"]["cpu"] == "200m"
    events = kube("get", "events", "--field-selector", "involvedObject.name=resize-demo").stdout
    for reason in ("ResizeStarted", "ResizeCompleted", "ResizeInfeasible"):
        assert reason in events, events


def test_resize_restarts_a_container_whose_policy_says_so(kube: StreamingKube) -> None:
    kube("apply", "-f", kube.write("resize.yaml", RESIZE_POD))
    kube("wait", "--for=condition=Ready", "pod/resize-demo", "--timeout=90s", timeout=120)
    before = container(kube.inst.pod("resize-demo"), "restarts")
    assert _resize(kube, "restarts", "100m", "96Mi").returncode == 0

    def restarted() -> dict[str, Any] | None:
        cs = container(kube.inst.pod("resize-demo"), "restarts")
        new = cs["containerID"] != before["containerID"]
        return cs if new and cs["restartCount"] == 1 and "running" in cs["state"] else None

    after = wait_for("restarts restarted", restarted)
    new_id = after["containerID"].split("://")[1]
    assert _cgroup_limits(kube.inst, new_id) == ("10000 100000", 96 * 2**20)
    assert container(kube.inst.pod("resize-demo"), "c")["restartCount"] == 0


def test_a_memory_limit_below_usage_waits_in_progress_until_it_fits(kube: StreamingKube) -> None:
    """The kubelet's best-effort check of 1.34+: a memory limit is not set below what the container uses
    (here 40 MiB of its own tmpfs pages in /dev/shm); the resize stays in progress, with reason Error, and
    is made once the usage is down."""
    kube("apply", "-f", kube.write("resize.yaml", RESIZE_POD))
    kube("wait", "--for=condition=Ready", "pod/resize-demo", "--timeout=90s", timeout=120)
    container_id = container(kube.inst.pod("resize-demo"), "c")["containerID"].split("://")[1]
    fill = [
        "exec",
        "resize-demo",
        "-c",
        "c",
        "--",
        "dd",
        "if=/dev/zero",
        "of=/dev/shm/fill",
        "bs=1M",
        "count=40",
    ]
    kube(*fill)
    assert _resize(kube, "c", "100m", "32Mi").returncode == 0

    def in_progress() -> dict[str, Any] | None:
        conditions = kube.inst.pod("resize-demo")["status"]["conditions"]
        return next((c for c in conditions if c["type"] == "PodResizeInProgress" and c.get("reason")), None)

    blocked = wait_for("PodResizeInProgress with an error", in_progress)
    assert blocked["reason"] == "Error", blocked
    assert re.match(rf"attempting to set container c's memory limit \({32 * 2**20}\) below its current usage \(\d+\)$",
                    blocked["message"]), blocked  # fmt: skip
    assert _cgroup_limits(kube.inst, container_id) == ("10000 100000", 64 * 2**20)
    kube("exec", "resize-demo", "-c", "c", "--", "rm", "/dev/shm/fill")
    wait_for(
        "the smaller limit", lambda: _cgroup_limits(kube.inst, container_id)[1] == 32 * 2**20, timeout=30
    )
    wait_for("no resize in progress", lambda: "PodResizeInProgress" not in [
        c["type"] for c in kube.inst.pod("resize-demo")["status"]["conditions"]])  # fmt: skip
    assert container(kube.inst.pod("resize-demo"), "c")["restartCount"] == 0


def test_without_a_shared_pid_namespace_the_target_is_whose_processes_it_sees(kube: StreamingKube) -> None:
    """CRI pid mode TARGET for real: in a pod whose containers each have their own PID namespace, the debug
    container sees its target's processes (the target's command as PID 1), not the other container's;
    without a target it sees only its own."""
    kube("apply", "-f", kube.write("resize.yaml", RESIZE_POD))
    kube("wait", "--for=condition=Ready", "pod/resize-demo", "--timeout=90s", timeout=120)

    def ps(*target: str) -> dict[int, str]:
        # ps after a second: kubectl attaches once the container runs, and output made before it attached
        # (a `ps ax` that was quicker than kubectl) would be missed
        command = ("--", "sh", "-c", "sleep 1; ps ax")
        out = kube("debug", "-i", "resize-demo", f"--image={BUSYBOX}", *target, *command).stdout
        rows = [line.split(None, 2) for line in out.splitlines()]
        return {int(r[0]): r[2] for r in rows if len(r) == 3 and r[0].isdigit()}

    seen = ps("--target=c")
    assert seen[1] == "sleep 3600" and not any("trap" in cmd for cmd in seen.values()), seen
    seen = ps("--target=restarts")
    assert seen[1].startswith("sh -c trap 'exit 0' TERM") and "sleep 3600" in seen.values(), seen
    seen = ps()
    assert list(seen) == [1] and seen[1].endswith("sh -c sleep 1; ps ax"), (
        seen
    )  # sh has exec'd ps: "{ps} sh -c..."


def test_a_resize_beside_a_pod_that_takes_the_room_is_deferred_until_it_is_gone(kube: StreamingKube) -> None:
    capacity = (os.cpu_count() or 1) * 1000
    hog = f"""\
apiVersion: v1
kind: Pod
metadata: {{name: hog}}
spec:
  containers:
  - name: hog
    image: busybox:1.28
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
    resources:
      requests: {{cpu: {capacity - 300}m}}
"""
    kube("apply", "-f", kube.write("resize.yaml", RESIZE_POD), "-f", kube.write("hog.yaml", hog))
    kube("wait", "--for=condition=Ready", "pod/resize-demo", "pod/hog", "--timeout=90s", timeout=120)
    wait_for("hog's allocation", lambda: container(kube.inst.pod("hog"), "hog").get("allocatedResources"))
    container_id = container(kube.inst.pod("resize-demo"), "c")["containerID"].split("://")[1]
    assert _resize(kube, "c", "300m", "64Mi").returncode == 0  # the pod's 200m become 400m: 100m are left

    def pending() -> dict[str, Any] | None:
        conditions = kube.inst.pod("resize-demo")["status"]["conditions"]
        return next((c for c in conditions if c["type"] == "PodResizePending"), None)

    deferred = wait_for("PodResizePending", pending)
    assert (deferred["reason"], deferred["message"]) == (
        "Deferred",
        f"Node didn't have enough resource: cpu, requested: 400, used: {capacity - 300}, capacity: {capacity}",
    )
    assert _cgroup_limits(kube.inst, container_id)[0] == "10000 100000"
    kube("delete", "pod", "hog", "--wait=true", timeout=60)
    wait_for("the deferred resize made", lambda: _cgroup_limits(kube.inst, container_id)[0] == "30000 100000")
    wait_for("no resize pending", lambda: pending() is None)
    assert container(kube.inst.pod("resize-demo"), "c")["restartCount"] == 0
