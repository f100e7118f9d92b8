"""Configuration in pods with the real kubectl (issue 14): ConfigMaps and Secrets in the API, configMap,
secret, downwardAPI and projected volumes updated in place, env from objects and fields, emptyDir Memory.

One daemon (root /tmp/ph-cfg-*, bridge phc0, subnet 10.243.0.0/24, CrashLoopBackOff base 1 s) serves the
module. After each test its pods, ConfigMaps and Secrets are deleted through kubectl and the instance is
checked for leaks: no tmpfs of a pod left mounted, and no secrets tmpfs once no Secret is left.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from podhost.kubelet.manager import SECRETS_RUN_DIR
from tests.instance import OrphanReaper
from tests.integration.test_kube_api import Kube
from tests.integration.test_kubelet_pods import BUSYBOX, KubeletInstance, is_ready, kubelet_instance
from tests.leaks import find_leaks, mounts_under
from tests.wait import wait_for

pytestmark = pytest.mark.root

BRIDGE, SUBNET = "phc0", "10.243.0.0/24"
KUBECTL = shutil.which("kubectl")


@pytest.fixture(scope="module")
def cfg_instance(orphan_reaper: OrphanReaper) -> Iterator[KubeletInstance]:
    if KUBECTL is None:
        pytest.skip("kubectl is not installed")

    made: list[str] = []

    def flags(inst: KubeletInstance) -> None:
        inst.extra = ["--restart-backoff", "1"]
        made.append(inst.config.instance_id)

    try:
        yield from kubelet_instance("ph-cfg", BRIDGE, SUBNET, flags)
    finally:  # a failed test may have left its Secrets' tmpfs
        for instance_id in made:
            for point in mounts_under(SECRETS_RUN_DIR / instance_id):
                subprocess.run(["umount", "-l", point], check=False)
            shutil.rmtree(SECRETS_RUN_DIR / instance_id, ignore_errors=True)


@pytest.fixture
def kube(cfg_instance: KubeletInstance) -> Iterator[Kube]:
    k = Kube(cfg_instance)
    wait_for("the kubeconfig", lambda: k.kubeconfig.exists() and k("version", check=False).returncode == 0)
    yield k
    cfg_instance.delete_everything()
    wait_for("pods gone", lambda: not cfg_instance.pods.get("pods"), timeout=60)
    for kind in ("configmaps", "secrets"):
        k("delete", kind, "--all", timeout=60)
    assert cfg_instance.client.list_pod_sandbox() == []
    problems = find_leaks(cfg_instance.root, cfg_instance.bridge, cfg_instance.config.cgroup_parent)
    if mounts := mounts_under(SECRETS_RUN_DIR / cfg_instance.config.instance_id):
        problems.append(f"secrets tmpfs still mounted: {mounts}")
    volumes = cfg_instance.config.state_dir / "kubelet" / "volumes"
    if left := list(volumes.glob("*")) if volumes.is_dir() else []:
        problems.append(f"volumes: {left}")
    assert not problems, "leaked: " + "; ".join(problems) + "\n" + cfg_instance.log_tail(20)


def apply(k: Kube, text: str) -> str:
    return k("apply", "-f", k.write(f"m-{secrets.token_hex(3)}.yaml", text)).stdout


def running(k: Kube, name: str) -> dict[str, Any]:
    try:
        pod: dict[str, Any] = wait_for(
            f"{name} Ready", lambda: is_ready(p := k.inst.pods.pod(name)) and p, timeout=90
        )
    except AssertionError as e:
        raise AssertionError(f"{e}\n{k('describe', 'pod', name, check=False).stdout}") from None
    return pod


def sh(k: Kube, pod: str, script: str, container: str = "") -> str:
    extra = ["-c", container] if container else []
    return k("exec", pod, *extra, "--", "sh", "-c", script).stdout


def events(k: Kube, pod: str) -> list[dict[str, Any]]:
    return k.inst.pods.get("events", "default", pod)


# --- ConfigMaps -------------------------------------------------------------------------------------------


def test_configmap_volume_and_env_show_the_data_and_follow_an_edit(kube: Kube) -> None:
    out = kube(
        "create", "configmap", "app-config", "--from-literal=greeting=hello", "--from-literal=color=blue"
    )
    assert out.stdout.strip() == "configmap/app-config created"
    table = kube("get", "configmaps").stdout
    assert re.search(r"^NAME\s+DATA\s+AGE$", table.splitlines()[0]), table
    assert re.search(r"^app-config\s+2\s+\d+s$", table, re.M), table
    apply(
        kube,
        f"""
apiVersion: v1
kind: Pod
metadata: {{name: cm-pod}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: c
    image: {BUSYBOX}
    command: [sleep, "3600"]
    env:
    - name: GREETING
      valueFrom: {{configMapKeyRef: {{name: app-config, key: greeting}}}}
    - name: MESSAGE
      value: "$(GREETING), world; $$(GREETING)"
    envFrom:
    - prefix: CFG_
      configMapRef: {{name: app-config}}
    volumeMounts:
    - {{name: cfg, mountPath: /etc/config}}
    - {{name: cfg, mountPath: /etc/pinned/greeting, subPath: greeting}}
  volumes:
  - name: cfg
    configMap: {{name: app-config}}
""",
    )
    running(kube, "cm-pod")
    assert sh(kube, "cm-pod", "cat /etc/config/greeting") == "hello"
    env = sh(kube, "cm-pod", "env")
    for line in (
        "GREETING=hello",
        "CFG_greeting=hello",
        "CFG_color=blue",
        "MESSAGE=hello, world; $(GREETING)",
    ):
        assert line in env.splitlines(), env
    # the kubelet's atomic writer layout: ..data -> ..<timestamp>, one symlink per key into ..data
    listing = sh(kube, "cm-pod", "ls -la /etc/config")
    assert re.search(r"\.\.data -> \.\.\d{4}_\d\d_\d\d_\d\d_\d\d_\d\d\.\d+", listing), listing
    assert re.search(r"greeting -> \.\.data/greeting", listing), listing
    mount = sh(kube, "cm-pod", "grep ' /etc/config ' /proc/mounts").split()
    assert mount[2] != "tmpfs" and "ro" in mount[3].split(","), mount  # on disk, read-only, as upstream

    kube("patch", "configmap", "app-config", "-p", json.dumps({"data": {"greeting": "bonjour"}}))
    wait_for("the file updated", lambda: sh(kube, "cm-pod", "cat /etc/config/greeting") == "bonjour", 60)
    apply(kube, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app-config}\ndata: {greeting: hallo}\n")
    wait_for(
        "the apply reached the file", lambda: sh(kube, "cm-pod", "cat /etc/config/greeting") == "hallo", 60
    )
    kube("patch", "configmap", "app-config", "--type=json", "-p", '[{"op": "remove", "path": "/data/color"}]')
    edit = subprocess.run(
        [str(kube.binary), "--kubeconfig", str(kube.kubeconfig), "edit", "configmap", "app-config"],
        env={**kube.env(), "KUBE_EDITOR": "sed -i s/hallo/servus/"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert edit.returncode == 0 and "configmap/app-config edited" in edit.stdout, edit
    wait_for(
        "the edit reached the file", lambda: sh(kube, "cm-pod", "cat /etc/config/greeting") == "servus", 60
    )
    wait_for("a removed key goes", lambda: "color" not in sh(kube, "cm-pod", "ls /etc/config"), 60)
    # a subPath mount does not follow (as upstream), nor does the environment of a running container
    assert sh(kube, "cm-pod", "cat /etc/pinned/greeting") == "hello"
    assert "GREETING=hello" in sh(kube, "cm-pod", "env").splitlines()
    described = kube("describe", "configmap", "app-config").stdout
    assert "greeting" in described and "servus" in described, described


def test_a_missing_configmap_holds_the_pod_in_container_creating_until_it_appears(kube: Kube) -> None:
    apply(
        kube,
        f"""
apiVersion: v1
kind: Pod
metadata: {{name: waits}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - {{name: c, image: {BUSYBOX}, command: [sleep, "3600"], volumeMounts: [{{name: cfg, mountPath: /cfg}}]}}
  volumes:
  - {{name: cfg, configMap: {{name: later, items: [{{key: k, path: sub/file, mode: 0600}}]}}}}
""",
    )
    want = 'MountVolume.SetUp failed for volume "cfg" : configmap "later" not found'
    wait_for(
        "FailedMount",
        lambda: any(e["reason"] == "FailedMount" and e["message"] == want for e in events(kube, "waits")),
    )
    line = next(x for x in kube("get", "pods").stdout.splitlines() if x.startswith("waits "))
    assert re.search(r"waits\s+0/1\s+ContainerCreating", line), line
    assert kube.inst.client.list_pod_sandbox() == []  # no sandbox before its volumes, as the kubelet
    kube("create", "configmap", "later", "--from-literal=k=v")
    running(kube, "waits")
    assert sh(kube, "waits", "cat /cfg/sub/file; echo; stat -L -c %a /cfg/sub/file") == "v\n600\n"


def test_a_missing_secret_key_is_create_container_config_error(kube: Kube) -> None:
    kube("create", "secret", "generic", "partial", "--from-literal=present=1")
    apply(
        kube,
        f"""
apiVersion: v1
kind: Pod
metadata: {{name: nokey}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: c
    image: {BUSYBOX}
    command: [sleep, "3600"]
    env:
    - {{name: OPTIONAL, valueFrom: {{secretKeyRef: {{name: partial, key: absent, optional: true}}}}}}
    - {{name: NEEDED, valueFrom: {{secretKeyRef: {{name: partial, key: absent}}}}}}
""",
    )

    def waiting() -> dict[str, Any] | None:
        statuses = kube.inst.pods.pod("nokey")["status"].get("containerStatuses") or [{}]
        w: dict[str, Any] | None = statuses[0].get("state", {}).get("waiting")
        return w if w and w.get("reason") == "CreateContainerConfigError" else None

    w = wait_for("CreateContainerConfigError", waiting, 60)
    assert w["message"] == "couldn't find key absent in Secret default/partial", w
    line = next(x for x in kube("get", "pods").stdout.splitlines() if x.startswith("nokey "))
    assert re.search(r"nokey\s+0/1\s+CreateContainerConfigError", line), line
    kube("patch", "secret", "partial", "-p", json.dumps({"stringData": {"absent": "now"}}))
    running(kube, "nokey")
    assert "NEEDED=now" in sh(kube, "nokey", "env").splitlines()
    assert "OPTIONAL=now" in sh(kube, "nokey", "env").splitlines()


def test_applied_secrets_and_immutable_configmaps_as_kube_apiserver_keeps_them(kube: Kube) -> None:
    out = apply(
        kube,
        """
apiVersion: v1
kind: Secret
metadata: {name: applied}
type: kubernetes.io/basic-auth
stringData: {username: admin, password: pw}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: frozen}
immutable: true
data: {a: "1"}
""",
    )
    assert out.split() == ["secret/applied", "created", "configmap/frozen", "created"], out
    secret = json.loads(kube("get", "secret", "applied", "-o", "json").stdout)
    assert "stringData" not in secret and secret["type"] == "kubernetes.io/basic-auth"
    assert {k: base64.b64decode(v).decode() for k, v in secret["data"].items()} == {
        "username": "admin",
        "password": "pw",
    }
    refused = kube("patch", "configmap", "frozen", "-p", json.dumps({"data": {"a": "2"}}), check=False)
    assert refused.returncode != 0
    assert 'ConfigMap "frozen" is invalid: data: Forbidden: field is immutable when `immutable` is set' in (
        refused.stderr
    ), refused.stderr
    assert kube("get", "configmap", "frozen", "-o", "jsonpath={.data.a}").stdout == "1"


# --- Secrets ----------------------------------------------------------------------------------------------


def _files_containing(root: Path, needle: bytes) -> list[str]:
    """Files under `root` on its own filesystem (mount points below it are not descended: pods' tmpfs and
    rootfs mounts) whose content holds `needle`."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not os.path.ismount(os.path.join(dirpath, d))]
        for name in filenames:
            path = os.path.join(dirpath, name)
            with contextlib.suppress(OSError):
                if not os.path.islink(path) and os.path.isfile(path) and needle in Path(path).read_bytes():
                    found.append(path)
    return found


def test_secret_volumes_are_tmpfs_0644_unless_default_mode_and_never_on_disk(kube: Kube) -> None:
    value = "s3cr3t-" + secrets.token_hex(12)
    kube("create", "secret", "generic", "db", f"--from-literal=password={value}", "--from-literal=user=admin")
    table = kube("get", "secrets").stdout
    assert re.search(r"^NAME\s+TYPE\s+DATA\s+AGE$", table.splitlines()[0]), table
    assert re.search(r"^db\s+Opaque\s+2\s+\d+s$", table, re.M), table
    apply(
        kube,
        f"""
apiVersion: v1
kind: Pod
metadata: {{name: secret-pod}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: c
    image: {BUSYBOX}
    command: [sleep, "3600"]
    volumeMounts:
    - {{name: plain, mountPath: /etc/secret}}
    - {{name: strict, mountPath: /etc/strict}}
  volumes:
  - {{name: plain, secret: {{secretName: db}}}}
  - {{name: strict, secret: {{secretName: db, defaultMode: 0400, items: [{{key: password, path: pw}}]}}}}
""",
    )
    running(kube, "secret-pod")
    assert sh(kube, "secret-pod", "cat /etc/secret/password") == value
    assert sh(kube, "secret-pod", "stat -L -c %a /etc/secret/password /etc/secret/user").split() == [
        "644",
        "644",
    ]
    assert sh(kube, "secret-pod", "stat -L -c %a /etc/strict/pw; ls /etc/strict").split() == ["400", "pw"]
    for path in ("/etc/secret", "/etc/strict"):
        assert sh(kube, "secret-pod", f"stat -f -c %T {path}").strip() == "tmpfs"
        assert sh(kube, "secret-pod", f"grep ' {path} ' /proc/mounts").split()[2] == "tmpfs"
    # the Secret's own copy is on a tmpfs the pod manager mounted; nothing on a disk holds the value
    kept = SECRETS_RUN_DIR / kube.inst.config.instance_id / "secrets"
    assert mounts_under(kept) == [str(kept)]
    assert not _files_containing(kube.inst.root, value.encode()), "the secret's value is on disk"
    assert value not in (kube.inst.root / "daemon.log").read_text()
    described = kube("describe", "secret", "db").stdout
    assert re.search(r"password:\s+\d+ bytes", described) and value not in described, described
    # an update reaches the tmpfs (and still no disk)
    other = "n3w-" + secrets.token_hex(12)
    kube("patch", "secret", "db", "-p", json.dumps({"stringData": {"password": other}}))
    wait_for("the secret updated", lambda: sh(kube, "secret-pod", "cat /etc/strict/pw") == other, 60)
    assert not _files_containing(kube.inst.root, other.encode())
    assert value not in (kube.inst.root / "daemon.log").read_text()


# --- the downward API, projected volumes, emptyDir Memory ------------------------------------------------


def test_downward_api_projected_volumes_field_refs_and_memory_empty_dir(kube: Kube) -> None:
    kube("create", "configmap", "site", "--from-literal=name=example")
    kube("create", "secret", "generic", "token", "--from-literal=token=abc")
    apply(
        kube,
        f"""
apiVersion: v1
kind: Pod
metadata:
  name: dw
  labels: {{app: dw, tier: web}}
  annotations: {{note: hi}}
spec:
  terminationGracePeriodSeconds: 0
  securityContext: {{fsGroup: 2000}}
  containers:
  - name: c
    image: {BUSYBOX}
    command: [sleep, "3600"]
    resources:
      limits: {{cpu: 500m, memory: 64Mi}}
      requests: {{cpu: 250m, memory: 32Mi}}
    env:
    - {{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
    - {{name: POD_NAMESPACE, valueFrom: {{fieldRef: {{fieldPath: metadata.namespace}}}}}}
    - {{name: POD_UID, valueFrom: {{fieldRef: {{fieldPath: metadata.uid}}}}}}
    - {{name: APP, valueFrom: {{fieldRef: {{fieldPath: "metadata.labels['app']"}}}}}}
    - {{name: NOTE, valueFrom: {{fieldRef: {{fieldPath: "metadata.annotations['note']"}}}}}}
    - {{name: NODE, valueFrom: {{fieldRef: {{fieldPath: spec.nodeName}}}}}}
    - {{name: SA, valueFrom: {{fieldRef: {{fieldPath: spec.serviceAccountName}}}}}}
    - {{name: POD_IP, valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}}}
    - {{name: HOST_IP, valueFrom: {{fieldRef: {{fieldPath: status.hostIP}}}}}}
    - {{name: MEM_MI, valueFrom: {{resourceFieldRef: {{resource: limits.memory, divisor: 1Mi}}}}}}
    - {{name: CPU_M, valueFrom: {{resourceFieldRef: {{resource: requests.cpu, divisor: 1m}}}}}}
    envFrom:
    - secretRef: {{name: token}}
    - configMapRef: {{name: absent, optional: true}}
    volumeMounts:
    - {{name: info, mountPath: /etc/podinfo}}
    - {{name: all, mountPath: /etc/all}}
    - {{name: cache, mountPath: /cache}}
  volumes:
  - name: info
    downwardAPI:
      items:
      - {{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}
      - {{path: annotations, fieldRef: {{fieldPath: metadata.annotations}}}}
      - {{path: name, fieldRef: {{fieldPath: metadata.name}}}}
      - {{path: cpu_limit, resourceFieldRef: {{containerName: c, resource: limits.cpu, divisor: 1m}}}}
  - name: all
    projected:
      defaultMode: 0440
      sources:
      - configMap: {{name: site}}
      - secret: {{name: token, items: [{{key: token, path: creds/token, mode: 0400}}]}}
      - downwardAPI: {{items: [{{path: app, fieldRef: {{fieldPath: "metadata.labels['app']"}}}}]}}
  - name: cache
    emptyDir: {{medium: Memory, sizeLimit: 16Mi}}
""",
    )
    pod = running(kube, "dw")
    env = dict(line.split("=", 1) for line in sh(kube, "dw", "env").splitlines() if "=" in line)
    node = kube("get", "nodes", "-o", "jsonpath={.items[0].metadata.name}").stdout
    expected = {
        "POD_NAME": "dw",
        "POD_NAMESPACE": "default",
        "POD_UID": pod["metadata"]["uid"],
        "APP": "dw",
        "NOTE": "hi",
        "NODE": node,
        "SA": "default",
        "POD_IP": pod["status"]["podIP"],
        "HOST_IP": pod["status"]["hostIP"],
        "MEM_MI": "64",
        "CPU_M": "250",
        "token": "abc",
    }
    assert {k: env.get(k) for k in expected} == expected
    assert sh(kube, "dw", "cat /etc/podinfo/labels") == 'app="dw"\ntier="web"'
    # kubectl apply's own annotation is one of the pod's annotations, as upstream
    assert 'note="hi"' in sh(kube, "dw", "cat /etc/podinfo/annotations").splitlines()
    assert sh(kube, "dw", "cat /etc/podinfo/name") == "dw"
    assert sh(kube, "dw", "cat /etc/podinfo/cpu_limit") == "500"
    assert sh(kube, "dw", "cat /etc/all/name /etc/all/creds/token /etc/all/app") == "exampleabcdw"
    modes = sh(kube, "dw", "stat -L -c %a:%g /etc/all/name /etc/all/creds/token /etc/all/app").split()
    assert modes == ["440:2000", "440:2000", "440:2000"]  # fsGroup: group-owned, and group-readable
    for memory_backed in ("/etc/all", "/etc/podinfo"):  # upstream wraps both in a memory emptyDir
        assert sh(kube, "dw", f"stat -f -c %T {memory_backed}").strip() == "tmpfs"
    fields = sh(kube, "dw", "grep ' /cache ' /proc/mounts").split()
    assert fields[2] == "tmpfs" and "size=16384k" in fields[3], fields
    # a label change reaches the downward API file within the resync period
    kube("label", "pod", "dw", "tier=db", "--overwrite")
    wait_for("labels updated", lambda: sh(kube, "dw", "cat /etc/podinfo/labels") == 'app="dw"\ntier="db"', 60)


# --- a daemon restart -----------------------------------------------------------------------------------


def test_secrets_survive_a_daemon_restart_and_a_pod_deleted_meanwhile_leaves_no_mount(kube: Kube) -> None:
    inst = kube.inst
    value = "keep-" + secrets.token_hex(12)
    kube("create", "secret", "generic", "kept", f"--from-literal=v={value}")
    kube("create", "configmap", "settings", "--from-literal=mode=fast")
    pod_yaml = f"""
apiVersion: v1
kind: Pod
metadata: {{name: NAME}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: c
    image: {BUSYBOX}
    command: [sleep, "3600"]
    volumeMounts: [{{name: s, mountPath: /s}}, {{name: m, mountPath: /m}}, {{name: c, mountPath: /c}}]
  volumes:
  - {{name: s, secret: {{secretName: kept}}}}
  - {{name: m, emptyDir: {{medium: Memory}}}}
  - {{name: c, configMap: {{name: settings}}}}
"""
    apply(kube, pod_yaml.replace("NAME", "stays"))
    apply(kube, pod_yaml.replace("NAME", "goes"))
    uid = running(kube, "stays")["metadata"]["uid"]
    gone_uid = running(kube, "goes")["metadata"]["uid"]
    volumes = inst.config.state_dir / "kubelet" / "volumes"
    assert sorted(mounts_under(volumes / gone_uid)) == sorted(str(volumes / gone_uid / v) for v in ("m", "s"))

    inst.stop()
    kept = SECRETS_RUN_DIR / inst.config.instance_id / "secrets"
    assert mounts_under(kept) == [str(kept)]  # the Secrets' tmpfs outlives the daemon
    (
        inst.config.state_dir / "kubelet" / "desired" / "pods" / "default_goes.json"
    ).unlink()  # deleted meanwhile
    inst.start()

    assert (
        base64.b64decode(kube("get", "secret", "kept", "-o", "jsonpath={.data.v}").stdout).decode() == value
    )
    assert kube("get", "configmap", "settings", "-o", "jsonpath={.data.mode}").stdout == "fast"
    pod = running(kube, "stays")
    assert pod["metadata"]["uid"] == uid and pod["status"]["containerStatuses"][0]["restartCount"] == 0
    assert sh(kube, "stays", "cat /s/v") == value
    wait_for("the orphan's volumes unmounted", lambda: not mounts_under(volumes / gone_uid), 30)
    assert not (volumes / gone_uid).exists()
    kube("patch", "configmap", "settings", "-p", json.dumps({"data": {"mode": "slow"}}))
    wait_for("the adopted pod's volume follows", lambda: sh(kube, "stays", "cat /c/mode") == "slow", 60)
    assert value not in (inst.root / "daemon.log").read_text()


def test_config_volumes_in_a_pod_with_its_own_user_namespace(kube: Kube) -> None:
    kube("create", "configmap", "ns-cfg", "--from-literal=k=v")
    kube("create", "secret", "generic", "ns-sec", "--from-literal=s=t")
    apply(
        kube,
        f"""
apiVersion: v1
kind: Pod
metadata: {{name: userns}}
spec:
  hostUsers: false
  terminationGracePeriodSeconds: 0
  containers:
  - name: c
    image: {BUSYBOX}
    command: [sleep, "3600"]
    volumeMounts: [{{name: c, mountPath: /c}}, {{name: s, mountPath: /s}}, {{name: m, mountPath: /m}}]
  volumes:
  - {{name: c, configMap: {{name: ns-cfg}}}}
  - {{name: s, secret: {{secretName: ns-sec}}}}
  - {{name: m, emptyDir: {{medium: Memory, sizeLimit: 1Mi}}}}
""",
    )
    running(kube, "userns")
    assert sh(kube, "userns", "cat /c/k /s/s") == "vt"
    # the files are root's inside the pod's user namespace, as the kubelet's idmapped mounts show them
    assert sh(kube, "userns", "stat -L -c %u:%g /c/k /s/s").split() == ["0:0", "0:0"]
    assert sh(kube, "userns", "echo x > /m/f && cat /m/f") == "x\n"
