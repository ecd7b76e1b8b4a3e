"""Pool exhaustion: DB_POOL_MAX=2, DB_ACQUIRE_TIMEOUT_MS=500, 64 concurrent requests.

    python3 reliability/scenario_exhaustion.py

PostgreSQL with 200 000 notes seeded by SQL. Eight clients download GET /notes/export and read
it slowly (so each export holds a pooled connection for seconds); 56 more hammer
GET /notes/{id}, GET /notes?limit=100 and POST /notes, for EXHAUSTION_SECONDS (default 8).
Guarantees:
  - every response is 2xx or 503; every 503 is problem+json with Retry-After and arrives within
    the acquire timeout + 1 s; no request goes unanswered (5 s client time-out);
  - 503s do happen (the pool really was exhausted), and every export that got 200 is complete;
  - once the load stops, the server answers normally at once (the next 20 requests are 2xx) and
    the pool's in-use count returns to 0.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

import aiohttp

from common import Database, Failure, Server, http, log, summary, wait_pool_idle
from load import Load, Rec, tally

ACQUIRE_MS = 500
MARGIN_S = 1.0
ROWS = 200_000


async def drive(base: str, seconds: float):
    load = Load(base, connections=56, seconds=seconds, timeout=5.0,
                mix={"get": 50, "list": 25, "post": 25})
    exports = []    # Rec, with lines in export_lines order

    async def slow_exporter(session, deadline):
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            status, error, ctype, ra, lines = None, None, "", False, 0
            try:
                async with session.get(base + "/notes/export", timeout=aiohttp.ClientTimeout(total=60)) as r:
                    status, ctype, ra = r.status, r.headers.get("content-type", ""), "retry-after" in r.headers
                    if status == 200:
                        async for chunk in r.content.iter_chunked(65536):
                            lines += chunk.count(b"\n")
                            await asyncio.sleep(0.01)
                    else:
                        await r.read()
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                error = type(e).__name__
            rec = Rec(t0, time.monotonic(), "export", status, error, ctype, ra)
            rec.lines = lines
            exports.append(rec)
            if status == 503:
                await asyncio.sleep(0.2)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=80)) as session:
        deadline = time.monotonic() + seconds
        exps = [asyncio.create_task(slow_exporter(session, deadline)) for _ in range(8)]
        await load.run(session)
        t_load_end = time.monotonic()
        await asyncio.gather(*exps)
    return load, exports, t_load_end


def main() -> bool:
    seconds = float(os.environ.get("EXHAUSTION_SECONDS", "8"))
    db = Database("postgres", "exhaust")
    server = Server(db.url, env={"DB_POOL_MAX": "2", "DB_POOL_MIN": "0",
                                 "DB_ACQUIRE_TIMEOUT_MS": str(ACQUIRE_MS)}, name="exhaustion")
    ok = False
    try:
        base = server.start().wait_ready()
        db.seed_notes(ROWS)
        log(f"exhaustion: {seconds:.0f} s, 8 slow exports + 56 clients, pool of 2")
        load, exports, t_end = asyncio.run(drive(base, seconds))
        recs = load.records + exports
        t = tally(recs)
        failures = []
        errors = [r for r in recs if r.error]
        if errors:
            failures.append(f"{len(errors)} requests got no complete response: "
                            f"{[(r.op, r.error, round(r.t1 - r.t0, 2)) for r in errors[:5]]}")
        odd = [r for r in recs if r.status is not None and not (200 <= r.status < 300 or r.status == 503)]
        if odd:
            failures.append(f"unexpected statuses: {t['statuses']}")
        r503 = [r for r in recs if r.status == 503]
        if not r503:
            failures.append("no 503 at all: the pool was never exhausted")
        no_ra = [r for r in r503 if not r.retry_after]
        if no_ra:
            failures.append(f"{len(no_ra)} 503s without Retry-After")
        not_problem = [r for r in r503 if not r.ctype.startswith("application/problem+json")]
        if not_problem:
            failures.append(f"{len(not_problem)} 503s are not problem+json")
        max503 = max((r.t1 - r.t0 for r in r503), default=0.0)
        if max503 > ACQUIRE_MS / 1000 + MARGIN_S:
            failures.append(f"slowest 503 took {max503:.2f} s (> {ACQUIRE_MS} ms + {MARGIN_S} s)")
        full = [r for r in exports if r.status == 200]
        partial = [r.lines for r in full if r.lines < ROWS]
        if partial:
            failures.append(f"{len(partial)} exports were incomplete: {partial[:5]} lines")
        # at once afterwards: 20 requests in a row, all 2xx
        t_after = time.monotonic()
        after = [http("GET", f"{base}/notes/{i}", timeout=5)[0] for i in range(1, 11)]
        after += [http("POST", f"{base}/notes", {"text": f"after {i}"}, timeout=5)[0] for i in range(10)]
        after_s = time.monotonic() - t_after
        if any(not 200 <= s < 300 for s in after):
            failures.append(f"after the load: {after}")
        idle, in_use, waited = wait_pool_idle(base, 5)
        if not idle:
            failures.append(f"pool in_use is {in_use} after {waited:.1f} s")
        for f in failures:
            log(f"exhaustion FAIL: {f}")
        ok = not failures
        summary("exhaustion", ok, requests=t["requests"], ok_2xx=sum(1 for r in recs if r.status and r.status < 300),
                r503=len(r503), r503_with_retry_after=len(r503) - len(no_ra), max_503_latency_s=f"{max503:.2f}",
                no_response=len(errors), exports_complete=len(full) - len(partial),
                exports_503=sum(1 for r in exports if r.status == 503), rows=ROWS,
                after_20_requests_s=f"{after_s:.2f}", pool_in_use_after=in_use)
    except Failure as e:
        log(f"exhaustion FAIL: {e}")
    finally:
        server.stop()
        db.close()
    return ok


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
