"""Database outage: stop PostgreSQL for OUTAGE_SECONDS (default 10) under load, then start it.

    python3 reliability/scenario_outage.py

The server runs with DB_ACQUIRE_TIMEOUT_MS=1000; the load (64 connections as 16 signed-in
users, no exports, with cross-user and anonymous probes) uses a 5 s client time-out, so a
hanging request is a failure. The database is stopped 4 s after the users are signed in (a
token check needs the database too). Guarantees:
  - no request fails without an HTTP response (no time-out, no reset), no 5xx other than 503,
    every 503 is application/problem+json and answered within the acquire timeout + 2 s; no
    4xx except the refusals the probes must get (404 for another user's note, 401 without a
    valid token), and a probe is never answered 2xx;
  - /healthz answers 200 throughout; /readyz answers 503 while the database is down;
  - once PostgreSQL is back, every data request started more than 5 s later succeeds (and
    /readyz is 200), without restarting the server;
  - every write acknowledged with a 2xx is in the database afterwards; the pool drains to 0.
PostgreSQL is always started again, also on failure.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

import aiohttp

from common import (Database, Failure, Server, check_load, log, pg_ctl, pg_ensure_up, summary,
                    wait_pool_idle)
from load import Load, SetupError, is_probe, tally

ACQUIRE_MS = 1000
MARGIN_S = 2.0
RECOVER_S = 5.0


async def drive(base: str, outage_s: float):
    mix = {"get": 38, "list": 12, "post": 25, "patch": 12, "bulk": 8, "cross": 2, "anon": 1}
    load = Load(base, connections=64, seconds=3600, mix=mix, timeout=5.0)
    probes = []       # (t0, t1, path, status or None)
    marks = {}

    async def probe(session):
        while not load._stop.is_set():
            for path in ("/healthz", "/readyz"):
                t0 = time.monotonic()
                try:
                    async with session.get(base + path, timeout=aiohttp.ClientTimeout(total=3)) as r:
                        await r.read()
                        status = r.status
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                    status = None
                probes.append((t0, time.monotonic(), path, status))
            await asyncio.sleep(0.25)

    async def control():
        await load.ready.wait()
        await asyncio.sleep(4)
        marks["stop_begin"] = time.monotonic()
        log("outage: stopping PostgreSQL")
        await asyncio.to_thread(pg_ctl, "stop")
        marks["stop_done"] = time.monotonic()
        await asyncio.sleep(outage_s)
        marks["start_begin"] = time.monotonic()
        log("outage: starting PostgreSQL")
        await asyncio.to_thread(pg_ctl, "start")
        await asyncio.to_thread(pg_ensure_up)
        marks["start_done"] = time.monotonic()
        await asyncio.sleep(RECOVER_S + 4)
        load.stop()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=80)) as session:
        ctl = asyncio.create_task(control())
        pr = asyncio.create_task(probe(session))
        try:
            await load.run(session)
        except BaseException:
            if not load.ready.is_set():    # the accounts could not be made: no outage
                ctl.cancel()
            raise
        finally:
            load.stop()
            await asyncio.gather(ctl, pr, return_exceptions=True)
        if ctl.exception():
            raise ctl.exception()
    return load, probes, marks


def main() -> bool:
    outage_s = float(os.environ.get("OUTAGE_SECONDS", "10"))
    db = Database("postgres", "outage")
    server = Server(db.url, env={"DB_ACQUIRE_TIMEOUT_MS": str(ACQUIRE_MS)}, name="outage")
    ok = False
    try:
        base = server.start().wait_ready()
        load, probes, m = asyncio.run(drive(base, outage_s))
        pg_ensure_up()
        recs = load.records
        t = tally(recs)
        failures = []
        errors = [r for r in recs if r.error]
        if errors:
            kinds = {}
            for r in errors:
                kinds[r.error] = kinds.get(r.error, 0) + 1
            failures.append(f"{len(errors)} requests got no HTTP response (hang/reset): {kinds}")
        bad5 = [r for r in recs if r.status and r.status >= 500 and r.status != 503]
        if bad5:
            failures.append(f"{len(bad5)} 5xx other than 503: {t['statuses']}")
        r503 = [r for r in recs if r.status == 503]
        not_problem = [r for r in r503 if not r.ctype.startswith("application/problem+json")]
        if not_problem:
            failures.append(f"{len(not_problem)} 503s are not problem+json ({not_problem[0].ctype!r})")
        max503 = max((r.t1 - r.t0 for r in r503), default=0.0)
        if max503 > ACQUIRE_MS / 1000 + MARGIN_S:
            failures.append(f"slowest 503 took {max503:.2f} s (> acquire timeout + {MARGIN_S} s)")
        four = [r for r in recs if r.status and 400 <= r.status < 500 and not r.expected]
        if four:
            failures.append(f"{len(four)} unexpected 4xx: {t['statuses']} e.g. {t['bad_examples']}")
        probe_bad = [r for r in recs if is_probe(r.op) and r.status and not r.expected and r.status != 503]
        if probe_bad:
            failures.append(f"{len(probe_bad)} probes answered neither their refusal nor 503: "
                            f"{[(r.op, r.status) for r in probe_bad[:5]]}")
        down = [r for r in recs if m["stop_done"] + 1 <= r.t0 and r.t1 <= m["start_begin"]]
        if not r503 or not down:
            failures.append("no request was answered 503 during the outage")
        down_ok = sum(1 for r in down if r.status and r.status < 400)
        if down_ok:
            failures.append(f"{down_ok} requests succeeded while PostgreSQL was stopped (?)")
        late = [r for r in recs if r.t0 >= m["start_done"] + RECOVER_S and not r.ok]
        if late:
            failures.append(f"{len(late)} requests failed more than {RECOVER_S} s after the database returned")
        after = [r for r in recs if r.t0 >= m["start_done"]]
        failed_after = [r.t1 for r in after if not r.ok]
        recover_s = (max(failed_after) - m["start_done"]) if failed_after else 0.0
        if not [r for r in after if r.status and r.status < 400]:
            failures.append("no request succeeded after the database returned")
        health_bad = [p for p in probes if p[2] == "/healthz" and p[3] != 200]
        if health_bad:
            failures.append(f"/healthz was not 200 {len(health_bad)} times: {health_bad[:3]}")
        ready_down = [p for p in probes if p[2] == "/readyz" and m["stop_done"] + 0.5 <= p[0] and p[1] <= m["start_begin"]]
        if not ready_down or any(p[3] != 503 for p in ready_down):
            failures.append(f"/readyz during the outage: {[p[3] for p in ready_down]}")
        ready_late = [p for p in probes if p[2] == "/readyz" and p[0] >= m["start_done"] + RECOVER_S]
        if not ready_late or any(p[3] != 200 for p in ready_late):
            failures.append(f"/readyz after recovery: {[p[3] for p in ready_late]}")
        idle, in_use, waited = wait_pool_idle(base, 5)
        if not idle:
            failures.append(f"pool in_use is {in_use} after {waited:.1f} s")
        checked, problems = check_load(db, load)
        if problems:
            failures.append(f"{len(problems)} acknowledged writes are wrong: {problems[:5]}")
        for f in failures:
            log(f"outage FAIL: {f}")
        ok = not failures
        summary("outage", ok, requests=t["requests"], statuses=str(t["statuses"]).replace(" ", ""),
                no_response=len(errors), db_down_s=f"{m['start_begin'] - m['stop_begin']:.1f}",
                max_503_latency_s=f"{max503:.2f}", recover_s=f"{recover_s:.2f}",
                probes=t["probes"], probe_bad=len(probe_bad), healthz_non200=len(health_bad), readyz_503_probes=sum(1 for p in ready_down if p[3] == 503),
                rows_checked=checked, missing=len(problems), pool_in_use_after=in_use)
    except (Failure, SetupError) as e:
        log(f"outage FAIL: {e}")
    finally:
        pg_ensure_up()
        server.stop()
        db.close()
    return ok


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
