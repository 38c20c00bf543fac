"""The HTTP endpoint of the real `event-consumer run` under 1,000 connections that send large
headers and stall (slow loris): the consumer's memory hardly moves and a new client's /healthz
still answers within a second."""

import asyncio
import resource
import time

from tests.integration.test_observability import free_port, http_get, wait_status

STALLERS = 1000


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def stall(port: int, held: list) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return
    held.append(writer)
    try:
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        for i in range(40):  # 40 headers of 2 KiB: 80 KiB, five times the head the server takes
            writer.write(f"X-Pad-{i}: {'a' * 2048}\r\n".encode())
        await asyncio.wait_for(writer.drain(), timeout=2)
    except (OSError, asyncio.TimeoutError):
        pass  # the server closed it, or stopped reading: both are the point


async def test_stalled_connections_with_large_headers_neither_grow_memory_nor_lock_out_a_probe(consumers):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, STALLERS + 512)), hard))
    port = free_port()
    proc = consumers.start(HTTP_PORT=str(port))
    await wait_status(port, "/healthz", 200, timeout=60, proc=proc, logs=consumers.log_text)
    await asyncio.sleep(1)
    before = rss_kib(proc.pid)
    held: list = []
    try:
        await asyncio.gather(*(stall(port, held) for _ in range(STALLERS)))
        await asyncio.sleep(1)
        grown_mib = (rss_kib(proc.pid) - before) / 1024
        started = time.monotonic()
        status, body = await http_get(port, "/healthz")
        answered_s = time.monotonic() - started
    finally:
        for writer in held:
            writer.transport.abort()
    assert len(held) >= STALLERS * 0.9, len(held)
    assert status == 200 and b'"ok"' in body
    assert answered_s < 1.0, answered_s
    assert grown_mib < 20, f"RSS grew by {grown_mib:.1f} MiB"
    _, metrics = await http_get(port, "/metrics")
    dropped = [line for line in metrics.decode().splitlines() if line.startswith("event_consumer_http_connections_dropped_total")]
    assert dropped and float(dropped[0].split()[-1]) > 0, dropped  # the cap was reached, and said so
    assert consumers.stop(proc) == 0
