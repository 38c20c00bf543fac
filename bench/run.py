"""Benchmark: event-consumer against the textbook loop and against the database and decode limits.

    eval "$(bash scripts/services.sh env)"
    .venv/bin/python -m bench.run [--events N] [--naive-budget-s S] [--skip-naive] [--profile]
    .venv/bin/python -m bench.run --skip-naive --skip-limits --rounds 4 --extra-fields

Publishes N records (generated events plus a few malformed ones) to fresh topics, then runs each
contestant on its own fresh database and (where it reads Kafka) its own fresh consumer group:

  event-consumer   the real `python -m consumer run` process
  naive            bench/naive.py: getone, one session per message, SELECT + merge, commit, commit
  database limit   bench/limits.py db: the final rows by COPY + one upsert per table
  decode limit     bench/limits.py decode: consumer.batch.Preparer.prepare (the native path: decode,
                   validate, collapse, rows) over every record value as one part

checks every finished contestant's tables against tests.model.ReadModel, prints one table and
writes bench/results/<UTC timestamp>.json. Fresh databases and topics are removed at the end.
See bench/README.md for how to read the numbers."""

from __future__ import annotations

import argparse
import asyncio
import copy
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from datetime import datetime
from pathlib import Path

import orjson

from bench import workload
from bench.common import (
    RESULTS,
    ROOT,
    FreshDatabases,
    Kafka,
    check_tables,
    child_env,
    consumer_env,
    Interference,
    git_commit,
    machine,
    mib,
    percentile,
    publish,
    reap,
    say,
    wait_quiet,
    services_from_env,
    stamp,
    start_child,
    unique,
    watch_group,
)
from bench.profile import render as render_profile
from bench.profile import summarize as summarize_profile

PY = sys.executable
BATCH_EVENT = "batch committed to the database"
ASSIGNED_EVENT = "partitions assigned"


class Context:
    def __init__(self, args: argparse.Namespace, services, kafka: Kafka, dbs: FreshDatabases, workdir: Path) -> None:
        self.args = args
        self.services = services
        self.kafka = kafka
        self.dbs = dbs
        self.workdir = workdir
        self.wl: workload.Workload | None = None
        self.topics: dict[str, str] = {}
        self.ends: dict = {}

    @property
    def topic_list(self) -> list[str]:
        return [self.topics[workload.USERS], self.topics[workload.ORDERS]]


def last_json_line(path: Path) -> dict | None:
    for line in reversed(path.read_text(errors="replace").splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
    return None


def log_tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def parse_consumer_log(path: Path, wall_start: float) -> dict:
    """The consumer's JSON log lines: per-batch DEBUG lines give the batch latency (the
    `seconds` field: dead-letter + database transaction, decode excluded) and, from consecutive
    timestamps, the whole fetch-decode-apply-commit cycle."""
    batches = []
    assigned_at = None
    warnings = errors = 0
    for line in path.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            if line.startswith(("WARNING", "ERROR")):
                warnings += 1
            continue
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        level = rec.get("level")
        if rec.get("event") == ASSIGNED_EVENT and assigned_at is None and rec.get("partitions"):
            assigned_at = datetime.fromisoformat(rec["timestamp"].replace("Z", "+00:00")).timestamp()
        if rec.get("event") == BATCH_EVENT:
            ts = datetime.fromisoformat(rec["timestamp"].replace("Z", "+00:00")).timestamp()
            batches.append((ts, rec["seconds"], rec["records"]))
        elif level == "warning" and rec.get("event") != "record dead-lettered":
            warnings += 1
        elif level in ("error", "critical"):
            errors += 1
    out: dict = {"batches": len(batches), "other_warnings": warnings, "errors": errors,
                 "assigned_after_start_s": round(assigned_at - wall_start, 3) if assigned_at is not None else None}
    if not batches:
        return out
    apply_ms = [b[1] * 1000 for b in batches]
    cycles_ms = [(b[0] - a[0]) * 1000 for a, b in zip(batches, batches[1:])]
    sizes = [b[2] for b in batches]
    span = batches[-1][0] - batches[0][0]
    out.update(
        records_in_batches=sum(sizes),
        records_per_batch_mean=round(sum(sizes) / len(sizes), 1),
        records_per_batch_max=max(sizes),
        batch_apply_ms_p50=round(percentile(apply_ms, 50), 1),
        batch_apply_ms_p99=round(percentile(apply_ms, 99), 1),
        batch_apply_ms_max=round(max(apply_ms), 1),
        batch_apply_s_total=round(sum(apply_ms) / 1000, 2),
        batch_cycle_ms_p50=round(percentile(cycles_ms, 50), 1) if cycles_ms else None,
        batch_cycle_ms_p99=round(percentile(cycles_ms, 99), 1) if cycles_ms else None,
        first_batch_after_start_s=round(batches[0][0] - wall_start, 2),
        steady_events_per_s=round((sum(sizes) - sizes[0]) / span, 1) if span > 0 else None,
    )
    return out


async def publish_workload(ctx: Context, prefix: str = "bench") -> dict:
    """Publishes ctx.wl to fresh topics (and their .dlq topics); sets ctx.topics and ctx.ends and
    returns what the results record of it."""
    ctx.topics = {workload.USERS: unique(f"{prefix}-users"), workload.ORDERS: unique(f"{prefix}-orders")}
    await ctx.kafka.create_topics(ctx.topic_list + [t + ".dlq" for t in ctx.topic_list], ctx.args.partitions)
    t0 = time.perf_counter()
    via = await asyncio.gather(*(publish(ctx.services.bootstrap, ctx.topics[role], ctx.wl.messages[role], ctx.args.publish_via)
                                 for role in (workload.USERS, workload.ORDERS)))
    pub_s = time.perf_counter() - t0
    ctx.ends = await ctx.kafka.end_offsets(ctx.topic_list)
    published = sum(ctx.ends.values())
    say(f"published {published:,} records to {ctx.topic_list} via {via[0]} in {pub_s:.1f} s")
    if published != ctx.wl.n:
        raise SystemExit(f"bench: published {published} records, expected {ctx.wl.n}")
    return {
        "publish_s": round(pub_s, 2),
        "publish_via": via[0],
        "users_topic_records": len(ctx.wl.messages[workload.USERS]),
        "orders_topic_records": len(ctx.wl.messages[workload.ORDERS]),
        "value_bytes_mean": round(sum(len(v) for v in ctx.wl.values()) / ctx.wl.n, 1),
    }


async def dlq_count(ctx: Context) -> int:
    ends = await ctx.kafka.end_offsets([t + ".dlq" for t in ctx.topic_list])
    return sum(ends.values())


# -- contestants -------------------------------------------------------------------------------


async def run_event_consumer(ctx: Context, label: str, *, profile: bool = False, tree: Path | None = None) -> dict:
    """`tree`: run the consumer of another checkout (bench.run --against), on a database migrated
    by that checkout's own migrations."""
    args = ctx.args
    db = await ctx.dbs.create("consumer", migrate=tree is None)
    group = unique("bench-group")
    ctx.kafka.groups.append(group)
    extra = dict(kv.split("=", 1) for kv in args.consumer_env)
    # LOG_LEVEL=DEBUG: one line per batch, for the batch latencies
    env = consumer_env(ctx.services.bootstrap, db, ctx.topic_list, group, **{"LOG_LEVEL": "DEBUG", **extra})
    if tree is not None:
        native_site = tree / ".native-site"
        env["PYTHONPATH"] = os.pathsep.join([str(native_site), str(tree)] if native_site.is_dir() else [str(tree)])
        migrated = subprocess.run([PY, "-m", "consumer", "migrate"], env=env, cwd=tree, capture_output=True, text=True)
        if migrated.returncode != 0:
            raise SystemExit(f"bench: migrating with {tree} failed: {migrated.stderr[-500:]}")
    argv = [PY, "-m", "consumer", "run"]
    stages_file = ctx.workdir / f"{label}.stages.json"
    if profile or args.uvloop:
        argv = [PY, "-m", "bench.instrumented"]
        if profile:
            env["EC_BENCH_STAGES"] = str(stages_file)
        if args.uvloop:
            env["EC_BENCH_UVLOOP"] = "1"
    log = ctx.workdir / f"{label}.log"
    dlq_before = await dlq_count(ctx)  # earlier runs on the same topics dead-lettered too
    background = await wait_quiet(args.quiet_wait_s)
    say(f"{label}: starting {' '.join(argv[1:])} (group {group})")
    meter = Interference()
    wall0, started = time.time(), time.monotonic()
    proc = start_child(argv, env, log, cwd=ctx.workdir)
    spy = None
    spy_file = ctx.workdir / f"{label}.pyspy.txt"
    if profile:
        spy = subprocess.Popen(
            [str(Path(PY).parent / "py-spy"), "record", "--pid", str(proc.pid), "--rate", str(args.profile_rate),
             "--idle", "--nonblocking", "--format", "raw", "--output", str(spy_file)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
    watch = await watch_group(ctx.kafka, proc, started, group, ctx.ends, budget_s=args.timeout_s, poll_s=0.05,
                              on_sample=_progress(label))
    interference = meter.end(watch.cpu_s)
    fin = await reap(proc, sig=signal.SIGTERM, timeout_s=120)
    if spy is not None:
        try:
            spy.wait(timeout=60)
        except subprocess.TimeoutExpired:
            spy.terminate()
    n = ctx.wl.n
    result: dict = {
        "kind": "event-consumer",
        "argv": argv[1:],
        "consumer_env": extra,
        "uvloop": args.uvloop,
        "finished": watch.done,
        "seconds": round(watch.seconds, 3),
        "events_per_s_from_start": round(n / watch.seconds, 1) if watch.done else None,
        "peak_rss_bytes": watch.hwm_bytes or None,
        "cpu_s": round(watch.cpu_s, 2) if watch.cpu_s is not None else round(fin.cpu_s, 2),
        "cpu_s_incl_shutdown": round(fin.cpu_s, 2),
        "exit_code": fin.returncode,
        "background_cores_before": background,
        **interference,
        "rss_samples": watch.samples,
        "log": parse_consumer_log(log, wall0),
    }
    # The rate that the ratios use starts when the group assignment is done (the "partitions
    # assigned" log line), as the limits' clocks start once connected: start-up and the group
    # join are a fixed cost, reported apart (events_per_s_from_start, log.assigned_after_start_s).
    assigned = result["log"].get("assigned_after_start_s")
    if watch.done and assigned is not None and watch.seconds > assigned:
        result["seconds_after_assignment"] = round(watch.seconds - assigned, 3)
        result["events_per_s"] = round(n / (watch.seconds - assigned), 1)
    else:
        result["events_per_s"] = None
    if watch.exited_early is not None:
        result["status"] = "FAILED"
        result["error"] = f"exited early with {watch.exited_early}: {log_tail(log)}"
        return result
    if not watch.done:
        result["status"] = "FAILED"
        result["error"] = f"did not catch up in {args.timeout_s} s (committed {watch.committed} of {n})"
        return result
    result["check"] = await check_tables(db, ctx.wl.model)
    result["dead_lettered"] = await dlq_count(ctx) - dlq_before
    ok = result["check"]["ok"] and fin.returncode == 0
    if result["dead_lettered"] != ctx.wl.malformed:
        ok = False
        result["check"]["problems"].append(f"DLQ holds {result['dead_lettered']} records, expected {ctx.wl.malformed}")
    result["status"] = "OK" if ok else "FAILED"
    if profile:
        if stages_file.exists():
            result["stages"] = orjson.loads(stages_file.read_bytes())
        if spy_file.exists():
            result["pyspy"] = summarize_profile(spy_file, args.profile_rate)
            result["pyspy_raw"] = str(spy_file)
        elif spy is not None:
            result["pyspy_error"] = spy.stderr.read().decode(errors="replace")[-500:] if spy.stderr else "no output"
    return result


async def run_naive(ctx: Context) -> dict:
    args = ctx.args
    db = await ctx.dbs.create("naive")
    group = unique("bench-naive")
    ctx.kafka.groups.append(group)
    argv = [PY, "-m", "bench.naive", "--bootstrap", ctx.services.bootstrap, "--topics", ",".join(ctx.topic_list),
            "--group", group, "--database-url", db, "--total", str(ctx.wl.n)]
    log = ctx.workdir / "naive.log"
    background = await wait_quiet(args.quiet_wait_s)
    say(f"naive: starting bench.naive (budget {args.naive_budget_s:.0f} s)")
    meter = Interference()
    started = time.monotonic()
    proc = start_child(argv, child_env(), log, cwd=ctx.workdir)
    watch = await watch_group(ctx.kafka, proc, started, group, ctx.ends, budget_s=args.naive_budget_s,
                              on_sample=_progress("naive", every=10))
    interference = meter.end(watch.cpu_s)
    fin = await reap(proc, sig=signal.SIGTERM, timeout_s=60)
    own = last_json_line(log) or {}
    n = ctx.wl.n
    rate = watch.committed / watch.seconds if watch.seconds > 0 else 0.0
    # As for event-consumer, the rate the ratios use leaves out start-up and the group join: it
    # is the naive loop's own count over its own clock, from its first record to its last.
    own_rate = own["processed"] / own["seconds_since_first_record"] if own.get("seconds_since_first_record") else None
    result: dict = {
        "kind": "naive",
        "finished": watch.done,
        "seconds": round(watch.seconds, 3),
        "committed": watch.committed,
        "events_per_s": round(own_rate, 1) if own_rate else None,
        "events_per_s_from_start": round(rate, 1),
        "extrapolated": not watch.done,
        "extrapolated_seconds_for_n": round(n / own_rate, 1) if own_rate and not watch.done else None,
        "own": own,
        "peak_rss_bytes": watch.hwm_bytes or own.get("hwm_bytes"),
        "cpu_s": round(watch.cpu_s, 2) if watch.cpu_s is not None else round(fin.cpu_s, 2),
        "exit_code": fin.returncode,
        "background_cores_before": background,
        **interference,
        "rss_samples": watch.samples,
    }
    if watch.exited_early is not None:
        result["status"] = "FAILED"
        result["error"] = f"exited early with {watch.exited_early}: {log_tail(log)}"
    elif watch.done:
        result["events_per_s_from_start"] = round(n / watch.seconds, 1)
        result["check"] = await check_tables(db, ctx.wl.model)
        result["status"] = "OK" if result["check"]["ok"] else "FAILED"
    else:
        result["status"] = "BUDGET"  # stopped at the time budget: rate extrapolated, tables not checked
    return result


async def run_db_limit(ctx: Context) -> dict:
    db = await ctx.dbs.create("dblimit")
    rows_file = ctx.workdir / "final_rows.pickle"
    rows_file.write_bytes(pickle.dumps(workload.final_rows(ctx.wl.model), protocol=pickle.HIGHEST_PROTOCOL))
    log = ctx.workdir / "dblimit.log"
    background = await wait_quiet(ctx.args.quiet_wait_s)
    say("database limit: COPY + INSERT ... SELECT ... ON CONFLICT")
    proc = start_child([PY, "-m", "bench.limits", "db", "--database-url", db, "--rows", str(rows_file)],
                       child_env(), log, cwd=ctx.workdir)
    fin = await reap(proc, sig=None, timeout_s=ctx.args.timeout_s)
    own = last_json_line(log)
    if fin.returncode != 0 or not own:
        return {"kind": "database limit", "status": "FAILED", "error": log_tail(log)}
    check = await check_tables(db, ctx.wl.model)
    return {
        "kind": "database limit",
        "status": "OK" if check["ok"] else "FAILED",
        "finished": True,
        "seconds": own["seconds"],
        "rows": own["rows"],
        "rows_per_s": own["rows_per_s"],
        "events_per_s": round(ctx.wl.n / own["seconds"], 1),  # event-equivalent: N events / time
        "peak_rss_bytes": own["hwm_bytes"],
        "cpu_s": own["cpu_s"],
        "cpu_s_process_incl_loading": round(fin.cpu_s, 2),
        "background_cores_before": background,
        **{k: own[k] for k in ("server_cpu_s", "machine_busy_cpu_s", "others_cpu_s", "others_cores")},
        "check": check,
    }


async def run_decode_limit(ctx: Context) -> dict:
    values_file = ctx.workdir / "values.bin"
    workload.write_values(values_file, ctx.wl.values())
    log = ctx.workdir / "decode.log"
    background = await wait_quiet(ctx.args.quiet_wait_s)
    say("decode limit: consumer.batch.Preparer.prepare (decode, validate, collapse, rows) over every value")
    proc = start_child([PY, "-m", "bench.limits", "decode", "--values", str(values_file)],
                       child_env(), log, cwd=ctx.workdir)
    fin = await reap(proc, sig=None, timeout_s=ctx.args.timeout_s)
    own = last_json_line(log)
    if fin.returncode != 0 or not own:
        return {"kind": "decode limit", "status": "FAILED", "error": log_tail(log)}
    ok = own["records"] == ctx.wl.n and own["poison"] == ctx.wl.malformed and own["events"] == ctx.wl.events
    return {
        "kind": "decode limit",
        "status": "OK" if ok else "FAILED",
        "finished": True,
        "seconds": own["seconds"],
        "events_per_s": own["records_per_s"],
        "peak_rss_bytes": own["hwm_bytes"],
        "cpu_s": own["cpu_s"],
        "cpu_s_process_incl_loading": round(fin.cpu_s, 2),
        "background_cores_before": background,
        **{k: own[k] for k in ("server_cpu_s", "machine_busy_cpu_s", "others_cpu_s", "others_cores")},
        "own": own,
        "check": {"ok": ok, "poison": own["poison"], "expected_poison": ctx.wl.malformed,
                  "events": own["events"], "expected_events": ctx.wl.events},
    }


def _progress(label: str, every: float = 5.0):
    state = {"next": every}

    def show(sample: dict, total: int) -> None:
        if sample["t"] >= state["next"]:
            state["next"] = sample["t"] + every
            say(f"{label}: t={sample['t']:.0f}s committed {sample['committed']}/{total} rss {mib(sample['rss'])} MiB")

    return show


# -- report ------------------------------------------------------------------------------------


def median_run(runs: list[dict]) -> dict:
    """The run with the median rate (the lower one of the middle two), or the first that failed:
    a wrong answer in any round must show."""
    failed = [r for r in runs if r.get("status") != "OK"]
    if failed:
        return failed[0]
    ranked = sorted(runs, key=lambda r: r["events_per_s"])
    return {**ranked[(len(ranked) - 1) // 2], "rounds": len(runs)}


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def table(result: dict) -> str:
    c = result["contestants"]
    rows = [("contestant", "status", "events/s", "from start", "wall s", "batch p50/p99 ms", "peak RSS MiB", "CPU s", "others", "notes")]
    for name, r in c.items():
        if r is None:
            continue
        rate = r.get("events_per_s")
        rate_text = "-" if rate is None else f"{rate:,.0f}" + ("*" if r.get("extrapolated") else "")
        lat = "-"
        notes = ""
        if r["kind"] == "event-consumer" and r.get("log", {}).get("batches"):
            lg = r["log"]
            lat = f"{lg['batch_apply_ms_p50']:.0f}/{lg['batch_apply_ms_p99']:.0f}"
            cycle = "-" if lg.get("batch_cycle_ms_p50") is None else f"{lg['batch_cycle_ms_p50']:.0f}"
            steady = "-" if not lg.get("steady_events_per_s") else f"{lg['steady_events_per_s']:,.0f}"
            notes = (f"{lg['batches']} batches, cycle p50 {cycle} ms, steady {steady}/s, "
                     f"assigned at {lg.get('assigned_after_start_s')} s, 1st batch at {lg['first_batch_after_start_s']} s")
        elif r["kind"] == "naive":
            lat = "per message"
            if r.get("extrapolated"):
                notes = (f"* extrapolated: {r['committed']:,} of {result['n']:,} in {r['seconds']:.0f} s budget, "
                         f"~{r['extrapolated_seconds_for_n']:,.0f} s for all; tables not checked")
            else:
                notes = "finished within budget"
        elif r["kind"] == "database limit" and "rows" in r:
            notes = f"event-equivalent (N/time); {r['rows_per_s']:,.0f} final rows/s ({r['rows']:,} rows)"
        elif r["kind"] == "decode limit" and "own" in r:
            own = r["own"]
            path = "native path" if own.get("native") else f"Python path ({own.get('native_unavailable') or 'native off'})"
            notes = (f"records/s, 1 core, {path}: decode+collapse+rows, {own['native_declined_records']:,} declined; "
                     f"pydantic decode alone {own['pydantic_records_per_s']:,.0f}/s, orjson.loads alone {own['orjson_loads_per_s']:,.0f}/s")
        if r.get("status") == "FAILED":
            notes = (r.get("error") or "; ".join(r.get("check", {}).get("problems", [])[:2]) or "tables differ")[:120]
        wall = r.get("seconds")
        from_start = r.get("events_per_s_from_start")
        from_start_text = "-" if from_start is None else f"{from_start:,.0f}"
        rows.append((name, r.get("status", "?"), rate_text, from_start_text, "-" if wall is None else f"{wall:.1f}", lat,
                     mib(r.get("peak_rss_bytes")), "-" if r.get("cpu_s") is None else f"{r['cpu_s']:.1f}",
                     "-" if r.get("others_cores") is None else f"{r['others_cores']:.2f}", notes))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]) - 1)]
    out = []
    for k, row in enumerate(rows):
        out.append("  ".join(str(v).ljust(widths[i]) if i < len(widths) else str(v) for i, v in enumerate(row)))
        if k == 0:
            out.append("  ".join("-" * w for w in widths) + "  " + "-" * 5)
    ratios = result["ratios"]
    out.append("")
    out.append(f"event-consumer / naive           = {_fmt_ratio(ratios['event_consumer_over_naive'])}"
               + ("  (naive rate extrapolated from its time budget)" if c.get("naive") and c["naive"].get("extrapolated") else ""))
    out.append(f"event-consumer / database limit  = {_fmt_ratio(ratios['event_consumer_over_database_limit'])}"
               "  (limit in event-equivalent/s = N / its time)")
    out.append(f"event-consumer / decode limit    = {_fmt_ratio(ratios['event_consumer_over_decode_limit'])}")
    out.append(f"  with event-consumer timed from process start: / database limit = "
               f"{_fmt_ratio(ratios.get('from_start_event_consumer_over_database_limit'))}")
    rounds = result.get("rounds")
    if rounds:
        paired = ", ".join(_fmt_ratio(x) for x in rounds["event_consumer_over_database_limit"])
        out.append(f"  {len(rounds['event_consumer_events_per_s'])} rounds (medians above); "
                   f"event-consumer / database limit per round: {paired}")
    against = result.get("against")
    if against:
        per_round = ", ".join(_fmt_ratio(x) for x in against["this_over_against_per_round"])
        out.append(f"this tree / {against['rev']} ({against['commit'][:10]}) = {_fmt_ratio(against['this_over_against_median'])}"
                   f"  (median of paired rounds: {per_round}; ahead in {against['this_ahead_in_rounds']} of "
                   f"{len(against['this_over_against_per_round'])})")
    extra = result.get("extra_fields")
    if extra:
        per_round = ", ".join(_fmt_ratio(x) for x in extra["extra_over_plain_per_round"])
        out.append(f"extra fields / plain = {_fmt_ratio(extra['extra_over_plain_median'])}  (median of paired rounds: "
                   f"{per_round}; within 10%: {extra['within_10_percent']}; mean value "
                   f"{result['workload']['value_bytes_mean']:.0f} -> {result['extra_fields_workload']['value_bytes_mean']:.0f} bytes)")
    out.append("events/s leaves fixed start-up costs out of every contestant (event-consumer: from its group "
               "assignment; naive: from its first record; limits: the timed section); 'from start' keeps them in.")
    out.append("A contestant marked FAILED wrote wrong tables (or crashed): its rate does not count.")
    out.append("others = cores used meanwhile by processes other than the contestant, PostgreSQL and Kafka.")
    # under a second the tick-based /proc/stat figures say little
    noisy = [k for k, r in c.items() if r and (r.get("others_cores") or 0) > 0.25 and (r.get("seconds") or 0) >= 1.0]
    if noisy:
        out.append(f"WARNING: other load on the machine during {', '.join(noisy)} "
                   f"({result['cpu_count']} CPUs): those numbers are low; run again when it is quiet.")
    return "\n".join(out)


def _fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


# -- main --------------------------------------------------------------------------------------


def checkout(rev: str, workdir: Path) -> dict:
    """A detached git worktree of `rev` in the work folder, for --against."""
    tree = workdir / "against"
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", f"{rev}^{{commit}}"], capture_output=True, text=True)
    if commit.returncode != 0:
        raise SystemExit(f"bench: --against {rev}: not a commit ({commit.stderr.strip()})")
    added = subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), commit.stdout.strip()],
                           capture_output=True, text=True)
    if added.returncode != 0:
        raise SystemExit(f"bench: --against {rev}: git worktree add failed: {added.stderr.strip()}")
    say(f"against: {rev} ({commit.stdout.strip()[:10]}) checked out in {tree}")
    native_site = build_native(tree)
    return {"tree": tree, "commit": commit.stdout.strip(), "native_site": native_site}


def build_native(tree: Path) -> Path | None:
    """The other tree's own native extension (its API may differ from the one in .venv), built
    into a folder that goes first on its PYTHONPATH; None if that tree has none."""
    if not (tree / "native" / "Cargo.toml").is_file():
        return None
    wheels, site = tree / ".native-wheel", tree / ".native-site"
    say(f"against: building {tree / 'native'} (cargo)")
    built = subprocess.run([PY, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(tree / "native")], capture_output=True, text=True)
    if built.returncode != 0:
        raise SystemExit(f"bench: building the native extension of {tree} failed: {built.stderr[-800:]}")
    for wheel in wheels.glob("*.whl"):
        zipfile.ZipFile(wheel).extractall(site)
    return site


def paired(runs: list[dict], base_runs: list[dict]) -> tuple[list[float | None], float | None, int]:
    """Paired ratios runs / base_runs, round by round (the two ran back to back; None where either
    failed), their median (the lower middle one) and the rounds in which runs was ahead."""
    per_round = [ratio(a.get("events_per_s"), b.get("events_per_s")) if a.get("status") == b.get("status") == "OK" else None
                 for a, b in zip(runs, base_runs)]
    valid = sorted(x for x in per_round if x is not None)
    return per_round, valid[(len(valid) - 1) // 2] if valid else None, sum(1 for x in valid if x > 1)


def against_summary(rev: str, against: dict, this_runs: list[dict], other_runs: list[dict]) -> dict:
    """Paired ratios this tree / the other, round by round (the two ran back to back)."""
    per_round, median, ahead = paired(this_runs, other_runs)
    return {
        "rev": rev,
        "commit": against["commit"],
        "this_events_per_s": [r.get("events_per_s") for r in this_runs],
        "against_events_per_s": [r.get("events_per_s") for r in other_runs],
        "this_over_against_per_round": per_round,
        "this_over_against_median": median,
        "this_ahead_in_rounds": ahead,
    }


async def amain(args: argparse.Namespace) -> dict:
    services = services_from_env()
    started_at = stamp()
    workdir = Path(tempfile.mkdtemp(prefix="ec-bench-"))
    kafka = Kafka(services.bootstrap)
    await kafka.start()
    dbs = FreshDatabases(services.database_url)
    ctx = Context(args, services, kafka, dbs, workdir)
    result: dict = {
        "timestamp": started_at,
        **machine(),
        "git": git_commit(),
        "n": args.events,
        "seed": args.seed,
        "malformed": args.malformed,
        "partitions": args.partitions,
        "consumer_env": args.consumer_env,
        "uvloop": args.uvloop,
        "choices": {
            "events_per_s": "event-consumer: N records published / wall seconds from the end of its group join (its "
                            "'partitions assigned' log line) until the group's committed offsets reach the log end "
                            "offsets (polled every 0.05 s); naive: its own records / seconds from its first record; "
                            "the limits: their timed section. Fixed start-up costs are out of every rate the ratios use",
            "events_per_s_from_start": "N / wall seconds from process start (interpreter, imports, connections, group "
                                       "join included) until the committed offsets reach the log end",
            "database_limit": "events_per_s is event-equivalent: N / (BEGIN..COMMIT of COPY + upsert of the final rows); "
                              "rows_per_s is final rows / the same time; ratios use the event-equivalent",
            "decode_limit": "events_per_s is records/s of consumer.batch.Preparer.prepare over every value as one part "
                            "(the native path: decode, validate, collapse, rows), one core, no Kafka or database; "
                            "own.pydantic_records_per_s: Contract.decode alone per value",
            "batch_latency": "the consumer's DEBUG line per batch: 'seconds' = dead-letter + database transaction "
                             "(decode excluded); cycle = time between consecutive batch lines",
            "peak_rss": "ru_maxrss of the child (= VmHWM), whole life",
            "cpu_s": "utime+stime of the child just before it was stopped (limits: CPU of the timed section only)",
        },
        "workdir": str(workdir),
        "contestants": {},
    }
    try:
        t0 = time.perf_counter()
        ctx.wl = workload.build(args.events, args.seed, args.malformed)
        gen_s = time.perf_counter() - t0
        say(f"generated {args.events:,} records ({args.malformed} malformed), model: "
            f"{len(ctx.wl.model.users):,} users, {len(ctx.wl.model.orders):,} orders ({gen_s:.1f} s)")
        result["workload"] = {
            "generate_and_model_s": round(gen_s, 2),
            **await publish_workload(ctx),
            "expected_users": len(ctx.wl.model.users),
            "expected_orders": len(ctx.wl.model.orders),
        }
        extra = None
        if args.extra_fields:
            # the same events (same seed) with a newer producer's extra fields, on topics of their own;
            # checked against the plain workload's model
            extra = copy.copy(ctx)
            extra.wl = workload.build(args.events, args.seed, args.malformed, extra_fields=True)
            extra.wl.model = ctx.wl.model
            say(f"generated the extra-fields variant of the same {args.events:,} records")
            result["extra_fields_workload"] = await publish_workload(extra, "bench-extra")
        contestants = result["contestants"]
        if not args.skip_limits:
            contestants["decode limit"] = await run_decode_limit(ctx)
        # With --rounds N the database limit and event-consumer alternate N times; the table
        # shows each one's median run, and the paired ratios of every round are kept.
        # With --against or --extra-fields, the other run of each round (another checkout's
        # consumer, or this one on the extra-fields workload) goes beside event-consumer's.
        limit_runs, consumer_runs, other_runs = [], [], []
        against = checkout(args.against, workdir) if args.against else None
        for r in range(args.rounds):
            if not args.skip_limits:
                limit_runs.append(await run_db_limit(ctx))
            this = lambda: run_event_consumer(ctx, "event-consumer" if args.rounds == 1 else f"event-consumer-{r + 1}")  # noqa: E731
            if against is not None:
                other = lambda: run_event_consumer(ctx, f"against-{r + 1}", tree=against["tree"])  # noqa: E731
            elif extra is not None:
                other = lambda: run_event_consumer(extra, f"extra-fields-{r + 1}")  # noqa: E731
            else:
                consumer_runs.append(await this())
                continue
            # the order alternates from round to round, so that a drifting machine favours neither
            if r % 2 == 0:
                consumer_runs.append(await this())
                other_runs.append(await other())
            else:
                other_runs.append(await other())
                consumer_runs.append(await this())
        if limit_runs:
            contestants["database limit"] = median_run(limit_runs)
        contestants["event-consumer"] = median_run(consumer_runs)
        if against is not None:
            result["against"] = against_summary(args.against, against, consumer_runs, other_runs)
            contestants[f"against {args.against}"] = median_run(other_runs)
        if extra is not None:
            per_round, median, _ = paired(other_runs, consumer_runs)
            result["extra_fields"] = {
                "fields": "envelope: trace_id (32 hex), schema_version 2; data: source, tags (bench.workload.with_extra_fields)",
                "plain_events_per_s": [r.get("events_per_s") for r in consumer_runs],
                "extra_events_per_s": [r.get("events_per_s") for r in other_runs],
                "extra_over_plain_per_round": per_round,
                "extra_over_plain_median": median,
                "within_10_percent": None if median is None else median >= 0.9,
            }
            contestants["event-consumer, extra fields"] = median_run(other_runs)
        if args.rounds > 1:
            result["rounds"] = {
                "database_limit_events_per_s": [r.get("events_per_s") for r in limit_runs],
                "event_consumer_events_per_s": [r.get("events_per_s") for r in consumer_runs],
                "event_consumer_over_database_limit": [
                    ratio(c.get("events_per_s"), d.get("events_per_s")) if c.get("status") == d.get("status") == "OK" else None
                    for c, d in zip(consumer_runs, limit_runs)
                ],
            }
        contestants["naive"] = None if args.skip_naive else await run_naive(ctx)
        if args.profile:
            prof = await run_event_consumer(ctx, "event-consumer-profiled", profile=True)
            result["profile"] = prof
    finally:
        if args.against:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(workdir / "against")], capture_output=True)
        say("cleaning up: dropping fresh databases, deleting fresh topics and groups")
        try:
            await dbs.drop()
        finally:
            try:
                await kafka.delete_created()
            finally:
                await kafka.close()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
            result["workdir"] = None
    ec = result["contestants"].get("event-consumer") or {}
    ok_rate = lambda r: r.get("events_per_s") if r and r.get("status") in ("OK", "BUDGET") else None  # noqa: E731
    ec_rate = ok_rate(ec)
    result["ratios"] = {
        "event_consumer_over_naive": ratio(ec_rate, ok_rate(result["contestants"].get("naive"))),
        "event_consumer_over_database_limit": ratio(ec_rate, ok_rate(result["contestants"].get("database limit"))),
        "event_consumer_over_decode_limit": ratio(ec_rate, ok_rate(result["contestants"].get("decode limit"))),
        # the same with event-consumer's clock from process start (start-up and group join included)
        "from_start_event_consumer_over_database_limit": ratio(
            ec.get("events_per_s_from_start") if ec.get("status") == "OK" else None,
            ok_rate(result["contestants"].get("database limit"))),
    }
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=200_000, help="records to publish, malformed ones included (default 200000)")
    p.add_argument("--naive-budget-s", type=float, default=60.0, help="time budget of the naive loop (default 60)")
    p.add_argument("--skip-naive", action="store_true", help="do not run the naive loop")
    p.add_argument("--skip-limits", action="store_true", help="do not run the database and decode limits")
    p.add_argument("--rounds", type=int, default=1,
                   help="run the database limit and event-consumer this many times, alternating; the table "
                        "shows each one's median run and the per-round ratios follow it (default 1)")
    paired_with = p.add_mutually_exclusive_group()
    paired_with.add_argument("--against", metavar="REV",
                             help="also run event-consumer of git revision REV (a worktree), alternating with this tree's "
                                  "in every round, and print the paired ratio: judges a change on a machine whose speed drifts")
    paired_with.add_argument("--extra-fields", action="store_true",
                             help="also run event-consumer on the same workload with a newer producer's extra fields "
                                  "(trace_id, schema_version; data.source, data.tags) on topics of their own, alternating "
                                  "with the plain run in every round, and print the paired ratio extra / plain")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--malformed", type=int, default=20, help="poison records mixed in (default 20)")
    p.add_argument("--partitions", type=int, default=3, help="partitions per topic (default 3)")
    p.add_argument("--publish-via", choices=("auto", "kcat", "aiokafka"), default="auto")
    p.add_argument("--consumer-env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra setting for the event-consumer process, e.g. BATCH_MAX_RECORDS=5000 (repeatable)")
    p.add_argument("--uvloop", action="store_true", help="run event-consumer on uvloop (needs uvloop in .venv)")
    p.add_argument("--profile", action="store_true",
                   help="also run event-consumer once more with stage timers and py-spy (not counted in the ratios)")
    p.add_argument("--profile-rate", type=int, default=100, help="py-spy samples per second (default 100)")
    p.add_argument("--timeout-s", type=float, default=1800.0, help="give up on a contestant after this long")
    p.add_argument("--quiet-wait-s", type=float, default=60.0,
                   help="before each contestant, wait up to this long for the machine to be idle (default 60)")
    p.add_argument("--keep", action="store_true", help="keep the work folder (logs, profiles)")
    p.add_argument("--no-save", action="store_true", help="do not write bench/results/*.json")
    args = p.parse_args(argv)
    for kv in args.consumer_env:
        if "=" not in kv:
            p.error(f"--consumer-env needs KEY=VALUE, got {kv!r}")
    if args.malformed >= args.events:
        p.error("--malformed must be smaller than --events")

    result = asyncio.run(amain(args))
    print()
    print(f"event-consumer benchmark: N={args.events:,} records ({args.malformed} malformed), "
          f"{result['cpu_count']} CPUs, commit {result['git']['commit'][:10]}{' (dirty)' if result['git']['dirty'] else ''}")
    print(table(result))
    if result.get("profile"):
        prof = result["profile"]
        print(f"\nprofiled run (stage timers + py-spy; not in the ratios): {prof.get('status')}, "
              f"{prof.get('events_per_s') or 0:,.0f} events/s")
        if prof.get("stages"):
            st = prof["stages"]["seconds"]
            loop_s = st.get("loop_run") or 1
            for k in ("kafka_fetch", "decode", "decode_native", "prepare", "sql_lock", "sql_upserts", "sql_offsets", "sql_tx", "kafka_commit", "dead_letter",
                      "gc_gen0", "gc_gen1", "gc_gen2"):
                if k in st:
                    print(f"  {k:13s} {st[k]:8.2f} s  {st[k] / loop_s:6.1%} of the loop")
        if prof.get("pyspy"):
            print(render_profile(prof["pyspy"]))
        elif prof.get("pyspy_error"):
            print("py-spy:", prof["pyspy_error"])
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"{result['timestamp']}.json"
        path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
        print(f"\nresults: {path.relative_to(ROOT)}")
    failed = [k for k, r in result["contestants"].items() if r and r.get("status") == "FAILED"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
