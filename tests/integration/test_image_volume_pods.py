"""Image volumes as a Kubernetes user sees them: a Pod with `volumes[].image`, mounted by the pod manager
through CRI `Mount.image`, read-only, one mount with `subPath`. One daemon with the pod manager (root
/tmp/ph7-kiv-*, bridge ph7kiv0, subnet 10.231.7.128/25); nothing may be left after the pod is deleted."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.instance import OrphanReaper
from tests.integration.test_kubelet_pods import (
    KubeletInstance,
    container,
    is_ready,
    kubelet_instance,
)
from tests.leaks import find_leaks
from tests.wait import wait_for

pytestmark = pytest.mark.root

BRIDGE, SUBNET = "ph7kiv0", "10.231.7.128/25"

POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: image-volume
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: shell
    image: localhost/podhost/busybox:latest
    command: ["sleep", "3600"]
    volumeMounts:
    - {name: tools, mountPath: /tools}
    - {name: tools, mountPath: /tools-etc, subPath: etc}
  volumes:
  - name: tools
    image: {reference: "docker.io/library/busybox:1.28", pullPolicy: IfNotPresent}
"""


@pytest.fixture
def kube(orphan_reaper: OrphanReaper) -> Iterator[KubeletInstance]:
    yield from kubelet_instance("ph7-kiv", BRIDGE, SUBNET)


def test_a_pod_with_an_image_volume_and_a_sub_path(kube: KubeletInstance) -> None:
    kube.apply(POD)
    pod = wait_for("pod Ready", lambda: is_ready(p := kube.pod("image-volume")) and p)
    assert container(pod, "shell")["restartCount"] == 0

    def run(*cmd: str) -> tuple[int, str, str]:
        proc = kube.kubectl("exec", "image-volume", "-c", "shell", "--", *cmd, check=False)
        return proc.returncode, proc.stdout, proc.stderr

    assert run("ls", "/tools/bin/busybox")[0] == 0
    assert run("/tools/bin/ls", "/tools-etc")[1].split() == ["group", "passwd"]  # only the image's etc
    code, _, err = run("touch", "/tools/new")
    assert code != 0 and "Read-only file system" in err

    (listed,) = kube.client.list_containers()
    mounts = {m.container_path: m for m in kube.client.container_status(listed.id).status.mounts}
    image_id = kube.client.image_status("docker.io/library/busybox:1.28").image.id
    assert mounts["/tools-etc"].image.image_ref == image_id and mounts["/tools-etc"].image_sub_path == "etc"

    kube.delete_everything()
    wait_for("pod gone", lambda: not kube.pods.get("pods"), timeout=30)
    problems = find_leaks(kube.root, kube.bridge, kube.config.cgroup_parent)
    assert not problems, "leaked: " + "; ".join(problems) + "\n" + kube.log_tail(20)
