"""bench.floor: `runc create` timed on a real container's bundle, crun on the same (or its refusal)."""

from __future__ import annotations

import sys
from pathlib import Path

# bench/ and tests/ are not installed packages: import them from the checkout.
_REPO = str(Path(__file__).resolve().parents[2])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from bench import floor  # noqa: E402

UNIFIED_CONTROLLERS = Path("/sys/fs/cgroup/unified/cgroup.controllers")


def test_the_floor_times_runc_and_says_why_crun_cannot_run_here() -> None:
    results = floor.run(2)
    runc = results["runc"]
    assert isinstance(runc, dict) and "error" not in runc, runc
    assert runc["create_ms"]["n"] == 2 and runc["create_ms"]["min"] > 0
    assert runc["create_cpu_ms"]["n"] == 2
    crun = results["crun"]
    assert isinstance(crun, dict)
    hybrid_with_controllers = UNIFIED_CONTROLLERS.exists() and UNIFIED_CONTROLLERS.read_text().strip()
    if hybrid_with_controllers:  # this kind of machine: crun's own words, not a figure
        assert "hybrid mode not supported" in str(crun.get("error")) and "create_ms" not in crun
    else:
        assert crun["create_ms"]["n"] == 2, crun
    assert results["leaks"] == []
