"""Summarises a py-spy raw (collapsed stacks) profile of the consumer into where its time went.

py-spy samples the process's Python stack at a fixed rate, idle included (`--idle`), so each
category's share of samples is its share of the process's wall time. A stack goes to the first
category whose rule matches (order matters: decode inside the loop before generic asyncio).

    python -m bench.profile FILE [--rate 100]
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

# (category, rule on the whole stack text). First match wins.
CATEGORIES: list[tuple[str, re.Pattern]] = [
    ("idle: waiting for I/O (broker, database, timers)", re.compile(r"\bselect \([^)]*selectors\.py:\d+\)$")),
    ("startup/imports", re.compile(r"_find_and_load")),
    ("decode: pydantic validate_json (handlers.decode)", re.compile(r"handlers/decode\.py")),
    # the Rust code releases the GIL and has no Python frame of its own: its time shows as the
    # NativePart method that called it (add: decode and checks; finish: collapse and COPY rows)
    ("decode: native path, decode + collapse + rows (handlers.native)", re.compile(r"handlers/native\.py(?!.*(sqlalchemy|asyncpg))")),
    ("decode: batch bookkeeping", re.compile(r"consumer/batch\.py")),
    ("sql: collapse + row building (handlers)", re.compile(r"handlers/(collapse|users|orders|projection|aggregate|registry|apply|sql)\.py(?!.*(sqlalchemy|asyncpg))")),
    ("sql: SQLAlchemy + asyncpg client side", re.compile(r"sqlalchemy|asyncpg")),
    ("kafka: offset commit", re.compile(r"_commit_kafka|\bcommit \([^)]*aiokafka/consumer/consumer\.py")),
    ("kafka: fetch + record parsing (aiokafka)", re.compile(r"aiokafka")),
    ("logging (structlog)", re.compile(r"structlog")),
    ("asyncio event loop overhead", re.compile(r"asyncio/")),
]
OTHER = "other"


def summarize(path: Path, rate: int) -> dict:
    samples: Counter = Counter()
    leaves: Counter = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        for name, rule in CATEGORIES:
            if rule.search(stack):
                samples[name] += count
                break
        else:
            samples[OTHER] += count
        if not CATEGORIES[0][1].search(stack):
            leaf = stack.rsplit(";", 1)[-1]
            leaves[re.sub(r":\d+\)$", ")", leaf)] += count
    busy = total - samples[CATEGORIES[0][0]]
    return {
        "samples": total,
        "rate_hz": rate,
        "seconds_sampled": round(total / rate, 1),
        "categories": [
            {"category": name, "samples": n, "share": round(n / total, 4) if total else 0.0, "seconds": round(n / rate, 2)}
            for name, n in samples.most_common()
        ],
        "busy_share": round(busy / total, 4) if total else 0.0,
        "top_leaf_functions_busy": [
            {"frame": frame, "share_of_busy": round(n / busy, 4) if busy else 0.0} for frame, n in leaves.most_common(15)
        ],
    }


def render(summary: dict) -> str:
    lines = [f"py-spy: {summary['samples']} samples at {summary['rate_hz']} Hz (~{summary['seconds_sampled']} s), busy {summary['busy_share']:.0%}"]
    for c in summary["categories"]:
        lines.append(f"  {c['share']:6.1%}  {c['seconds']:7.2f} s  {c['category']}")
    lines.append("  top leaf functions (share of busy samples):")
    for f in summary["top_leaf_functions_busy"][:10]:
        lines.append(f"    {f['share_of_busy']:6.1%}  {f['frame']}")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", type=Path)
    parser.add_argument("--rate", type=int, default=100)
    a = parser.parse_args()
    print(render(summarize(a.file, a.rate)))
    sys.exit(0)
