"""The article's claims about a pod, shown on real pods driven through podhost's CRI socket."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import subprocess
import tarfile
from pathlib import Path

import pytest

from podhost.cri import api_pb2 as pb
from podhost.errors import InvalidArgument, NotFound, PodhostError, RuntimeFailure
from podhost.runtime import namespaces, procs
from tests.instance import Instance
from tests.leaks import comm, mounts_under, processes_in
from tests.wait import wait_for

pytestmark = pytest.mark.root

HTTPD = ["httpd", "-f", "-p", "80", "-h", "/var/www"]
SLEEP = ["sleep", "3600"]


def serving(podhost: Instance, cid: str) -> bool:
    return podhost.exec(cid, "wget", "-qO-", "http://localhost:80/")[0] == 0


def test_shared_pid_pod_shows_pause_as_pid_1(podhost: Instance) -> None:
    pod = podhost.pod_config("shared-namespace-demo", share_pid=True)
    pod_id = podhost.client.run_pod_sandbox(pod)
    podhost.run_container(pod_id, pod, "nginx", HTTPD)
    shell = podhost.run_container(pod_id, pod, "shell", SLEEP)
    code, out, _ = podhost.exec(shell, "ps", "ax")
    assert code == 0
    rows = [line.split(None, 2) for line in out.splitlines()[1:]]
    by_pid = {int(r[0]): r[-1] for r in rows}
    assert by_pid[1] == "/pause"
    assert any(cmd.startswith("httpd -f -p 80") for cmd in by_pid.values())
    assert "sleep 3600" in by_pid.values()


def test_default_pid_mode_sees_only_its_own_processes(podhost: Instance) -> None:
    pod = podhost.pod_config("isolated-pid")
    pod_id = podhost.client.run_pod_sandbox(pod)
    podhost.run_container(pod_id, pod, "server", HTTPD)
    shell = podhost.run_container(pod_id, pod, "shell", SLEEP)
    _, out, _ = podhost.exec(shell, "ps", "ax")
    commands = [line.split(None, 2)[-1] for line in out.splitlines()[1:]]
    assert commands[0] == "sleep 3600", out  # PID 1 is the container's own main process
    assert not any("pause" in c or "httpd" in c for c in commands), out


def test_containers_share_one_ip_one_port_space_and_localhost(podhost: Instance) -> None:
    pod = podhost.pod_config("netpod")
    pod_id = podhost.client.run_pod_sandbox(pod)
    a = podhost.run_container(pod_id, pod, "a", HTTPD)
    b = podhost.run_container(pod_id, pod, "b", SLEEP)
    ip = podhost.client.pod_sandbox_status(pod_id).status.network.ip
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(podhost.subnet)
    addrs = [podhost.exec(c, "ip", "-o", "-4", "addr")[1] for c in (a, b)]
    assert addrs[0] == addrs[1] and f"inet {ip}/" in addrs[0]
    links = [podhost.exec(c, "ip", "-o", "link")[1] for c in (a, b)]
    assert links[0] == links[1]
    wait_for("B to reach A's server on localhost:80", lambda: serving(podhost, b), 10)
    code, _, err = podhost.exec(b, "nc", "-l", "-p", "80")
    assert code != 0 and "Address already in use" in err
    assert serving(podhost, b), "A stopped serving after B's failed bind"


def test_hostname_and_ipc_are_shared_within_a_pod_only(podhost: Instance) -> None:
    pod = podhost.pod_config("ipcpod")
    pod_id = podhost.client.run_pod_sandbox(pod)
    a = podhost.run_container(pod_id, pod, "a", SLEEP)
    b = podhost.run_container(pod_id, pod, "b", SLEEP)
    assert podhost.exec(a, "hostname")[1] == podhost.exec(b, "hostname")[1] == "ipcpod\n"
    # Creating a file on the mqueue filesystem creates a POSIX message queue in the IPC namespace.
    assert podhost.exec(a, "touch", "/dev/mqueue/podq")[0] == 0
    code, out, _ = podhost.exec(b, "cat", "/dev/mqueue/podq")
    assert code == 0 and "QSIZE:0" in out
    other = podhost.pod_config("otherpod")
    other_id = podhost.client.run_pod_sandbox(other)
    c = podhost.run_container(other_id, other, "c", SLEEP)
    assert podhost.exec(c, "ls", "/dev/mqueue")[1].strip() == ""
    assert podhost.exec(c, "hostname")[1] == "otherpod\n"


def test_a_pod_leaves_nothing_in_the_hosts_mounts(podhost: Instance) -> None:
    """Every container's new mount namespace copies the host's mount table, so each mount a pod leaves
    there slows every later `runc create`: the network, IPC, UTS and shared PID namespaces are joined
    through pause's /proc entry (no pins), pause holds the pod's /dev/shm as a detached mount, and a
    container's rootfs leaves the host once runc has pivoted into its own copy."""
    pod = podhost.pod_config("mount-budget", share_pid=True)
    before = set(mounts_under(podhost.root))
    pod_id = podhost.client.run_pod_sandbox(pod)
    cid = podhost.run_container(pod_id, pod, "a", SLEEP)
    added = sorted(set(mounts_under(podhost.root)) - before)
    assert added == []
    pid = sandbox_pid(podhost, pod_id)
    joined = {
        oci: f"/proc/{pid}/ns/{kind}"
        for oci, kind in (("network", "net"), ("ipc", "ipc"), ("uts", "uts"), ("pid", "pid"))
    }
    paths = {n["type"]: n.get("path") for n in runtime_spec(podhost, cid)["linux"]["namespaces"]}
    assert {k: paths[k] for k in joined} == joined
    assert podhost.exec(cid, "ps", "-o", "pid,comm")[1].split()[2:4] == ["1", "pause"]
    # The rootfs is the container's own: it writes, a second exec reads, a restart of the daemon and
    # the container's stop and removal leave nothing mounted.
    assert podhost.exec(cid, "sh", "-c", "echo kept > /written && cat /written")[1] == "kept\n"
    assert podhost.exec(cid, "cat", "/written")[1] == "kept\n"
    assert podhost.client.container_stats(cid).writable_layer.used_bytes.value > 0


def test_the_pods_shm_is_one_64_mib_tmpfs_for_all_its_containers(podhost: Instance) -> None:
    """pause holds the pod's /dev/shm; each container gets a copy of that one mount: what one writes the
    next sees, also one created after the first is gone and after a daemon restart."""
    pod = podhost.pod_config("shm-shared")
    pod_id = podhost.client.run_pod_sandbox(pod)
    a = podhost.run_container(pod_id, pod, "a", SLEEP)
    df = podhost.exec(a, "df", "-k", "/dev/shm")[1].splitlines()[-1].split()
    assert df[1] == "65536", df  # a tmpfs of 64 MiB (busybox df: 1K-blocks)
    assert podhost.exec(a, "sh", "-c", "echo one > /dev/shm/x")[0] == 0
    b = podhost.run_container(pod_id, pod, "b", SLEEP)
    assert podhost.exec(b, "cat", "/dev/shm/x")[1] == "one\n"
    podhost.client.stop_container(a, 0)
    podhost.client.remove_container(a)
    podhost.kill()  # SIGKILL: pause keeps holding the shm; the new daemon finds it through the record
    podhost.start()
    c = podhost.run_container(pod_id, pod, "c", SLEEP)
    assert podhost.exec(c, "cat", "/dev/shm/x")[1] == "one\n"
    assert podhost.exec(c, "stat", "-c", "%a", "/dev/shm")[1] == "1777\n"
    assert not [m for m in mounts_under(podhost.root) if m.endswith("/shm")], mounts_under(podhost.root)


def test_a_container_never_joins_namespaces_through_a_dead_or_reused_pause_pid() -> None:
    """check_joined: the container's namespaces must be pause's, read while pause still ran."""
    holder = subprocess.Popen(["unshare", "--ipc", "--uts", "sleep", "60"])
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        wait_for("unshare to exec sleep", lambda: comm(holder.pid) == "sleep", 5)
        started = procs.start_time(holder.pid)
        paths = [namespaces.held_by(holder.pid, "ipc"), namespaces.held_by(holder.pid, "uts")]
        joiner = subprocess.Popen(["nsenter", "-t", str(holder.pid), "--ipc", "--uts", "sleep", "60"])
        try:
            wait_for("nsenter to exec sleep", lambda: comm(joiner.pid) == "sleep", 5)
            namespaces.check_joined(joiner.pid, paths, holder.pid, started)  # the same namespaces
            with pytest.raises(RuntimeFailure, match="ipc namespace is gone"):
                namespaces.check_joined(stranger.pid, paths, holder.pid, started)  # other namespaces
            with pytest.raises(RuntimeFailure, match="ipc namespace is gone"):  # another process's PID
                namespaces.check_joined(joiner.pid, paths, holder.pid, started + 1)
        finally:
            joiner.kill()
            joiner.wait()
        holder.kill()
        holder.wait()
        with pytest.raises(RuntimeFailure, match="pause \\(pid"):
            namespaces.check_joined(stranger.pid, paths, holder.pid, started)
    finally:
        for p in (holder, stranger):
            p.kill()
            p.wait()


def test_pause_reaps_a_zombie_storm(podhost: Instance) -> None:
    pod = podhost.pod_config("zombies", share_pid=True)
    pod_id = podhost.client.run_pod_sandbox(pod)
    cid = podhost.run_container(pod_id, pod, "shell", SLEEP)
    before = int(podhost.exec(cid, "cat", "/proc/sys/kernel/ns_last_pid")[1])
    # Each `(sleep 0 &)` subshell exits at once, orphaning its child, which pause (PID 1) inherits.
    script = "i=0; while [ $i -lt 1000 ]; do (sleep 0 &); i=$((i+1)); done"
    assert podhost.exec(cid, "sh", "-c", script, timeout=60)[0] == 0
    after = int(podhost.exec(cid, "cat", "/proc/sys/kernel/ns_last_pid")[1])
    assert after - before >= 2000  # 1,000 subshells and 1,000 orphans really ran
    zombies = "grep -l '^State:.*Z' /proc/[0-9]*/status | wc -l"
    wait_for(
        "pause to reap every orphan", lambda: podhost.exec(cid, "sh", "-c", zombies)[1].strip() == "0", 10
    )


def test_pause_killed_from_the_host_makes_the_sandbox_not_ready_and_frees_its_ip(podhost: Instance) -> None:
    pod = podhost.pod_config("victim")
    pod_id = podhost.client.run_pod_sandbox(pod)
    info = podhost.sandbox_info(pod_id)
    pid, ip = int(info["pid"]), podhost.client.pod_sandbox_status(pod_id).status.network.ip  # type: ignore[call-overload]
    # inspectp's network is the CNI result as the plugins returned it, read from the attachment record
    assert [i["address"].split("/")[0] for i in info["network"]["ips"]] == [ip]  # type: ignore[index]
    netns = os.readlink(f"/proc/{pid}/ns/net")
    reservation = next(podhost.config.cni_state_dir.joinpath("ipam").rglob(ip))
    os.kill(pid, signal.SIGKILL)
    wait_for(
        "the sandbox NotReady at most 1 s after pause was killed",
        lambda: podhost.client.pod_sandbox_status(pod_id).status.state == pb.SANDBOX_NOTREADY,
        1.0,
    )
    wait_for("the IP back in the IPAM pool", lambda: not reservation.exists(), 2.0)
    info = podhost.sandbox_info(pod_id)
    assert "killed by signal 9" in str(info.get("message", "")), info

    def netns_in_use() -> bool:
        # What of the instance's holds it: its processes (its cgroup parent and its marked ones) and mounts
        # under its root. Not every process and nsfs mount on the machine: a freed netns's inode number is
        # handed to the next netns made, and other tests' pods (parallel workers) make them all the time.
        config = podhost.config
        pids = set(processes_in(config.cgroup_parent))
        pids |= {proc.pid for found in procs.marked(config.instance_id).values() for proc in found}
        for pid in pids:
            try:
                if os.readlink(f"/proc/{pid}/ns/net") == netns:
                    return True
            except OSError:
                continue
        return any(
            " nsfs " in line and netns[5:-1] in line and point.startswith(f"{podhost.root}/")
            for line in open("/proc/self/mountinfo")
            if (point := line.split(" ")[4])
        )

    wait_for("the pod's netns gone", lambda: not netns_in_use(), 2.0)
    with pytest.raises(PodhostError, match="not ready"):
        podhost.client.create_container(pod_id, podhost.container_config("late", SLEEP), pod)


def test_daemon_sigkill_and_restart_keeps_pods_running(podhost: Instance) -> None:
    pod = podhost.pod_config("survivor", share_pid=True)
    pod_id = podhost.client.run_pod_sandbox(pod)
    cid = podhost.run_container(pod_id, pod, "server", HTTPD)
    pause_pid = int(podhost.sandbox_info(pod_id)["pid"])  # type: ignore[call-overload]
    podhost.kill()
    podhost.start()
    pods = podhost.client.list_pod_sandbox()
    assert [(p.id, p.state) for p in pods] == [(pod_id, pb.SANDBOX_READY)]
    (ctr,) = podhost.client.list_containers()
    assert (ctr.id, ctr.state) == (cid, pb.CONTAINER_RUNNING)
    assert int(podhost.sandbox_info(pod_id)["pid"]) == pause_pid  # type: ignore[call-overload]
    wait_for("the container serving again", lambda: serving(podhost, cid), 10)
    # The restarted daemon still sees exits: stopping the container is reported as Exited.
    podhost.client.stop_container(cid, 5)
    assert podhost.client.container_status(cid).status.state == pb.CONTAINER_EXITED


def test_bad_input_gets_clear_errors_and_leaves_nothing(podhost: Instance, tmp_path: Path) -> None:
    pod = podhost.pod_config("badinput")
    pod_id = podhost.client.run_pod_sandbox(pod)
    with pytest.raises(NotFound, match="no-such-image"):
        podhost.client.create_container(
            pod_id, podhost.container_config("x", SLEEP, image="no-such-image:1"), pod
        )
    with pytest.raises(PodhostError, match='exec: "/no/such/command": stat /no/such/command: no such file'):
        podhost.client.create_container(pod_id, podhost.container_config("y", ["/no/such/command"]), pod)
    with pytest.raises(InvalidArgument, match="memory"):
        podhost.client.create_container(pod_id, podhost.container_config("z", SLEEP, memory=4096), pod)
    assert podhost.client.list_containers() == []
    hostile = tmp_path / "hostile.tar"
    layer = tmp_path / "layer.tar"
    with tarfile.open(layer, "w") as t:
        info = tarfile.TarInfo("../../escape")
        info.size = 0
        t.addfile(info)
    with tarfile.open(hostile, "w") as t:
        t.add(layer, "layer.tar")
        cfg = tmp_path / "config.json"
        cfg.write_text('{"rootfs": {"type": "layers", "diff_ids": []}, "config": {}}')
        t.add(cfg, "config.json")
        mf = tmp_path / "manifest.json"
        mf.write_text('[{"Config": "config.json", "RepoTags": ["evil:1"], "Layers": ["layer.tar"]}]')
        t.add(mf, "manifest.json")
    images_before = {i.id for i in podhost.client.list_images()}
    with pytest.raises(InvalidArgument):
        podhost.client.load_image(str(hostile))
    assert {i.id for i in podhost.client.list_images()} == images_before
    assert not list(podhost.config.image_dir.joinpath("tmp").glob("*"))
    assert not Path("/tmp/escape").exists()
    with pytest.raises(InvalidArgument, match=re.escape("metadata.name")):
        podhost.client.run_pod_sandbox(
            pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(namespace="x", uid="u"))
        )


def test_an_ipv4_only_network_gives_eth0_no_ipv6_unless_the_pod_asks(podhost: Instance) -> None:
    """The built-in network is IPv4 only: eth0 gets no IPv6 link-local address (whose multicast the
    bridge would flood to every pod), `lo` keeps ::1, and a pod's own disable_ipv6 sysctl wins."""
    pod = podhost.pod_config("v4only")
    cid = podhost.run_container(podhost.client.run_pod_sandbox(pod), pod, "c", SLEEP)
    addresses = podhost.exec(cid, "ip", "-o", "addr")[1]
    assert "10." in addresses and "inet6 ::1/128" in addresses
    assert [line for line in addresses.splitlines() if "eth0" in line and "inet6" in line] == []

    asks = podhost.pod_config("v6asked", sysctls={"net.ipv6.conf.default.disable_ipv6": "0"})
    cid = podhost.run_container(podhost.client.run_pod_sandbox(asks), asks, "c", SLEEP)
    eth0 = [line for line in podhost.exec(cid, "ip", "-o", "addr", "show", "eth0")[1].splitlines()]
    assert any("inet6 fe80:" in line for line in eth0), eth0


def test_pod_files_sysctls_and_host_network(podhost: Instance) -> None:
    pod = podhost.pod_config(
        "files", sysctls={"net.ipv4.ip_unprivileged_port_start": "0", "kernel.shm_rmid_forced": "1"}
    )
    pod_id = podhost.client.run_pod_sandbox(pod)
    cid = podhost.run_container(pod_id, pod, "c", SLEEP)
    ip = podhost.client.pod_sandbox_status(pod_id).status.network.ip
    assert f"{ip}\tfiles\n" in podhost.exec(cid, "cat", "/etc/hosts")[1]
    assert podhost.exec(cid, "cat", "/etc/hostname")[1] == "files\n"
    assert podhost.exec(cid, "cat", "/etc/resolv.conf")[1] == "nameserver 127.0.0.1\n"
    assert podhost.exec(cid, "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start")[1] == "0\n"
    assert podhost.exec(cid, "cat", "/proc/sys/kernel/shm_rmid_forced")[1] == "1\n"
    with open("/proc/sys/kernel/shm_rmid_forced") as f:
        assert f.read() == "0\n"  # the node's own value is untouched
    with pytest.raises(InvalidArgument, match="not a namespaced sysctl"):
        podhost.client.run_pod_sandbox(podhost.pod_config("nodewide", sysctls={"kernel.panic": "1"}))

    host = podhost.pod_config("hostnet", host_network=True)
    host_id = podhost.client.run_pod_sandbox(host)
    hcid = podhost.run_container(host_id, host, "h", SLEEP)
    assert podhost.client.pod_sandbox_status(host_id).status.network.ip == ""
    assert podhost.exec(hcid, "hostname")[1].strip() == os.uname().nodename
    assert f"{podhost.bridge}:" in podhost.exec(hcid, "ip", "-o", "link")[1]  # the node's interfaces
    assert host_id not in [p.stem for p in podhost.config.cni_state_dir.joinpath("results").glob("*.json")]


def test_half_made_sandbox_is_rolled_back_at_restart(podhost: Instance) -> None:
    """A daemon killed inside RunPodSandbox leaves a record at an early stage: the next start undoes it."""
    import json

    pod_id = podhost.client.run_pod_sandbox(podhost.pod_config("halfmade"))
    info = podhost.sandbox_info(pod_id)
    pause_pid = int(info["pid"])  # type: ignore[call-overload]
    ip = podhost.client.pod_sandbox_status(pod_id).status.network.ip
    podhost.kill()
    record = podhost.config.sandbox_records / f"{pod_id}.json"
    data = json.loads(record.read_text())
    data["stage"], data["state"] = "started", "SANDBOX_NOTREADY"  # as if killed before the final write
    record.write_text(json.dumps(data))
    podhost.start()
    assert podhost.client.list_pod_sandbox() == []
    wait_for("pause gone", lambda: procs.state(pause_pid) in ("", "Z"), 10)
    assert not any(podhost.config.cni_state_dir.joinpath("ipam").rglob(ip))
    assert not podhost.config.sandbox_run_dir(pod_id).exists()


def test_pod_sandbox_stats_come_from_the_pod_cgroup_and_netns(podhost: Instance) -> None:
    import subprocess

    pod = podhost.pod_config("statspod")
    pod_id = podhost.client.run_pod_sandbox(pod)
    cid = podhost.run_container(
        pod_id, pod, "c", ["sh", "-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; exec sleep 3600"]
    )
    ip = podhost.client.pod_sandbox_status(pod_id).status.network.ip
    subprocess.run(["busybox", "ping", "-c", "3", "-W", "1", ip], capture_output=True, check=True)
    s = podhost.client.pod_sandbox_stats(pod_id)
    assert s.attributes.id == pod_id and s.attributes.metadata.name == "statspod"
    linux = s.linux
    assert linux.process.process_count.value >= 2  # pause and the container
    assert linux.cpu.usage_core_nano_seconds.value > 0 and linux.memory.working_set_bytes.value > 0
    assert linux.network.default_interface.name == "eth0"
    assert linux.network.default_interface.rx_bytes.value > 3 * 84  # the pings' echo requests
    assert [c.attributes.id for c in linux.containers] == [cid]
    listed = podhost.client.list_pod_sandbox_stats()
    assert [x.attributes.id for x in listed] == [pod_id]
    # crictl's statsp, as podhost's CLI prints it: the pod's name and id, CPU %, memory.
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "podhost.cli.main", "--root", str(podhost.root), "cri", "statsp", "-s", "0.2"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out[0].split() == ["POD", "POD", "ID", "CPU", "%", "MEM"]
    assert out[1].split()[:2] == ["statspod", pod_id[:13]]


def sandbox_pid(podhost: Instance, pod_id: str) -> int:
    info = json.loads(podhost.client.pod_sandbox_status(pod_id, verbose=True).info["info"])
    return int(info["pid"])


def runtime_spec(podhost: Instance, container_id: str) -> dict:  # type: ignore[type-arg]
    """The OCI spec podhost gave runc (the bundle's config.json)."""
    return dict(
        json.loads((podhost.config.run_dir / "containers" / container_id / "config.json").read_text())
    )
