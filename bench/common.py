"""Plumbing shared by bench.run and bench.soak: the services, fresh databases and topics,
publishing, watching a group's committed offsets, and measuring a child process."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")
KEY_DELIM = b"\x1f"
MSG_DELIM = b"\x1e"

Message = tuple[bytes | None, bytes]


def say(*parts: object) -> None:
    print("[bench]", *parts, file=sys.stderr, flush=True)


# -- services --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Services:
    bootstrap: str
    database_url: str  # postgresql+asyncpg://... of a server where we may CREATE DATABASE


def services_from_env() -> Services:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    db = os.environ.get("DATABASE_URL")
    if not (bootstrap and db):
        raise SystemExit(
            'bench: KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL must be set: eval "$(bash scripts/services.sh env)"'
        )
    return Services(bootstrap, db)


def stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def unique(prefix: str) -> str:
    return f"{prefix}-{stamp().lower()}-{uuid.uuid4().hex[:6]}"


def plain_dsn(url: str, database: str | None = None) -> str:
    u = make_url(url).set(drivername="postgresql")
    if database is not None:
        u = u.set(database=database)
    return u.render_as_string(hide_password=False)


def db_url_for(server_url: str, database: str) -> str:
    return make_url(server_url).set(database=database).render_as_string(hide_password=False)


class FreshDatabases:
    """CREATE DATABASE + migrate to head; drop() removes every database made here."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.names: list[str] = []

    async def create(self, role: str, migrate: bool = True) -> str:
        from database.migrate import upgrade

        name = unique(f"bench_{role}").replace("-", "_")
        admin = await asyncpg.connect(plain_dsn(self.server_url))
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        self.names.append(name)
        url = db_url_for(self.server_url, name)
        if migrate:
            await asyncio.to_thread(upgrade, url)
        return url

    async def drop(self) -> None:
        if not self.names:
            return
        admin = await asyncpg.connect(plain_dsn(self.server_url))
        try:
            for name in self.names:
                for attempt in range(10):
                    try:
                        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                        break
                    except asyncpg.InsufficientPrivilegeError:
                        # an autovacuum worker on the fresh database: FORCE may not end it; it ends soon
                        if attempt == 9:
                            raise
                        await asyncio.sleep(1)
        finally:
            await admin.close()
        self.names.clear()


# -- Kafka -----------------------------------------------------------------------------------


class Kafka:
    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        self.created: list[str] = []
        self.groups: list[str] = []  # consumer groups to delete at the end

    async def start(self) -> None:
        await self.admin.start()

    async def close(self) -> None:
        await self.admin.close()

    async def create_topics(self, names: list[str], partitions: int) -> None:
        await self.admin.create_topics([NewTopic(n, partitions, 1) for n in names])
        self.created.extend(names)
        # wait until the metadata knows them (producers and consumers look them up at once)
        for _ in range(100):
            known = set(await self.admin.list_topics())
            if set(names) <= known:
                return
            await asyncio.sleep(0.1)

    async def delete_created(self) -> None:
        """Deletes the topics made here, then the groups registered in self.groups (best effort:
        an empty group without offsets would also expire on its own within
        offsets.retention.check.interval.ms)."""
        if self.created:
            await self.admin.delete_topics(self.created)
            self.created.clear()
        if self.groups:
            await self.delete_groups(self.groups)
            self.groups.clear()

    async def delete_groups(self, groups: list[str]) -> dict[str, int]:
        """DeleteGroups for each (aiokafka has the request but no public call). Returns the error
        code per group (0 = deleted; 69 = not empty, 16/15 = not found/coordinator moving)."""
        from aiokafka.protocol.admin import DeleteGroupsRequest

        codes: dict[str, int] = {}
        for group in groups:
            try:
                node = await self.admin.find_coordinator(group)
                response = await self.admin._send_request(DeleteGroupsRequest([group]), node)  # noqa: SLF001
                for name, code in response.results:
                    codes[name] = code
            except Exception as exc:  # noqa: BLE001 - cleanup is best effort
                codes[group] = -1
                say(f"could not delete group {group}: {type(exc).__name__}: {exc}")
        return codes

    async def end_offsets(self, topics: list[str]) -> dict[TopicPartition, int]:
        c = AIOKafkaConsumer(bootstrap_servers=self.bootstrap)
        await c.start()
        try:
            tps = []
            for t in topics:
                parts = c.partitions_for_topic(t)
                for _ in range(50):
                    if parts:
                        break
                    await c._client.force_metadata_update()  # noqa: SLF001 - no public call for one topic
                    await asyncio.sleep(0.1)
                    parts = c.partitions_for_topic(t)
                tps.extend(TopicPartition(t, p) for p in sorted(parts or ()))
            return await c.end_offsets(tps)
        finally:
            await c.stop()

    async def committed(self, group: str) -> dict[TopicPartition, int]:
        try:
            offsets = await self.admin.list_consumer_group_offsets(group)
        except Exception:  # noqa: BLE001 - the group may not exist yet (coordinator loading)
            return {}
        return {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


def publish_kcat(bootstrap: str, topic: str, messages: list[Message]) -> None:
    """librdkafka through kcat, batched (linger), idempotent, uncompressed, keyed (murmur2 like Java)."""
    payload = bytearray()
    for key, value in messages:
        if MSG_DELIM in value or KEY_DELIM in value or (key and (MSG_DELIM in key or KEY_DELIM in key)):
            raise ValueError("a value uses a kcat delimiter byte")
        payload += (key or b"") + KEY_DELIM + value + MSG_DELIM
    proc = subprocess.run(
        ["kcat", "-P", "-b", bootstrap, "-t", topic, "-K", "\\x1f", "-D", "\\x1e", "-z", "none",
         "-X", "enable.idempotence=true", "-X", "topic.partitioner=murmur2_random",
         "-X", "linger.ms=20", "-X", "batch.size=1000000", "-X", "queue.buffering.max.messages=1000000"],
        input=bytes(payload),
        capture_output=True,
        timeout=1800,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"kcat failed: {proc.stderr.decode(errors='replace')[-2000:]}")


async def publish_aiokafka(bootstrap: str, topic: str, messages: list[Message]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=20, max_batch_size=1024 * 1024
    )
    await producer.start()
    try:
        pending = []
        for key, value in messages:
            pending.append(await producer.send(topic, value=value, key=key))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def publish(bootstrap: str, topic: str, messages: list[Message], via: str = "auto") -> str:
    if via == "kcat" or (via == "auto" and shutil.which("kcat")):
        await asyncio.to_thread(publish_kcat, bootstrap, topic, messages)
        return "kcat"
    await publish_aiokafka(bootstrap, topic, messages)
    return "aiokafka"


# -- processes -------------------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM in bytes (empty when the process is gone)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    name, value = line.split(":", 1)
                    out[name] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out


def proc_cpu_s(pid: int) -> float | None:
    """utime + stime of one process, in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def server_cpu_s() -> dict[str, float]:
    """CPU seconds so far of every PostgreSQL process and of the Kafka broker (java) on this
    machine: sampled before and after a contestant to see how much work it pushed onto them.
    Machine-wide, so other users of the same servers show up too."""
    totals = {"postgres": 0.0, "kafka": 0.0}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                raw = fh.read()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        if comm == "postgres":
            key = "postgres"
        elif comm == "java":
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    if b"kafka.Kafka" not in fh.read():
                        continue
            except OSError:
                continue
            key = "kafka"
        else:
            continue
        fields = raw.rsplit(")", 1)[1].split()
        totals[key] += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return totals


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (all cores, /proc/stat: all but idle and iowait)."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / CLK_TCK


def self_hwm_bytes() -> int:
    return proc_status(os.getpid()).get("VmHWM", 0)


async def wait_quiet(max_wait_s: float, threshold_cores: float = 0.3) -> float:
    """Waits (up to max_wait_s) for a second in which the machine is busy less than
    threshold_cores, so another user's test run does not land in a measurement. Returns the
    busy cores of the last second sampled."""
    deadline = time.monotonic() + max_wait_s
    waited = False
    while True:
        b0 = machine_busy_s()
        await asyncio.sleep(1.0)
        busy = machine_busy_s() - b0
        if busy < threshold_cores or time.monotonic() >= deadline:
            if waited:
                say(f"machine busy {busy:.2f} cores in the last second; going on")
            return round(busy, 2)
        if not waited:
            say(f"machine busy {busy:.2f} cores (other users?); waiting up to {max_wait_s:.0f} s for it to calm down")
            waited = True


class Interference:
    """Machine-wide CPU during a contestant, less the contestant's own and the servers': what
    other processes (another engineer's tests, say) took meanwhile."""

    def __init__(self) -> None:
        self.busy0 = machine_busy_s()
        self.servers0 = server_cpu_s()
        self.own0 = _own_cpu_s()
        self.t0 = time.monotonic()

    def end(self, contestant_cpu_s: float | None) -> dict:
        """contestant_cpu_s: CPU of a child being measured (not counting this process and the
        children it has already reaped, e.g. kcat, which are subtracted anyway)."""
        wall = time.monotonic() - self.t0
        busy = machine_busy_s() - self.busy0
        servers = cpu_delta(self.servers0, server_cpu_s())
        own = _own_cpu_s() - self.own0
        others = busy - (contestant_cpu_s or 0.0) - own - sum(servers.values())
        return {
            "server_cpu_s": servers,
            "machine_busy_cpu_s": round(busy, 2),
            "others_cpu_s": round(max(0.0, others), 2),
            "others_cores": round(max(0.0, others) / wall, 2) if wall > 0 else None,
        }


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: round(after[k] - before[k], 2) for k in before}


@dataclass
class Finished:
    returncode: int
    cpu_s: float  # user + system over the whole life of the process (rusage)
    maxrss_bytes: int


def start_child(argv: list[str], env: dict[str, str], log_path: Path, cwd: Path) -> subprocess.Popen:
    log = log_path.open("wb")
    try:
        return subprocess.Popen(argv, cwd=str(cwd), env=env, stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()


def exited(proc: subprocess.Popen) -> int | None:
    """The child's exit code if it has exited, else None, WITHOUT reaping it (Popen.poll would,
    and then os.wait4 could no longer collect its rusage)."""
    if proc.returncode is not None:
        return proc.returncode
    info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    if info is None:
        return None
    return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status


async def reap(proc: subprocess.Popen, timeout_s: float = 90.0, sig: int | None = signal.SIGTERM) -> Finished:
    """Signals the child (if sig), waits for it and returns its rusage (os.wait4)."""
    if sig is not None and exited(proc) is None:
        proc.send_signal(sig)
    deadline = time.monotonic() + timeout_s
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        await asyncio.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Finished(proc.returncode, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024)


def consumer_env(bootstrap: str, database_url: str, topics: list[str], group: str, **extra: str) -> dict[str, str]:
    """The settings of one `python -m consumer run` of the bench. HTTP_PORT=0: the health/metrics
    server (when the consumer has one) takes a free port, so runs side by side never collide."""
    return child_env(
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        DATABASE_URL=database_url,
        KAFKA_TOPICS=",".join(topics),
        KAFKA_GROUP_ID=group,
        LOG_FORMAT="json",
        HTTP_HOST="127.0.0.1",
        HTTP_PORT="0",
        **extra,
    )


def child_env(**overrides: str) -> dict[str, str]:
    """The current environment without the consumer's settings, plus overrides; PYTHONPATH lets
    children import bench/ and tests/ from any working directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "DATABASE_", "BATCH_", "LOG_", "HTTP_", "EC_BENCH_"))}
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(overrides)
    return env


@dataclass
class Watch:
    """What watching a group until it caught up found."""

    done: bool
    seconds: float  # from process start to caught up (or to the budget)
    committed: int  # records committed by the group at the end
    hwm_bytes: int  # VmHWM just before the process was stopped
    cpu_s: float | None  # utime+stime just before the process was stopped
    samples: list[dict] = field(default_factory=list)  # t, rss, committed
    exited_early: int | None = None


async def watch_group(
    kafka: Kafka,
    proc: subprocess.Popen,
    started: float,
    group: str,
    ends: dict[TopicPartition, int],
    *,
    budget_s: float,
    poll_s: float = 0.2,
    sample_every_s: float = 1.0,
    on_sample=None,
) -> Watch:
    """Polls the group's committed offsets every poll_s until they reach the end offsets, the
    budget runs out, or the process dies. Samples VmRSS every sample_every_s."""
    total = sum(ends.values())
    samples: list[dict] = []
    next_sample = 0.0
    committed_n = 0
    done = False
    while True:
        now = time.monotonic() - started
        committed = await kafka.committed(group)
        committed_n = sum(min(committed.get(tp, 0), end) for tp, end in ends.items())
        if all(committed.get(tp, 0) >= end for tp, end in ends.items()):
            done = True
            now = time.monotonic() - started
        if now >= next_sample or done:
            st = proc_status(proc.pid)
            sample = {"t": round(now, 2), "rss": st.get("VmRSS"), "committed": committed_n}
            samples.append(sample)
            if on_sample:
                on_sample(sample, total)
            next_sample = now + sample_every_s
        if done:
            break
        code = exited(proc)
        if code is not None:
            # it may have committed the last offsets and exited between our two looks
            committed = await kafka.committed(group)
            if all(committed.get(tp, 0) >= end for tp, end in ends.items()):
                return Watch(True, now, total, 0, None, samples)
            return Watch(False, now, committed_n, 0, None, samples, exited_early=code)
        if now >= budget_s:
            break
        await asyncio.sleep(poll_s)
    st = proc_status(proc.pid)
    return Watch(done, now, committed_n, st.get("VmHWM", 0), proc_cpu_s(proc.pid), samples)


# -- checking the tables ---------------------------------------------------------------------


async def check_tables(url: str, model) -> dict:
    """Compares users and orders row by row with the model (tests.model). ok=False on any difference."""
    from tests.model import OrderRow, UserRow, diff, rows_from_db

    engine = create_async_engine(url, pool_size=1, max_overflow=0)
    try:
        async with engine.connect() as conn:
            users = rows_from_db(await conn.execute(text("SELECT * FROM users")), UserRow)
            orders = rows_from_db(await conn.execute(text("SELECT * FROM orders")), OrderRow)
    finally:
        await engine.dispose()
    problems = diff(model.users, users, limit=5) + diff(model.orders, orders, limit=5)
    return {
        "ok": not problems and len(users) == len(model.users) and len(orders) == len(model.orders),
        "users": len(users),
        "orders": len(orders),
        "expected_users": len(model.users),
        "expected_orders": len(model.orders),
        "problems": problems[:10],
    }


# -- numbers ---------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def git_commit() -> dict:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
        except OSError:
            return ""

    import hashlib

    status = git("status", "--porcelain")
    diff = git("diff", "HEAD", "--", "consumer", "handlers", "database")
    untracked = git("ls-files", "--others", "--exclude-standard", "--", "consumer", "handlers", "database")
    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(status and any(not line.startswith("?? bench/") for line in status.splitlines())),
        # the working tree is shared and moves: this pins which production code was measured
        "production_diff_sha1": hashlib.sha1((diff + untracked).encode()).hexdigest() if (diff or untracked) else None,
        "production_files_changed": [line[3:] for line in status.splitlines()
                                     if line[3:].startswith(("consumer/", "handlers/", "database/"))],
    }


def machine() -> dict:
    import platform

    try:
        load = os.getloadavg()
    except OSError:
        load = None
    mem = None
    try:
        with open("/proc/meminfo") as fh:
            mem = int(fh.readline().split()[1]) * 1024
    except OSError:
        pass
    return {
        "cpu_count": os.cpu_count(),
        "loadavg_at_start": load,
        "mem_total_bytes": mem,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def mib(n: int | None) -> str:
    return "-" if not n else f"{n / 2**20:.0f}"
