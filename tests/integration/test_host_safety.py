"""podhost never hands conmon, the OCI runtime or a CNI plugin a host path it may create, truncate or
rename: every path in their arguments lies in the instance's own directories or the pod's log_directory.

The finding behind it: a container created without `log_path` used to get conmon `-l k8s-file:/dev/null`,
and ReopenContainerLog then made conmon write `/dev/null.tmp` and rename it over the host's /dev/null.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest

from podhost.cri import api_pb2 as pb
from tests.instance import Instance

pytestmark = pytest.mark.root


def paths_in(argv: list[str]) -> list[str]:
    """Every absolute path an argument names, flags like `--root=/x` and `k8s-file:/x` included."""
    found = []
    for arg in argv[1:]:
        value = arg.split("=", 1)[-1]
        value = value.split(":", 1)[-1] if ":/" in value else value
        if value.startswith("/"):
            found.append(value)
    return found


def inside(path: str, roots: list[Path]) -> bool:
    resolved = Path(os.path.normpath(path))
    return any(resolved == r or r in resolved.parents for r in roots)


def char_device(path: str) -> tuple[int, int]:
    st = os.stat(path)
    assert stat.S_ISCHR(st.st_mode), f"{path} is no longer a character device"
    return os.major(st.st_rdev), os.minor(st.st_rdev)


def test_a_container_without_a_log_path_never_touches_a_host_path(podhost: Instance) -> None:
    null_before = char_device("/dev/null")
    pod = podhost.pod_config("nolog")
    pod_id = podhost.client.run_pod_sandbox(pod)
    config = podhost.container_config("quiet", ["sleep", "3600"])
    config.log_path = ""
    cid = podhost.client.create_container(pod_id, config, pod)
    podhost.client.start_container(cid)

    info = json.loads(podhost.client.container_status(cid, verbose=True).info["info"])
    conmon_argv = Path(f"/proc/{info['conmonPid']}/cmdline").read_bytes().decode().split("\0")[:-1]
    assert Path(conmon_argv[0]).name == "conmon"
    roots = [podhost.root, Path(pod.log_directory)]
    outside = [p for p in paths_in(conmon_argv) if not inside(p, roots) and p != conmon_argv[0]]
    runtime_binaries = {os.path.realpath(b) for b in podhost.config.runtimes.values()}
    outside = [p for p in outside if os.path.realpath(p) not in runtime_binaries]
    assert outside == [], f"conmon was handed host paths: {outside}\n{conmon_argv}"
    assert "/dev/null" not in " ".join(conmon_argv)

    podhost.client.reopen_container_log(cid)  # what used to rename a file over /dev/null
    podhost.client.stop_container(cid, 0)
    assert podhost.client.container_status(cid).status.state == pb.CONTAINER_EXITED
    assert char_device("/dev/null") == null_before == (1, 3)
    assert not Path("/dev/null.tmp").exists()

    # The CNI plugins got the pod's netns as an fd the daemon held (procfs: nothing a plugin may create,
    # truncate or rename), and the cached attachment says so.
    attachment = json.loads((podhost.config.cni_state_dir / "results" / f"{pod_id}.json").read_text())
    assert re.fullmatch(rf"/proc/{podhost.daemon.pid}/fd/\d+", attachment["netns"]), attachment["netns"]


def test_log_paths_outside_the_log_directory_are_refused(podhost: Instance) -> None:
    pod = podhost.pod_config("logesc")
    pod_id = podhost.client.run_pod_sandbox(pod)
    for bad in ("/etc/evil.log", "../../evil.log", "a/../../evil.log"):
        config = podhost.container_config(f"c{len(bad)}", ["true"])
        config.log_path = bad
        with pytest.raises(Exception, match="log_path") as info:
            podhost.client.create_container(pod_id, config, pod)
        assert getattr(info.value, "grpc_code", "") == "INVALID_ARGUMENT"
    assert podhost.client.list_containers() == []
