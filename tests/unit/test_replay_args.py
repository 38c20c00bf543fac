"""`event-consumer replay`: its arguments (bad ones exit 2 before any setting or service is
touched), the range it computes from the broker's offsets, and its plain progress lines."""

import asyncio
from datetime import datetime, timezone

import pytest
import structlog
from aiokafka import TopicPartition

from consumer import cli
from consumer.progress import LogProgress, make_progress
from consumer.replay import Range, ReplayStats, check_args, parse_timestamp, plan_ranges


def parse(*argv: str):
    args = cli._parser().parse_args(["replay", *argv])
    check_args(args)
    return args


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "--topic"),
        (["--from-beginning"], "--topic"),
        (["--topic", "users"], "one of the arguments --from-beginning --since --from-offset is required"),
        (["--topic", "users", "--from-beginning", "--since", "2026-03-01T10:00:00Z"], "not allowed with"),
        (["--topic", "users", "--from-beginning", "--from-offset", "3"], "not allowed with"),
        (["--topic", "users", "--since", "yesterday"], "not an ISO 8601 timestamp"),
        (["--topic", "users", "--since", "2026-03-01T10:00:00"], "has no UTC offset"),
        (["--topic", "users", "--from-beginning", "--until", "2026-03-01"], "has no UTC offset"),
        (["--topic", "users", "--from-offset", "-1"], "must be >= 0"),
        (["--topic", "users", "--from-offset", "ten"], "not an integer"),
        (["--topic", "users", "--from-beginning", "--partition", "-2"], "must be >= 0"),
        (["--topic", "users", "--from-beginning", "--dlq", "--dry-run"], "not allowed with"),
        (
            ["--topic", "users", "--since", "2026-03-01T10:00:00Z", "--until", "2026-03-01T12:00:00+02:00"],
            "--until must be later than --since",
        ),
        (["--topic", "", "--from-beginning"], "--topic needs a topic name"),
        (["--topic", "users", "--from-beginning", "--bogus"], "unrecognized arguments"),
    ],
)
def test_bad_arguments_exit_2_before_settings_are_read(argv, message, capsys, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)  # would be exit 2 too, with another message
    with pytest.raises(SystemExit) as exc:
        cli.main(["replay", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "usage: event-consumer" in err
    assert "DATABASE_URL" not in err and "Traceback" not in err


def test_valid_arguments():
    args = parse("--topic", "users", "--topic", "orders", "--topic", "users", "--partition", "2", "--partition", "0",
                 "--partition", "2", "--from-beginning")
    assert args.topics == ["users", "orders"]  # repeated, deduplicated, in order
    assert args.partitions == [0, 2]
    assert args.from_beginning and args.since is None and args.from_offset is None and args.until is None
    assert not args.dlq and not args.dry_run
    assert args.progress_interval == 5.0

    args = parse("--topic", "users", "--since", "2026-03-01T10:00:00+02:00", "--until", "2026-03-01T09:00:01Z", "--dlq")
    assert args.since == datetime(2026, 3, 1, 8, 0, tzinfo=timezone.utc)
    assert args.until == datetime(2026, 3, 1, 9, 0, 1, tzinfo=timezone.utc)
    assert args.partitions is None and args.dlq

    args = parse("--topic", "users", "--from-offset", "0", "--dry-run", "--progress-interval", "0.5")
    assert args.from_offset == 0 and args.dry_run and args.progress_interval == 0.5


def test_help_lists_replay(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    assert "replay" in capsys.readouterr().out


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2026-03-01T10:00:00Z", datetime(2026, 3, 1, 10, tzinfo=timezone.utc)),
        ("2026-03-01T10:00:00.250+00:00", datetime(2026, 3, 1, 10, 0, 0, 250_000, tzinfo=timezone.utc)),
        ("2026-03-01 12:30+02:30", datetime(2026, 3, 1, 10, 0, tzinfo=timezone.utc)),
    ],
)
def test_parse_timestamp(text, expected):
    assert parse_timestamp(text) == expected


A0, A1, A2 = (TopicPartition("a", p) for p in range(3))
BEGIN = {A0: 0, A1: 5, A2: 7}
END = {A0: 10, A1: 20, A2: 7}  # A2 empty (everything deleted by retention)


def test_plan_from_beginning_to_the_end():
    assert plan_ranges([A0, A1, A2], BEGIN, END) == {A0: Range(0, 10), A1: Range(5, 20), A2: Range(7, 7)}


def test_plan_from_offset_is_clamped_per_partition():
    assert plan_ranges([A0, A1, A2], BEGIN, END, from_offset=3) == {A0: Range(3, 10), A1: Range(5, 20), A2: Range(7, 7)}
    assert plan_ranges([A0, A1], BEGIN, END, from_offset=50) == {A0: Range(10, 10), A1: Range(20, 20)}


def test_plan_since_none_means_nothing_at_or_after_the_time():
    ranges = plan_ranges([A0, A1, A2], BEGIN, END, since={A0: 4, A1: None, A2: None})
    assert ranges == {A0: Range(4, 10), A1: Range(20, 20), A2: Range(7, 7)}
    assert sum(r.size for r in ranges.values()) == 6


def test_plan_until_stops_before_the_first_record_at_or_after_it_and_none_means_the_end():
    ranges = plan_ranges([A0, A1], BEGIN, END, since={A0: 2, A1: 6}, until={A0: 8, A1: None})
    assert ranges == {A0: Range(2, 8), A1: Range(6, 20)}
    # An until before the start gives an empty range, never a negative one.
    ranges = plan_ranges([A0], BEGIN, END, from_offset=6, until={A0: 3})
    assert ranges == {A0: Range(6, 6)} and ranges[A0].size == 0


def test_summary_fields():
    stats = ReplayStats(records=120, events=100, applied=70, stale=30, malformed=15, tombstones=5, batches=2)
    s = stats.summary(mode="apply", elapsed=2.0, planned=120, interrupted=False)
    assert s == {
        "mode": "apply", "records": 120, "planned": 120, "applied": 70, "stale": 30, "malformed": 15,
        "dead_lettered": 0, "tombstones": 5, "batches": 2, "elapsed_s": 2.0, "records_per_s": 60.0,
    }
    dry = stats.summary(mode="dry-run", elapsed=0.0, planned=120, interrupted=True)
    assert dry["events"] == 100 and "applied" not in dry and dry["interrupted"] is True and dry["records_per_s"] == 0.0


async def test_plain_progress_lines_every_interval():
    progress = LogProgress({"users": 100, "orders": 50, "empty": 0}, interval_s=0.02)
    with structlog.testing.capture_logs() as logs:
        async with progress:
            progress.update("users", 40)
            await asyncio.sleep(0.09)
            progress.update("users", 100)
            progress.update("orders", 50)
            await asyncio.sleep(0.09)
    lines = [e for e in logs if e["event"] == "replay progress"]
    assert {e["topic"] for e in lines} == {"users", "orders"}  # a topic with nothing to do has no line
    users = [e for e in lines if e["topic"] == "users"]
    assert len(users) >= 3
    assert users[0]["done"] == 40 and users[0]["total"] == 100 and users[0]["percent"] == 40.0
    assert users[0]["records_per_s"] > 0 and users[0]["eta_s"] is not None
    assert users[-1]["done"] == 100 and users[-1]["eta_s"] == 0
    # A finished topic is reported once at 100%, then no more.
    assert sum(1 for e in users if e["done"] == 100) == 1
    assert progress._task is not None and progress._task.done()


def test_terminal_or_not():
    assert isinstance(make_progress({"t": 1}, tty=False), LogProgress)
    assert type(make_progress({"t": 1}, tty=True)).__name__ == "RichProgress"
    assert LogProgress({"t": 1}).interval_s == 5.0



# -- the fetch loop and retries, with a fake consumer (no services) -----------------------------


class FakeRecord:
    def __init__(self, tp: TopicPartition, offset: int, value: bytes | None) -> None:
        self.topic, self.partition, self.offset = tp.topic, tp.partition, offset
        self.key, self.value, self.headers = b"1", value, ()


class FakeConsumer:
    """Partitions as lists of values; getmany hands out at most max_records from unpaused ones."""

    def __init__(self, logs: dict[TopicPartition, list[bytes | None]]) -> None:
        self.logs = logs
        self.pos: dict[TopicPartition, int] = {}
        self.paused: set[TopicPartition] = set()
        self.assigned: list[TopicPartition] = []
        self.calls = 0

    def assign(self, tps):
        self.assigned = list(tps)

    def seek(self, tp, offset):
        self.pos[tp] = offset

    def pause(self, tp):
        self.paused.add(tp)

    async def position(self, tp):
        return self.pos[tp]

    async def getmany(self, timeout_ms, max_records):
        self.calls += 1
        out: dict = {}
        budget = max_records
        for tp in self.assigned:
            if tp in self.paused or budget == 0:
                continue
            values = self.logs[tp][self.pos[tp]: self.pos[tp] + budget]
            if values:
                out[tp] = [FakeRecord(tp, self.pos[tp] + i, v) for i, v in enumerate(values)]
                self.pos[tp] += len(values)
                budget -= len(values)
        return out


def _event(entity_id: int, version: int = 1) -> bytes:
    import orjson

    return orjson.dumps({
        "event_id": "6f1c1d2e-4f70-4c0e-9b1e-2a3b4c5d6e7f", "event_type": "user.created",
        "occurred_at": "2026-03-01T10:00:00+02:00", "version": version,
        "data": {"id": entity_id, "email": f"u{entity_id}@example.com", "name": "U"},
    })


async def test_dry_run_reads_exactly_the_planned_ranges_and_stops():
    from consumer.replay import Replayer
    from consumer.retry import Backoff
    from consumer.pipeline import build_pipeline
    from handlers.registry import build_registry

    logs = {
        A0: [_event(i) for i in range(10)],
        A1: [_event(100 + i) for i in range(5)] + [b"{not json", None] + [_event(200 + i) for i in range(13)],
        A2: [],
    }
    ranges = {A0: Range(2, 10), A1: Range(0, 8), A2: Range(0, 0)}  # A1 stops early (as with --until)
    consumer = FakeConsumer(logs)
    progress: dict[str, int] = {}
    replayer = Replayer(
        consumer=consumer, pipeline=build_pipeline(build_registry(), None, None, ".dlq", group_id=None), ranges=ranges,
        batch_max_records=3, backoff=Backoff(0.001, 0.002), stop=asyncio.Event(), dry_run=True,
        on_progress=progress.__setitem__,
    )
    await replayer.run()
    s = replayer.stats
    assert (s.records, s.events, s.malformed, s.tombstones, s.applied, s.dead_lettered) == (16, 14, 1, 1, 0, 0)
    assert consumer.assigned == [A0, A1] and consumer.paused == {A0, A1}
    assert progress == {"a": 16} and replayer.done_per_topic() == {"a": 16}


async def test_retries_transient_errors_gives_up_on_others_and_on_stop():
    from consumer.replay import Interrupted, Replayer
    from consumer.retry import Backoff, is_transient_db_error
    from consumer.pipeline import build_pipeline
    from handlers.registry import build_registry

    stop = asyncio.Event()
    replayer = Replayer(
        consumer=None, pipeline=build_pipeline(build_registry(), None, None, ".dlq", group_id=None), ranges={}, batch_max_records=1,
        backoff=Backoff(0.001, 0.002), stop=stop,
    )
    attempts = []

    async def flaky():
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionResetError("reset by peer")
        return "done"

    assert await replayer._retrying("apply", flaky, is_transient_db_error) == "done"
    assert len(attempts) == 3 and replayer.stats.db_retries == 2

    async def broken():
        raise ValueError("a bug")

    with pytest.raises(ValueError):
        await replayer._retrying("apply", broken, is_transient_db_error)

    async def down():
        stop.set()
        raise ConnectionRefusedError("down")

    with pytest.raises(Interrupted):
        await replayer._retrying("apply", down, is_transient_db_error)
