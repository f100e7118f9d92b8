"""compute_pod_actions, by table: spec + what CRI shows (+ back-off, retries, probes) -> what the worker does.

Each row is one pod at `NOW`: its restart policy and containers, its sandboxes (newest first by attempt),
its containers as CRI reports them, the back-off and retry timers as earlier syncs left them, the probes
that failed; and the actions, written compactly (see `summary`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from podhost.cri import api_pb2 as pb
from podhost.kubelet.backoff import SANDBOX, Backoff, CrashLoopBackOff, image_pull_backoff, retry_backoff
from podhost.kubelet.manifest import ContainerSpec, Pod
from podhost.kubelet.observation import Observation
from podhost.kubelet.pod_actions import (
    IMAGE_PULL_BACK_OFF,
    ContainerToStart,
    PodActions,
    compute_pod_actions,
    should_restart,
)
from podhost.kubelet.probes import LIVENESS, STARTUP

NOW = 10_000.0
NS = 1_000_000_000
STATES = {
    "created": pb.CONTAINER_CREATED,
    "running": pb.CONTAINER_RUNNING,
    "exited": pb.CONTAINER_EXITED,
    "unknown": pb.CONTAINER_UNKNOWN,
}


@dataclass(frozen=True)
class Sb:
    """A sandbox: its attempt, and whether pause is alive."""

    attempt: int = 0
    ready: bool = True

    @property
    def id(self) -> str:
        return f"sb{self.attempt}"


@dataclass(frozen=True)
class C:
    """A container as CRI reports it: name, state, exit code, the sandbox attempt it is in, its own
    attempt, and for an exited one when it started and finished (seconds before NOW)."""

    name: str
    state: str
    code: int = 0
    sandbox: int = 0
    attempt: int = 0
    ran: float = 3.0  # seconds it ran before it exited
    ago: float = 5.0  # seconds since it exited


@dataclass
class Row:
    id: str
    expected: str
    containers: tuple[C, ...] = ()
    specs: tuple[str, ...] = ("a",)
    init: tuple[str, ...] = ()
    policy: str = "Always"
    sandboxes: tuple[Sb, ...] = (Sb(),)
    exits: tuple[tuple[str, float, float], ...] = ()  # earlier exits the back-off saw: (name, ran, ago)
    failures: tuple[tuple[str, float], ...] = ()  # failed creates or starts for the retry: (key, ago)
    pulls: tuple[tuple[str, float], ...] = ()  # failed pulls for the image back-off: (image, ago)
    images: dict[str, str] = field(default_factory=dict)  # container name -> image ("busybox" unless)
    unhealthy: dict[str, str] = field(default_factory=dict)  # container name -> failed probe kind
    finished: bool = False  # the phase last published is Succeeded or Failed


def observation(row: Row) -> Observation:
    sandboxes = [
        pb.PodSandbox(
            id=s.id,
            metadata=pb.PodSandboxMetadata(name="p", uid="u", attempt=s.attempt),
            state=pb.SANDBOX_READY if s.ready else pb.SANDBOX_NOTREADY,
        )
        for s in sorted(row.sandboxes, key=lambda s: s.attempt, reverse=True)
    ]
    containers, statuses = [], {}
    for c in row.containers:
        cid = f"{c.name}-{c.sandbox}-{c.attempt}"
        finished = NOW - c.ago if c.state == "exited" else 0.0
        started = finished - c.ran if c.state == "exited" else NOW - 60
        meta = pb.ContainerMetadata(name=c.name, attempt=c.attempt)
        containers.append(
            pb.Container(id=cid, pod_sandbox_id=f"sb{c.sandbox}", metadata=meta, state=STATES[c.state])
        )
        statuses[cid] = pb.ContainerStatus(
            id=cid,
            metadata=meta,
            state=STATES[c.state],
            exit_code=c.code,
            started_at=int(started * NS),
            finished_at=int(finished * NS),
        )
    return Observation(sandboxes, containers, statuses)


def setup(row: Row) -> tuple[Pod, Observation, CrashLoopBackOff, Backoff, dict[str, str]]:
    pod = Pod(
        name="p",
        uid="u",
        restart_policy=row.policy,
        containers=[ContainerSpec(n, row.images.get(n, "busybox")) for n in row.specs],
        init_containers=[ContainerSpec(n, row.images.get(n, "busybox")) for n in row.init],
    )
    crash_loop = CrashLoopBackOff(base=10, cap=40, reset=600)
    for name, ran, ago in row.exits:
        crash_loop.restart_at(name, NOW - ago - ran, NOW - ago)
    retry = retry_backoff()
    for key, ago in row.failures:
        retry.step(key, NOW - ago)
    obs = observation(row)
    running = {
        c.metadata.name: c.id for c in obs.containers if obs.statuses[c.id].state == pb.CONTAINER_RUNNING
    }
    unhealthy = {running.get(name, name): kind for name, kind in row.unhealthy.items()}
    return pod, obs, crash_loop, retry, unhealthy


def pull_backoff(row: Row) -> Backoff:
    pulls = image_pull_backoff(10)
    for image, ago in row.pulls:
        pulls.step(image, NOW - ago)
    return pulls


def decide(row: Row) -> PodActions:
    pod, obs, crash_loop, retry, unhealthy = setup(row)
    return compute_pod_actions(pod, obs, NOW, crash_loop, retry, unhealthy, row.finished, pull_backoff(row))


def summary(a: PodActions) -> str:
    """The actions in a few words: "changed" (sandbox not Ready), "done" (no new sandbox), "kill-pod",
    "sandbox:N" (create attempt N), "init:X" / "start:X" (a "*" when a created container is started,
    "!" when it restarts after an exit), "kill:X", "backoff:X:WAIT" (CrashLoopBackOff), "pull-backoff:X:WAIT"
    (ImagePullBackOff), "wake:+S" (seconds from now)."""

    def start(s: ContainerToStart) -> str:
        return s.spec.name + ("*" if s.container_id else "") + ("!" if s.exited is not None else "")

    words = []
    words += ["changed"] if a.sandbox_changed else []
    words += ["done"] if a.pod_done else []
    words += ["kill-pod"] if a.kill_pod else []
    words += [f"sandbox:{a.attempt}"] if a.create_sandbox else []
    words += [f"init:{start(a.next_init_container)}"] if a.next_init_container else []
    words += [f"start:{start(s)}" for s in a.containers_to_start]
    words += [f"kill:{k.name}" for k in a.containers_to_kill]
    words += [
        f"{'pull-' if b.reason == IMAGE_PULL_BACK_OFF else ''}backoff:{b.spec.name}:{b.wait:g}"
        for b in a.back_off
    ]
    words += [f"wake:+{w - NOW:g}" for w in sorted(set(a.wake_at))]
    return " ".join(words) or "-"


ROWS = [
    # --- the sandbox -----------------------------------------------------------------------------------
    Row("new pod: first sandbox", "changed kill-pod sandbox:0", sandboxes=()),
    Row("new pod under Never: first sandbox", "changed kill-pod sandbox:0", sandboxes=(), policy="Never"),
    Row("pause died: attempt+1", "changed kill-pod sandbox:1", sandboxes=(Sb(0, False),)),
    Row("pause died again: attempt+1", "changed kill-pod sandbox:4", sandboxes=(Sb(3, False),)),
    Row(
        "the newest sandbox decides, not an older one",
        "changed kill-pod sandbox:3",
        sandboxes=(Sb(1, False), Sb(2, False)),
    ),
    Row(
        "an old dead sandbox beside a Ready one changes nothing",
        "-",
        sandboxes=(Sb(0, False), Sb(1)),
        containers=(C("a", "running", sandbox=1),),
    ),
    Row(
        "sandbox died with its containers running: killed, new sandbox",
        "changed kill-pod sandbox:1",
        sandboxes=(Sb(0, False),),
        containers=(C("a", "running"),),
    ),
    Row(
        "OnFailure pod: its sandbox is re-created",
        "changed kill-pod sandbox:1",
        policy="OnFailure",
        sandboxes=(Sb(0, False),),
        containers=(C("a", "exited", code=0),),
    ),
    Row(
        "Never pod that ran: no new sandbox",
        "changed done kill-pod",
        policy="Never",
        sandboxes=(Sb(0, False),),
        containers=(C("a", "running"),),
    ),
    Row(
        "Never pod whose sandbox died before any container: a new sandbox",
        "changed kill-pod sandbox:1",
        policy="Never",
        sandboxes=(Sb(0, False),),
    ),
    Row(
        "finished pod: its sandbox stays down",
        "changed done kill-pod",
        sandboxes=(Sb(0, False),),
        containers=(C("a", "exited"),),
        finished=True,
    ),
    Row(
        "failed RunPodSandbox: wait for the retry, kill nothing",
        "changed wake:+0.5",
        sandboxes=(Sb(0, False),),
        failures=((SANDBOX, 0.5),),
    ),
    Row(
        "failed RunPodSandbox, retry due: try again",
        "changed kill-pod sandbox:1",
        sandboxes=(Sb(0, False),),
        failures=((SANDBOX, 5.0),),
    ),
    Row(
        "a container's retry does not hold the sandbox",
        "changed kill-pod sandbox:0",
        sandboxes=(),
        failures=(("a", 0.5),),
    ),
    # --- containers and restart policies ---------------------------------------------------------------
    Row("ready sandbox, no container yet: start it", "start:a"),
    Row("two containers: both start", "start:a start:b", specs=("a", "b")),
    Row("running: nothing to do", "-", containers=(C("a", "running"),)),
    Row("created, not started: start that one", "start:a*", containers=(C("a", "created"),)),
    Row("a state CRI does not know: nothing to do", "-", containers=(C("a", "unknown"),)),
    Row("Always, exit 0, first exit: restart at once", "start:a!", containers=(C("a", "exited", code=0),)),
    Row("Always, exit 1, first exit: restart at once", "start:a!", containers=(C("a", "exited", code=1),)),
    Row("OnFailure, exit 0: done", "-", policy="OnFailure", containers=(C("a", "exited", code=0),)),
    Row("OnFailure, exit 1: restart", "start:a!", policy="OnFailure", containers=(C("a", "exited", code=1),)),
    Row("Never, exit 1: done", "-", policy="Never", containers=(C("a", "exited", code=1),)),
    Row("Never, exit 0: done", "-", policy="Never", containers=(C("a", "exited", code=0),)),
    Row(
        "the newest attempt decides",
        "-",
        containers=(C("a", "exited", code=1, attempt=0), C("a", "running", attempt=1)),
    ),
    Row(
        "one running, one missing: start the missing one",
        "start:b",
        specs=("a", "b"),
        containers=(C("a", "running"),),
    ),
    Row(
        "Never: one done, one running: nothing",
        "-",
        policy="Never",
        specs=("a", "b"),
        containers=(C("a", "exited", code=1), C("b", "running")),
    ),
    Row(
        "containers of a dead sandbox do not count in the new one",
        "start:a",
        sandboxes=(Sb(0, False), Sb(1)),
        containers=(C("a", "running", sandbox=0),),
    ),
    # --- CrashLoopBackOff ------------------------------------------------------------------------------
    Row(
        "second exit within the back-off: wait 10 s from the exit",
        "backoff:a:10 wake:+5",
        containers=(C("a", "exited", code=1, attempt=1, ago=5),),
        exits=(("a", 3, 60),),
    ),
    Row(
        "a first exit seen after the sync read its clock: no wait, restart (no Back-off 0s)",
        "start:a!",
        containers=(C("a", "exited", code=1, ago=-0.05),),
    ),
    Row(
        "second exit, back-off waited out: restart",
        "start:a!",
        containers=(C("a", "exited", code=1, attempt=1, ago=15),),
        exits=(("a", 3, 60),),
    ),
    Row(
        "third exit: the wait doubles",
        "backoff:a:20 wake:+15",
        containers=(C("a", "exited", code=1, attempt=2, ago=5),),
        exits=(("a", 3, 100), ("a", 3, 60)),
    ),
    Row(
        "the wait stops at the cap",
        "backoff:a:40 wake:+35",
        containers=(C("a", "exited", code=1, attempt=5, ago=5),),
        exits=(("a", 3, 500), ("a", 3, 400), ("a", 3, 300), ("a", 3, 200), ("a", 3, 100)),
    ),
    Row(
        "the same exit asked again: the same wait",
        "backoff:a:10 wake:+5",
        containers=(C("a", "exited", code=1, attempt=1, ran=3, ago=5),),
        exits=(("a", 3, 60), ("a", 3, 5)),
    ),
    Row(
        "ran past the reset (10 min): restart at once",
        "start:a!",
        containers=(C("a", "exited", code=1, attempt=3, ran=700, ago=5),),
        exits=(("a", 3, 900), ("a", 3, 800)),
    ),
    Row(
        "OnFailure crash loop: back-off too",
        "backoff:a:10 wake:+5",
        policy="OnFailure",
        containers=(C("a", "exited", code=2, attempt=1, ago=5),),
        exits=(("a", 3, 60),),
    ),
    Row(
        "one container backs off, the other starts",
        "start:b backoff:a:10 wake:+5",
        specs=("a", "b"),
        containers=(C("a", "exited", code=1, attempt=1, ago=5),),
        exits=(("a", 3, 60),),
    ),
    # --- init containers -------------------------------------------------------------------------------
    Row("init: the first one starts", "init:i", init=("i",)),
    Row("init: one at a time, in order", "init:i1", init=("i1", "i2")),
    Row("init: the next after a success", "init:i2", init=("i1", "i2"), containers=(C("i1", "exited"),)),
    Row("init: a running one is waited for", "-", init=("i1", "i2"), containers=(C("i1", "running"),)),
    Row("init: created, not started: start it", "init:i*", init=("i",), containers=(C("i", "created"),)),
    Row(
        "init failed under Always: restart it",
        "init:i1!",
        init=("i1", "i2"),
        containers=(C("i1", "exited", code=1),),
    ),
    Row(
        "init failed under OnFailure: restart it",
        "init:i!",
        init=("i",),
        policy="OnFailure",
        containers=(C("i", "exited", code=1),),
    ),
    Row(
        "init failed under Never: the pod failed, nothing more",
        "-",
        init=("i1", "i2"),
        policy="Never",
        containers=(C("i1", "exited", code=1),),
    ),
    Row(
        "init failing again: back-off",
        "backoff:i:10 wake:+5",
        init=("i",),
        containers=(C("i", "exited", code=1, attempt=1, ago=5),),
        exits=(("i", 3, 60),),
    ),
    Row(
        "init not done: no container starts",
        "init:i2",
        init=("i1", "i2"),
        specs=("a", "b"),
        containers=(C("i1", "exited"),),
    ),
    Row(
        "every init succeeded: the containers start",
        "start:a start:b",
        init=("i1", "i2"),
        specs=("a", "b"),
        containers=(C("i1", "exited"), C("i2", "exited")),
    ),
    Row(
        "every init succeeded under Never: the container starts",
        "start:a",
        init=("i",),
        policy="Never",
        containers=(C("i", "exited"),),
    ),
    Row(
        "new sandbox: the init containers run again first",
        "init:i",
        init=("i",),
        sandboxes=(Sb(0, False), Sb(1)),
        containers=(C("i", "exited", sandbox=0), C("a", "exited", code=137, sandbox=0)),
    ),
    # --- probes ----------------------------------------------------------------------------------------
    Row("liveness failed: kill it", "kill:a", containers=(C("a", "running"),), unhealthy={"a": LIVENESS}),
    Row("startup gave up: kill it", "kill:a", containers=(C("a", "running"),), unhealthy={"a": STARTUP}),
    Row(
        "liveness failed on one, another missing: kill one, start the other",
        "start:b kill:a",
        specs=("a", "b"),
        containers=(C("a", "running"),),
        unhealthy={"a": LIVENESS},
    ),
    Row(
        "a failed probe of a container that is gone kills nothing",
        "start:a!",
        containers=(C("a", "exited", code=137),),
        unhealthy={"a": LIVENESS},
    ),
    Row(
        "init containers are not probed",
        "-",
        init=("i",),
        containers=(C("i", "running"),),
        unhealthy={"i": LIVENESS},
    ),
    # --- retries of failed creates and starts ----------------------------------------------------------
    Row("failed create: wait for the retry", "wake:+0.5", failures=(("a", 0.5),)),
    Row("failed create, retry due: try again", "start:a", failures=(("a", 5.0),)),
    Row("failed create twice: the retry doubles", "wake:+1.5", failures=(("a", 10.0), ("a", 0.5))),
    Row(
        "one container's retry does not hold another",
        "start:b wake:+0.5",
        specs=("a", "b"),
        failures=(("a", 0.5),),
    ),
    Row(
        "created but not started: started even while its retry runs",
        "start:a*",
        containers=(C("a", "created"),),
        failures=(("a", 0.5),),
    ),
    Row(
        "a restart held by the retry: no back-off step yet",
        "wake:+0.5",
        containers=(C("a", "exited", code=1),),
        failures=(("a", 0.5),),
    ),
    Row("init container's create retry", "wake:+0.5", init=("i",), failures=(("i", 0.5),)),
    # --- ImagePullBackOff: a failed pull (ErrImagePull) holds every start of its image -----------------
    Row("failed pull: ImagePullBackOff for 10 s", "pull-backoff:a:10 wake:+9", pulls=(("busybox", 1),)),
    Row("failed pull, back-off waited out: pull again", "start:a", pulls=(("busybox", 11),)),
    Row(
        "failed pull twice: the back-off doubles",
        "pull-backoff:a:20 wake:+15",
        pulls=(("busybox", 30), ("busybox", 5)),
    ),
    Row(
        "the back-off is the image's: another image starts",
        "start:b pull-backoff:a:10 wake:+9",
        specs=("a", "b"),
        images={"a": "nosuch", "b": "busybox"},
        pulls=(("nosuch", 1),),
    ),
    Row(
        "the back-off is the image's: every container of that image waits",
        "pull-backoff:a:10 pull-backoff:b:10 wake:+9",
        specs=("a", "b"),
        pulls=(("busybox", 1),),
    ),
    Row("init container's image back-off", "pull-backoff:i:10 wake:+9", init=("i",), pulls=(("busybox", 1),)),
    Row(
        "a restart after an exit waits for its image's back-off, no crash-loop step",
        "pull-backoff:a:10 wake:+9",
        containers=(C("a", "exited", code=1),),
        pulls=(("busybox", 1),),
    ),
    Row(
        "created but not started: started even while its image backs off",
        "start:a*",
        containers=(C("a", "created"),),
        pulls=(("busybox", 1),),
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_compute_pod_actions(row: Row) -> None:
    assert summary(decide(row)) == row.expected


def test_the_table_covers_enough_rows() -> None:
    assert len(ROWS) >= 40
    assert len({r.id for r in ROWS}) == len(ROWS)


def test_the_kill_says_why() -> None:
    row = Row("", "", containers=(C("a", "running"),), unhealthy={"a": LIVENESS})
    (kill,) = decide(row).containers_to_kill
    assert kill.container_id == "a-0-0"
    assert kill.message == "Container a failed liveness probe, will be restarted"


def test_a_back_off_says_how_long_in_the_waiting_message() -> None:
    row = Row("", "", containers=(C("a", "exited", code=1, attempt=1),), exits=(("a", 3, 60),))
    (held,) = decide(row).back_off
    assert held.message == "back-off 10s restarting failed container=a pod=p_default(u)"
    assert held.until == NOW + 5


def test_the_exits_to_step_are_those_restarted_or_held() -> None:
    row = Row(
        "",
        "",
        specs=("a", "b"),
        containers=(
            C("a", "exited", code=1, attempt=1, ran=3, ago=5),
            C("b", "exited", code=1, ran=2, ago=7),
        ),
        exits=(("a", 3, 60),),
    )
    actions = decide(row)
    assert actions.exits == [("a", NOW - 8, NOW - 5), ("b", NOW - 9, NOW - 7)]


def test_deciding_changes_no_timer() -> None:
    """Pure: asking twice gives the same answer (the back-off is only peeked at)."""
    row = Row("", "", containers=(C("a", "exited", code=1, attempt=1),), exits=(("a", 3, 60),))
    pod, obs, crash_loop, retry, unhealthy = setup(row)
    for _ in range(2):
        actions = compute_pod_actions(pod, obs, NOW, crash_loop, retry, unhealthy)
        assert summary(actions) == "backoff:a:10 wake:+5"
    assert crash_loop.wait("a") == 0  # still the first exit's: the worker steps it, not the decision


@pytest.mark.parametrize(
    ("policy", "code", "restart"),
    [
        ("Always", 0, True),
        ("Always", 1, True),
        ("OnFailure", 0, False),
        ("OnFailure", 1, True),
        ("Never", 1, False),
    ],
)
def test_should_restart(policy: str, code: int, restart: bool) -> None:
    assert should_restart(policy, code) is restart


def test_image_pull_back_off_says_which_image_and_tells_the_kubelets_events() -> None:
    row = Row("", "", images={"a": "127.0.0.1:9/nosuch"}, pulls=(("127.0.0.1:9/nosuch", 1),))
    actions = decide(row)
    (held,) = actions.back_off
    assert (held.reason, held.message) == (IMAGE_PULL_BACK_OFF, 'Back-off pulling image "127.0.0.1:9/nosuch"')
    assert held.events == (
        ("Normal", "BackOff", 'Back-off pulling image "127.0.0.1:9/nosuch"'),
        ("Warning", "Failed", "Error: ImagePullBackOff"),
    )
    assert actions.exits == []  # nothing for CrashLoopBackOff to step
