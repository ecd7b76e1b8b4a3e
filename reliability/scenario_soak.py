"""Soak: mixed load at 64 connections for SOAK_SECONDS (default 30) on one backend.

    python3 reliability/scenario_soak.py sqlite|postgres|mysql [SECONDS]

The load signs up and signs in 16 users first (four connections per user) and sends their
bearer tokens. Guarantees: zero 5xx, zero 4xx, zero connection errors or client time-outs,
except that an export may be refused by the export limits (429: one export per user, 503: every
export slot taken) when it carries Retry-After and is problem+json (counted apart); every export
parses and holds only the caller's notes, and so does every page and note read; every
cross-user probe (GET/PATCH/DELETE of another user's note) is 404 and leaves the note as it was,
every anonymous or bad-token probe is 401 with `WWW-Authenticate: Bearer`; every note
acknowledged with 201 (and every acknowledged PATCH) is in the database with its text and its
owner, and no refused write is; every keyed POST (one Idempotency-Key sent two to four times,
the first two at once) is answered with one note, and that note is stored exactly once; the
pool's in-use count returns to 0 afterwards (from /metrics).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

from common import Database, Failure, Server, check_load, log, summary, wait_pool_idle
from load import DEFAULT_MIX, Load, SetupError, tally


def soak(backend: str, seconds: float, name: str = "soak") -> bool:
    db = Database(backend, f"soak_{backend[:2]}")
    server = Server(db.url, name=f"soak-{backend}")
    ok = False
    try:
        base = server.start().wait_ready()
        log(f"{name}[{backend}]: {seconds:.0f} s of mixed load at 64 connections on {base}")
        load = Load(base, connections=64, seconds=seconds, timeout=10, export_timeout=60,
                    mix={**DEFAULT_MIX, "keyed": 6})
        asyncio.run(load.run())
        elapsed = time.monotonic() - load.t_ready     # the load proper, after sign-in
        t = tally(load.records)
        idle, in_use, waited = wait_pool_idle(base, 5)
        checked, problems = check_load(db, load)
        failures = []
        if t["5xx"]:
            failures.append(f"{t['5xx']} responses were 5xx: {t['statuses']}")
        if t["errors"]:
            failures.append(f"{t['errors']} requests failed without a response: {t['error_kinds']}")
        if t["4xx"]:
            failures.append(f"{t['4xx']} unexpected 4xx: {t['statuses']}")
        if t["probe_bad"]:
            failures.append(f"{t['probe_bad']} probes were not refused as they must be: {t['bad_examples']}")
        if t["bad"]:
            log(f"{name}[{backend}]: wrong answers, e.g. {t['bad_examples']}")
        if not idle:
            failures.append(f"pool in_use is {in_use} after {waited:.1f} s")
        if problems:
            failures.append(f"{len(problems)} acknowledged writes are wrong: {problems[:5]}")
        if server.proc.poll() is not None:
            failures.append(f"server exited with {server.proc.returncode}")
        for f in failures:
            log(f"{name}[{backend}] FAIL: {f}")
        ok = not failures
        summary(f"{name}[{backend}]", ok, seconds=f"{elapsed:.1f}", requests=t["requests"],
                rps=f"{t['requests'] / elapsed:.0f}", non_2xx=t["5xx"] + t["4xx"], errors=t["errors"],
                exports=len(load.export_lines), export_429=t["export_429"], export_503=t["export_503"],
                probes=t["probes"], probe_bad=t["probe_bad"], keyed=len(load.keyed),
                keyed_409=sum(1 for r in load.records if r.op == "keyed" and r.status == 409),
                rows_checked=checked, missing=len(problems),
                pool_in_use_after=in_use, pool_idle_after_s=f"{waited:.1f}")
    except (Failure, SetupError) as e:
        log(f"{name}[{backend}] FAIL: {e}")
    finally:
        code = server.stop()
        if code not in (0, None):
            log(f"{name}[{backend}]: server exit status {code}\n{server.tail()}")
        db.close()
    return ok


if __name__ == "__main__":
    backend = sys.argv[1] if len(sys.argv) > 1 else "sqlite"
    secs = float(sys.argv[2]) if len(sys.argv) > 2 else float(os.environ.get("SOAK_SECONDS", "30"))
    sys.exit(0 if soak(backend, secs) else 1)
