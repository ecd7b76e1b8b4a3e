"""Benchmark of `GET /notes/events`: notification latency and memory per open stream.

    python3 bench/events.py [postgres|mysql|sqlite]     (from the repository root; default postgres)

Two `api` instances on one fresh database (PostgreSQL: LISTEN/NOTIFY; MariaDB, SQLite: the
250 ms poll). EVENTS_USERS (100) users each open EVENTS_PER_USER (10) streams on instance B
(1 000 streams; EVENTS_MAX_PER_USER raised to match), then EVENTS_RATE (100) writes a second
for EVENTS_SECONDS (20) go through instance A, to users in turn. For each write, the latency is
from the moment its 201 arrived to the moment each of the user's streams on B delivered the
event (so it leaves out the write itself). Reports p50/p99/max of those, events received vs
expected, and instance B's RSS before and after the streams opened (VmRSS from /proc): the
memory per open stream. The streams open one after another (each answered before the next is
asked for): 1 000 opened at once also grow the pool to its maximum and leave the allocator
with the peak of a burst (34 KiB a stream on PostgreSQL, measured once, against 12 one by
one), which is not what a stream keeps. Figures, not assertions: it exits non-zero only when
an event is missing.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

import aiohttp

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reliability"))

from common import Database, Server, http, log  # noqa: E402

USERS = int(os.environ.get("EVENTS_USERS", "100"))
PER_USER = int(os.environ.get("EVENTS_PER_USER", "10"))
RATE = float(os.environ.get("EVENTS_RATE", "100"))
SECONDS = float(os.environ.get("EVENTS_SECONDS", "20"))
PASSWORD = "benchmark horse battery"


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def quantile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.999999) - 1))]


async def sign_up(session, base, i):
    email = f"events-{os.getpid()}-{i}@example.com"
    for _ in range(60):
        async with session.post(f"{base}/users", json={"email": email, "password": PASSWORD}) as r:
            if r.status == 503:
                await asyncio.sleep(1)
                continue
            assert r.status == 201, await r.text()
            break
    async with session.post(f"{base}/sessions", json={"email": email, "password": PASSWORD}) as r:
        assert r.status == 201, await r.text()
        return (await r.json())["token"]


async def warm_up(session, base, tokens):
    """Three rounds of one GET /notes/changes per user, all at once."""
    async def one(token):
        async with session.get(f"{base}/notes/changes?since=0",
                               headers={"authorization": f"Bearer {token}"}) as r:
            assert r.status == 200, await r.text()
            await r.read()
    for _ in range(3):
        await asyncio.gather(*(one(token) for token in tokens))


async def follow(session, base, token, arrivals, ready):
    """One stream: record (seq, arrival time) of every event."""
    async with session.get(f"{base}/notes/events", headers={"authorization": f"Bearer {token}"},
                           timeout=aiohttp.ClientTimeout(total=None, sock_read=None)) as r:
        assert r.status == 200, await r.text()
        ready()
        buffer = b""
        async for chunk in r.content.iter_any():
            now = time.monotonic()
            buffer += chunk
            while b"\n\n" in buffer:
                frame, buffer = buffer.split(b"\n\n", 1)
                for line in frame.split(b"\n"):
                    if line.startswith(b"id: "):
                        arrivals.append((int(line[4:]), now))


async def run(backend: str) -> bool:
    db = Database(backend, "events_bench")
    env = {"EVENTS_MAX_PER_USER": str(PER_USER), "EVENTS_MAX_CONCURRENT": str(USERS * PER_USER + 10),
           "DB_ACQUIRE_TIMEOUT_MS": "10000"}
    a = Server(db.url, env=env, name="events-a")
    b = Server(db.url, env=env, name="events-b")
    try:
        a.start().wait_ready(60)
        b.start().wait_ready(60)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            tokens = [await sign_up(session, a.base, i) for i in range(USERS)]
            # Warm instance B first (its pool at the size a burst gives it, its allocator
            # past its first requests), so that the difference below is the streams'.
            await warm_up(session, b.base, tokens)
            await asyncio.sleep(1)
            base_rss = rss_kib(b.proc.pid)
            arrivals = {i: [] for i in range(USERS)}
            # One stream after another, each open before the next: the memory of the streams
            # themselves, not of a burst of requests at once (see the docstring).
            streams = []
            for _ in range(PER_USER):
                for i in range(USERS):
                    opened = asyncio.Event()
                    streams.append(asyncio.create_task(follow(session, b.base, tokens[i], arrivals[i], opened.set)))
                    await opened.wait()
            await asyncio.sleep(2)
            streams_rss = rss_kib(b.proc.pid)
            written = {i: {} for i in range(USERS)}   # user -> seq -> ack time
            writes = int(RATE * SECONDS)
            start = time.monotonic()
            for n in range(writes):
                await asyncio.sleep(max(0.0, start + n / RATE - time.monotonic()))
                user = n % USERS
                async with session.post(f"{a.base}/notes", json={"text": f"write {n}"},
                                        headers={"authorization": f"Bearer {tokens[user]}"}) as r:
                    assert r.status == 201, await r.text()
                    await r.read()
                    acked = time.monotonic()
                seq = len(written[user]) + 1
                written[user][seq] = acked
            await asyncio.sleep(3)
            peak_rss = rss_kib(b.proc.pid)
            for task in streams:
                task.cancel()
        lags = []
        missing = 0
        for user, seqs in written.items():
            got = {}
            for seq, at in arrivals[user]:
                got.setdefault(seq, []).append(at)
            for seq, acked in seqs.items():
                times = got.get(seq, [])
                missing += PER_USER - len(times)
                lags.extend(max(0.0, t - acked) for t in times)
        per_stream = (streams_rss - base_rss) / (USERS * PER_USER)
        print(f"| {backend} | {USERS * PER_USER} | {RATE:.0f}/s × {SECONDS:.0f} s | {len(lags)} | {missing} "
              f"| {quantile(lags, 0.5) * 1000:.1f} | {quantile(lags, 0.99) * 1000:.1f} | {max(lags) * 1000:.1f} "
              f"| {base_rss / 1024:.1f} | {streams_rss / 1024:.1f} | {per_stream:.1f} | {peak_rss / 1024:.1f} |")
        return missing == 0
    finally:
        a.stop()
        b.stop()
        db.close()


if __name__ == "__main__":
    backend = sys.argv[1] if len(sys.argv) > 1 else "postgres"
    print("| backend | streams | writes | events | missing | p50 ms | p99 ms | max ms | RSS before MiB "
          "| RSS with streams MiB | KiB per stream | RSS at end MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    sys.exit(0 if asyncio.run(run(backend)) else 1)
