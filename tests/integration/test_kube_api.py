"""The real kubectl against a real daemon's Kubernetes API (issue 11): the article's demo, strict validation,
the pod update rule, logs, tables, watch, the node, and access by client certificate only.

One daemon (root /tmp/ph-api-*, bridge phapi0, subnet 10.231.20.0/24, CrashLoopBackOff base 1 s) serves
the module; kubectl runs with the kubeconfig the daemon wrote and a HOME of its own (its discovery
cache stays in the instance's root). After each test the pods and services are deleted and the instance
is checked for leaks.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import ssl
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.instance import OrphanReaper
from tests.integration.test_kubelet_pods import DEMO, KubeletInstance, Watch, kubelet_instance
from tests.leaks import find_leaks
from tests.wait import wait_for

pytestmark = pytest.mark.root

BRIDGE, SUBNET = "phapi0", "10.231.20.0/24"
KUBECTL = shutil.which("kubectl")
_REPO = str(Path(__file__).resolve().parents[2])


class Kube:
    """kubectl (`binary`: the one on PATH unless given) with the instance's kubeconfig."""

    def __init__(self, inst: KubeletInstance, binary: str | None = None) -> None:
        self.inst, self.binary = inst, binary or KUBECTL
        self.kubeconfig = inst.config.state_dir / "kubeconfig"
        self.home = inst.root / "home"
        self.home.mkdir(exist_ok=True)

    def env(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.home)}

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 90
    ) -> subprocess.CompletedProcess[str]:
        assert self.binary is not None
        proc = subprocess.run(
            [self.binary, "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(),
            cwd=_REPO,
            stdin=subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}\n"
                + self.inst.log_tail(20)
            )
        return proc

    def popen(self, *args: str) -> subprocess.Popen[str]:
        assert self.binary is not None
        return subprocess.Popen(
            [self.binary, "--kubeconfig", str(self.kubeconfig), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env(),
            stdin=subprocess.DEVNULL,
        )

    def minor(self) -> int:
        """The client's minor version (20 for Debian's kubernetes-client)."""
        out = self("version", "--client", "-o", "json").stdout
        return int(re.sub(r"\D", "", json.loads(out)["clientVersion"]["minor"]))

    @property
    def url(self) -> str:
        text = self.kubeconfig.read_text()
        found = re.search(r"server: (https://\S+)", text)
        assert found, text
        return found.group(1)

    def write(self, name: str, text: str) -> str:
        path = self.inst.root / name
        path.write_text(text)
        return str(path)


def kubectl_instance(prefix: str, bridge: str, subnet: str) -> Iterator[KubeletInstance]:
    """A daemon for a module of kubectl tests (CrashLoopBackOff base 1 s), skipped without a kubectl."""
    if KUBECTL is None:
        pytest.skip("kubectl is not installed")

    def flags(inst: KubeletInstance) -> None:
        inst.extra = ["--restart-backoff", "1"]

    yield from kubelet_instance(prefix, bridge, subnet, flags)


@pytest.fixture(scope="module")
def api_instance(orphan_reaper: OrphanReaper) -> Iterator[KubeletInstance]:
    yield from kubectl_instance("ph-api", BRIDGE, SUBNET)


K = TypeVar("K", bound=Kube)


def kube_checked(inst: KubeletInstance, k: K) -> Iterator[K]:
    """`k` once the API answers it; afterwards every pod and service goes through the API, and nothing of
    them may be left behind (for the function fixtures of the modules that drive kubectl)."""
    wait_for("the kubeconfig", lambda: k.kubeconfig.exists() and k("version", check=False).returncode == 0)
    yield k
    inst.delete_everything()
    wait_for("pods gone", lambda: not inst.pods.get("pods"), timeout=60)
    assert inst.client.list_pod_sandbox() == []
    problems = find_leaks(inst.root, inst.bridge, inst.config.cgroup_parent)
    assert not problems, "leaked: " + "; ".join(problems) + "\n" + inst.log_tail(20)


@pytest.fixture
def kube(api_instance: KubeletInstance) -> Iterator[Kube]:
    yield from kube_checked(api_instance, Kube(api_instance))


def pods_line(k: Kube, name: str) -> str:
    out = k("get", "pods", check=False).stdout
    return next((line for line in out.splitlines() if line.startswith(name + " ")), "")


def test_unauthenticated_requests_get_401_and_the_daemon_keeps_serving(kube: Kube) -> None:
    ctx = ssl.create_default_context(cafile=str(kube.inst.config.state_dir / "kube-api" / "ca.crt"))
    for path in ("/api/v1/pods", "/version", "/openapi/v3"):
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(kube.url + path, context=ctx, timeout=10)
        assert caught.value.code == 401
        status = json.loads(caught.value.read())
        assert (status["kind"], status["reason"], status["code"]) == ("Status", "Unauthorized", 401)
    curl = subprocess.run(
        [
            "curl",
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            kube.url + "/api/v1/namespaces/default/pods",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert curl.stdout == "401"
    assert kube.inst.daemon is not None and kube.inst.daemon.poll() is None
    version = kube("version").stdout
    assert "Server Version: v1.36" in version or 'GitVersion:"v1.36.0+podhost"' in version, version
    # nothing but the configured address listens
    host = kube.url.split("//")[1].rsplit(":", 1)[0]
    assert host == "127.0.0.1"


def test_kubeconfig_is_private_and_printed_by_podhost(kube: Kube) -> None:
    state = kube.inst.config.state_dir
    for path in [kube.kubeconfig, *(state / "kube-api").iterdir()]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    out = subprocess.run(
        [sys.executable, "-m", "podhost.cli.main", "--root", str(kube.inst.root), "kubeconfig"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=_REPO,
    )
    assert out.returncode == 0, out.stderr
    assert "current-context: podhost" in out.stdout and kube.url in out.stdout


def test_the_articles_demo_with_the_real_kubectl(kube: Kube) -> None:
    assert kube("apply", "-f", str(DEMO)).stdout.strip() == "pod/shared-namespace-demo created"
    line = wait_for(
        "2/2 Running",
        lambda: "2/2" in (ln := pods_line(kube, "shared-namespace-demo")) and "Running" in ln and ln,
    )
    assert re.match(r"shared-namespace-demo\s+2/2\s+Running\s+0\s+\d+s$", line), line
    wide = kube("get", "pods", "-o", "wide").stdout
    header = wide.splitlines()[0].split()
    assert header == [
        "NAME",
        "READY",
        "STATUS",
        "RESTARTS",
        "AGE",
        "IP",
        "NODE",
        "NOMINATED",
        "NODE",
        "READINESS",
        "GATES",
    ]
    assert re.search(
        r"shared-namespace-demo\s+2/2\s+Running\s+0\s+\S+\s+10\.231\.20\.\d+\s+\S+\s+<none>\s+<none>", wide
    )

    pod = json.loads(kube("get", "pod", "shared-namespace-demo", "-o", "json").stdout)
    assert (
        pod["metadata"]["uid"] and pod["metadata"]["resourceVersion"] and pod["metadata"]["creationTimestamp"]
    )
    conditions = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert conditions == {
        "PodScheduled": "True",
        "PodReadyToStartContainers": "True",
        "Initialized": "True",
        "ContainersReady": "True",
        "Ready": "True",
    }
    assert pod["status"]["hostIP"] == "10.231.20.1" and pod["status"]["podIP"].startswith("10.231.20.")
    statuses = {c["name"]: c for c in pod["status"]["containerStatuses"]}
    assert statuses["shell"]["containerID"].startswith("podhost://") and statuses["shell"]["started"]
    assert "running" in statuses["nginx"]["state"] and statuses["nginx"]["restartCount"] == 0
    assert "sandbox" not in pod["status"]
    assert "shared-namespace-demo" in kube("get", "pod", "shared-namespace-demo", "-o", "yaml").stdout
    assert kube("get", "pods", "-o", "name").stdout.strip() == "pod/shared-namespace-demo"
    ip = kube("get", "pods", "-o", "jsonpath={.items[0].status.podIP}").stdout
    assert ip == pod["status"]["podIP"]

    described = kube("describe", "pod", "shared-namespace-demo").stdout
    assert re.search(r"Node:\s+\S+/10\.231\.20\.1", described), described
    assert re.search(r"PodReadyToStartContainers\s+True", described), described
    assert re.search(r"Normal\s+Started\s+\S+\s+kubelet\s+Started container shell", described), described

    # re-applying the same file changes nothing; a typo'd field is refused naming it; an immutable
    # field's change gets the API server's words
    assert kube("apply", "-f", str(DEMO)).stdout.strip() == "pod/shared-namespace-demo unchanged"
    typo = kube.write("typo.yaml", DEMO.read_text().replace("command:", "comand:"))
    refused = kube("apply", "-f", typo, check=False)
    assert refused.returncode != 0
    if "error validating data" in refused.stderr:  # kubectl before 1.25 validates against /openapi/v2
        assert 'unknown field "comand" in io.k8s.api.core.v1.Container' in refused.stderr, refused.stderr
    else:
        assert 'strict decoding error: unknown field "spec.containers[1].comand"' in refused.stderr, (
            refused.stderr
        )
    changed = kube.write("changed.yaml", DEMO.read_text().replace('"3600"', '"3601"'))
    forbidden = kube("apply", "-f", changed, check=False)
    assert forbidden.returncode != 0
    assert "Forbidden: pod updates may not change fields other than" in forbidden.stderr, forbidden.stderr
    assert "sleep" in json.dumps(kube("get", "pod", "shared-namespace-demo", "-o", "json").stdout)

    # kubectl delete waits until the pod is gone
    started = time.monotonic()
    assert kube("delete", "-f", str(DEMO)).stdout.strip() == 'pod "shared-namespace-demo" deleted'
    gone = kube("get", "pod", "shared-namespace-demo", check=False)
    assert gone.returncode != 0 and 'pods "shared-namespace-demo" not found' in gone.stderr, gone.stderr
    assert time.monotonic() - started < 60
    assert kube.inst.client.list_pod_sandbox() == []


CRASHER = """\
apiVersion: v1
kind: Pod
metadata:
  name: crasher
  annotations:
    kubectl.kubernetes.io/default-container: main
spec:
  containers:
  - name: main
    image: localhost/podhost/busybox:latest
    command: ["sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 3"]
  - name: side
    image: localhost/podhost/busybox:latest
    command: ["sleep", "3600"]
"""


def test_logs_and_crash_loop_as_kubectl_shows_them(kube: Kube) -> None:
    kube("apply", "-f", kube.write("crasher.yaml", CRASHER))
    line = wait_for(
        "a crash loop with restarts",
        lambda: (
            re.search(
                r"crasher\s+1/2\s+(CrashLoopBackOff|Error)\s+\d+ \(\d+s ago\)",
                ln := pods_line(kube, "crasher"),
            )
            and ln
        ),
        timeout=60,
    )
    assert re.search(r"\d+ \(\d+s ago\)", line)
    # the default-container annotation picks `main` (kubectl 1.21+; older ones need -c); stderr lines come
    # on stdout, as kubectl shows them
    logs = kube("logs", "crasher", *(() if kube.minor() >= 21 else ("-c", "main")))
    assert logs.stdout.splitlines() == ["to-stdout", "to-stderr"], logs
    assert kube("logs", "crasher", "-c", "main", "--tail", "1").stdout == "to-stderr\n"
    previous = kube("logs", "crasher", "-c", "main", "--previous", check=False)
    assert previous.returncode == 0 and "to-stdout" in previous.stdout, previous.stderr
    wrong = kube("logs", "crasher", "-c", "nope", check=False)
    assert wrong.returncode != 0 and "nope" in wrong.stderr


def as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    """`argv` run as user and group 65534 (nobody), no supplementary groups, HOME in /tmp."""
    setpriv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/tmp"}
    return subprocess.run(
        [*setpriv, *argv], capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL
    )


def test_a_user_without_the_kubeconfig_is_refused(kube: Kube) -> None:
    """A non-root user cannot read the instance's kubeconfig (0600, root's), and without its client
    certificate the API answers 401 to kubectl too; podhost's own pass-through says so without a
    traceback; the daemon keeps serving."""
    assert KUBECTL is not None
    assert stat.S_IMODE(kube.kubeconfig.stat().st_mode) == 0o600
    unreadable = as_nobody(KUBECTL, "--kubeconfig", str(kube.kubeconfig), "get", "pods")
    assert unreadable.returncode != 0 and "permission denied" in unreadable.stderr, unreadable.stderr
    # a guessed bearer token is no credential (without any, kubectl would prompt for a user name)
    server = ("--server", kube.url, "--insecure-skip-tls-verify", "--token", "guessed")
    anonymous = as_nobody(KUBECTL, *server, "get", "pods")
    assert anonymous.returncode != 0 and "You must be logged in" in anonymous.stderr, anonymous.stderr
    root = str(kube.inst.root)
    passthrough = as_nobody(
        sys.executable, "-m", "podhost.cli.main", "--root", root, "kubectl", "get", "pods"
    )
    assert passthrough.returncode != 0, passthrough.stdout
    assert "Traceback" not in passthrough.stderr and "kubeconfig" in passthrough.stderr, passthrough.stderr
    assert kube.inst.daemon is not None and kube.inst.daemon.poll() is None
    assert kube("get", "pods", "-A").returncode == 0


def test_node_namespaces_and_events(kube: Kube) -> None:
    nodes = kube("get", "nodes", "-o", "wide").stdout.splitlines()
    assert nodes[0].split()[:5] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert re.search(
        r"\sReady\s+control-plane\s+\S+\s+v1\.36\.0\s+10\.231\.20\.1\s+<none>\s+.*podhost://", nodes[1]
    ), nodes
    node = json.loads(kube("get", "nodes", "-o", "json").stdout)["items"][0]
    assert int(node["status"]["capacity"]["cpu"]) == os.cpu_count()
    assert node["status"]["allocatable"]["memory"].endswith("Ki")
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("podhost://")
    assert re.search(r"^default\s+Active", kube("get", "namespaces").stdout, re.M)
    kube("apply", "-f", kube.write("ev.yaml", CRASHER.replace("crasher", "evented")))
    wait_for(
        "events of the pod",
        lambda: (
            "Started container side"
            in kube("get", "events", "--field-selector", "involvedObject.name=evented").stdout
        ),
    )


def test_watch_shows_the_pod_come_and_go(kube: Kube) -> None:
    watch = Watch(kube.popen("get", "pods", "--watch", "--output-watch-events", "--request-timeout", "0"))
    try:
        kube("apply", "-f", kube.write("w.yaml", CRASHER.replace("crasher", "watched")))
        # Listed or watched, the pod shows as ADDED; the watch goes on from the list's resourceVersion,
        # so every later change reaches it.
        wait_for("ADDED in the watch", lambda: re.search(r"^ADDED\s+watched\s", watch.text, re.M), 30)
        wait_for(
            "Running",
            lambda: "2/2" in pods_line(kube, "watched") or "1/2" in pods_line(kube, "watched"),
            timeout=30,
        )
        kube("delete", "pod", "watched", "--grace-period", "1")
        wait_for("DELETED in the watch", lambda: re.search(r"^DELETED\s+watched\s", watch.text, re.M), 30)
    finally:
        out = watch.stop()
    assert re.search(r"^MODIFIED\s+watched\s.*Terminating", out, re.M), out
    assert re.search(r"^DELETED\s+watched\s", out, re.M), out


def test_events_watch(kube: Kube) -> None:
    """`kubectl get events --watch`: the list, then each new event as it is recorded."""
    watch = Watch(kube.popen("get", "events", "--watch", "--request-timeout", "0"))
    try:
        kube("apply", "-f", kube.write("ev-w.yaml", CRASHER.replace("crasher", "evwatched")))
        wait_for(
            "the pod's events in the watch",
            lambda: re.search(r"\sNormal\s+Started\s+pod/evwatched\s+Started container side", watch.text),
            timeout=30,
        )
        wait_for(
            "a later event (the crash loop's) in the watch",
            lambda: re.search(r"\sWarning\s+BackOff\s+pod/evwatched\s", watch.text),
            timeout=30,
        )
    finally:
        out = watch.stop()
    assert out.splitlines()[0].split()[:5] == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT"], out


def test_watch_of_one_named_pod_prints_every_change(kube: Kube) -> None:
    """`kubectl get pod NAME -w -o jsonpath=...` watches with fieldSelector=metadata.name=NAME from
    resourceVersion 0: the object, then one line per change (the synthetic ADDED is kubectl's to skip)."""
    kube("apply", "-f", kube.write("one.yaml", CRASHER.replace("crasher", "one")))
    template = '{.metadata.name} {.metadata.labels.step}{"\\n"}'
    watch = Watch(
        kube.popen("get", "pod", "one", "-w", "-o", f"jsonpath={template}", "--request-timeout", "0")
    )
    # without a newline in the template kubectl prints the objects back to back on one line (as against
    # kube-apiserver): the changes are all there, only a line reader sees nothing until the end
    bare = Watch(
        kube.popen(
            "get", "pod", "one", "-w", "-o", "jsonpath={.metadata.labels.step}", "--request-timeout", "0"
        )
    )
    try:
        wait_for("the object", lambda: len(watch.lines) >= 1, timeout=30)
        for step in ("1", "2", "3"):
            kube("label", "pod", "one", f"step={step}", "--overwrite")
            wait_for(f"step {step} in the watch", lambda s=step: f"one {s}" in watch.lines, timeout=30)
    finally:
        out, run_together = watch.stop(), bare.stop()
    assert out.splitlines()[0].strip() == "one", out
    assert re.fullmatch(r"1+2+3+", run_together), run_together


SSA = """\
apiVersion: v1
kind: Pod
metadata:
  name: NAME
  labels:
    tier: TIER
spec:
  containers:
  - name: main
    image: localhost/podhost/busybox:latest
    command: ["sleep", "3600"]
"""


def ssa_pod(name: str, tier: str) -> str:
    return SSA.replace("NAME", name).replace("TIER", tier)


def managers(kube: Kube, name: str) -> dict[str, dict[str, Any]]:
    shown = kube("get", "pod", name, "-o", "json", "--show-managed-fields", check=False)
    if "unknown flag" in shown.stderr:  # before kubectl 1.21 -o json showed them always
        shown = kube("get", "pod", name, "-o", "json")
    pod = json.loads(shown.stdout)
    return {m["manager"]: m for m in pod["metadata"].get("managedFields", [])}


def test_server_side_apply_field_managers_and_conflicts(kube: Kube) -> None:
    """`kubectl apply --server-side`: the fields are kubectl's (managedFields), re-applying is fine,
    another manager changing one of them gets kube-apiserver's conflict and kubectl's advice, and
    `--force-conflicts` takes the field over."""
    path = kube.write("ssa.yaml", ssa_pod("ssa", "a"))
    assert kube("apply", "--server-side", "-f", path).stdout.strip() == "pod/ssa serverside-applied"
    owned = managers(kube, "ssa")["kubectl"]
    assert owned["operation"] == "Apply" and owned["fieldsType"] == "FieldsV1"
    assert "f:tier" in owned["fieldsV1"]["f:metadata"]["f:labels"]
    assert 'k:{"name":"main"}' in owned["fieldsV1"]["f:spec"]["f:containers"]
    assert kube("apply", "--server-side", "-f", path).stdout.strip() == "pod/ssa serverside-applied"
    wait_for("ssa Running", lambda: "1/1" in pods_line(kube, "ssa"), timeout=30)

    other = kube.write("ssa-b.yaml", ssa_pod("ssa", "b"))
    refused = kube("apply", "--server-side", "--field-manager", "other", "-f", other, check=False)
    assert refused.returncode != 0
    assert 'Apply failed with 1 conflict: conflict with "kubectl": .metadata.labels.tier' in refused.stderr, (
        refused.stderr
    )
    assert "--force-conflicts" in refused.stderr, refused.stderr
    forced = kube("apply", "--server-side", "--field-manager", "other", "--force-conflicts", "-f", other)
    assert forced.stdout.strip() == "pod/ssa serverside-applied"
    assert kube("get", "pod", "ssa", "-o", "jsonpath={.metadata.labels.tier}").stdout == "b"
    owners = managers(kube, "ssa")
    assert "f:tier" in owners["other"]["fieldsV1"]["f:metadata"]["f:labels"]
    assert "f:labels" not in owners["kubectl"]["fieldsV1"].get("f:metadata", {}), owners

    # the server's strict validation and the pod update rule hold for an apply as for any write
    typo = kube(
        "apply",
        "--server-side",
        "-f",
        kube.write("ssa-t.yaml", ssa_pod("ssa", "b").replace("command:", "comand:")),
        check=False,
    )
    assert typo.returncode != 0 and "comand" in typo.stderr, typo.stderr
    if "error validating data" not in typo.stderr:  # kubectl before 1.25 validates against /openapi/v2
        assert (
            "failed to create typed patch object (default/ssa; /v1, Kind=Pod): "
            ".spec.containers[0].comand: field not declared in schema"
        ) in typo.stderr, typo.stderr
    changed = kube.write("ssa-c.yaml", ssa_pod("ssa", "b").replace('"3600"', '"3601"'))
    forbidden = kube("apply", "--server-side", "--force-conflicts", "-f", changed, check=False)
    assert "Forbidden: pod updates may not change fields other than" in forbidden.stderr, forbidden.stderr


def test_server_side_apply_over_a_client_side_applied_pod(kube: Kube) -> None:
    """A pod made by `kubectl apply` (client-side: manager kubectl-client-side-apply, operation Update) is
    taken over by `kubectl apply --server-side`: kubectl moves the old manager's fields to its own
    (a JSON patch of managedFields), then applies without a conflict."""
    kube("apply", "-f", kube.write("csa.yaml", ssa_pod("csa", "a")))
    assert managers(kube, "csa")["kubectl-client-side-apply"]["operation"] == "Update"
    applied = kube("apply", "--server-side", "-f", kube.write("csa-b.yaml", ssa_pod("csa", "b")))
    assert applied.stdout.strip() == "pod/csa serverside-applied"
    assert kube("get", "pod", "csa", "-o", "jsonpath={.metadata.labels.tier}").stdout == "b"
    assert managers(kube, "csa")["kubectl"]["operation"] == "Apply"


def old_kubectl() -> str | None:
    """A kubectl that fetches /openapi/v2 (before 1.24; Debian's kubernetes-client is 1.20):
    $PODHOST_OLD_KUBECTL, the one setup unpacks under .tools/, or the one on PATH or in /usr/bin when it
    is that old."""
    unpacked = str(Path(_REPO) / ".tools" / "kubernetes-client" / "usr" / "bin" / "kubectl")
    for candidate in (os.environ.get("PODHOST_OLD_KUBECTL"), unpacked, KUBECTL, "/usr/bin/kubectl"):
        if not candidate or not os.access(candidate, os.X_OK):
            continue
        out = subprocess.run(
            [candidate, "version", "--client", "-o", "json"], capture_output=True, text=True, timeout=30
        )
        try:
            minor = int(re.sub(r"\D", "", json.loads(out.stdout)["clientVersion"]["minor"]))
        except (ValueError, KeyError):
            continue
        if minor < 24:
            return candidate
    return None


def test_the_articles_demo_with_an_older_kubectl(kube: Kube) -> None:
    """The same demo with kubectl 1.20 (Debian's kubernetes-client): it validates against /openapi/v2
    (gnostic protobuf), prints tables, and execs over SPDY/3.1."""
    binary = old_kubectl()
    if binary is None:
        pytest.skip("no kubectl older than 1.24 (set PODHOST_OLD_KUBECTL to Debian's kubernetes-client)")
    old = Kube(kube.inst, binary)
    old.home = kube.inst.root / "home-old"  # a discovery cache of its own
    old.home.mkdir(exist_ok=True)
    assert old("apply", "-f", str(DEMO)).stdout.strip() == "pod/shared-namespace-demo created"
    wait_for(
        "2/2 Running",
        lambda: re.match(
            r"shared-namespace-demo\s+2/2\s+Running\s+0\s", pods_line(old, "shared-namespace-demo")
        ),
        timeout=60,
    )
    ps = old("exec", "shared-namespace-demo", "-c", "shell", "--", "ps", "ax").stdout
    assert re.search(r"^\s*1\s+\S+\s+/pause$", ps, re.M), ps
    assert "sleep 3600" in ps, ps  # the shell container; its neighbour in the shared PID namespace too
    assert len(ps.splitlines()) >= 4, ps
    assert old("apply", "-f", str(DEMO)).stdout.strip() == "pod/shared-namespace-demo unchanged"
    typo = old(
        "apply",
        "-f",
        old.write("typo-old.yaml", DEMO.read_text().replace("command:", "comand:")),
        check=False,
    )
    assert typo.returncode != 0 and 'unknown field "comand"' in typo.stderr, typo.stderr
    assert "Normal" in old("describe", "pod", "shared-namespace-demo").stdout
    old("logs", "shared-namespace-demo", "-c", "nginx")
    explained = old("explain", "pod.spec.containers.image").stdout
    assert "FIELD:    image <string>" in explained, explained
    deleted = old("delete", "-f", str(DEMO)).stdout.strip()
    assert deleted == 'pod "shared-namespace-demo" deleted'
    gone = old("get", "pod", "shared-namespace-demo", check=False)
    assert 'pods "shared-namespace-demo" not found' in gone.stderr, gone.stderr
