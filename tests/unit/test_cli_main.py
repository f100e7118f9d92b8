"""`podhost` CLI end to end against a real CRI server (fake runtime behind it), plus CRI log parsing."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from podhost.cli import crilog
from podhost.cli.main import main
from podhost.runtime import model
from tests.fake_runtime import FakeRuntime, serving

Env = tuple[FakeRuntime, Path, Path]


@pytest.fixture
def env() -> Iterator[Env]:
    with serving() as (runtime, _client, sock):
        yield runtime, sock, sock.parent


def run(sock: Path, *argv: str) -> int:
    return main(["--runtime-endpoint", f"unix://{sock}", "--timeout", "10", "cri", *argv])


def write_configs(root: Path) -> tuple[Path, Path]:
    logdir = root / "logs"
    pod = {
        "metadata": {"name": "web", "namespace": "default", "uid": "u-1", "attempt": 0},
        "log_directory": str(logdir),
        "linux": {"security_context": {"namespace_options": {"pid": "CONTAINER"}}},
    }
    pod_file = root / "pod.yaml"
    pod_file.write_text(yaml.safe_dump(pod))
    ctr_file = root / "ctr.json"
    ctr_file.write_text(
        json.dumps(
            {
                "metadata": {"name": "app"},
                "image": {"image": "busybox:1.36"},
                "command": ["sleep", "60"],
                "logPath": "app.log",
                "labels": {"io.kubernetes.pod.name": "web"},
            }
        )
    )
    return pod_file, ctr_file


def test_version_and_info(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    _, sock, _ = env
    assert run(sock, "version") == 0
    assert capsys.readouterr().out.splitlines() == [
        "Version:  0.1.0",
        "RuntimeName:  podhost",
        "RuntimeVersion:  0.1.0-test",
        "RuntimeApiVersion:  v1",
    ]
    assert run(sock, "info") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["status"]["conditions"][0]["type"] == "RuntimeReady" and "config" in info
    assert [h["name"] for h in info["runtimeHandlers"]] == ["runc", "crun"]


def test_pod_and_container_lifecycle(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    runtime, sock, root = env
    pod_file, ctr_file = write_configs(root)
    assert run(sock, "runp", str(pod_file)) == 0
    pod_id = capsys.readouterr().out.strip()
    assert runtime.sandboxes[pod_id].config.namespace_options.pid == model.NamespaceMode.CONTAINER

    assert run(sock, "pods") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["POD", "ID", "CREATED", "STATE", "NAME", "NAMESPACE", "ATTEMPT", "RUNTIME"]
    assert lines[1].split()[0] == pod_id[:13] and "Ready" in lines[1] and "web" in lines[1]
    assert run(sock, "pods", "-q") == 0 and capsys.readouterr().out == pod_id + "\n"
    assert run(sock, "pods", "--name", "^nomatch$", "-q") == 0 and capsys.readouterr().out == ""
    assert run(sock, "pods", "-o", "json") == 0
    assert json.loads(capsys.readouterr().out)["items"][0]["metadata"]["name"] == "web"
    assert run(sock, "inspectp", pod_id[:13]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (
        doc["status"]["network"]["ip"] == "10.88.0.2"
        and doc["info"]["info"]["config"]["metadata"]["name"] == "web"
    )

    assert run(sock, "create", pod_id, str(ctr_file), str(pod_file)) == 0
    cid = capsys.readouterr().out.strip()
    assert run(sock, "ps") == 0
    assert len(capsys.readouterr().out.splitlines()) == 1  # created, not running: header only
    assert run(sock, "start", cid) == 0 and capsys.readouterr().out == cid + "\n"
    assert run(sock, "ps") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "CONTAINER",
        "IMAGE",
        "CREATED",
        "STATE",
        "NAME",
        "ATTEMPT",
        "POD",
        "ID",
        "POD",
    ]
    assert lines[1].split() == [
        cid[:13],
        "busybox:1.36",
        "Less",
        "than",
        "a",
        "second",
        "ago",
        "Running",
        "app",
        "0",
        pod_id[:13],
        "web",
    ]
    assert run(sock, "inspect", cid, "-o", "yaml") == 0
    assert yaml.safe_load(capsys.readouterr().out)["status"]["state"] == "CONTAINER_RUNNING"

    assert run(sock, "exec", cid, "sh", "-c", "echo hi") == 3  # the command's exit code
    out = capsys.readouterr()
    assert (out.out, out.err) == ("out:sh -c echo hi", "err\n")
    assert run(sock, "exec", "-it", cid, "sh") == 1
    assert "podhost: interactive exec (-i/-t)" in capsys.readouterr().err

    assert run(sock, "stop", "-t", "5", cid) == 0 and capsys.readouterr().out == cid + "\n"
    assert runtime.stopped == [(cid, 5)]
    assert run(sock, "ps", "-a", "-q") == 0 and capsys.readouterr().out == cid + "\n"
    assert run(sock, "ps", "--state", "exited", "-o", "json") == 0
    assert json.loads(capsys.readouterr().out)["containers"][0]["state"] == "CONTAINER_EXITED"
    assert run(sock, "rm", cid) == 0 and runtime.containers == {}
    capsys.readouterr()
    assert run(sock, "stopp", pod_id) == 0 and capsys.readouterr().out == f"Stopped sandbox {pod_id}\n"
    assert run(sock, "rmp", pod_id) == 0 and capsys.readouterr().out == f"Removed sandbox {pod_id}\n"
    assert runtime.sandboxes == {}


def test_errors_are_one_line_and_exit_1(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    _, sock, root = env
    assert run(sock, "inspectp", "nope") == 1
    assert capsys.readouterr().err == "podhost: pod sandbox 'nope' not found\n"
    bad = root / "bad.json"
    bad.write_text('{"metadata": {"name": "x"}, "no_such_field": 1}')
    assert run(sock, "runp", str(bad)) == 1
    assert capsys.readouterr().err.startswith(f"podhost: {bad}: ")
    assert run(sock, "runp", str(root / "missing.yaml")) == 1
    assert "No such file" in capsys.readouterr().err
    assert main(["--runtime-endpoint", "/nonexistent/x.sock", "--timeout", "2", "cri", "pods"]) == 1
    assert capsys.readouterr().err.startswith(
        "podhost: cannot reach the runtime at unix:///nonexistent/x.sock"
    )


def test_images_pull_rmi_load(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    runtime, sock, root = env
    assert run(sock, "images") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["IMAGE", "TAG", "IMAGE", "ID", "SIZE"]
    assert lines[1].split() == ["docker.io/library/busybox", "1.36", "b" * 13, "4.86MB"]
    assert run(sock, "images", "-o", "yaml") == 0
    assert yaml.safe_load(capsys.readouterr().out)["images"][0]["size"] == "4860000"
    assert run(sock, "pull", "busybox:1.36") == 0
    assert capsys.readouterr().out == f"Image is up to date for sha256:{'b' * 64}\n"
    assert run(sock, "inspecti", "busybox:1.36") == 0
    assert json.loads(capsys.readouterr().out)["status"]["repoTags"] == ["docker.io/library/busybox:1.36"]
    assert run(sock, "rmi", "busybox:1.36") == 0
    assert capsys.readouterr().out == "Deleted: docker.io/library/busybox:1.36\n"
    assert run(sock, "rmi", "busybox:1.36") == 1
    assert "no such image" in capsys.readouterr().err
    archive = root / "img.tar"
    archive.write_bytes(b"")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert run(sock, "load", "img.tar") == 0  # sent as an absolute path
    finally:
        os.chdir(cwd)
    assert capsys.readouterr().out == "Loaded image: localhost/loaded:1\n"


def test_stats(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    runtime, sock, root = env
    pod_file, ctr_file = write_configs(root)
    run(sock, "runp", str(pod_file))
    pod_id = capsys.readouterr().out.strip()
    run(sock, "create", pod_id, str(ctr_file), str(pod_file))
    cid = capsys.readouterr().out.strip()
    assert run(sock, "stats", "-s", "0.05") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["CONTAINER", "NAME", "CPU", "%", "MEM", "DISK", "INODES", "SWAP"]
    assert lines[1].split()[:2] == [cid[:13], "app"] and lines[1].split()[3] == "1.5MB"


def test_logs_and_follow(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    runtime, sock, root = env
    pod_file, ctr_file = write_configs(root)
    run(sock, "runp", str(pod_file))
    pod_id = capsys.readouterr().out.strip()
    run(sock, "create", pod_id, str(ctr_file), str(pod_file))
    cid = capsys.readouterr().out.strip()
    log = root / "logs" / "app.log"
    log.parent.mkdir()
    log.write_bytes(
        b"2024-01-01T00:00:00.000000001Z stdout F first\n"
        b"2024-01-01T00:00:00.000000002Z stderr F oops\n"
        b"2024-01-01T00:00:00.000000003Z stdout P par\n"
        b"2024-01-01T00:00:00.000000004Z stdout F tial\n"
    )
    assert run(sock, "logs", cid) == 0
    out = capsys.readouterr()
    assert (out.out, out.err) == ("first\npartial\n", "oops\n")
    assert run(sock, "logs", "--tail", "1", "-t", cid) == 0
    assert capsys.readouterr().out == "2024-01-01T00:00:00.000000004Z tial\n"

    runtime.start_container(cid)

    def append_then_exit() -> None:
        time.sleep(0.3)
        with open(log, "ab") as f:
            f.write(b"2024-01-01T00:00:01.000000000Z stdout F later\n")
        time.sleep(0.3)
        runtime.stop_container(cid, 0)

    writer = threading.Thread(target=append_then_exit)
    writer.start()
    started = time.monotonic()
    assert run(sock, "logs", "-f", "--tail", "0", cid) == 0
    writer.join()
    assert capsys.readouterr().out == "later\n"
    assert time.monotonic() - started < 5

    runtime.containers[cid].log_path = ""
    assert run(sock, "logs", cid) == 1
    assert "has no log file" in capsys.readouterr().err


def test_root_selects_the_instance_socket(capsys: pytest.CaptureFixture[str]) -> None:
    with serving() as (_runtime, _client, sock):
        # Config.load(root=R) puts the socket at R/podhost.sock: serve a second server there.
        from podhost.cri.server import serve

        server = serve(_runtime, sock.parent / "podhost.sock")
        try:
            assert main(["--root", str(sock.parent), "cri", "version"]) == 0
            assert "RuntimeName:  podhost" in capsys.readouterr().out
        finally:
            server.stop(grace=None).wait()


def test_daemon_command_builds_the_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import podhost.daemon

    seen = []
    monkeypatch.setattr(podhost.daemon, "run", seen.append)
    assert main(["--root", str(tmp_path), "daemon", "--bridge", "phtest0", "--subnet", "10.199.0.0/24"]) == 0
    (config,) = seen
    assert (config.bridge, config.subnet, config.socket) == (
        "phtest0",
        "10.199.0.0/24",
        tmp_path / "podhost.sock",
    )


def test_cri_log_parsing() -> None:
    rec = crilog.parse_line(b"2024-01-01T00:00:00Z stderr P a b c\n")
    assert rec == crilog.LogRecord("2024-01-01T00:00:00Z", "stderr", True, b"a b c")
    assert crilog.parse_line(b"garbage") is None
    assert crilog.parse_line(b"2024-01-01T00:00:00Z stdout F") == crilog.LogRecord(
        "2024-01-01T00:00:00Z", "stdout", False, b""
    )
    assert crilog.format_record(rec, timestamps=True) == b"2024-01-01T00:00:00Z a b c"
    assert crilog.last_lines(b"1\n2\n3\n", 2) == [b"2\n", b"3\n"]
    assert crilog.last_lines(b"1\n2\n", 0) == [] and crilog.last_lines(b"1\n", None) == [b"1\n"]
    out, err = io.BytesIO(), io.BytesIO()
    crilog.LogWriter(out, err).write_lines([b"t stdout F \xff\xfe\n", b"t stderr F e\n"])  # not UTF-8: kept
    assert (out.getvalue(), err.getvalue()) == (b"\xff\xfe\n", b"e\n")


def test_follow_survives_rotation(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    log.write_bytes(b"t stdout F one\n")
    out = io.BytesIO()
    checks = iter([True, True, False])

    def rotate() -> None:
        time.sleep(0.2)
        log.rename(tmp_path / "c.log.1")
        log.write_bytes(b"t stdout F two\n")

    t = threading.Thread(target=rotate)
    t.start()
    crilog.follow_log(str(log), crilog.LogWriter(out, io.BytesIO()), lambda: next(checks, False), poll=0.02)
    t.join()
    assert out.getvalue() == b"one\ntwo\n"


def test_load_against_a_runtime_without_podhost_admin(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Only `load` needs podhost's own service; another CRI runtime answers it with a clear message."""
    import shutil
    import tempfile
    from concurrent import futures

    import grpc

    from podhost.cri import api_pb2_grpc
    from podhost.cri.runtime_service import RuntimeServicer

    root = Path(tempfile.mkdtemp(prefix="phcri-"))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    api_pb2_grpc.add_RuntimeServiceServicer_to_server(RuntimeServicer(FakeRuntime(root)), server)
    server.add_insecure_port(f"unix://{root}/other.sock")
    server.start()
    try:
        archive = tmp_path / "img.tar"
        archive.write_bytes(b"")
        assert run(root / "other.sock", "version") == 0
        capsys.readouterr()
        assert run(root / "other.sock", "load", str(archive)) == 1
        assert "cannot load images through podhost" in capsys.readouterr().err
    finally:
        server.stop(grace=None).wait()
        shutil.rmtree(root, ignore_errors=True)


def test_podhost_kubectl_execs_the_real_kubectl_with_the_instance_kubeconfig(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from podhost.cli import kubectl

    assert main(["--root", str(tmp_path), "kubectl", "get", "pods"]) == 1
    assert "no kubeconfig at" in capsys.readouterr().err  # no daemon: nothing is started
    (tmp_path / "state").mkdir(exist_ok=True)
    (tmp_path / "state" / "kubeconfig").write_text("apiVersion: v1\n")
    execs: list[list[str]] = []
    monkeypatch.setattr(kubectl.shutil, "which", lambda name: "/usr/bin/kubectl")
    monkeypatch.setattr(kubectl.os, "execv", lambda path, argv: execs.append(argv))
    main(["--root", str(tmp_path), "kubectl", "-n", "x", "exec", "-it", "p", "--", "ps", "ax"])
    kubeconfig = str(tmp_path / "state" / "kubeconfig")
    assert execs == [
        ["/usr/bin/kubectl", "--kubeconfig", kubeconfig, "-n", "x", "exec", "-it", "p", "--", "ps", "ax"]
    ]
    # kubectl's verbs are not podhost's: the user is told what to type
    assert main(["--root", str(tmp_path), "get", "pods"]) == 2
    assert "`podhost kubectl get pods`" in capsys.readouterr().err


def test_a_cri_verb_does_not_import_grpcio() -> None:
    """`podhost cri ...` talks through podhost's own HTTP/2 client (grpcio's import is 60-90 ms here):
    neither grpc nor the daemon's config machinery is loaded by a verb, even one that fails."""
    code = (
        "import sys; from podhost.cli import main as m; "
        "rc = m.main(['--runtime-endpoint', 'unix:///nonexistent/podhost.sock', 'cri', 'pods']); "
        "print(rc, sorted(n for n in ('grpc', 'asyncio', 'ssl', 'podhost.config') if n in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split("\n")[0] == "1 []", (out.stdout, out.stderr)
    assert "cannot reach the runtime at unix:///nonexistent/podhost.sock" in out.stderr
    # the command itself (run(): no interpreter teardown after a CRI verb) still flushes and exits 1
    argv = ["--runtime-endpoint", "unix:///nonexistent/podhost.sock", "cri", "version"]
    cmd = subprocess.run([sys.executable, "-m", "podhost.cli.main", *argv], capture_output=True, text=True)
    assert cmd.returncode == 1 and "podhost: cannot reach the runtime" in cmd.stderr, cmd
    helped = subprocess.run(
        [sys.executable, "-m", "podhost.cli.main", "cri", "pods", "--help"], capture_output=True, text=True
    )
    assert helped.returncode == 0 and "usage: podhost cri pods" in helped.stdout, helped
