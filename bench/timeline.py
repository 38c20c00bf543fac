"""Print the timeline of a profiled run: when each stage of each batch started and ended.

    python -m bench.timeline WORKDIR/event-consumer-profiled.stages.json [--min-ms 3] [--all]

The stages file is written by `bench.run --profile --keep` (bench/instrumented.py). Reading it:
`prepare_batch` (fetch excluded) of batch N+1 should run beside `write_batch` of N; a gap where
only one of them runs is time one side of the pipeline waits for the other.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

# The stages that show the shape of the pipeline; --all prints every recorded one.
SHAPE = ("kafka_fetch", "prepare_batch", "write_batch", "apply_total", "sql_lock", "sql_upserts", "dead_letter", "kafka_commit")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stages", type=Path)
    p.add_argument("--min-ms", type=float, default=3.0, help="leave out intervals shorter than this (default 3)")
    p.add_argument("--all", action="store_true", help="every recorded stage, not only the pipeline's shape")
    args = p.parse_args(argv)
    data = orjson.loads(args.stages.read_bytes())
    intervals = data.get("intervals")
    if not intervals:
        print(f"{args.stages}: no intervals (written by an older bench/instrumented.py?)", file=sys.stderr)
        return 1
    shown = sorted(
        (i for i in intervals if (args.all or i[0] in SHAPE) and (i[2] - i[1]) * 1000 >= args.min_ms),
        key=lambda i: i[1],
    )
    print(f"{'start s':>8} {'end s':>8} {'ms':>8}  stage")
    for name, start, end in shown:
        print(f"{start:8.3f} {end:8.3f} {(end - start) * 1000:8.1f}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
