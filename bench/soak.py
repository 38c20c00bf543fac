"""Soak: a long stream through the real `python -m consumer run`, watching its memory.

    eval "$(bash scripts/services.sh env)"
    .venv/bin/python -m bench.soak [--events 1000000] [--chunk 50000] [--interval-s 10] [--publish-first]

Generates the events in chunks (disjoint entity ids per chunk) and publishes each chunk to fresh
topics while the consumer runs (or all of them first with --publish-first). Every interval it
prints the consumer's VmRSS and VmHWM and the committed rate over the interval; at the end the
peak (VmHWM) and final RSS, and whether the tables match the model. Results go to
bench/results/soak-<UTC timestamp>.json. The fresh database and topics are removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import orjson

from bench import workload
from bench.common import (
    RESULTS,
    ROOT,
    FreshDatabases,
    Kafka,
    check_tables,
    consumer_env,
    exited,
    Interference,
    git_commit,
    machine_busy_s,
    machine,
    mib,
    proc_cpu_s,
    proc_status,
    publish,
    reap,
    say,
    services_from_env,
    stamp,
    start_child,
    unique,
)

ID_STRIDE = 10**8  # entity ids of chunk i start at i * ID_STRIDE + 1


async def amain(args: argparse.Namespace) -> dict:
    services = services_from_env()
    workdir = Path(tempfile.mkdtemp(prefix="ec-soak-"))
    kafka = Kafka(services.bootstrap)
    await kafka.start()
    dbs = FreshDatabases(services.database_url)
    chunks = [min(args.chunk, args.events - i) for i in range(0, args.events, args.chunk)]
    result: dict = {
        "timestamp": stamp(),
        **machine(),
        "git": git_commit(),
        "n": args.events,
        "chunk": args.chunk,
        "interval_s": args.interval_s,
        "publish_first": args.publish_first,
        "consumer_env": args.consumer_env,
        "samples": [],
    }
    spool = workdir / "values.bin"
    proc = None
    try:
        db = await dbs.create("soak")
        topics = {workload.USERS: unique("soak-users"), workload.ORDERS: unique("soak-orders")}
        topic_list = [topics[workload.USERS], topics[workload.ORDERS]]
        await kafka.create_topics(topic_list + [t + ".dlq" for t in topic_list], args.partitions)
        group = unique("soak-group")
        kafka.groups.append(group)
        published = {"records": 0, "malformed": 0, "done": False, "seconds": 0.0}

        async def publisher() -> None:
            t0 = time.monotonic()
            with spool.open("wb") as fh:
                for i, size in enumerate(chunks):
                    malformed = min(args.malformed_per_chunk, size - 1)
                    messages, in_order = await asyncio.to_thread(
                        workload.generate_chunk, size, args.seed + i, malformed=malformed,
                        user_id_base=i * ID_STRIDE, order_id_base=i * ID_STRIDE,
                    )
                    for value in in_order:
                        fh.write(len(value).to_bytes(4, "little") + value)
                    await asyncio.gather(*(publish(services.bootstrap, topics[role], messages[role])
                                           for role in (workload.USERS, workload.ORDERS)))
                    published["records"] += size
                    published["malformed"] += malformed
            published["seconds"] = round(time.monotonic() - t0, 1)
            published["done"] = True

        extra = dict(kv.split("=", 1) for kv in args.consumer_env)
        env = consumer_env(services.bootstrap, db, topic_list, group, **{"LOG_LEVEL": "WARNING", **extra})
        log = workdir / "consumer.log"
        if args.publish_first:
            say(f"publishing {args.events:,} events in {len(chunks)} chunks before starting the consumer")
            await publisher()
            say(f"published in {published['seconds']} s")
            pub_task = None
        else:
            pub_task = asyncio.create_task(publisher())
        started = time.monotonic()
        proc = start_child([sys.executable, "-m", "consumer", "run"], env, log, cwd=workdir)
        say(f"consumer pid {proc.pid}, group {group}, topics {topic_list}")
        say(f"{'t s':>6} {'published':>10} {'committed':>10} {'rate/s':>8} {'VmRSS MiB':>9} {'VmHWM MiB':>9} {'machine cores':>13}")
        last_t, last_committed = 0.0, 0
        last_busy = machine_busy_s()
        meter = Interference()
        ends = None
        while True:
            await asyncio.sleep(min(args.interval_s, 1.0))
            now = time.monotonic() - started
            code = exited(proc)
            if code is not None:
                raise RuntimeError(f"the consumer exited with {code}:\n{log.read_text(errors='replace')[-3000:]}")
            if pub_task is not None and pub_task.done():
                pub_task.result()  # raise a publishing error here
            if published["done"] and ends is None:
                ends = await kafka.end_offsets(topic_list)
            committed = await kafka.committed(group)
            committed_n = sum(committed.values())
            caught_up = ends is not None and all(committed.get(tp, 0) >= end for tp, end in ends.items())
            if now - last_t >= args.interval_s or caught_up:
                st = proc_status(proc.pid)
                rate = (committed_n - last_committed) / (now - last_t) if now > last_t else 0.0
                busy = machine_busy_s()
                sample = {"t": round(now, 1), "published": published["records"], "committed": committed_n,
                          "rate": round(rate, 1), "rss": st.get("VmRSS"), "hwm": st.get("VmHWM"),
                          "machine_cores": round((busy - last_busy) / (now - last_t), 2) if now > last_t else None}
                last_busy = busy
                result["samples"].append(sample)
                say(f"{now:6.0f} {published['records']:>10,} {committed_n:>10,} {rate:>8,.0f} "
                    f"{mib(st.get('VmRSS')):>9} {mib(st.get('VmHWM')):>9} {sample['machine_cores'] or 0:>13.2f}")
                last_t, last_committed = now, committed_n
            if caught_up:
                break
            if now > args.timeout_s:
                raise RuntimeError(f"the consumer did not catch up in {args.timeout_s} s")
        seconds = time.monotonic() - started
        st = proc_status(proc.pid)
        cpu = proc_cpu_s(proc.pid)
        result["interference"] = meter.end(cpu)
        fin = await reap(proc, sig=signal.SIGTERM, timeout_s=120)
        proc = None
        rss = [s["rss"] for s in result["samples"] if s["rss"]]
        result.update(
            seconds=round(seconds, 1),
            events_per_s=round(args.events / seconds, 1),
            publish=published,
            peak_rss_bytes=st.get("VmHWM"),
            final_rss_bytes=st.get("VmRSS"),
            rss_at_quarter_bytes=rss[len(rss) // 4] if rss else None,
            rss_at_half_bytes=rss[len(rss) // 2] if rss else None,
            cpu_s=round(cpu, 1) if cpu is not None else round(fin.cpu_s, 1),
            exit_code=fin.returncode,
        )
        if args.check:
            say("computing the expected state and comparing the tables")
            from tests.model import ReadModel

            model = ReadModel()
            model.apply_bytes(workload.read_values(spool))
            result["check"] = await check_tables(db, model)
            dlq = sum((await kafka.end_offsets([t + ".dlq" for t in topic_list])).values())
            result["dead_lettered"] = dlq
            if dlq != published["malformed"]:
                result["check"]["ok"] = False
                result["check"]["problems"].append(f"DLQ holds {dlq}, expected {published['malformed']}")
        result["status"] = "OK" if (not args.check or result["check"]["ok"]) and fin.returncode == 0 else "FAILED"
    finally:
        if proc is not None and exited(proc) is None:
            await reap(proc, sig=signal.SIGTERM, timeout_s=60)
        say("cleaning up: dropping the fresh database, deleting the fresh topics and group")
        try:
            await dbs.drop()
        finally:
            try:
                await kafka.delete_created()
            finally:
                await kafka.close()
        if args.keep:
            result["workdir"] = str(workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=1_000_000, help="events to push through (default 1000000)")
    p.add_argument("--chunk", type=int, default=50_000, help="events generated and published at a time (default 50000)")
    p.add_argument("--interval-s", type=float, default=10.0, help="report every this many seconds (default 10)")
    p.add_argument("--publish-first", action="store_true", help="publish everything before starting the consumer")
    p.add_argument("--malformed-per-chunk", type=int, default=2)
    p.add_argument("--partitions", type=int, default=3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--consumer-env", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--no-check", dest="check", action="store_false", help="skip comparing the tables with the model")
    p.add_argument("--timeout-s", type=float, default=3600.0)
    p.add_argument("--keep", action="store_true", help="keep the work folder (consumer log, spooled values)")
    p.add_argument("--no-save", action="store_true")
    args = p.parse_args(argv)
    result = asyncio.run(amain(args))
    print()
    print(f"soak: {args.events:,} events through `consumer run` in {result['seconds']} s "
          f"({result['events_per_s']:,.0f} events/s overall, CPU {result['cpu_s']} s), {result['status']}")
    print(f"RSS: peak (VmHWM) {mib(result['peak_rss_bytes'])} MiB, final {mib(result['final_rss_bytes'])} MiB, "
          f"at 25% of the samples {mib(result['rss_at_quarter_bytes'])} MiB, at 50% {mib(result['rss_at_half_bytes'])} MiB")
    if result.get("check"):
        c = result["check"]
        print(f"tables: {'match the model' if c['ok'] else 'DIFFER: ' + '; '.join(c['problems'][:3])} "
              f"({c['users']:,} users, {c['orders']:,} orders; {result.get('dead_lettered')} dead-lettered)")
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"soak-{result['timestamp']}.json"
        path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
        print(f"results: {path.relative_to(ROOT)}")
    return 0 if result["status"] == "OK" else 1


if __name__ == "__main__":
    sys.exit(main())
