"""The primary dies under load: two `api` instances on a pg_auto_failover formation
(scripts/pg-ha.sh: a monitor, a primary and a synchronous secondary), behind nginx, their
DATABASE_URL the formation's multi-host URL (target_session_attrs=read-write).

    python3 reliability/scenario_failover.py        (about 2 minutes)

`scripts/pg-ha.sh up` is run first (it prints the URL at once when the formation is up; one
made here is taken down at the end, one found running is left running). The scenario's
database is made on the primary and dropped at the end.

FAILOVER_SECONDS (60) of mixed load (load.py, 32 connections, 16 users, through nginx) with a
ledger of acknowledged writes; at FAILOVER_KILL_AT (20) s the primary is killed with SIGKILL
(`scripts/pg-ha.sh kill-primary`: its keeper and its postgres). Beside the load:
  - a prober per instance writes a note straight to it every 100 ms: when each accepts writes
    again after the kill (the first 201);
  - read-your-writes rounds through nginx by one client keeping its cookies: each write (201)
    is read back at once, and must be there (a 503 during the gap is asked again).
Guarantees: no answer other than 2xx, the documented 4xx of the probes and export limits, or
503 (with Retry-After); no request without an answer; every acknowledged write is in the
database afterwards with its text and owner; each instance accepts writes again within
FAILOVER_WRITABLE_S (15) s of the kill; both instances moved to the new primary
(`db_host_switches_total` >= 1, `db_host_fits` 1 in their /metrics); every round's write was
read back. Afterwards the killed node is restarted (it rejoins as the secondary).
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
import time

import aiohttp

from common import Database, Failure, Server, check_load, http, log, summary
from load import DEFAULT_MIX, Load, SetupError, is_probe, tally
from scenario_instances import Nginx

HERE = os.path.dirname(os.path.abspath(__file__))
PG_HA = os.path.join(HERE, "..", "scripts", "pg-ha.sh")
SECONDS = float(os.environ.get("FAILOVER_SECONDS", "60"))
KILL_AT = float(os.environ.get("FAILOVER_KILL_AT", "20"))
WRITABLE_S = float(os.environ.get("FAILOVER_WRITABLE_S", "15"))


def pg_ha(action: str) -> str:
    res = subprocess.run(["bash", PG_HA, action], capture_output=True, text=True)
    if res.returncode != 0:
        raise Failure(f"scripts/pg-ha.sh {action} failed: {res.stderr.strip()[-500:]}")
    return res.stdout.strip()


class Formation(Database):
    """A database of its own on the formation's primary (psql follows the multi-host URL)."""

    def __init__(self, ha_url: str, tag: str):
        self.backend = "postgres"
        self.tmpdir = None
        self.name = f"rel_{tag}_{os.getpid()}"
        self.ha_url = ha_url
        self.sql("postgres", f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
        self.sql("postgres", f"CREATE DATABASE {self.name}")
        self.url = self.url_of(self.name)

    def url_of(self, database: str) -> str:
        head, sep, query = self.ha_url.partition("?")
        scheme, rest = head.split("://", 1)
        return f"{scheme}://{rest.split('/', 1)[0]}/{database}{sep}{query}"

    def sql(self, db: str | None, statement: str) -> str:
        url = self.url_of(self.name if db is None else db)
        res = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", url, "-c", statement],
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise Failure(f"SQL failed on the formation: {statement[:80]}: {res.stderr.strip()}")
        return res.stdout

    def close(self) -> None:
        try:
            self.sql("postgres", f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
        except Failure as e:
            log(f"could not drop {self.name}: {e}")


def metric(base: str, name: str) -> float | None:
    try:
        _, _, body = http("GET", f"{base}/metrics", timeout=5)
    except OSError:
        return None
    m = re.search(rf'^{name}\{{pool="primary"\}} ([0-9.e+]+)$'.encode(), body, re.M)
    return float(m.group(1)) if m else None


async def prober(session, base: str, token: str, stop: asyncio.Event, accepted: list[float]) -> None:
    """POST /notes to BASE every 100 ms; the time of each 201."""
    n = 0
    while not stop.is_set():
        n += 1
        try:
            async with session.post(f"{base}/notes", json={"text": f"probe {n}"},
                                    headers={"authorization": f"Bearer {token}"},
                                    timeout=aiohttp.ClientTimeout(total=10)) as r:
                await r.read()
                if r.status == 201:
                    accepted.append(time.monotonic())
        except (aiohttp.ClientError, asyncio.TimeoutError):
            pass
        await asyncio.sleep(0.1)


async def rounds(base: str, token: str, stop: asyncio.Event, result: dict) -> None:
    """Write, then read back at once, keeping cookies; a 503 is asked again."""
    jar = aiohttp.CookieJar(unsafe=True)
    headers = {"authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(cookie_jar=jar, headers=headers,
                                     timeout=aiohttp.ClientTimeout(total=10)) as s:
        while not stop.is_set():
            try:
                async with s.post(f"{base}/notes", json={"text": "round"}) as r:
                    body = await r.json(content_type=None)
                    if r.status != 201:
                        await asyncio.sleep(0.2)
                        continue
                note = body["id"]
                result["written"] += 1
                for _ in range(100):
                    async with s.get(f"{base}/notes/{note}") as r:
                        await r.read()
                        if r.status == 200:
                            result["seen"] += 1
                            break
                        if r.status != 503:
                            result["unseen"].append((note, r.status))
                            break
                    await asyncio.sleep(0.1)
            except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                result["errors"].append(type(e).__name__)
                await asyncio.sleep(0.2)


async def run(nginx: str, servers: list[Server], figures: dict) -> tuple[Load, list[str]]:
    failures: list[str] = []
    load = Load(nginx, connections=32, seconds=SECONDS, timeout=10, export_timeout=60,
                mix={**DEFAULT_MIX, "keyed": 6})
    async with aiohttp.ClientSession() as session:
        load_task = asyncio.create_task(load.run(session))
        await load.ready.wait()
        token = load.users[0]["token"]
        stop = asyncio.Event()
        accepted = {s.name: [] for s in servers}
        probers = [asyncio.create_task(prober(session, s.base, token, stop, accepted[s.name]))
                   for s in servers]
        checked = {"written": 0, "seen": 0, "unseen": [], "errors": []}
        rounder = asyncio.create_task(rounds(nginx, load.users[1]["token"], stop, checked))
        await asyncio.sleep(KILL_AT)
        log("killing the primary (SIGKILL of its keeper and postgres)")
        killed_at = time.monotonic()
        figures["killed"] = await asyncio.to_thread(pg_ha, "kill-primary")
        await load_task
        stop.set()
        await asyncio.gather(*probers, rounder)
    for name, times in accepted.items():
        after = [t - killed_at for t in times if t > killed_at]
        # The first write accepted after the gap: after the longest pause in acceptances.
        gaps = [b - a for a, b in zip([0.0] + after, after)]
        writable = max(gaps) if gaps else None
        figures[f"{name}_writable_s"] = f"{writable:.1f}" if writable is not None else "never"
        if writable is None or writable > WRITABLE_S:
            failures.append(f"{name} did not accept writes again within {WRITABLE_S:.0f} s of the kill")
    for server in servers:
        switched, fits = metric(server.base, "db_host_switches_total"), metric(server.base, "db_host_fits")
        if not switched or fits != 1:
            failures.append(f"{server.name} is not on the new primary: switches {switched}, fits {fits}")
    figures.update(rounds=checked["written"], rounds_seen=checked["seen"])
    if checked["unseen"] or checked["errors"] or checked["written"] != checked["seen"]:
        failures.append(f"read-your-writes: {checked['written']} written, {checked['seen']} read back, "
                        f"unseen {checked['unseen'][:5]}, errors {checked['errors'][:5]}")
    return load, failures


def main() -> bool:
    was_up = subprocess.run(["bash", PG_HA, "uri"], capture_output=True).returncode == 0
    figures: dict = {}
    ok = False
    db = servers = nginx = None
    try:
        ha_url = pg_ha("up")
        db = Formation(ha_url, "failover")
        env = {"DB_ACQUIRE_TIMEOUT_MS": "2000"}
        servers = [Server(db.url, env=env, name=f"failover-{x}") for x in "ab"]
        for s in servers:
            s.start()
        for s in servers:
            s.wait_ready(60)
        nginx = Nginx(servers[0].address, servers[1].address)
        base = nginx.start()
        log(f"two instances on {ha_url.split('@')[-1]} behind nginx; {SECONDS:.0f} s of load, "
            f"the primary killed at {KILL_AT:.0f} s")
        load, failures = asyncio.run(run(base, servers, figures))
        t = tally(load.records)
        others = {status: n for status, n in t["statuses"].items()
                  if not (200 <= status < 300 or status in (404, 401, 409, 429, 503))}
        refused_503 = sum(1 for r in load.records if r.status == 503)
        no_retry_after = sum(1 for r in load.records if r.status == 503 and not r.retry_after)
        if others:
            failures.append(f"answers other than 2xx/4xx/503: {others}")
        if t["4xx"]:
            failures.append(f"{t['4xx']} unexpected 4xx: {t['statuses']}")
        # A probe (another user's note, no token) may meet the gap too: 503 is no leak.
        leaked = [(r.op, r.status) for r in load.records if is_probe(r.op) and r.status is not None
                  and not r.ok and not (r.status == 503 and r.retry_after)]
        if leaked:
            failures.append(f"{len(leaked)} probes not refused: {leaked[:5]}")
        if no_retry_after:
            failures.append(f"{no_retry_after} 503 without Retry-After")
        if t["errors"]:
            failures.append(f"{t['errors']} requests without an answer: {t['error_kinds']}")
        checked, problems = check_load(db, load)
        if problems:
            failures.append(f"{len(problems)} acknowledged writes wrong or missing: {problems[:5]}")
        figures.update(requests=t["requests"], refused_503=refused_503, rows_checked=checked,
                       missing=len(problems))
        for f in failures:
            log(f"failover FAIL: {f}")
        ok = not failures
    except (Failure, SetupError) as e:
        log(f"failover FAIL: {e}")
    finally:
        if nginx:
            nginx.stop()
        for s in servers or []:
            s.stop()
        try:
            pg_ha("restart-killed")
        except Failure as e:
            log(f"could not restart the killed node: {e}")
        if db:
            db.close()
        if not was_up:
            subprocess.run(["bash", PG_HA, "down"], capture_output=True)
    summary("failover", ok, **figures)
    return ok


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
