"""By hand: records/s of handlers.decode.decode (pydantic) against handlers.fast_decode.decode_fast
(msgspec, pydantic for what it declines) over generated traffic, encoded as bench/workload.py does.
CPU time, best of interleaved rounds, so that other load on the machine matters less.

    .venv/bin/python -m bench.decode_speed [--records 200000] [--rounds 5] [--seed 1]
"""

import argparse
import gc
import sys
import time
from collections.abc import Callable

import orjson

from consumer.generate import Generator
from handlers.decode import decode
from handlers.fast_decode import _decode_msgspec, decode_fast


def cpu_seconds(fn: Callable[[bytes], object], values: list[bytes]) -> float:
    gc.collect()
    t0 = time.process_time()
    for value in values:
        fn(value)
    return time.process_time() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.decode_speed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=int, default=200_000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)

    values = [orjson.dumps(event) for event in Generator(args.seed).stream(args.records, duplicates=0.02, older=0.02)]
    taken = sum(_decode_msgspec(value) is not None for value in values)
    decoders = {"decode (pydantic)": decode, "decode_fast (msgspec)": decode_fast}
    best = {name: float("inf") for name in decoders}
    for _ in range(args.rounds):
        for name, fn in decoders.items():
            best[name] = min(best[name], cpu_seconds(fn, values))
    n = len(values)
    print(f"{n:,} generated records, {taken:,} ({taken / n:.1%}) taken by the msgspec path; best of {args.rounds} rounds, CPU time")
    for name, seconds in best.items():
        print(f"  {name:22} {n / seconds:>12,.0f} records/s  {seconds / n * 1e6:6.2f} us/record")
    print(f"  decode_fast / decode  {best['decode (pydantic)'] / best['decode_fast (msgspec)']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
