"""The command line of a bench module that measures one thing: a count, and `--json FILE` for the figures."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path


def run_and_print(
    description: str,
    count_flag: str,
    default: int,
    run: Callable[[int], dict[str, object]],
    print_table: Callable[[dict[str, object]], None],
) -> None:
    """Parse `count_flag` (e.g. "--pods") and `--json`, run, print the table, write the JSON if asked."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(count_flag, dest="count", type=int, default=default)
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args()
    results = run(args.count)
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
