"""The event loop the long-running commands (run, replay) use: uvloop by default (EVENT_LOOP).

Measured in bench/ (README "Performance"): about 10% more events per second than asyncio's own
loop for the same work, from cheaper socket reads and callbacks."""

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from consumer.settings import Settings

T = TypeVar("T")


def run_with_loop(settings: Settings, main: Coroutine[Any, Any, T]) -> T:
    if settings.event_loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    return asyncio.run(main)
