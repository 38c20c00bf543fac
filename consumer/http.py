"""The operational HTTP endpoint of `event-consumer run`: /healthz, /readyz, /metrics.

A deliberately tiny HTTP/1.1 server on asyncio.start_server: one request per connection, GET or
HEAD, answered with Content-Length and `Connection: close`. Hand-written rather than aiohttp for its
bounds: aiohttp caps a header line but neither the connections nor the request head as a whole,
and a probe must get through while stalled clients hold sockets. Here a request head is at most
MAX_HEAD_BYTES, read within REQUEST_TIMEOUT_S, written within WRITE_TIMEOUT_S, and at most
`max_connections` are open: at the cap, the oldest connection still sending its head is dropped to
admit the new one (slow-loris clients cannot lock a probe out), counted in
event_consumer_http_connections_dropped_total.

- /healthz (liveness): 200 while the loop shows signs of life (getmany returned, a batch committed,
  or a retry attempt began) within HEALTH_STUCK_AFTER_S; 503 when it is stuck. Waiting for a down
  database or broker is not stuck: restarting would not help, and /readyz reports it.
- /readyz (readiness): 200 when the loop runs and the database answers SELECT 1 within a short
  timeout (with READY_REQUIRES_PARTITIONS, also only once partitions are assigned); otherwise 503
  with a JSON body listing the reasons. The body always says how many partitions are assigned.
- /metrics: the registry it is given, in the Prometheus text format (or OpenMetrics when the
  scraper's Accept header asks for it, as prometheus_client's own server does).
"""

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

import orjson
import structlog
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.exposition import choose_encoder
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

log = structlog.get_logger("consumer.http")

REQUEST_TIMEOUT_S = 5.0  # to read the request line and headers
WRITE_TIMEOUT_S = 5.0
MAX_HEAD_BYTES = 16 * 1024  # request line and headers together
MAX_HEADERS = 100
DB_CHECK_TIMEOUT_S = 2.0
DB_CHECK_CACHE_S = 1.0  # probes arriving together share one SELECT 1

REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error", 503: "Service Unavailable"}
JSON = "application/json"


class HealthSource(Protocol):
    def liveness(self) -> tuple[bool, dict[str, Any]]: ...

    async def readiness(self) -> tuple[bool, dict[str, Any]]: ...


class HttpServer:
    def __init__(
        self, health: HealthSource, registry: CollectorRegistry, host: str = "0.0.0.0", port: int = 8000, max_connections: int = 64
    ) -> None:
        self._health = health
        self._registry = registry
        self._host = host
        self._port = port
        self._max_connections = max_connections
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task] = set()
        self._reading: dict[asyncio.Task, None] = {}  # connections still sending their head, oldest first
        self._dropped = Counter(
            "http_connections_dropped", "HTTP connections closed unanswered to stay under HTTP_MAX_CONNECTIONS.",
            namespace="event_consumer", registry=registry,
        )

    @property
    def port(self) -> int:
        """The bound port (the OS picks one when configured with 0)."""
        if self._server is None or not self._server.sockets:
            return self._port
        return self._server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        """Raises OSError when the address cannot be bound (port in use, bad host)."""
        self._server = await asyncio.start_server(self._on_connection, self._host, self._port, limit=MAX_HEAD_BYTES)

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= self._max_connections:
            if not self._reading:  # every slot is answering: this one waits for none
                self._dropped.inc()
                writer.transport.abort()
                return
            oldest = next(iter(self._reading))
            self._reading.pop(oldest)
            self._connections.discard(oldest)
            oldest.cancel()
            self._dropped.inc()
        self._connections.add(task)
        self._reading[task] = None
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.CancelledError, TimeoutError):
            pass
        except Exception:  # noqa: BLE001 - one bad request must never take the server down
            log.exception("http request failed")
        finally:
            self._connections.discard(task)
            self._reading.pop(task, None)
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, asyncio.CancelledError):
                pass

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                request_line = await reader.readline()
                if not request_line:
                    return  # connected and closed without a request (a TCP probe)
                size = len(request_line)
                headers: dict[str, str] = {}
                for _ in range(MAX_HEADERS):
                    line = await reader.readline()
                    size += len(line)
                    if size > MAX_HEAD_BYTES:
                        raise ValueError("request head too large")
                    if line in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                else:
                    raise ValueError("too many headers")
        except (TimeoutError, ValueError):  # ValueError also: a line longer than the reader's limit
            self._reading.pop(asyncio.current_task(), None)  # type: ignore[arg-type]
            await _respond(writer, 400, b"bad request\n", "text/plain; charset=utf-8")
            return
        self._reading.pop(asyncio.current_task(), None)  # type: ignore[arg-type]
        parts = request_line.decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            await _respond(writer, 400, b"bad request\n", "text/plain; charset=utf-8")
            return
        method, target = parts[0], parts[1]
        path = target.split("?", 1)[0]
        head = method == "HEAD"
        if method not in ("GET", "HEAD"):
            await _respond(writer, 405, b"method not allowed\n", "text/plain; charset=utf-8", extra=[("Allow", "GET, HEAD")])
            return
        if path == "/healthz":
            ok, body = self._health.liveness()
            await _respond(writer, 200 if ok else 503, _json(body), JSON, head=head)
        elif path == "/readyz":
            ok, body = await self._health.readiness()
            await _respond(writer, 200 if ok else 503, _json(body), JSON, head=head)
        elif path == "/metrics":
            encode, content_type = choose_encoder(headers.get("accept", ""))
            await _respond(writer, 200, encode(self._registry), content_type, head=head)
        else:
            await _respond(writer, 404, b"not found\n", "text/plain; charset=utf-8", head=head)


def _json(body: dict[str, Any]) -> bytes:
    return orjson.dumps(body) + b"\n"


async def _respond(
    writer: asyncio.StreamWriter,
    status: int,
    body: bytes,
    content_type: str,
    *,
    head: bool = False,
    extra: list[tuple[str, str]] = (),  # type: ignore[assignment]
) -> None:
    headers = [
        f"HTTP/1.1 {status} {REASONS[status]}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-store",
        "Connection: close",
        *(f"{name}: {value}" for name, value in extra),
    ]
    writer.write(("\r\n".join(headers) + "\r\n\r\n").encode("latin-1") + (b"" if head else body))
    async with asyncio.timeout(WRITE_TIMEOUT_S):
        await writer.drain()


class ConsumerHealth:
    """The health source of `run`. Before attach() (start-up: waiting for the database schema and
    the broker) it is live and not ready; after the loop stops it is not ready."""

    def __init__(
        self, *, engine: AsyncEngine, stuck_after_s: float, requires_partitions: bool = False, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._engine = engine
        self._stuck_after_s = stuck_after_s
        # A consumer pod takes no traffic: readiness only gates rollouts, and with as many pods as
        # partitions (or a surge pod) some member gets none; requiring them would stall the rollout.
        self._requires_partitions = requires_partitions
        self._clock = clock
        self._loop: Any = None  # consumer.loop.ConsumerLoop
        self._consumer: Any = None  # has assignment()
        self._db_lock = asyncio.Lock()
        self._db_checked_at = float("-inf")
        self._db_problem: str | None = None
        self._was_ready: bool | None = None

    def attach(self, loop: Any, consumer: Any) -> None:
        self._loop = loop
        self._consumer = consumer

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        if self._loop is None:
            return True, {"status": "starting"}
        age = self._clock() - self._loop.stats.last_progress_at
        body = {"seconds_since_progress": round(age, 3), "stuck_after_s": self._stuck_after_s}
        blocked = self._loop.dead_letters_blocked()
        if blocked:
            return False, {"status": "dead letters blocked", "reason": blocked, **body}
        if age > self._stuck_after_s:
            return False, {"status": "stuck", **body}
        return True, {"status": "ok", **body}

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        reasons: list[str] = []
        partitions = 0
        if self._loop is None:
            reasons.append("starting: waiting for the database schema or the broker")
        else:
            if self._loop.stopping:
                reasons.append("stopping")
            live, _ = self.liveness()
            if not live:
                reasons.append(f"consumer loop stuck: no progress for more than {self._stuck_after_s:g}s")
            partitions = len(self._consumer.assignment())
            if not partitions and self._requires_partitions:
                reasons.append("no partitions assigned")
        db_problem = await self._database_problem()
        if db_problem:
            reasons.append(f"database: {db_problem}")
        ready = not reasons
        if ready != self._was_ready:
            (log.info if ready else log.warning)("readiness changed", ready=ready, reasons=reasons)
            self._was_ready = ready
        body: dict[str, Any] = {"status": "ready" if ready else "not ready", "partitions": partitions}
        if reasons:
            body["reasons"] = reasons
        return ready, body

    async def _database_problem(self) -> str | None:
        async with self._db_lock:
            if self._clock() - self._db_checked_at >= DB_CHECK_CACHE_S:
                self._db_problem = await self._check_database()
                self._db_checked_at = self._clock()
            return self._db_problem

    async def _check_database(self) -> str | None:
        try:
            async with asyncio.timeout(DB_CHECK_TIMEOUT_S):
                async with self._engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
        except TimeoutError:
            return f"no answer to SELECT 1 within {DB_CHECK_TIMEOUT_S:g}s"
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            # The exception's type only: its text may name hosts or users, and this is an open port.
            cause = getattr(exc, "orig", None) or exc.__cause__ or exc
            return f"unreachable ({type(cause).__name__})"
        return None
