"""`hostUsers: false` as a Kubernetes user writes it: the pod manager gives each such Pod its own 65536 host
ids (a multiple of 65536, never shared, as the kubelet does), the pod's root is root inside and an
unprivileged id on the host, and the image's files are owned by root inside. One daemon with the pod
manager (root /tmp/ph-usp-*, bridge phusp0, subnet 10.231.14.64/26); nothing may be left.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.instance import OrphanReaper
from tests.integration.test_kubelet_pods import KubeletInstance, is_ready, kubelet_instance
from tests.leaks import find_leaks
from tests.wait import wait_for

pytestmark = pytest.mark.root

BRIDGE, SUBNET = "phusp0", "10.231.14.64/26"

POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  hostUsers: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: localhost/podhost/busybox:latest
    command: ["sleep", "3600"]
    volumeMounts:
    - {{name: data, mountPath: /data}}
  volumes:
  - {{name: data, emptyDir: {{}}}}
"""


@pytest.fixture(scope="module")
def kube(orphan_reaper: OrphanReaper) -> Iterator[KubeletInstance]:
    yield from kubelet_instance("ph-usp", BRIDGE, SUBNET)


def test_pods_without_host_users_get_their_own_ids(kube: KubeletInstance) -> None:
    for name in ("userns-a", "userns-b"):
        kube.apply(POD.format(name=name))
    host_ids = {}
    for name in ("userns-a", "userns-b"):
        wait_for("pod Ready", lambda n=name: is_ready(p := kube.pod(n)) and p)  # type: ignore[misc]

        def run(*cmd: str, pod: str = name) -> str:
            return kube.kubectl("exec", pod, "-c", "c", "--", *cmd).stdout

        inside, outside, length = (int(x) for x in run("cat", "/proc/self/uid_map").split())
        assert (inside, length) == (0, 65536) and outside % 65536 == 0 and outside >= 65536
        host_ids[name] = outside
        assert run("id", "-u").strip() == "0"  # root inside ...
        assert run("stat", "-c", "%u:%g", "/bin/busybox").strip() == "0:0"  # ... owning the image
        # ... and its volumes: an emptyDir is the pod root's to write in.
        assert run("sh", "-c", "touch /data/x && stat -c %u:%g /data /data/x").split() == ["0:0", "0:0"]
        stored = json.loads(
            (kube.root / "state" / "kubelet" / "desired" / "pods" / f"default_{name}.json").read_text()
        )
        # ... and the ids are remembered for the next daemon start.
        assert stored["manifest"]["metadata"]["annotations"]["podhost.io/userns-host-id"] == str(outside)
    assert host_ids["userns-a"] != host_ids["userns-b"]  # never shared between pods

    kube.delete_everything()
    wait_for("pods gone", lambda: not kube.pods.get("pods"), timeout=30)
    problems = find_leaks(kube.root, kube.bridge, kube.config.cgroup_parent)
    assert not problems, "leaked: " + "; ".join(problems) + "\n" + kube.log_tail(20)


def test_host_users_false_with_host_network_is_refused(kube: KubeletInstance) -> None:
    doc = POD.format(name="userns-hostnet").replace(
        "  hostUsers: false\n", "  hostUsers: false\n  hostNetwork: true\n"
    )
    path = kube.root / "bad.yaml"
    path.write_text(doc)
    proc = kube.kubectl("apply", "-f", str(path), check=False)
    assert proc.returncode != 0 and "spec.hostUsers" in proc.stderr
    assert not kube.pods.get("pods")
