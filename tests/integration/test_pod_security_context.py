"""A Pod's spec.securityContext as a Kubernetes user writes it: runAsUser, supplementalGroups, fsGroup and
supplementalGroupsPolicy reach every container through the pod manager, as the kubelet passes them.

The image puts its user (1000) in group 50000 in its /etc/group (critest's predefined-group image). Under
Merge the container's processes carry that group too; under Strict only what the Pod says. One daemon
with the pod manager (root /tmp/ph-psc-*, bridge phpsc0, subnet 10.231.14.0/26); nothing may be left.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.instance import OrphanReaper
from tests.integration.test_kubelet_pods import KubeletInstance, is_ready, kubelet_instance
from tests.integration.test_security_context import (
    IMAGE_GID,
    PREDEFINED_GROUP_IMAGE,
    SUPPLEMENTAL,
    UID,
    with_predefined_group_image,
)
from tests.leaks import find_leaks
from tests.wait import wait_for

pytestmark = pytest.mark.root

BRIDGE, SUBNET = "phpsc0", "10.231.14.0/26"
FS_GROUP = 2000

POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 1
  securityContext:
    runAsUser: {uid}
    supplementalGroups: [{supplemental}]
    fsGroup: {fs_group}
    supplementalGroupsPolicy: {policy}
  containers:
  - name: c
    image: {image}
    command: ["sleep", "3600"]
"""


@pytest.fixture(scope="module")
def kube(orphan_reaper: OrphanReaper) -> Iterator[KubeletInstance]:
    yield from kubelet_instance("ph-psc", BRIDGE, SUBNET, with_predefined_group_image)


@pytest.mark.parametrize(
    ("policy", "groups"),
    [
        ("Merge", [UID, SUPPLEMENTAL, FS_GROUP, IMAGE_GID]),  # the image's /etc/group adds 50000
        ("Strict", [UID, SUPPLEMENTAL, FS_GROUP]),  # only what the Pod says, and the primary gid
    ],
)
def test_pod_security_context_groups(kube: KubeletInstance, policy: str, groups: list[int]) -> None:
    name = f"groups-{policy.lower()}"
    kube.apply(
        POD.format(
            name=name,
            uid=UID,
            supplemental=SUPPLEMENTAL,
            fs_group=FS_GROUP,
            policy=policy,
            image=PREDEFINED_GROUP_IMAGE,
        )
    )
    wait_for("pod Ready", lambda: is_ready(p := kube.pod(name)) and p)
    proc = kube.kubectl("exec", name, "-c", "c", "--", "id", "-G")
    assert sorted(int(g) for g in proc.stdout.split()) == sorted(groups)
    assert kube.kubectl("exec", name, "-c", "c", "--", "id", "-u").stdout.strip() == str(UID)
    kube.delete_everything()
    wait_for("pod gone", lambda: not kube.pods.get("pods"), timeout=30)
    problems = find_leaks(kube.root, kube.bridge, kube.config.cgroup_parent)
    assert not problems, "leaked: " + "; ".join(problems) + "\n" + kube.log_tail(20)
