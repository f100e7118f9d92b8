"""`python -m bench`: podhost and containerd side by side; prints the table, writes the JSON.

    python -m bench            # the full run (about 15 minutes): bench/results/latest.json
    python -m bench --quick    # fewer pods and runs (under a minute): bench/results/quick.json

Run as root from the repository root with the project's venv (`.venv/bin/python -m bench`). Everything the
run creates is removed at the end, on an error and on Ctrl-C; anything left behind is listed and makes the
exit status 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from bench import podman_peer, pull, report
from bench.harness import Bench, Params

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer pods and runs (under two minutes)")
    parser.add_argument(
        "--only",
        choices=report.RUNTIMES,
        action="append",
        help="measure this runtime only (repeatable; default both)",
    )
    parser.add_argument("--runs", type=int, help="latency samples per runtime and loop")
    parser.add_argument("--pods", type=int, help="fleet size")
    parser.add_argument("--in-flight", type=int, help="concurrent pod starts in the parallel fleet")
    parser.add_argument(
        "--density", type=int, help="pods on one daemon in the density phase (full run 1000; 0 skips)"
    )
    parser.add_argument("--idle", type=float, help="seconds the fleet idles while CPU is measured")
    parser.add_argument(
        "--output", type=Path, help="JSON file (default bench/results/latest.json or quick.json)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the harness does")
    return parser.parse_args(argv)


def params_from(args: argparse.Namespace) -> Params:
    base = Params.quick() if args.quick else Params.full()
    return Params(
        runs=args.runs or base.runs,
        pods=args.pods or base.pods,
        in_flight=args.in_flight or base.in_flight,
        idle_seconds=args.idle if args.idle is not None else base.idle_seconds,
        warmup=base.warmup,
        kills=base.kills,
        pull_runs=base.pull_runs,
        density=args.density if args.density is not None else base.density,
    )


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if os.geteuid() != 0:
        print("python -m bench must run as root (pods need namespaces, mounts and cgroups)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    params = params_from(args)
    mode = "quick" if args.quick else "full"
    output = args.output or RESULTS / ("quick.json" if args.quick else "latest.json")
    t0 = time.monotonic()

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - t0:6.1f} s] {message}", file=sys.stderr, flush=True)

    only = tuple(args.only) if args.only else report.RUNTIMES
    bench = Bench(params, progress, only=tuple(r for r in report.RUNTIMES if r in only))
    started_at, machine = _now(), report.machine_info()
    interrupted = False
    try:
        bench.open()
        bench.run()
    except KeyboardInterrupt:
        interrupted = True
        progress("interrupted: cleaning up")
    finally:
        bench.close()
        leaks = {name: found for name, found in bench.leaks.items() if found}
        for name, found in leaks.items():
            print(f"LEFT BEHIND by {name}: " + "; ".join(found), file=sys.stderr)
    if interrupted:
        return 130
    pulls: dict[str, object] | None = None
    if not args.only:  # its own podhost and containerd, beside a local registry
        progress(f"cold pull of a 5-layer image x{params.pull_runs} on each runtime, interleaved")
        pulls = pull.run(params.pull_runs)
        for name in report.RUNTIMES:
            bench.results.setdefault(name, {})["cold_pull_s"] = pulls.pop(name)
    podman: dict[str, object] | None = None
    podman_failure = ""
    if shutil.which("podman") and not args.only:
        progress(f"podman (the second peer): pod + sleep container x{params.runs}, {params.pods} pods")
        try:
            podman = podman_peer.run(min(params.pods, 30), params.runs)
        except Exception as e:  # the peer's failure must not cost the run's figures: named, exit 1
            progress(f"the podman peer failed: {e}")
            podman_failure = str(e)
            leaks["podman"] = [f"the podman peer failed: {e}"]
        if podman is not None and podman.get("podman_leaks"):
            leaks["podman"] = podman["podman_leaks"]  # type: ignore[assignment]
    param_dict = {**params.__dict__, "runtimes": list(bench.results)}
    machine["load_avg_at_end"] = list(os.getloadavg())
    doc = report.document(
        mode=mode,
        params=param_dict,
        results=bench.results,
        leaks=bench.leaks,
        started_at=started_at,
        finished_at=_now(),
        machine=machine,
        git=report.git_info(REPO),
    )
    if pulls is not None:
        doc["pull"] = pulls  # the image pulled (its size and layers)
    if podman is not None:
        doc["podman"] = podman
    elif podman_failure:
        doc["podman"] = {"error": podman_failure}
    report.write_json(doc, output)
    print(report.render_table(report.build_rows(bench.results, param_dict)))
    if podman is not None:
        print()
        podman_peer.print_table(podman)
    print(f"\n{mode} run, {time.monotonic() - t0:.0f} s; data in {output}")
    return 1 if leaks else 0


if __name__ == "__main__":
    sys.exit(main())
