"""Read replica: two `api` with DATABASE_READ_URL on a real PostgreSQL streaming replica.

    python3 reliability/scenario_replica.py

Needs the replica of `scripts/pg-replica.sh` (127.0.0.1:5433, REL_PG_REPLICA_URL; run as root).
The scenario runs `scripts/pg-replica.sh up 2s` first (creates the replica when it is absent,
otherwise only sets its apply delay) and leaves it running with a 2 s apply delay, also on
failure. A fresh database rel_replica_<pid> is created on the primary; once the replica shows
it, two `api` start on it, each with DATABASE_READ_URL = the same database on the replica,
behind nginx (round robin, as in `instances`). Every /metrics figure is scraped from each
instance directly, never through nginx. Guarantees (one SUMMARY line each):
  rounds   REPLICA_ROUNDS (200) rounds by ONE client that keeps its cookies (aiohttp
           CookieJar(unsafe=True)), through nginx: POST /notes, then GET /notes/{id} (200, its
           text; round robin sends it to the other instance) and GET /notes?order=desc&limit=1
           (that note first): every write seen although the replica applies 2 s late. Control:
           five writes each read at once by a client without the cookie must come back stale
           (404) at least once, or the replica was not behind and the rounds proved nothing.
           Then, once the replica has replayed everything, a second client without the cookie
           reads (every note of the first client is there, all 200) and db_reads_total
           {target="replica"} grew on both instances.
  outage   8 clients read (GET /notes, GET /notes/{id}) through nginx for ~10 s while the
           replica is stopped (`pg-replica.sh stop`) for 3 s, then started: every answer 200,
           none missing (10 s client time-out); both instances show db_replica_up 0 during the
           stop; within 5 s of `start` returning both show db_replica_up 1 and
           db_reads_total{target="replica"} grows again.
  lagging  a third instance with READ_MAX_LAG_MS=500 while a writer (POST /notes every ~25 ms
           through nginx, each write then read back through the third instance with its cookie)
           keeps the replica 2 s behind, and a cookie-less client reads through the third
           instance: every answer 200 (201 for the writes), the writer sees each write,
           db_replica_bypasses_total{reason="lagging"} > 0 there; once the writes stop and the
           replica has caught up, it reads on the replica again.
  soak     REPLICA_SOAK_SECONDS (30) of the soak's mixed load (load.py, with keyed POSTs: one
           Idempotency-Key sent two to four times) through nginx, 32 users with one connection
           and one cookie jar each (Load(cookies=True): half of the GETs read the user's newest
           note), beside 16 read-only users (GET, list, export, probes; their reads need nothing
           fresh, so the replica serves them while the writers keep it 2 s behind): the soak's
           verdicts — no 5xx, no 4xx but the probes' refusals and the export limits (a 404 on
           one's own note would be one), no request without an answer, every acknowledged note
           stored with its text and owner, every keyed note exactly once — both pools back to 0
           in use, and some reads served by the replica.
migration: right after the instances migrate the fresh database, a client without the cookie
           reads through them until the replica has replayed the schema: no answer is 5xx (an
           instance reads on the replica only once it has replayed the primary's position at the
           instance's start, i.e. its migrations).
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter

import aiohttp

from common import (Database, Failure, Server, check_load, http, log, signin, signup, summary,
                    wait_pool_idle)
from load import DEFAULT_MIX, Load, SetupError, tally
from scenario_instances import MIGRATIONS, Nginx

HERE = os.path.dirname(os.path.abspath(__file__))
REPLICA_SH = os.path.join(HERE, "..", "scripts", "pg-replica.sh")
PG_REPLICA = os.environ.get("REL_PG_REPLICA_URL", "postgres://postgres@127.0.0.1:5433")
PG_PRIMARY = os.environ.get("REL_PG_URL", "postgres://postgres@127.0.0.1:5432")
DELAY = "2s"                 # the replica's apply delay throughout (and when we leave)
TIMEOUT = aiohttp.ClientTimeout(total=10)
REPLICA_READS = 'db_reads_total{target="replica"}'
PRIMARY_READS = 'db_reads_total{target="primary"}'
UP = "db_replica_up"
LAG = "db_replica_lag_seconds"
RUN = uuid.uuid4().hex[:8]


# --- the replica, SQL, metrics -----------------------------------------------------------------

def replica_sh(*args: str, timeout: float = 180) -> str:
    res = subprocess.run([REPLICA_SH, *args], capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise Failure(f"scripts/pg-replica.sh {' '.join(args)}: {(res.stderr or res.stdout).strip()}")
    return res.stdout.strip()


def replica_running() -> bool:
    return subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5433"]).returncode == 0


def psql(server: str, db: str, statement: str) -> str | None:
    """One value from SERVER/DB, or None when it cannot be read (down, no such database)."""
    res = subprocess.run(["psql", "-X", "-qAt", f"{server}/{db}", "-c", statement],
                         capture_output=True, text=True, timeout=30)
    return res.stdout.strip() if res.returncode == 0 else None


def wait_replica(db: str, statement: str, what: str, timeout: float = 30) -> float:
    """Poll STATEMENT on the replica until it answers 't'; seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if psql(PG_REPLICA, db, statement) == "t":
            return time.monotonic() - t0
        time.sleep(0.1)
    raise Failure(f"the replica did not show {what} within {timeout:.0f} s")


def wait_caught_up(timeout: float = 20) -> float:
    """Wait until the replica has replayed everything the primary had written now."""
    lsn = psql(PG_PRIMARY, "postgres", "SELECT pg_current_wal_lsn()")
    if not lsn:
        raise Failure("cannot read the primary's WAL position")
    return wait_replica("postgres", f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn",
                        f"the primary's position {lsn}", timeout)


METRIC_RE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*(?:\{[^}]*\})?)\s+(\S+)\s*$")


def scrape(base: str) -> dict[str, float]:
    """One instance's /metrics, series -> value (missing counters read as 0 by `m`)."""
    status, _, body = http("GET", base + "/metrics", timeout=5)
    if status != 200:
        raise Failure(f"{base}/metrics answered {status}")
    out = {}
    for line in body.decode().splitlines():
        m = METRIC_RE.match(line)
        if m and not line.startswith("#"):
            try:
                out[m.group(1)] = float(m.group(2))
            except ValueError:
                pass
    return out


def m(metrics: dict, series: str) -> float:
    return metrics.get(series, 0.0)


def bypasses(metrics: dict) -> dict[str, int]:
    out = {}
    for series, value in metrics.items():
        hit = re.match(r'db_replica_bypasses_total\{reason="([^"]+)"\}', series)
        if hit:
            out[hit.group(1)] = int(value)
    return out


def diff(after: dict, before: dict) -> dict:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def fmt(d: dict) -> str:
    return "{" + ",".join(f"{k}:{v}" for k, v in sorted(d.items())) + "}"


async def ascrape(base: str) -> dict[str, float]:
    return await asyncio.to_thread(scrape, base)


def cookieless() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), timeout=TIMEOUT)


def with_cookies() -> aiohttp.ClientSession:
    # unsafe=True: aiohttp's jar otherwise drops cookies set by an IP address (127.0.0.1)
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), timeout=TIMEOUT)


async def call(session, method: str, url: str, token: str, body=None):
    """(status or None, JSON body or None, response headers, error kind or None)."""
    try:
        async with session.request(method, url, json=body,
                                   headers={"authorization": f"Bearer {token}"}) as r:
            raw = await r.read()
            try:
                data = await r.json(content_type=None) if raw else None
            except ValueError:
                data = None
            return r.status, data, r.headers, None
    except asyncio.TimeoutError:
        return None, None, None, "timeout"
    except (aiohttp.ClientError, OSError) as e:
        return None, None, None, type(e).__name__


# --- the known finding: reads right after the migrations --------------------------------------

def migration_window(db: Database, instances: list[Server]) -> tuple[Counter, float]:
    """A client without the cookie reads GET /notes on both instances (alternately, every
    50 ms) from right after the migrations until the replica has the schema (+0.5 s)."""
    user_email = f"rel-replica-early-{os.getpid()}@example.com"
    signup(instances[0].base, user_email)
    token = signin(instances[0].base, user_email)
    statuses = Counter()
    want = len(MIGRATIONS)
    t0 = time.monotonic()
    done_at = None
    i = 0
    while time.monotonic() - t0 < 30:
        status = http("GET", f"{instances[i % 2].base}/notes", token=token)[0]
        statuses[status] += 1
        i += 1
        if done_at is None and psql(PG_REPLICA, db.name,
                                    f"SELECT count(*) >= {want} FROM seaql_migrations") == "t":
            done_at = time.monotonic()
        if done_at is not None and time.monotonic() - done_at > 0.5:
            break
        time.sleep(0.05)
    if done_at is None:
        raise Failure("the replica did not replay the migrations within 30 s")
    return statuses, done_at - t0


# --- 1. rounds of write-then-read --------------------------------------------------------------

async def rounds(nginx: str, instances: list[Server], user: dict, n: int) -> tuple[bool, dict, list[int]]:
    token = user["token"]
    failures = []
    seen_by_id = seen_in_list = cross = cookies_set = 0
    ids = []
    examples = []
    async with with_cookies() as s:
        for i in range(n):
            text = f"replica {RUN} round {i}"
            status, note, hdrs, err = await call(s, "POST", f"{nginx}/notes", token, {"text": text})
            if status != 201 or not note:
                failures.append(f"round {i}: POST /notes {status or err}")
                continue
            ids.append(note["id"])
            up_w = hdrs.get("x-upstream", "?")
            cookies_set += any(c.startswith("notes_written=") for c in hdrs.getall("set-cookie", []))
            status, got, hdrs, err = await call(s, "GET", f"{nginx}/notes/{note['id']}", token)
            up_r = hdrs.get("x-upstream", "?") if hdrs else None
            if status == 200 and got and got.get("text") == text:
                seen_by_id += 1
                cross += up_r != up_w
            elif len(examples) < 5:
                examples.append(f"round {i}: GET /notes/{note['id']} -> {status or err} via {up_r} (written via {up_w})")
            status, page, hdrs, err = await call(s, "GET", f"{nginx}/notes?order=desc&limit=1", token)
            up_l = hdrs.get("x-upstream", "?") if hdrs else None
            if status == 200 and isinstance(page, list) and page and page[0].get("id") == note["id"]:
                seen_in_list += 1
            elif len(examples) < 5:
                first = page[0].get("id") if isinstance(page, list) and page else page
                examples.append(f"round {i}: GET /notes?order=desc&limit=1 -> {status or err}, first {first} "
                                f"(want {note['id']}) via {up_l}")
        if seen_by_id != n or seen_in_list != n:
            failures.append(f"writes not seen: by id {n - seen_by_id}, in the list {n - seen_in_list}: {examples}")
        if cookies_set != len(ids):
            failures.append(f"only {cookies_set} of {len(ids)} writes set the notes_written cookie")
        if cross < n // 2:
            failures.append(f"only {cross} reads by id went to the other instance than their write")

        # control: without the cookie the same reads are stale (the replica really lags)
        stale = 0
        async with cookieless() as bare:
            for i in range(5):
                status, note, _, err = await call(s, "POST", f"{nginx}/notes", token, {"text": f"replica {RUN} control {i}"})
                if status != 201:
                    failures.append(f"control write {i}: {status or err}")
                    continue
                ids.append(note["id"])
                status, _, _, err = await call(bare, "GET", f"{nginx}/notes/{note['id']}", token)
                if status == 404:
                    stale += 1
                elif status != 200:
                    failures.append(f"control read {i}: {status or err}")
        if stale == 0:
            failures.append("no cookie-less read right after a write was stale: the replica was not behind")

    # the replica catches up; a client without the cookie is served by the replica
    caught_s = await asyncio.to_thread(wait_caught_up)
    await asyncio.sleep(0.5)                       # the instances' monitors (every 100 ms)
    before = [await ascrape(i.base) for i in instances]
    # reads until both instances have read on the replica (at least 20, at most 10 s: a
    # commit after a quiet spell can make the replica look lagging for a moment)
    reads = bad_reads = lacking = 0
    grew = [0.0] * len(instances)
    want = set(ids)
    async with cookieless() as bare:
        t0 = time.monotonic()
        while reads < 20 or (min(grew) <= 0 and time.monotonic() - t0 < 10):
            if reads % 2 == 0:
                status, page, _, err = await call(bare, "GET", f"{nginx}/notes?limit=1000", token)
                if status == 200 and isinstance(page, list):
                    lacking += not want <= {p["id"] for p in page}
                else:
                    bad_reads += 1
            else:
                status, _, _, err = await call(bare, "GET", f"{nginx}/notes/{random.choice(ids)}", token)
                bad_reads += status != 200
            reads += 1
            if reads >= 20 and reads % 10 == 0:
                after = [await ascrape(i.base) for i in instances]
                grew = [m(a, REPLICA_READS) - m(b, REPLICA_READS) for a, b in zip(after, before)]
    after = [await ascrape(i.base) for i in instances]
    grew = [m(a, REPLICA_READS) - m(b, REPLICA_READS) for a, b in zip(after, before)]
    if bad_reads:
        failures.append(f"{bad_reads} of {reads} cookie-less reads after catch-up were not 200")
    if lacking:
        failures.append(f"{lacking} cookie-less lists after catch-up lacked notes of the rounds")
    if not all(g > 0 for g in grew):
        failures.append(f"replica reads did not grow on both instances: {grew}")
    behind = sum(bypasses(b).get("behind_client", 0) for b in before)
    figures = dict(rounds=n, seen_by_id=seen_by_id, seen_in_list=seen_in_list, other_instance_reads=cross,
                   failures=n - min(seen_by_id, seen_in_list), behind_client_bypasses=behind,
                   stale_without_cookie=f"{stale}/5", catch_up_s=f"{caught_s:.1f}", cookieless_reads=reads,
                   replica_reads_before="/".join(f"{m(b, REPLICA_READS):.0f}" for b in before),
                   replica_reads_after="/".join(f"{m(a, REPLICA_READS):.0f}" for a in after))
    for f in failures:
        log(f"replica[rounds] FAIL: {f}")
    return not failures, figures, ids


# --- 2. the replica stopped under load ---------------------------------------------------------

async def outage(nginx: str, instances: list[Server], token: str, ids: list[int], hold_s: float = 3.0):
    statuses = Counter()
    errors = Counter()
    bad = []
    stop = asyncio.Event()
    marks = {}

    async def reader(k: int):
        rnd = random.Random(k)
        async with cookieless() as s:
            while not stop.is_set():
                if rnd.random() < 0.5:
                    status, page, _, err = await call(s, "GET", f"{nginx}/notes?limit=100&after={rnd.choice(ids)}", token)
                    ok = status == 200 and isinstance(page, list)
                else:
                    note_id = rnd.choice(ids)
                    status, note, _, err = await call(s, "GET", f"{nginx}/notes/{note_id}", token)
                    ok = status == 200 and isinstance(note, dict) and note.get("id") == note_id
                if err:
                    errors[err] += 1
                else:
                    statuses[status] += 1
                if not ok and len(bad) < 5:
                    bad.append((status, err, round(time.monotonic() - marks.get("stop", time.monotonic()), 2)))

    tasks = [asyncio.create_task(reader(k)) for k in range(8)]
    failures = []
    try:
        await asyncio.sleep(2)
        before = [await ascrape(i.base) for i in instances]
        if not all(m(b, UP) == 1 for b in before):
            failures.append(f"db_replica_up before the stop: {[m(b, UP) for b in before]}")
        marks["stop"] = time.monotonic()
        await asyncio.to_thread(replica_sh, "stop")
        marks["stopped"] = time.monotonic()
        seen_down = [False] * len(instances)
        while time.monotonic() - marks["stopped"] < hold_s:
            for n, inst in enumerate(instances):
                seen_down[n] = seen_down[n] or m(await ascrape(inst.base), UP) == 0
            await asyncio.sleep(0.2)
        during = [await ascrape(i.base) for i in instances]
        marks["start"] = time.monotonic()
        starting = asyncio.create_task(asyncio.to_thread(replica_sh, "start"))
        # from the moment the replica accepts connections: each instance up again (gauge 1)
        # and reading on it (its replica counter grows past its value at that moment)
        at_accepting = None
        serving = [None] * len(instances)
        while not starting.done() or (None in serving and time.monotonic() - marks["accepting"] < 15):
            if at_accepting is None and await asyncio.to_thread(replica_running):
                marks["accepting"] = time.monotonic()
                at_accepting = [await ascrape(i.base) for i in instances]
            elif at_accepting is not None:
                for n, inst in enumerate(instances):
                    now = await ascrape(inst.base)
                    if serving[n] is None and m(now, UP) == 1 and \
                            m(now, REPLICA_READS) > m(at_accepting[n], REPLICA_READS):
                        serving[n] = time.monotonic() - marks["accepting"]
            await asyncio.sleep(0.05)
        await starting          # raises if `start` failed
        marks["started"] = time.monotonic()
        await asyncio.sleep(max(0.0, 10 - (time.monotonic() - marks["stop"] + 2)))  # ~10 s of reads
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    after = [await ascrape(i.base) for i in instances]
    answers = sum(statuses.values())
    failed = answers - statuses.get(200, 0) + sum(errors.values())
    if failed:
        failures.append(f"{failed} reads failed: {dict(statuses)} {dict(errors)} e.g. {bad}")
    if not all(seen_down):
        failures.append(f"db_replica_up 0 not seen during the stop on every instance: {seen_down}")
    if None in serving or max(serving) > 5:
        failures.append(f"the replica did not serve again on every instance within 5 s of accepting connections: {serving}")
    if not all(m(a, UP) == 1 for a in after):
        failures.append(f"db_replica_up after: {[m(a, UP) for a in after]}")
    down = Counter()
    for a, b in zip(after, before):
        down.update(diff(bypasses(a), bypasses(b)))
    figures = dict(reads=answers + sum(errors.values()), failed=failed, statuses=fmt(statuses),
                   stopped_s=f"{marks['start'] - marks['stop']:.1f}",
                   start_cmd_s=f"{marks['started'] - marks['start']:.1f}",
                   accepting_after_s=f"{marks['accepting'] - marks['start']:.1f}",
                   bypasses=fmt(down), up_0_seen="/".join(str(int(s)) for s in seen_down),
                   replica_reads_before="/".join(f"{m(b, REPLICA_READS):.0f}" for b in before),
                   replica_reads_stopped="/".join(f"{m(d, REPLICA_READS):.0f}" for d in during),
                   replica_reads_after="/".join(f"{m(a, REPLICA_READS):.0f}" for a in after),
                   serves_again_s="/".join("-" if s is None else f"{s:.2f}" for s in serving))
    for f in failures:
        log(f"replica[outage] FAIL: {f}")
    return not failures, figures


# --- 3. lag beyond READ_MAX_LAG_MS ---------------------------------------------------------------

async def lagging(nginx: str, third: Server, token: str, ids: list[int], seconds: float = 6.0):
    failures = []
    statuses = Counter()
    writes = Counter()
    unseen = []
    lags = []
    stop = asyncio.Event()
    before = await ascrape(third.base)

    async def writer():
        async with with_cookies() as s:
            i = 0
            t_end = time.monotonic() + seconds
            while time.monotonic() < t_end:
                status, note, _, err = await call(s, "POST", f"{nginx}/notes", token, {"text": f"replica {RUN} lag {i}"})
                writes[status or err] += 1
                if status == 201:
                    got = (await call(s, "GET", f"{third.base}/notes/{note['id']}", token))[0]
                    if got != 200:
                        unseen.append((note["id"], got))
                i += 1
                await asyncio.sleep(0.025)
        stop.set()

    async def reader():
        rnd = random.Random(3)
        async with cookieless() as s:
            while not stop.is_set():
                if rnd.random() < 0.5:
                    status, _, _, err = await call(s, "GET", f"{third.base}/notes?limit=100", token)
                else:
                    status, _, _, err = await call(s, "GET", f"{third.base}/notes/{rnd.choice(ids)}", token)
                statuses[status or err] += 1

    async def sampler():
        while not stop.is_set():
            lags.append(m(await ascrape(third.base), LAG))
            await asyncio.sleep(0.25)

    await asyncio.gather(writer(), reader(), reader(), sampler())
    during = await ascrape(third.base)
    log(f"replica[lagging]: db_replica_lag_seconds every 0.25 s while writing: {' '.join(f'{v:g}' for v in lags)}")
    lagging_n = bypasses(during).get("lagging", 0) - bypasses(before).get("lagging", 0)
    # once the writes stop and the replica has caught up, it serves this instance again
    caught_s = await asyncio.to_thread(wait_caught_up)
    await asyncio.sleep(0.5)
    mid = await ascrape(third.base)
    after = mid
    async with cookieless() as s:
        t0 = time.monotonic()
        n = 0
        while n < 10 or (m(after, REPLICA_READS) <= m(mid, REPLICA_READS) and time.monotonic() - t0 < 10):
            status, _, _, err = await call(s, "GET", f"{third.base}/notes?limit=100", token)
            statuses[status or err] += 1
            n += 1
            if n % 10 == 0:
                after = await ascrape(third.base)
    after = await ascrape(third.base)
    again = m(after, REPLICA_READS) - m(mid, REPLICA_READS)
    bad = sum(n for k, n in statuses.items() if k != 200)
    if bad:
        failures.append(f"{bad} reads were not 200: {dict(statuses)}")
    if set(writes) != {201}:
        failures.append(f"writes answered {dict(writes)}")
    if unseen:
        failures.append(f"{len(unseen)} writes not seen by their writer through the third instance: {unseen[:5]}")
    if lagging_n <= 0:
        failures.append(f"no lagging bypass (lag samples up to {max(lags, default=0):.2f} s)")
    if again <= 0:
        failures.append("the replica did not serve again after catching up")
    figures = dict(writes=sum(writes.values()), reads=sum(statuses.values()), failed=bad + len(unseen),
                   max_lag_s=f"{max(lags, default=0):.2f}",
                   median_lag_s=f"{sorted(lags)[len(lags) // 2] if lags else 0:.2f}", lagging_bypasses=lagging_n,
                   bypasses=fmt(diff(bypasses(during), bypasses(before))),
                   replica_reads_while_lagging=f"{m(during, REPLICA_READS) - m(before, REPLICA_READS):.0f}",
                   catch_up_s=f"{caught_s:.1f}", replica_reads_after_catch_up=f"{again:.0f}")
    for f in failures:
        log(f"replica[lagging] FAIL: {f}")
    return not failures, figures


# --- 4. the soak, with cookies -----------------------------------------------------------------

READER_MIX = {"get": 50, "list": 30, "export": 5, "cross": 3, "anon": 2}


async def soak_through(nginx: str, seconds: float) -> tuple[Load, Load]:
    """The writers (the soak's mix) and, beside them, readers (no writes after their seed)."""
    writers = Load(nginx, connections=32, n_users=32, seconds=seconds, timeout=10, export_timeout=60,
                   mix={**DEFAULT_MIX, "keyed": 6}, cookies=True)
    readers = Load(nginx, connections=16, n_users=16, seconds=seconds, timeout=10, export_timeout=60,
                   mix=READER_MIX, cookies=True)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64),
                                     cookie_jar=aiohttp.DummyCookieJar()) as session:
        await asyncio.gather(writers.run(session), readers.run(session))
    return writers, readers


def soak(db: Database, nginx: str, instances: list[Server], seconds: float):
    before = [scrape(i.base) for i in instances]
    writers, readers = asyncio.run(soak_through(nginx, seconds))
    elapsed = time.monotonic() - writers.t_ready
    t = tally(writers.records + readers.records)
    idles = [wait_pool_idle(i.base, 5) for i in instances]
    after = [scrape(i.base) for i in instances]
    checked, problems = check_load(db, writers)
    checked_r, problems_r = check_load(db, readers)
    checked += checked_r
    problems += problems_r
    failures = []
    if t["5xx"]:
        failures.append(f"{t['5xx']} responses were 5xx: {t['statuses']}")
    if t["errors"]:
        failures.append(f"{t['errors']} requests failed without a response: {t['error_kinds']}")
    if t["4xx"]:
        failures.append(f"{t['4xx']} unexpected 4xx: {t['statuses']} e.g. {t['bad_examples']}")
    if t["probe_bad"]:
        failures.append(f"{t['probe_bad']} probes were not refused as they must be: {t['bad_examples']}")
    if problems:
        failures.append(f"{len(problems)} acknowledged writes are wrong: {problems[:5]}")
    if not all(ok for ok, _, _ in idles):
        failures.append(f"pool in_use not back to 0: {[v for _, v, _ in idles]}")
    by = Counter()
    for a, b in zip(after, before):
        by.update(diff(bypasses(a), bypasses(b)))
    replica = sum(m(a, REPLICA_READS) - m(b, REPLICA_READS) for a, b in zip(after, before))
    primary = sum(m(a, PRIMARY_READS) - m(b, PRIMARY_READS) for a, b in zip(after, before))
    if replica <= 0:
        failures.append("no read of the soak went to the replica")
    figures = dict(seconds=f"{elapsed:.1f}", requests=t["requests"], non_2xx=t["5xx"] + t["4xx"],
                   errors=t["errors"], writer_requests=len(writers.records),
                   reader_requests=len(readers.records), fresh_gets=writers.fresh_gets + readers.fresh_gets,
                   keyed=len(writers.keyed), exports=len(writers.export_lines) + len(readers.export_lines),
                   export_limited=t["export_429"] + t["export_503"],
                   probes=t["probes"], probe_bad=t["probe_bad"], rows_checked=checked, missing=len(problems),
                   replica_reads=f"{replica:.0f}", primary_reads=f"{primary:.0f}", bypasses=fmt(by),
                   pool_in_use_after="/".join(str(v) for _, v, _ in idles))
    for f in failures:
        log(f"replica[soak] FAIL: {f}")
    return not failures, figures


# --- main ----------------------------------------------------------------------------------------

def main() -> bool:
    n_rounds = int(os.environ.get("REPLICA_ROUNDS", "200"))
    soak_s = float(os.environ.get("REPLICA_SOAK_SECONDS", "30"))
    logdir = os.environ.get("REL_LOG_DIR") or tempfile.mkdtemp(prefix="rel_replica_")
    results = {}
    db = None
    servers: list[Server] = []
    nginx = None
    try:
        log(f"replica: {replica_sh('up', DELAY)}")
        db = Database("postgres", "replica")
        waited = wait_replica("postgres", f"SELECT count(*) = 1 FROM pg_database WHERE datname = '{db.name}'",
                              f"database {db.name}")
        log(f"replica: {db.name} created on the primary, on the replica after {waited:.1f} s")
        read_url = f"{PG_REPLICA}/{db.name}"
        env = {"DATABASE_READ_URL": read_url, "DB_ACQUIRE_TIMEOUT_MS": "5000"}
        servers = [Server(db.url, env=env, name=f"replica-instance{i}", logdir=logdir) for i in (1, 2)]
        for s in servers:
            s.start()
        for s in servers:
            s.wait_ready(60)
        for _ in range(50):     # the monitor's first check sets the gauge
            if all(UP in scrape(s.base) for s in servers):
                break
            time.sleep(0.1)
        else:
            raise Failure(f"{servers[0].name} has no {UP} in /metrics: is {servers[0].env.get('DATABASE_READ_URL')} "
                          f"used? (the api binary may predate DATABASE_READ_URL: rebuild it)")

        early, schema_s = migration_window(db, servers)
        early_5xx = sum(n for s, n in early.items() if s >= 500)
        ok = not early_5xx
        results["migration"] = ok
        summary("replica[migration]", ok, note="-",
                cookieless_reads=sum(early.values()), statuses=fmt(early), fivexx=early_5xx,
                schema_on_replica_after_s=f"{schema_s:.1f}")
        wait_caught_up()

        nginx = Nginx(servers[0].address, servers[1].address)
        base = nginx.start()
        log(f"replica: {servers[0].address} + {servers[1].address} behind nginx {base}, replica {read_url}")
        email = f"rel-replica-{os.getpid()}@example.com"
        signup(base, email)
        user = {"email": email, "token": signin(base, email)}

        ok, figures, ids = asyncio.run(rounds(base, servers, user, n_rounds))
        results["rounds"] = ok
        summary("replica[rounds]", ok, **figures)

        ok, figures = asyncio.run(outage(base, servers, user["token"], ids))
        results["outage"] = ok
        summary("replica[outage]", ok, **figures)
        if not replica_running():
            replica_sh("start")
        wait_caught_up(30)

        third = Server(db.url, env={**env, "READ_MAX_LAG_MS": "500"}, name="replica-instance3-lag500", logdir=logdir)
        servers.append(third)
        third.start().wait_ready(60)
        ok, figures = asyncio.run(lagging(base, third, user["token"], ids))
        results["lagging"] = ok
        summary("replica[lagging]", ok, **figures)
        third.stop()

        log(f"replica: {soak_s:.0f} s of mixed load through nginx, 32 users with a cookie jar each + 16 readers")
        ok, figures = soak(db, base, servers[:2], soak_s)
        results["soak"] = ok
        summary("replica[soak]", ok, **figures)

        for s in servers:
            if s.proc.poll() is not None and s is not third:
                results[f"{s.name} alive"] = False
                log(f"replica FAIL: {s.name} exited with {s.proc.returncode}")
    except (Failure, SetupError, subprocess.TimeoutExpired) as e:
        log(f"replica FAIL: {e}")
        results["setup"] = False
    finally:
        if nginx:
            nginx.stop()
        for s in servers:
            code = s.stop()
            if code not in (0, None):
                log(f"replica: {s.name} exit status {code}\n{s.tail()}")
        if db:
            db.close()
        try:   # leave the replica as we found it for CI: running, 2 s behind
            if not replica_running():
                log(f"replica: {replica_sh('start')}")
            replica_sh("delay", DELAY)
        except (Failure, subprocess.TimeoutExpired) as e:
            log(f"replica: could not restore the replica: {e}")
            results["restore"] = False
    ok = bool(results) and all(results.values())
    if not ok:
        for s in servers:
            log(f"--- {s.name} ({s.logfile})\n{s.tail(10)}")
    return ok


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
