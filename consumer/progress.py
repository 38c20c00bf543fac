"""Progress of a long command (replay): a rich progress bar per topic on a terminal, a plain
structlog line every few seconds elsewhere, and a summary at the end."""

import asyncio
import logging
import sys
import time
from collections.abc import Mapping
from typing import Any

import structlog
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    ProgressColumn,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as Bars
from rich.table import Column, Table
from rich.text import Text

log = structlog.get_logger("consumer.progress")

DEFAULT_INTERVAL_S = 5.0


class _CurrentStderr:
    """A file that writes to whatever sys.stderr is at the time of the write. structlog's and
    logging's handlers keep the stderr they were configured with; through this, their lines go
    through rich's redirection while a progress bar is live (printed above it, not through it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def route_logs_through_current_stderr() -> None:
    """Call before the first log line of the command (structlog caches loggers on first use)."""
    proxy = _CurrentStderr()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=proxy))  # type: ignore[arg-type]
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr:
            handler.setStream(proxy)  # type: ignore[arg-type]


def _rate(done: int, elapsed: float) -> float:
    return done / elapsed if elapsed > 0 else 0.0


class Progress:
    """Records done per topic, out of a total known at the start. Use as `async with`."""

    def __init__(self, totals: Mapping[str, int]) -> None:
        self.totals = {topic: total for topic, total in totals.items() if total > 0}
        self.done = dict.fromkeys(self.totals, 0)
        self.started = time.monotonic()

    def update(self, topic: str, done: int) -> None:
        if topic in self.done:
            self.done[topic] = min(done, self.totals[topic])

    def finish(self, fields: Mapping[str, Any], *, message: str = "replay finished") -> None:
        raise NotImplementedError

    async def __aenter__(self) -> "Progress":
        self.started = time.monotonic()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None


class LogProgress(Progress):
    """Off a terminal: one structlog line per unfinished topic every `interval_s` seconds."""

    def __init__(self, totals: Mapping[str, int], interval_s: float = DEFAULT_INTERVAL_S) -> None:
        super().__init__(totals)
        self.interval_s = interval_s
        self._task: asyncio.Task | None = None
        self._reported_done: set[str] = set()

    async def __aenter__(self) -> "LogProgress":
        await super().__aenter__()
        if self.totals:
            self._task = asyncio.create_task(self._tick())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self.emit()

    def emit(self) -> None:
        elapsed = time.monotonic() - self.started
        for topic, total in self.totals.items():
            if topic in self._reported_done:
                continue
            done = self.done[topic]
            rate = _rate(done, elapsed)
            remaining = total - done
            if remaining == 0:
                self._reported_done.add(topic)
            log.info(
                "replay progress",
                topic=topic,
                done=done,
                total=total,
                percent=round(100 * done / total, 1),
                records_per_s=round(rate, 1),
                eta_s=round(remaining / rate, 1) if rate > 0 else None,
            )

    def finish(self, fields: Mapping[str, Any], *, message: str = "replay finished") -> None:
        log.info(message, **fields)


class RichProgress(Progress):
    """On a terminal: a rich progress bar per topic (records done/total, percent, records/s, ETA)."""

    def __init__(self, totals: Mapping[str, int]) -> None:
        super().__init__(totals)
        self.console = Console(stderr=True)
        self._progress: Bars | None = None
        self._tasks: dict[str, Any] = {}

    async def __aenter__(self) -> "RichProgress":
        await super().__aenter__()
        self._progress = Bars(
            TextColumn("[bold]{task.description}", table_column=Column(no_wrap=True, overflow="ellipsis", max_width=40)),
            BarColumn(bar_width=24),
            MofNCompleteColumn(table_column=Column(no_wrap=True)),
            TaskProgressColumn(),
            RecordsPerSecondColumn(table_column=Column(no_wrap=True)),
            TextColumn("ETA", table_column=Column(no_wrap=True)),
            TimeRemainingColumn(),
            console=self.console,
            redirect_stdout=False,  # stdout may be a pipe; only stderr is the terminal
            redirect_stderr=True,  # log lines print above the bars
        )
        for topic, total in self.totals.items():
            self._tasks[topic] = self._progress.add_task(topic, total=total)
        self._progress.start()
        return self

    def update(self, topic: str, done: int) -> None:
        super().update(topic, done)
        if self._progress is not None and topic in self._tasks:
            self._progress.update(self._tasks[topic], completed=self.done[topic])

    async def __aexit__(self, *exc_info: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def finish(self, fields: Mapping[str, Any], *, message: str = "replay finished") -> None:
        table = Table(title=message, show_header=False, title_justify="left")
        table.add_column(style="bold")
        table.add_column(justify="right")
        for name, value in fields.items():
            if isinstance(value, float):
                text = f"{value:,.1f}"
            elif isinstance(value, int) and not isinstance(value, bool):
                text = f"{value:,}"
            elif isinstance(value, (list, tuple)):
                text = ", ".join(map(str, value))
            else:
                text = str(value)
            table.add_row(name.replace("_", " "), text)
        self.console.print(table)


class RecordsPerSecondColumn(ProgressColumn):
    def render(self, task) -> Text:  # type: ignore[override]
        speed = task.finished_speed or task.speed
        text = "- records/s" if speed is None else f"{speed:,.0f} records/s"
        return Text(text, style="progress.data.speed")


def make_progress(totals: Mapping[str, int], *, interval_s: float = DEFAULT_INTERVAL_S, tty: bool | None = None) -> Progress:
    """A bar on a terminal (stderr is a TTY), plain log lines every interval_s otherwise."""
    if tty is None:
        tty = sys.stderr.isatty()
    return RichProgress(totals) if tty else LogProgress(totals, interval_s)
