"""SIGKILL at every named stage of the lifecycle verbs: after a restart, what is listed is real, nothing real is
unlisted, a retried verb does what the CRI says, and removing everything leaves nothing at all.

Each case is one (verb, stage) of `podhost.runtime.stages.STAGES`. The daemon is started with
`PODHOST_KILL_AT=<verb>:<stage>`, the verb's precondition is built through CRI (no other verb enters the
armed stage), the verb is issued and the daemon kills itself on entering that stage. A daemon that does not
die never entered the stage: the case fails saying so. Then a plain daemon starts over the same state and
`tests/reality.py` holds its listing against the machine; the verb is retried, everything is removed through
CRI and `find_leaks` must find zero of anything (processes, marked ones included, pins, mounts, veths, IPAM
reservations, cgroups, run-dir and state files).

All cases share one instance (own bridge and subnet); a case that leaked is scrubbed after it, so that the
next case is judged on its own.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from podhost.cri import api_pb2 as pb
from podhost.errors import AlreadyExists, PodhostError
from podhost.runtime.procs import mark_env
from podhost.runtime.stages import KILL_AT_ENV, STAGES
from tests.instance import Instance, OrphanReaper
from tests.leaks import find_leaks
from tests.reality import reality_problems, settled_reality_problems
from tests.wait import wait_for

pytestmark = pytest.mark.root

BRIDGE = "ph4c0"
SUBNET = "10.231.4.0/26"
SLEEP = ["sleep", "3600"]
EXIT_CODE = 3
#: Every (verb, stage) the daemon can be killed at, straight from the table the daemon uses.
CASES = [(verb, stage) for verb, stages in STAGES.items() for stage in stages]
#: How the client sees a server that died mid-call.
DEAD_SERVER_CODES = ("UNAVAILABLE", "CANCELLED")


@pytest.fixture(scope="module")
def instance(orphan_reaper: OrphanReaper) -> Iterator[Instance]:
    """The module's instance; its daemon is started by each case (the fixture does not start it)."""
    inst = Instance(Path(f"/tmp/ph4-crash-{secrets.token_hex(4)}"), BRIDGE, SUBNET)
    try:
        yield inst
    finally:
        inst.cleanup()


@dataclass
class Case:
    """One crash case on the shared instance: its daemon log starts at `log_offset`."""

    inst: Instance
    log_offset: int = 0

    def log(self, lines: int = 40) -> str:
        path = self.inst.root / "daemon.log"
        try:
            with open(path, "rb") as f:
                f.seek(self.log_offset)
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        return "daemon log of this case (last lines):\n" + "\n".join(text.splitlines()[-lines:])


@pytest.fixture
def case(instance: Instance) -> Iterator[Case]:
    """The instance with no daemon and nothing left by an earlier case; afterwards its pods are removed and
    whatever a failed case left is scrubbed (that case has already failed for it)."""
    instance.scrub()
    log = instance.root / "daemon.log"
    yield Case(instance, log.stat().st_size if log.exists() else 0)
    if instance.daemon is not None and instance.daemon.poll() is None:
        with contextlib.suppress(PodhostError):
            instance.remove_all_pods()
    instance.scrub()


# --- preconditions: what exists when the verb is issued -------------------------------------------------


@dataclass
class Scene:
    pod: pb.PodSandboxConfig
    pod_id: str = ""
    container: pb.ContainerConfig | None = None  # CreateContainer's config
    container_id: str = ""  # StartContainer's container
    running_id: str = ""  # Stop/RemovePodSandbox: a running sleep
    exited_id: str = ""  # Stop/RemovePodSandbox: a container that exited with EXIT_CODE


def ready_pod(inst: Instance, name: str) -> Scene:
    scene = Scene(inst.pod_config(name))
    scene.pod_id = inst.client.run_pod_sandbox(scene.pod)
    return scene


def exited_container(inst: Instance, scene: Scene) -> str:
    config = inst.container_config("done", ["sh", "-c", f"exit {EXIT_CODE}"])
    cid = inst.client.create_container(scene.pod_id, config, scene.pod)
    inst.client.start_container(cid)
    wait_for(
        "the container that exits at once reported exited",
        lambda: inst.client.container_status(cid).status.state == pb.CONTAINER_EXITED,
        10,
    )
    return cid


def build_scene(inst: Instance, verb: str) -> tuple[Scene, Callable[[], object]]:
    """The precondition of `verb`, built through CRI, and the call that issues `verb` on it."""
    client = inst.client
    if verb == "RunPodSandbox":
        scene = Scene(inst.pod_config("crash-run"))
        return scene, lambda: client.run_pod_sandbox(scene.pod)
    scene = ready_pod(inst, f"crash-{verb.lower()}")
    if verb == "CreateContainer":
        scene.container = inst.container_config("crash-ctr", SLEEP)
        return scene, lambda: client.create_container(scene.pod_id, scene.container, scene.pod)
    if verb == "StartContainer":
        scene.container = inst.container_config("crash-ctr", SLEEP)
        scene.container_id = client.create_container(scene.pod_id, scene.container, scene.pod)
        return scene, lambda: client.start_container(scene.container_id)
    scene.running_id = inst.run_container(scene.pod_id, scene.pod, "run", SLEEP)
    scene.exited_id = exited_container(inst, scene)
    if verb == "StopPodSandbox":
        return scene, lambda: client.stop_pod_sandbox(scene.pod_id)
    if verb == "RemovePodSandbox":
        return scene, lambda: client.remove_pod_sandbox(scene.pod_id)
    raise AssertionError(f"no precondition for {verb}: add one to build_scene")


# --- what the CRI must say after the restart, and the retried verb --------------------------------------


def pods_named(inst: Instance, name: str) -> list[pb.PodSandbox]:
    return [p for p in inst.client.list_pod_sandbox() if p.metadata.name == name]


def containers_of(inst: Instance, pod_id: str) -> dict[str, pb.Container]:
    return {c.id: c for c in inst.client.list_containers() if c.pod_sandbox_id == pod_id}


def after_run_pod_sandbox(inst: Instance, scene: Scene) -> None:
    listed = pods_named(inst, scene.pod.metadata.name)
    assert len(listed) <= 1, f"one RunPodSandbox call left {len(listed)} pods listed"
    try:
        pod_id = inst.client.run_pod_sandbox(scene.pod)
    except AlreadyExists:
        assert listed, "the retried RunPodSandbox got ALREADY_EXISTS, but no pod of that name is listed"
        pod_id = listed[0].id
        if listed[0].state != pb.SANDBOX_READY:  # the kubelet makes the next attempt
            scene.pod.metadata.attempt += 1
            pod_id = inst.client.run_pod_sandbox(scene.pod)
    assert inst.client.pod_sandbox_status(pod_id).status.state == pb.SANDBOX_READY
    cid = inst.run_container(pod_id, scene.pod, "after", SLEEP)
    assert inst.client.container_status(cid).status.state == pb.CONTAINER_RUNNING


def after_create_container(inst: Instance, scene: Scene) -> None:
    assert scene.container is not None
    name = scene.container.metadata.name
    listed = [c for c in containers_of(inst, scene.pod_id).values() if c.metadata.name == name]
    assert len(listed) <= 1, f"one CreateContainer call left {len(listed)} containers named {name!r}"
    if listed:
        with pytest.raises(AlreadyExists):
            inst.client.create_container(scene.pod_id, scene.container, scene.pod)
        cid = listed[0].id
    else:
        cid = inst.client.create_container(scene.pod_id, scene.container, scene.pod)
    if inst.client.container_status(cid).status.state == pb.CONTAINER_CREATED:
        inst.client.start_container(cid)
        assert inst.client.container_status(cid).status.state == pb.CONTAINER_RUNNING


def after_start_container(inst: Instance, scene: Scene) -> None:
    listed = containers_of(inst, scene.pod_id)
    assert scene.container_id in listed, "a container that StartContainer was crashed in is no longer listed"
    state = listed[scene.container_id].state
    assert state in (pb.CONTAINER_CREATED, pb.CONTAINER_RUNNING), pb.ContainerState.Name(state)
    if state == pb.CONTAINER_CREATED:  # runc never started it (reality_problems checked): start it now
        inst.client.start_container(scene.container_id)
    assert inst.client.container_status(scene.container_id).status.state == pb.CONTAINER_RUNNING
    inst.client.stop_container(scene.container_id, 0)
    assert inst.client.container_status(scene.container_id).status.state == pb.CONTAINER_EXITED


def assert_exited_container_kept(inst: Instance, scene: Scene) -> None:
    status = inst.client.container_status(scene.exited_id).status
    assert (status.state, status.exit_code) == (pb.CONTAINER_EXITED, EXIT_CODE)


def after_stop_pod_sandbox(inst: Instance, scene: Scene) -> None:
    assert [p.id for p in pods_named(inst, scene.pod.metadata.name)] == [scene.pod_id]
    assert set(containers_of(inst, scene.pod_id)) == {scene.running_id, scene.exited_id}
    assert_exited_container_kept(inst, scene)
    inst.client.stop_pod_sandbox(scene.pod_id)
    assert inst.client.pod_sandbox_status(scene.pod_id).status.state == pb.SANDBOX_NOTREADY
    states = {c.id: c.state for c in containers_of(inst, scene.pod_id).values()}
    assert states == {scene.running_id: pb.CONTAINER_EXITED, scene.exited_id: pb.CONTAINER_EXITED}
    assert_exited_container_kept(inst, scene)


def after_remove_pod_sandbox(inst: Instance, scene: Scene) -> None:
    if not pods_named(inst, scene.pod.metadata.name):
        assert containers_of(inst, scene.pod_id) == {}, "containers listed of a pod that is not"
    elif scene.exited_id in containers_of(inst, scene.pod_id):
        assert_exited_container_kept(inst, scene)
    inst.client.remove_pod_sandbox(scene.pod_id)
    assert pods_named(inst, scene.pod.metadata.name) == []
    assert containers_of(inst, scene.pod_id) == {}


AFTER: dict[str, Callable[[Instance, Scene], None]] = {
    "RunPodSandbox": after_run_pod_sandbox,
    "CreateContainer": after_create_container,
    "StartContainer": after_start_container,
    "StopPodSandbox": after_stop_pod_sandbox,
    "RemovePodSandbox": after_remove_pod_sandbox,
}


def test_every_verb_with_stages_has_a_case() -> None:
    assert set(STAGES) == set(AFTER), "a verb of stages.STAGES has no crash case (or a case lost its verb)"


@pytest.mark.parametrize(("verb", "stage"), CASES, ids=[f"{verb}:{stage}" for verb, stage in CASES])
def test_sigkill_at_stage(case: Case, verb: str, stage: str) -> None:
    inst = case.inst
    inst.start(env={KILL_AT_ENV: f"{verb}:{stage}"})
    scene, call = build_scene(inst, verb)
    assert inst.daemon is not None and inst.daemon.poll() is None, (
        f"the daemon died while the precondition of {verb} was built\n{case.log()}"
    )

    error: PodhostError | None = None
    try:
        call()
    except PodhostError as e:
        error = e
    # A call cut off by the kill fails as a dead server's call does; a daemon that answered anything else
    # (OK, or an error of its own) can only have raced its answer with the kill: it is gone in a moment.
    cut_off = error is not None and error.grpc_code in DEAD_SERVER_CODES
    code = inst.wait_exited(10.0 if cut_off else 2.0)
    if code is None:
        outcome = f"failed: {error}" if error is not None else "returned OK"
        pytest.fail(
            f"{verb} {outcome} and the daemon did not die: stage {stage!r} was never entered\n{case.log()}"
        )
    assert code == -9, f"the daemon ended with {code}, not by SIGKILL at {verb}:{stage}\n{case.log()}"
    assert error is not None and error.grpc_code in DEAD_SERVER_CODES, (
        f"{verb} killed at {stage!r} answered {error!r}, not a dead server's {DEAD_SERVER_CODES}"
    )

    inst.start()
    problems = settled_reality_problems(inst)
    assert problems == [], (
        f"after SIGKILL at {verb}:{stage} and a restart:\n" + "\n".join(problems) + ("\n" + case.log())
    )
    AFTER[verb](inst, scene)
    problems = reality_problems(inst)
    assert problems == [], f"after retrying {verb}:\n" + "\n".join(problems) + "\n" + case.log()

    inst.remove_all_pods()
    assert inst.client.list_pod_sandbox() == [] and inst.client.list_containers() == []
    leaks = find_leaks(inst.root, inst.bridge, inst.config.cgroup_parent, inst.config.instance_id)
    assert leaks == [], f"after removing everything: {leaks}\n{case.log()}"


# --- the checker can fail ---------------------------------------------------------------------------------


def test_reality_agrees_on_a_healthy_instance(case: Case) -> None:
    """A ready pod with a running, a created and an exited container: no mismatch at all."""
    inst = case.inst
    inst.start()
    scene = ready_pod(inst, "healthy")
    scene.running_id = inst.run_container(scene.pod_id, scene.pod, "run", SLEEP)
    inst.client.create_container(scene.pod_id, inst.container_config("created", SLEEP), scene.pod)
    scene.exited_id = exited_container(inst, scene)
    stopped = ready_pod(inst, "stopped")
    inst.client.stop_pod_sandbox(stopped.pod_id)
    problems = reality_problems(inst)
    assert problems == [], "\n".join(problems)
    inst.remove_all_pods()
    assert find_leaks(inst.root, inst.bridge, inst.config.cgroup_parent, inst.config.instance_id) == []


def test_reality_and_leak_checks_see_what_is_planted(case: Case) -> None:
    """Unlisted things planted behind the daemon's back (a marked process, a run-dir dir, a CNI result, an
    IPAM reservation) and a listed container whose runc state is hidden are all reported; gone again, they
    are not. Other mismatches the daemon may have today do not matter here."""
    inst = case.inst
    inst.start()
    scene = ready_pod(inst, "planted")
    cid = inst.client.create_container(scene.pod_id, inst.container_config("created", SLEEP), scene.pod)
    ghost = secrets.token_hex(32)
    before = reality_problems(inst)
    assert not [p for p in before if ghost[:13] in p]

    config = inst.config
    env = {**os.environ, **mark_env(config.instance_id, ghost)}
    sleeper = subprocess.Popen(["sleep", "3600"], env=env, stdin=subprocess.DEVNULL)
    stray_dir = config.run_dir / "sandboxes" / ghost
    stray_result = config.cni_state_dir / "results" / f"{ghost}.json"
    stray_ip = config.cni_state_dir / "ipam" / "podhost" / "10.231.4.62"
    runc_dir = config.run_dir / "runc-root" / "runc" / cid
    hidden = config.run_dir / "hidden-runc-state"  # beside it: the run dir may be a tmpfs of its own
    try:
        stray_dir.mkdir(parents=True)
        stray_result.write_text("{}")
        stray_ip.parent.mkdir(parents=True, exist_ok=True)
        stray_ip.write_text(f"{ghost}\neth0")
        runc_dir.rename(hidden)
        problems = reality_problems(inst)
        report = "\n".join(problems)
        assert any(f"{sleeper.pid} (sleep)" in p and ghost[:13] in p for p in problems), report
        assert any("run-dir sandbox dirs" in p and ghost[:13] in p for p in problems), report
        assert any("CNI results" in p and ghost[:13] in p for p in problems), report
        assert any("10.231.4.62" in p and ghost[:13] in p for p in problems), report
        assert any(cid[:13] in p and "CONTAINER_CREATED but runc says (no state)" in p for p in problems), (
            report
        )
        leaks = find_leaks(inst.root, inst.bridge, config.cgroup_parent, config.instance_id)
        assert any("marked processes" in leak and str(sleeper.pid) in leak for leak in leaks), leaks
    finally:
        sleeper.kill()
        sleeper.wait()
        if hidden.exists():
            hidden.rename(runc_dir)
        shutil.rmtree(stray_dir, ignore_errors=True)
        stray_result.unlink(missing_ok=True)
        stray_ip.unlink(missing_ok=True)
    after = reality_problems(inst)
    assert not [p for p in after if ghost[:13] in p or cid[:13] in p], after
