"""The README's first command: the article's demo, as a user runs it (the real kubectl against the daemon's
Kubernetes API, Debian's real nginx), leaves the machine as it found it.

The demo's instance uses bridge phdemo0 and 10.244.250.0/24 unless PODHOST_DEMO_BRIDGE and
PODHOST_DEMO_SUBNET name others (two runs on one machine at once).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from podhost.cli.demo import DEMO_BRIDGE, DEMO_SUBNET
from podhost.config import Config

pytestmark = pytest.mark.root

BRIDGE = os.environ.get("PODHOST_DEMO_BRIDGE", DEMO_BRIDGE)
SUBNET = os.environ.get("PODHOST_DEMO_SUBNET", DEMO_SUBNET)


def after(out: str, command: str) -> list[str]:
    """The lines the demo printed after `$ command` (up to the next command)."""
    text = out.split(f"$ {command}\n", 1)[1]
    return text.split("\n$ ", 1)[0].splitlines()


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_demo_runs_the_articles_commands_with_the_real_kubectl() -> None:
    before = set(Path("/tmp").glob("podhost-demo-*"))
    proc = subprocess.run(
        [sys.executable, "-m", "podhost.cli.main", "demo", "--bridge", BRIDGE, "--subnet", SUBNET],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert after(out, "kubectl apply -f examples/shared-namespace-demo.yaml") == [
        "pod/shared-namespace-demo created"
    ]
    header, row = after(out, "kubectl get pods")[:2]
    assert header.split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert re.match(r"shared-namespace-demo\s+2/2\s+Running\s+0\s+\d+s$", row), row

    pods = after(out, "crictl pods")
    assert pods[0].split() == ["POD", "ID", "CREATED", "STATE", "NAME", "NAMESPACE", "ATTEMPT", "RUNTIME"]
    pod_id = pods[1].split()[0]
    assert re.search(r"\bReady\s+shared-namespace-demo\s+default\s+0\s+runc$", pods[1])
    ps = after(out, "crictl ps")
    assert ps[0].split() == ["CONTAINER", "IMAGE", "CREATED", "STATE", "NAME", "ATTEMPT", "POD", "ID", "POD"]
    assert {r.split()[-4] for r in ps[1:3]} == {"nginx", "shell"}
    assert all(r.split()[-2] == pod_id and r.split()[-1] == "shared-namespace-demo" for r in ps[1:3])

    # not a terminal here, so the demo ran it without -it (on a terminal it shows `exec -it`)
    ps_ax = after(out, "kubectl exec shared-namespace-demo -c shell -- ps ax")
    assert ps_ax[1].split() == ["1", "65535", "/pause"]
    assert any(re.search(r"\snginx: master process nginx -g daemon off;$", line) for line in ps_ax), ps_ax
    assert any(re.search(r"\s101\s+nginx: worker process$", line) for line in ps_ax), ps_ax
    assert any(line.endswith("sleep 3600") for line in ps_ax)
    assert "Welcome to nginx!" in out
    logs = after(out, "kubectl logs shared-namespace-demo -c nginx")
    assert any('"GET / HTTP/1.1" 200' in line for line in logs), logs
    described = after(out, "kubectl describe pod shared-namespace-demo    # its conditions and events")
    assert any(re.match(r"\s+PodReadyToStartContainers\s+True", line) for line in described), described
    assert after(out, "kubectl delete -f examples/shared-namespace-demo.yaml")[0] == (
        'pod "shared-namespace-demo" deleted'
    )
    assert "cleaned up" in out

    assert set(Path("/tmp").glob("podhost-demo-*")) == before
    root = re.search(r"a private instance under (\S+) ", out)
    assert root is not None
    parent = Config.load(root=root.group(1)).cgroup_parent.lstrip("/")
    assert not [h for h in Path("/sys/fs/cgroup").iterdir() if (h / parent).exists()]
    assert not Path("/sys/class/net", BRIDGE).exists()  # the daemon removed its own bridge
