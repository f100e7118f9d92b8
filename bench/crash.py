"""Randomized crash soak (issue 9): `python -m bench.crash [--cycles 200] [--seed S]`.

Each cycle starts one lifecycle call, or a few with different verbs at once, on a small pool of pods
(RunPodSandbox, CreateContainer+StartContainer of a busybox `sleep`, StopContainer, RemoveContainer,
StopPodSandbox, RemovePodSandbox, each chosen among the calls the listed state allows), SIGKILLs the daemon
at an instant drawn uniformly over a window that covers the calls' usual duration (measured first, in a
calibration round without kills), restarts it, and checks that what it lists is what runs
(`tests.reality.reality_problems`). The daemon runs with PODHOST_STAGE_TRACE, so the trace's last line of
the call's verb names the stage the kill landed in (podhost.runtime.stages); a kill after every call had
returned is "idle". Every `--every` cycles and at the end, everything is removed through CRI and the
instance is searched for leftovers (tests.leaks, processes marked for the instance, processes this run
started that are not the daemon). Leftovers are reported, never cleaned between checkpoints; the final
sweep removes everything.

Prints the kills per verb and stage, the problems (cycle, stage, text) and the leftovers, and writes
bench/results/crash.json. Exit status 1 when any problem or leftover was found. Asserts no timing.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import metrics
from bench.isolated import REPO, IsolatedRun, reap_zombies, strays, write_results
from podhost.cri import api_pb2 as pb
from podhost.runtime.stages import STAGES, TRACE_ENV

BRIDGE, SUBNET = "ph3c0", "10.231.3.0/25"
TRACE_FILE = "{root}/stage-trace.log"
WORKLOAD = ["sleep", "3600"]

RUN, CREATE_START, STOP_CONTAINER = "RunPodSandbox", "CreateContainer+StartContainer", "StopContainer"
REMOVE_CONTAINER, STOP_POD, REMOVE_POD = "RemoveContainer", "StopPodSandbox", "RemovePodSandbox"
VERBS = (RUN, CREATE_START, STOP_CONTAINER, REMOVE_CONTAINER, STOP_POD, REMOVE_POD)
IDLE = "idle"

Say = Callable[[str], None]


# --- what to do next (pure) -----------------------------------------------------------------------------


@dataclass
class SlotView:
    """One pool slot as the daemon lists it: its pod (if any) and the pod's containers."""

    slot: int
    pod: pb.PodSandbox | None = None
    containers: list[pb.Container] = field(default_factory=list)


@dataclass
class Op:
    """One call of the cycle, and what happened to it."""

    verb: str
    slot: int
    target: str = ""  # the pod or container id the call names ("" for RunPodSandbox)
    pod: pb.PodSandbox | None = None
    phase: str = ""  # the CRI verb in flight (CreateContainer, then StartContainer, for CREATE_START)
    done_at: float = 0.0  # perf_counter when the call returned or failed; 0 while in flight
    error: str = ""
    landing: str = ""

    def returned_before(self, instant: float) -> bool:
        return 0 < self.done_at < instant


def slot_views(pods: list[pb.PodSandbox], containers: list[pb.Container], slots: int) -> list[SlotView]:
    views = [SlotView(i) for i in range(slots)]
    by_name = {f"slot{i}": views[i] for i in range(slots)}
    for pod in sorted(pods, key=lambda p: p.created_at):
        view = by_name.get(pod.metadata.name)
        if view is not None and view.pod is None:
            view.pod = pod
    for view in views:
        if view.pod is not None:
            view.containers = [c for c in containers if c.pod_sandbox_id == view.pod.id]
    return views


def candidates(view: SlotView) -> list[Op]:
    """The calls a kubelet could make next on this slot, given what the daemon lists."""
    pod = view.pod
    if pod is None:
        return [Op(RUN, view.slot)]
    ops = [Op(REMOVE_POD, view.slot, pod.id, pod), Op(STOP_POD, view.slot, pod.id, pod)]
    if pod.state != pb.SANDBOX_READY:
        return ops
    running = [c for c in view.containers if c.state == pb.CONTAINER_RUNNING]
    for c in running:
        ops.append(Op(STOP_CONTAINER, view.slot, c.id, pod))
    for c in view.containers:
        if c.state in (pb.CONTAINER_CREATED, pb.CONTAINER_EXITED):
            ops.append(Op(REMOVE_CONTAINER, view.slot, c.id, pod))
    if not running:
        ops.append(Op(CREATE_START, view.slot, pod.id, pod))
    return ops


def choose(rng: random.Random, views: list[SlotView], concurrent: float) -> list[Op]:
    """A verb first (so rare verbs are drawn as often as common ones), then a slot that allows it; with
    probability `concurrent`, one or two more calls with other verbs on other slots."""
    pool = [op for v in views for op in candidates(v)]
    how_many = 1 + (rng.choice((1, 2)) if rng.random() < concurrent else 0)
    chosen: list[Op] = []
    while pool and len(chosen) < how_many:
        verb = rng.choice(sorted({op.verb for op in pool}))
        op = rng.choice([o for o in pool if o.verb == verb])
        chosen.append(op)
        pool = [o for o in pool if o.verb != verb and o.slot != op.slot]
    return chosen


def landing(op: Op, trace: list[str], killed_at: float) -> str:
    """Where the kill found `op`: the last traced stage of the verb in flight, IDLE when the call had
    returned before the kill, or "<verb>: no stage traced" when the daemon traced none for it."""
    if op.returned_before(killed_at):
        return IDLE
    verb = op.phase or op.verb.split("+")[0]
    stages = [line.partition(" ")[2] for line in trace if line.partition(" ")[0] == verb]
    if stages:
        return f"{verb}: {stages[-1]}"
    return f"{verb}: {'before its first stage' if verb in STAGES else 'no named stages'}"


# --- the soak -------------------------------------------------------------------------------------------


class Soak:
    def __init__(self, run: IsolatedRun, args: argparse.Namespace, say: Say) -> None:
        self.run, self.args, self.say = run, args, say
        self.inst = run.inst
        self.rng = random.Random(args.seed)
        self.trace = Path(TRACE_FILE.format(root=run.root))
        self._seq = itertools.count(1)
        self.windows: dict[str, float] = {}
        self.calibration: dict[str, list[float]] = {v: [] for v in VERBS}
        self.cycles: list[dict[str, Any]] = []
        self.problems: list[dict[str, Any]] = []
        self.active: dict[str, dict[str, Any]] = {}  # problems still found, by text
        self.checkpoints: list[dict[str, Any]] = []
        self.restarts: list[float] = []
        self.reality = _reality_check()

    # --- the calls --------------------------------------------------------------------------------

    def _pod_config(self, pod: pb.PodSandbox) -> pb.PodSandboxConfig:
        md = pod.metadata
        return self.inst.pod_config(md.name, uid=md.uid, attempt=md.attempt)

    def call(self, op: Op) -> None:
        """Make the call `op` names (in the caller's thread); its error, if any, is recorded in `op`."""
        client = self.inst.client
        seq = next(self._seq)  # atomic: calls run in several threads at once
        try:
            if op.verb == RUN:
                op.phase = RUN
                op.target = client.run_pod_sandbox(self.inst.pod_config(f"slot{op.slot}", uid=f"u{seq}"))
            elif op.verb == CREATE_START:
                assert op.pod is not None
                op.phase = "CreateContainer"
                config = self.inst.container_config("sleeper", WORKLOAD, attempt=seq)
                cid = client.create_container(op.target, config, self._pod_config(op.pod))
                op.phase = "StartContainer"
                client.start_container(cid)
            elif op.verb == STOP_CONTAINER:
                op.phase = op.verb
                client.stop_container(op.target, 0)
            elif op.verb == REMOVE_CONTAINER:
                op.phase = op.verb
                client.remove_container(op.target)
            elif op.verb == STOP_POD:
                op.phase = op.verb
                client.stop_pod_sandbox(op.target)
            elif op.verb == REMOVE_POD:
                op.phase = op.verb
                client.remove_pod_sandbox(op.target)
        except Exception as e:
            op.error = f"{op.phase}: {type(e).__name__}: {e}"
        finally:
            op.done_at = time.perf_counter()

    def views(self) -> list[SlotView]:
        client = self.inst.client
        return slot_views(client.list_pod_sandbox(), client.list_containers(), self.args.pods)

    # --- calibration ------------------------------------------------------------------------------

    def calibrate(self) -> None:
        """Time every verb, without kills, on slot 0: the kill windows cover these durations."""
        order = (RUN, CREATE_START, STOP_CONTAINER, REMOVE_CONTAINER, CREATE_START, STOP_POD, REMOVE_POD)
        for _ in range(self.args.calibrate):
            for verb in order:
                view = self.views()[0]
                op = next(o for o in candidates(view) if o.verb == verb)
                t0 = time.perf_counter()
                self.call(op)
                if op.error:
                    raise RuntimeError(f"calibration: {op.error}\n{self.inst.log_tail(10)}")
                self.calibration[verb].append(op.done_at - t0)
        for verb, samples in self.calibration.items():
            self.windows[verb] = self.args.window_factor * max(samples)
        self.say(
            "kill windows (ms): "
            + ", ".join(f"{v} {self.windows[v] * 1e3:.0f}" for v in VERBS)
            + f"  (x{self.args.window_factor} the longest of {self.args.calibrate} calibration calls)"
        )

    # --- one cycle --------------------------------------------------------------------------------

    def cycle(self, n: int) -> None:
        record: dict[str, Any] = {"cycle": n, "ops": [], "problems": []}
        self.cycles.append(record)
        try:
            views = self.views()
        except Exception as e:
            self._problem(record, [], f"listing before the cycle failed: {e}")
            self._restart(record)
            return
        ops = choose(self.rng, views, self.args.concurrent)
        window = sum(self.windows[op.verb] for op in ops)
        delay = self.rng.uniform(0, window)
        offset = self.trace.stat().st_size if self.trace.exists() else 0
        go = threading.Event()

        def worker(op: Op) -> None:
            go.wait()
            self.call(op)

        threads = [threading.Thread(target=worker, args=(op,), daemon=True) for op in ops]
        for t in threads:
            t.start()
        t0 = time.perf_counter()
        go.set()
        time.sleep(max(0.0, t0 + delay - time.perf_counter()))
        killed_at = time.perf_counter()
        self.run.kill_daemon()
        for t in threads:
            t.join(timeout=30)
        trace = self._trace_since(offset)
        for op in ops:
            op.landing = landing(op, trace, killed_at)
        record.update(
            delay_ms=round(delay * 1e3, 2),
            window_ms=round(window * 1e3, 2),
            ops=[
                {"verb": op.verb, "slot": op.slot, "landing": op.landing, "error": op.error}
                | (
                    {"returned_ms": round((op.done_at - t0) * 1e3, 2)}
                    if op.returned_before(killed_at)
                    else {}
                )
                for op in ops
            ],
        )
        landings = [op.landing for op in ops]
        for op in ops:
            if op.error and op.returned_before(killed_at):
                self._problem(record, landings, f"{op.verb} failed before the kill: {op.error}")
        if not self._restart(record):
            return
        reap_zombies({self.run.daemon_pid})
        found: list[str] = []
        try:
            if self.reality is not None:
                found += self.reality(self.inst)
            found += self.unlisted_processes()
        except Exception as e:
            self._problem(record, landings, f"reality check failed: {type(e).__name__}: {e}")
        self._observe(record, landings, found)
        summary = ", ".join(op.landing if op.landing != IDLE else f"{op.verb} (returned)" for op in ops)
        status = f"{len(record['problems'])} problem(s)" if record["problems"] else "ok"
        self.say(f"cycle {n}: kill at {delay * 1e3:.1f} ms -> {summary}: {status}")

    def _restart(self, record: dict[str, Any]) -> bool:
        """Start the daemon again (twice if need be); False if it would not come back."""
        for attempt in (1, 2):
            t0 = time.perf_counter()
            try:
                if self.run.daemon_alive():
                    self.run.kill_daemon()
                self.inst.start()
            except Exception as e:
                self._problem(record, [], f"daemon restart {attempt} failed: {e}")
                continue
            self.restarts.append(time.perf_counter() - t0)
            return True
        return False

    def _trace_since(self, offset: int) -> list[str]:
        if not self.trace.exists():
            return []
        with open(self.trace, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace").splitlines()

    def _problem(self, record: dict[str, Any], landings: list[str], text: str) -> None:
        """An event of this cycle (a call failing, the daemon not restarting)."""
        entry = {"cycle": record["cycle"], "landing": landings, "text": text}
        record["problems"].append(text)
        self.problems.append(entry)
        self.say(f"PROBLEM cycle {record['cycle']} [{'; '.join(landings) or '-'}]: {text}")

    def _observe(self, record: dict[str, Any], landings: list[str], texts: list[str]) -> None:
        """A state found after this cycle's restart. A problem that persists is reported once, at the
        cycle it appeared in (where the kill that made it landed), with how many checks still saw it."""
        for text in texts:
            if text in self.active:
                self.active[text]["checks_seen"] += 1
                continue
            self._problem(record, landings, text)
            self.problems[-1]["checks_seen"] = 1
            self.active[text] = self.problems[-1]
        for text in set(self.active) - set(texts):
            self.active.pop(text)["gone_after_cycle"] = record["cycle"]

    def unlisted_processes(self) -> list[str]:
        """Live processes this run started (this process is their subreaper) that are neither the daemon
        nor a listed pod's pause or a listed container's conmon or process, nor descended from those:
        finds an orphan the instance's marks and cgroups cannot (one that never got either)."""
        client = self.inst.client
        keep = {self.run.daemon_pid}
        for pod in client.list_pod_sandbox():
            keep.add(_info_pid(client.pod_sandbox_status(pod.id, verbose=True).info, "pid"))
        for ctr in client.list_containers():
            info = client.container_status(ctr.id, verbose=True).info
            keep |= {_info_pid(info, "pid"), _info_pid(info, "conmonPid")}
        keep.discard(0)
        return [
            f"process {pid} ({metrics.comm(pid)}) runs, started by a daemon of this instance, and belongs "
            "to no listed pod or container"
            for pid in strays(keep)
        ]

    # --- checkpoints ------------------------------------------------------------------------------

    def checkpoint(self, n: int) -> None:
        """Remove every listed pod through CRI, then look for anything left."""
        entry: dict[str, Any] = {"cycle": n, "removed_pods": 0, "errors": [], "leftovers": []}
        try:
            if not self.run.daemon_alive():
                self.inst.start()
            entry["removed_pods"] = self.inst.remove_all_pods()
            if pods := self.inst.client.list_pod_sandbox():
                entry["errors"].append(f"{len(pods)} pod(s) still listed after removing all")
            if containers := self.inst.client.list_containers():
                entry["errors"].append(f"{len(containers)} container(s) still listed after removing all")
        except Exception as e:
            entry["errors"].append(f"remove everything: {type(e).__name__}: {e}")
        entry["leftovers"] = self.run.leftovers()
        self.checkpoints.append(entry)
        for text in entry["errors"] + entry["leftovers"]:
            self.say(f"LEFTOVER after cycle {n}: {text}")
        if not entry["errors"] and not entry["leftovers"]:
            self.say(f"checkpoint after cycle {n}: removed {entry['removed_pods']} pod(s), nothing left")

    # --- figures ----------------------------------------------------------------------------------

    def landings(self) -> list[dict[str, Any]]:
        """Kills per landing (verb and stage), with how many of those cycles found a problem."""
        kills: Counter[str] = Counter()
        troubled: Counter[str] = Counter()
        for record in self.cycles:
            for label in {op["landing"] for op in record["ops"]}:
                kills[label] += 1
                if record["problems"]:
                    troubled[label] += 1
        return [
            {"landing": label, "kills": kills[label], "cycles_with_problems": troubled[label]}
            for label in sorted(kills, key=_landing_order)
        ]


def _landing_order(label: str) -> tuple[int, int, str]:
    """Verbs in lifecycle order, then their stages in the order a request enters them; idle last."""
    verbs = [v for verb in VERBS for v in verb.split("+")]
    verb, _, stage = label.partition(": ")
    if verb not in verbs:
        return (len(verbs), 0, label)
    stages = STAGES.get(verb, ())
    return (verbs.index(verb), stages.index(stage) if stage in stages else -1, stage)


def _info_pid(info: Any, key: str) -> int:
    """A pid from a verbose status's info["info"] JSON (0 when absent)."""
    try:
        return int(json.loads(info.get("info", "{}")).get(key) or 0)
    except (ValueError, TypeError):
        return 0


def _reality_check() -> Callable[[Any], list[str]] | None:
    """tests.reality.reality_problems, or None while that module does not exist."""
    try:
        from tests.reality import reality_problems
    except ImportError:
        return None
    return reality_problems


# --- report ---------------------------------------------------------------------------------------------


def render(doc: dict[str, Any]) -> str:
    lines = [f"crash soak: {doc['cycles_done']} cycles (seed {doc['params']['seed']})", ""]
    width = max([len(r["landing"]) for r in doc["landings"]] + [28])
    lines.append(f"{'kill landed in (verb: stage)':<{width}}  kills  cycles with problems")
    lines.append(f"{'-' * width}  -----  --------------------")
    for row in doc["landings"]:
        lines.append(f"{row['landing']:<{width}}  {row['kills']:>5}  {row['cycles_with_problems']:>20}")
    idle = next((r["kills"] for r in doc["landings"] if r["landing"] == IDLE), 0)
    lines += [
        "",
        f"calls in flight at the kill: {doc['calls_killed']}; kills after every call had returned (idle): "
        f"{doc['idle_cycles']} cycles ({idle} calls returned before the kill)",
        f"restart (SIGKILL to answering again) p50 {doc['restart_s'].get('p50', 0):.2f} s",
    ]
    if doc["reality_check"] is None:
        lines.append("reality check: tests/reality.py is missing: listed-vs-real NOT checked per cycle")
    lines.append(f"problems: {len(doc['problems'])}")
    for p in doc["problems"]:
        lines.append(f"  cycle {p['cycle']} [{'; '.join(p['landing']) or '-'}]: {_clip(p['text'])}")
    lines.append("leftovers at checkpoints (a line is shown at the first checkpoint that found it):")
    previous: set[str] = set()
    for c in doc["checkpoints"]:
        found = c["errors"] + c["leftovers"]
        lines += [f"  after cycle {c['cycle']}: {_clip(t)}" for t in found if t not in previous]
        previous = set(found)
    final = doc["checkpoints"][-1] if doc["checkpoints"] else None
    final_left = (final["errors"] + final["leftovers"]) if final else ["no final checkpoint"]
    lines.append(f"leftovers after the final removal: {len(final_left)}")
    lines += [f"  {_clip(t)}" for t in final_left]
    lines.append(f"total time: {doc['seconds']:.0f} s")
    return "\n".join(lines)


def _clip(text: str, width: int = 300) -> str:
    """A line of the printed report (the JSON keeps the whole text)."""
    return text if len(text) <= width else text[: width - 1] + "…"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.crash", description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=200, help="kill cycles (default 200)")
    parser.add_argument("--seed", type=int, help="random seed (default: drawn and printed)")
    parser.add_argument("--pods", type=int, default=4, help="pods in the pool (default 4)")
    parser.add_argument("--every", type=int, default=25, help="remove all and check leftovers every K cycles")
    parser.add_argument(
        "--concurrent", type=float, default=0.3, help="chance a cycle runs 2-3 calls at once (default 0.3)"
    )
    parser.add_argument("--calibrate", type=int, default=3, help="calibration rounds (default 3)")
    parser.add_argument(
        "--window-factor", type=float, default=1.2, help="kill window = this x the longest calibrated call"
    )
    parser.add_argument("--output", type=Path, help="JSON file (default bench/results/crash.json)")
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = random.randrange(2**32)
    return args


def main(argv: list[str] | None = None) -> int:
    import os

    from bench.report import git_info, machine_info

    args = parse_args(argv)
    if os.geteuid() != 0:
        print("python -m bench.crash must run as root", file=sys.stderr)
        return 2
    t0 = time.monotonic()

    def say(message: str) -> None:
        print(f"[{time.monotonic() - t0:7.1f} s] {message}", file=sys.stderr, flush=True)

    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    machine = machine_info()
    interrupted = False
    soak: Soak | None = None
    run = IsolatedRun("crash", BRIDGE, SUBNET, {TRACE_ENV: TRACE_FILE})
    say(f"seed {args.seed}; root {run.root}, bridge {BRIDGE}, subnet {SUBNET}")
    try:
        with run:
            soak = Soak(run, args, say)
            if soak.reality is None:
                say("tests/reality.py is missing: cycles are not checked listed-vs-real")
            soak.calibrate()
            done = 0
            for n in range(1, args.cycles + 1):
                soak.cycle(n)
                done = n
                if not run.daemon_alive():
                    say("daemon would not restart: stopping the soak")
                    break
                if n % args.every == 0 or n == args.cycles:
                    soak.checkpoint(n)
            if not soak.checkpoints or soak.checkpoints[-1]["cycle"] != done:
                soak.checkpoint(done)
    except KeyboardInterrupt:
        interrupted = True
        say("interrupted: cleaned up")
    if run.sweep_notes:
        say("final sweep: " + "; ".join(run.sweep_notes))
    if soak is None or interrupted:
        return 130 if interrupted else 1
    calls = [op for c in soak.cycles for op in c["ops"]]
    doc = {
        "benchmark": "crash",
        "started_at": started_at,
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": machine | {"load_avg_at_end": list(os.getloadavg())},
        "git": git_info(REPO),
        "reality_check": None if soak.reality is None else "tests.reality.reality_problems",
        "cycles_done": len(soak.cycles),
        "calibration_ms": {v: [round(s * 1e3, 2) for s in xs] for v, xs in soak.calibration.items()},
        "windows_ms": {v: round(w * 1e3, 2) for v, w in soak.windows.items()},
        "landings": soak.landings(),
        "calls_killed": sum(op["landing"] != IDLE for op in calls),
        "idle_cycles": sum(all(op["landing"] == IDLE for op in c["ops"]) for c in soak.cycles),
        "restart_s": metrics.summarize(soak.restarts),
        "problems": soak.problems,
        "checkpoints": soak.checkpoints,
        "sweep": run.sweep_notes,
        "cycles": soak.cycles,
        "seconds": time.monotonic() - t0,
    }
    path = write_results("crash", doc, args.output)
    print(render(doc))
    print(f"data in {path}")
    final = soak.checkpoints[-1] if soak.checkpoints else {"errors": ["none"], "leftovers": []}
    left = any(c["errors"] or c["leftovers"] for c in soak.checkpoints)
    return 1 if soak.problems or left or final["errors"] or final["leftovers"] else 0


if __name__ == "__main__":
    sys.exit(main())
