"""The OCI runtime's floor under CreateContainer: `python -m bench.floor [--runs 30]`.

podhost's CreateContainer is mostly `runc create` (the `--debug` stage "runtime create"). This times that
one command on its own, on the bundle of a real container: a podhost daemon (root `/tmp/ph-bfl-*`,
bridge `phbfl0`, 10.244.12.0/24) creates a pod and a busybox `sleep` container, its config.json is
copied into a bundle of its own (same namespaces to join, same mounts, cgroups under the instance's
parent, the busybox rootfs read-only) and `runc create` + `runc delete -f` run on it `--runs` times.
`crun create` runs on the same bundle once, then `--runs` times if it works: on a host whose cgroup v2
hierarchy beside v1 holds a controller (hybrid mode), crun refuses, and its error is printed instead.

Prints figures and the runtimes' versions; asserts nothing. It is the ground under the "through crictl"
row of `python -m bench`: three crictl processes plus this are a floor no podhost change goes below.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.figures_cli import run_and_print
from bench.metrics import summarize
from podhost.runtime.image.build import busybox_rootfs
from tests.instance import Instance
from tests.leaks import find_leaks

BRIDGE, SUBNET = "phbfl0", "10.244.12.0/24"


def _version(binary: str) -> str:
    done = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    return done.stdout.splitlines()[0] if done.stdout else f"{binary}: exit {done.returncode}"


def _create_delete(binary: str, root: Path, bundle: Path, name: str) -> tuple[float, float]:
    """Wall seconds of `<binary> create` and the CPU seconds of that process, after which the container
    is deleted; a failed create raises with the runtime's own words. Its stderr goes to a file: the
    container's init inherits it and lives on, blocked on the exec fifo, so a pipe would never end."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [binary, "--root", str(root), "create", "--bundle", str(bundle), name],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        subprocess.run(
            [binary, "--root", str(root), "delete", "--force", name], capture_output=True, check=False
        )
        if proc.returncode != 0:
            err.seek(0)
            words = err.read().decode(errors="replace").strip().splitlines()
            raise RuntimeError(words[-1] if words else f"{binary} create: exit {proc.returncode}")
    return wall, usage.ru_utime + usage.ru_stime


def _bundle(inst: Instance, where: Path) -> Path:
    """A bundle from a real container's config.json, over a read-only busybox rootfs of its own."""
    config = inst.pod_config("floor")
    pod = inst.client.run_pod_sandbox(config)
    cid = inst.client.create_container(pod, inst.container_config("sleeper", ["sleep", "3600"]), config)
    spec = json.loads((inst.config.run_dir / "containers" / cid / "config.json").read_text())
    busybox_rootfs(where / "rootfs")
    spec["root"] = {"path": str(where / "rootfs"), "readonly": True}
    spec["linux"]["cgroupsPath"] += "-floor"
    (where / "config.json").write_text(json.dumps(spec))
    return where


def run(runs: int) -> dict[str, object]:
    inst = Instance(Path(f"/tmp/ph-bfl-{secrets.token_hex(3)}"), BRIDGE, SUBNET)
    results: dict[str, object] = {}
    try:
        inst.start()
        bundle = _bundle(inst, inst.root / "floor-bundle")
        for binary in ("runc", "crun"):
            if shutil.which(binary) is None:
                results[binary] = {"error": "not installed"}
                continue
            state = inst.root / f"floor-{binary}"
            walls, cpus = [], []
            entry: dict[str, object] = {"version": _version(binary)}
            try:
                for i in range(runs):
                    wall, cpu = _create_delete(binary, state, bundle, f"floor-{binary}-{i}")
                    walls.append(wall * 1e3)
                    cpus.append(cpu * 1e3)
            except RuntimeError as e:
                entry["error"] = str(e)
            if walls:
                entry |= {"create_ms": summarize(walls), "create_cpu_ms": summarize(cpus)}
            results[binary] = entry
            shutil.rmtree(state, ignore_errors=True)
        inst.remove_all_pods()
        results["leaks"] = find_leaks(inst.root, inst.bridge, inst.config.cgroup_parent)
    finally:  # also after a failed start, which the leak check above would only hide behind its own error
        inst.cleanup()
    return results


def print_table(results: dict[str, object]) -> None:
    print(f"{'OCI runtime create, a real container bundle':46} {'p50':>8} {'p99':>8}")
    for binary in ("runc", "crun"):
        entry = results.get(binary)
        if not isinstance(entry, dict):
            continue
        print(f"{binary}: {entry.get('version', '')}")
        if "create_ms" in entry:
            for label, key in (
                ("  create, wall (ms)", "create_ms"),
                ("  create, CPU of that process (ms)", "create_cpu_ms"),
            ):
                s = entry[key]
                print(f"{label:46} {s['p50']:>8.1f} {s['p99']:>8.1f}")
        if "error" in entry:
            print(f"  refused: {entry['error']}")
    print(f"leaks after the run: {results.get('leaks') or 'none'}")


def main() -> None:
    run_and_print(__doc__.splitlines()[0], "--runs", 30, run, print_table)


if __name__ == "__main__":
    main()
