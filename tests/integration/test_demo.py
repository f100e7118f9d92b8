"""The README's first command: the article's demo, as a user runs it, leaves the machine as it found it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from podhost.cli.demo import DEMO_BRIDGE
from podhost.config import Config

pytestmark = pytest.mark.root


def test_demo_shows_the_articles_tables_and_pause_as_pid_1() -> None:
    before = set(Path("/tmp").glob("podhost-demo-*"))
    proc = subprocess.run(
        [sys.executable, "-m", "podhost.cli.main", "demo"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    pods = out.split("$ crictl pods\n", 1)[1].splitlines()
    assert pods[0].split() == ["POD", "ID", "CREATED", "STATE", "NAME", "NAMESPACE", "ATTEMPT", "RUNTIME"]
    pod_id = pods[1].split()[0]
    assert re.search(r"\bReady\s+shared-namespace-demo\s+default\s+0\s+runc$", pods[1])
    ps = out.split("$ crictl ps\n", 1)[1].splitlines()
    assert ps[0].split() == ["CONTAINER", "IMAGE", "CREATED", "STATE", "NAME", "ATTEMPT", "POD", "ID", "POD"]
    rows = [r for r in ps[1:3]]
    assert {r.split()[-4] for r in rows} == {"nginx", "shell"}
    assert all(r.split()[-2] == pod_id and r.split()[-1] == "shared-namespace-demo" for r in rows)
    ps_ax = out.split("/ # ps ax\n", 1)[1].splitlines()
    assert ps_ax[1].split() == ["1", "65535", "/pause"]
    assert any("httpd" in line for line in ps_ax) and any("sleep 3600" in line for line in ps_ax)
    assert "Welcome to nginx!" in out
    assert "cleaned up" in out
    assert set(Path("/tmp").glob("podhost-demo-*")) == before
    root = re.search(r"a private instance under (\S+) ", out)
    assert root is not None
    parent = Config.load(root=root.group(1)).cgroup_parent.lstrip("/")
    assert not [h for h in Path("/sys/fs/cgroup").iterdir() if (h / parent).exists()]
    assert not Path("/sys/class/net", DEMO_BRIDGE).exists()
