"""`podhost demo`: the article's shared-namespace-demo pod, driven by the real kubectl, on a private instance.

It starts its own daemon (own root, bridge and subnet, pods' resolv.conf naming only 127.0.0.1), loads the
example's images into it offline (Debian's nginx from its .deb and busybox:1.28, through CRI LoadImage as
`podhost cri load` does), then runs the article's commands verbatim with the user's kubectl against the
daemon's Kubernetes API: apply, get pods, exec (`ps ax`: pause is PID 1), logs, describe, delete. The
crictl-style tables show the same pod from the runtime's side. Everything it made goes when it ends: the
pod through kubectl, then the daemon, which removes its bridge and egress guard once no pod is left.

`podhost [--root DIR] demo --images-only` loads the same images into a running instance and stops there,
so a fresh instance can `kubectl apply -f examples/shared-namespace-demo.yaml` with no network.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from podhost.cli import tables
from podhost.cli.kubectl import kubeconfig_path
from podhost.cli.spawn import daemon_command, spawn_daemon
from podhost.config import Config
from podhost.cri.client import CRIClient
from podhost.errors import FailedPrecondition, NotFound
from podhost.runtime.image.build import demo_image_archive, find_deb

REPO = Path(__file__).resolve().parents[2]
DEMO_BRIDGE = "phdemo0"
DEMO_SUBNET = "10.244.250.0/24"
API_TIMEOUT = 30.0


def say(text: str = "") -> None:
    print(text, flush=True)


def nginx_deb(workdir: Path) -> Path:
    """Debian's nginx package: apt's cache, else `apt-get download nginx` into `workdir`."""
    deb = find_deb("nginx")
    if deb is None:
        workdir.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", "nginx"], cwd=workdir, capture_output=True, timeout=300)
        deb = find_deb("nginx", (workdir,))
    if deb is None:
        raise NotFound("no nginx .deb in /var/cache/apt/archives and `apt-get download nginx` failed")
    return deb


def load_images(client: CRIClient, workdir: Path) -> list[str]:
    """The example's images into the instance (CRI LoadImage of one OCI archive): their names."""
    archive = demo_image_archive(workdir / "demo-images.oci.tar", nginx_deb(workdir))
    try:
        return [name for image in client.load_image(str(archive)) for name in image.repo_tags]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run_demo(args: argparse.Namespace) -> int:
    if args.images_only:
        config = Config.load(root=args.root)
        with CRIClient("unix://" + str(config.socket), timeout=120) as client:
            for name in load_images(client, config.run_dir / f"demo-images-{secrets.token_hex(3)}"):
                say(f"Loaded image: {name}")
        return 0
    if shutil.which("kubectl") is None:
        raise NotFound(
            "the demo runs the real kubectl, and none is installed (scripts/setup.sh installs one)"
        )
    root = Path(f"/tmp/podhost-demo-{secrets.token_hex(3)}")
    root.mkdir(parents=True)
    (root / "resolv.conf").write_text("nameserver 127.0.0.1\n")
    (root / "podhost.toml").write_text(f'default_resolv_conf = "{root}/resolv.conf"\n')
    say(f"podhost demo: a private instance under {root} (bridge {args.bridge}, subnet {args.subnet})")
    config = Config.load(root=root, config_file=root / "podhost.toml", bridge=args.bridge, subnet=args.subnet)
    client = CRIClient("unix://" + str(config.socket), timeout=120)
    daemon = spawn_daemon(
        daemon_command(root, args.bridge, args.subnet, root / "podhost.toml"), root / "daemon.log", client
    )
    kubectl = Kubectl(root)
    try:
        names = load_images(client, root / "images")
        say(f"images (no network): {', '.join(names)}: Debian's nginx and busybox on a busybox base\n")
        kubectl.wait_for_api()
        show_pod(kubectl, client, Path(args.filename))
        if args.keep:
            say(f"\nleft running: podhost --root {root} kubectl get pods   (daemon pid {daemon.pid})")
            return 0
        kubectl.show("delete", "-f", kubectl.manifest_arg(Path(args.filename)))
    finally:
        if not args.keep:
            with contextlib.suppress(Exception):  # a failed demo still leaves nothing running
                kubectl.run("delete", "pods", "--all", "--wait=true")
            daemon.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                daemon.wait(30)
            client.close()
            shutil.rmtree(root, ignore_errors=True)
            say("\ncleaned up: pod deleted, daemon stopped (it removed its bridge and forwarding guard)")
    return 0


class Kubectl:
    """The real kubectl with the demo instance's kubeconfig; `show` prints the command and its output."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"  # kubectl's cache stays in the instance
        self.home.mkdir(exist_ok=True)

    def argv(self, *args: str) -> list[str]:
        return ["kubectl", "--kubeconfig", str(kubeconfig_path(str(self.root))), *args]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "HOME": str(self.home)}
        return subprocess.run(
            self.argv(*args), capture_output=True, text=True, timeout=120, env=env, cwd=REPO
        )

    def wait_for_api(self) -> None:
        deadline = time.monotonic() + API_TIMEOUT
        while time.monotonic() < deadline:
            with contextlib.suppress(FailedPrecondition):
                if self.run("version").returncode == 0:
                    return
            time.sleep(0.1)
        raise FailedPrecondition(f"the daemon's Kubernetes API did not answer within {API_TIMEOUT:.0f} s")

    def show(self, *args: str, tty: bool = False) -> str:
        """Run kubectl as the article types it (`-it` only on a terminal) and print what it printed."""
        argv = list(args)
        if tty and not sys.stdin.isatty():
            argv.remove("-it")
        say(f"\n$ kubectl {' '.join(_quoted(a) for a in argv)}")
        if tty and sys.stdin.isatty():
            env = {**os.environ, "HOME": str(self.home)}
            subprocess.run(self.argv(*argv), env=env, cwd=REPO, timeout=120, check=True)
            return ""
        proc = self.run(*argv)
        output = (proc.stdout + proc.stderr).rstrip()
        say(output)
        if proc.returncode != 0:
            raise FailedPrecondition(f"kubectl {' '.join(argv)} exited with {proc.returncode}")
        return output

    @staticmethod
    def manifest_arg(manifest: Path) -> str:
        """The manifest as the article names it: relative to the repository when it is inside."""
        with contextlib.suppress(ValueError):
            return str(manifest.resolve().relative_to(REPO))
        return str(manifest)


def _quoted(arg: str) -> str:
    return f"'{arg}'" if any(c in arg for c in " ;{}") else arg


def show_pod(kubectl: Kubectl, client: CRIClient, manifest: Path) -> None:
    name = "shared-namespace-demo"
    kubectl.show("apply", "-f", kubectl.manifest_arg(manifest))
    kubectl.run("wait", "--for=condition=Ready", f"pod/{name}", "--timeout=60s")
    kubectl.show("get", "pods")
    now = time.time_ns()
    say("\n$ crictl pods")
    say(tables.pods_table(client.list_pod_sandbox(), now).rstrip())
    say("\n$ crictl ps")
    say(tables.containers_table(client.list_containers(), now).rstrip())
    kubectl.show("exec", "-it", name, "-c", "shell", "--", "ps", "ax", tty=True)
    kubectl.show("exec", name, "-c", "shell", "--", "sh", "-c", "hostname; ip -4 -o addr show eth0")
    say("\n# the nginx container's page, fetched from the shell container over the pod's shared localhost:")
    kubectl.show("exec", name, "-c", "shell", "--", "wget", "-qO-", "http://localhost:80/")
    kubectl.show("logs", name, "-c", "nginx")
    described = kubectl.run("describe", "pod", name).stdout
    say(f"\n$ kubectl describe pod {name}    # its conditions and events")
    say(described[described.find("Conditions:") :].rstrip())
