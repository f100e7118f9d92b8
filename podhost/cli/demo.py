"""`podhost demo`: the article's shared-namespace-demo pod on a private podhost instance.

It starts its own daemon (own root, bridge and subnet, pods' resolv.conf naming only 127.0.0.1), runs the
manifest verbatim through the same CRI calls the kubelet makes, shows `crictl pods`, `crictl ps` and
`ps ax` from the shell container (pause is PID 1), proves the shared network, then removes everything.
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

from podhost.cli import tables
from podhost.cli.spawn import daemon_command, spawn_daemon
from podhost.config import Config
from podhost.cri.client import CRIClient
from podhost.kubelet.manifest import load_documents, parse_pod
from podhost.kubelet.podspec import container_config, pod_log_directory, sandbox_config
from podhost.runtime.image.build import ensure_test_images
from podhost.runtime.image.store import ImageStore
from podhost.runtime.network.cni import PodNetwork

DEMO_MANIFEST = Path(__file__).resolve().parents[2] / "examples" / "shared-namespace-demo.yaml"
DEMO_BRIDGE = "phdemo0"
DEMO_SUBNET = "10.244.250.0/24"


def say(text: str = "") -> None:
    print(text, flush=True)


def run_demo(args: argparse.Namespace) -> int:
    root = Path(f"/tmp/podhost-demo-{secrets.token_hex(3)}")
    root.mkdir(parents=True)
    (root / "resolv.conf").write_text("nameserver 127.0.0.1\n")
    (root / "podhost.toml").write_text(f'default_resolv_conf = "{root}/resolv.conf"\n')
    config = Config.load(root=root, config_file=root / "podhost.toml", bridge=DEMO_BRIDGE, subnet=DEMO_SUBNET)
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        ip_forward = f.read().strip()
    say(f"podhost demo: a private instance under {root} (bridge {DEMO_BRIDGE}, subnet {DEMO_SUBNET})")
    with ImageStore(config.image_dir) as store:
        ensure_test_images(store)
    say("images: 'nginx' and 'busybox:1.28' are local look-alikes built from Debian's busybox-static")
    say("        (the nginx one serves with busybox httpd), so the demo needs no registry.\n")
    client = CRIClient("unix://" + str(config.socket), timeout=60)
    daemon = spawn_daemon(
        daemon_command(root, DEMO_BRIDGE, DEMO_SUBNET, root / "podhost.toml"), root / "daemon.log", client
    )
    try:
        show_pod(client, Path(args.filename), root)
        if args.keep:
            say(f"\nleft running: podhost --root {root} cri pods   (daemon pid {daemon.pid})")
            return 0
    finally:
        if not args.keep:
            for pod in client.list_pod_sandbox():
                client.stop_pod_sandbox(pod.id)
                client.remove_pod_sandbox(pod.id)
            daemon.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                daemon.wait(15)
            client.close()
            PodNetwork(config).remove_egress_guard()
            subprocess.run(["ip", "link", "del", DEMO_BRIDGE], capture_output=True)
            with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
                f.write(ip_forward)
            shutil.rmtree(root, ignore_errors=True)
            say("\ncleaned up: pod stopped and removed, daemon stopped, bridge and forwarding guard removed")
    return 0


def show_pod(client: CRIClient, manifest: Path, root: Path) -> None:
    (doc,) = load_documents(manifest.read_text())
    pod = parse_pod(doc)
    pod.uid = pod.uid or secrets.token_hex(16)
    say(f"$ podhost apply -f {manifest.name}")
    t0 = time.monotonic()
    sb_config = sandbox_config(pod, attempt=0, log_directory=pod_log_directory(str(root / "logs"), pod))
    pod_id = client.run_pod_sandbox(sb_config)
    ip = client.pod_sandbox_status(pod_id).status.network.ip
    say(
        f"  RunPodSandbox   {pod.name}: pause founded its namespaces, CNI gave it {ip} "
        f"({(time.monotonic() - t0) * 1e3:.0f} ms)"
    )
    ids = {}
    for c in pod.containers:
        t1 = time.monotonic()
        cid = client.create_container(pod_id, container_config(pod, c, attempt=0), sb_config)
        client.start_container(cid)
        ids[c.name] = cid
        say(
            f"  CreateContainer + StartContainer  {c.name} ({c.image}) joined the pod "
            f"({(time.monotonic() - t1) * 1e3:.0f} ms)"
        )
    now = time.time_ns()
    say("\n$ crictl pods")
    say(tables.pods_table(client.list_pod_sandbox(), now).rstrip())
    say("\n$ crictl ps")
    say(tables.containers_table(client.list_containers(), now).rstrip())
    shell = ids.get("shell") or next(iter(ids.values()))
    say("\n$ kubectl exec -it shared-namespace-demo -c shell -- /bin/sh")
    say("/ # ps ax")
    say(client.exec_sync(shell, ["ps", "ax"], 10).stdout.decode().rstrip())
    say("/ # hostname; ip -4 -o addr show eth0")
    out = client.exec_sync(shell, ["sh", "-c", "hostname; ip -4 -o addr show eth0"], 10).stdout.decode()
    say(out.rstrip())
    say("/ # wget -qO- http://localhost:80/     # the nginx container, over the pod's shared loopback")
    page = b""
    for _ in range(50):
        r = client.exec_sync(shell, ["wget", "-qO-", "http://localhost:80/"], 10)
        if r.exit_code == 0:
            page = r.stdout
            break
        time.sleep(0.05)
    say(page.decode(errors="replace").rstrip() or "(no answer)")
