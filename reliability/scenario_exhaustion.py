"""Exports cannot starve the API; an exhausted pool still answers quickly.

    python3 reliability/scenario_exhaustion.py [exports|pool ...]    (default: both)

PostgreSQL, two parts, each with its own server, database and SUMMARY line.

exhaustion[exports] -- DB_POOL_MAX=8 (so EXPORT_MAX_CONCURRENT defaults to 2: at most two
pooled connections go to exports), EXPORT_IDLE_TIMEOUT_S=2. Eight exporting users own 40 000
notes each, seeded by SQL (about 6.8 MB of NDJSON per export: more than the kernel buffers hold,
so a client that stops reading really stalls the server's stream). For EXHAUSTION_SECONDS
(default 10):
  - 16 "stallers" (raw sockets with a 4 KiB receive buffer), two per user for six users, loop:
    GET /notes/export, read the head; on 200 read nothing more for IDLE + 3 s, then read what
    is left; on 429/503 wait 0.2 s and ask again;
  - 2 "trickle readers" (the other two users) read 32 KiB of their export every 0.5 s (never
    idle for 2 s) until the phase ends;
  - 48 connections of normal load (16 other signed-in users: GET/PATCH/POST/bulk/list and the
    cross-user and anonymous probes, no exports).
Guarantees:
  - every non-export request is answered as in the soak: 2xx (probes: their refusal 404/401),
    in particular not one 503 and no time-out: exports do not take the others' connections;
  - every export answer is 200 or 429/503 with Retry-After as problem+json; 503s happen (16
    stallers > 2 slots: the overall limit is in force);
  - every 200 export whose client stopped reading is found cut when it is read again (its
    stream ends before the last note, or the connection is reset); no trickle reader's stream
    is cut while it reads;
  - quiet, afterwards: a never-read export of one user is cut between IDLE - 0.5 s and
    IDLE + 3 s after its head arrived, measured by a second client of that user asking for an
    export every 100 ms: 429 (with Retry-After, problem+json) while the first holds the user's
    slot, 200 once it is cut;
  - then the pool's in_use returns to 0 within 5 s and every exporting user exports all 40 000
    notes at once (no export slot leaked).

exhaustion[pool] -- DB_POOL_MAX=2, DB_ACQUIRE_TIMEOUT_MS=500, no exports: 56 connections of
GET /notes/{id}, GET /notes?limit=100 and POST /notes (16 users) for EXHAUSTION_SECONDS; in the
middle another database session holds `LOCK TABLE notes IN ACCESS EXCLUSIVE MODE` for 3 s (a
slow database), so the two requests that hold the pooled connections wait in the database and
every other request finds the pool exhausted. Guarantees:
  - every response is 2xx or 503; every 503 is problem+json with Retry-After and arrives within
    the acquire timeout + 1 s; no request goes unanswered (5 s client time-out);
  - 503s do happen while the table is locked (the pool really was exhausted), and every request
    begun more than 1 s after the lock is released succeeds;
  - once the load stops, the server answers normally at once (the next 20 requests are 2xx),
    the pool's in-use count returns to 0, and every acknowledged note is stored with its owner.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time

import aiohttp

from common import (Database, Failure, Server, check_load, http, log, new_users, pool_in_use, summary,
                    wait_pool_idle)
from load import PROBLEM, Load, Rec, SetupError, tally

IDLE_S = 2
HOLD_S = IDLE_S + 3
EXPORT_ROWS = 40_000       # per exporting user
ACQUIRE_MS = 500
MARGIN_S = 1.0
LOCK_S = 3


# --- raw HTTP/1.1 exports: the client decides exactly when bytes are read -------------------

async def export_head(base: str, token: str, rcvbuf: int = 4096, timeout: float = 10):
    """GET /notes/export on a fresh socket with a small receive buffer; reads only the head.
    Returns (socket, status, headers, body bytes already read)."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, (host, int(port))), timeout)
        request = (f"GET /notes/export HTTP/1.1\r\nHost: {host}:{port}\r\n"
                   f"Authorization: Bearer {token}\r\nConnection: close\r\n\r\n")
        await loop.sock_sendall(sock, request.encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 1024), timeout)
            if not chunk:
                raise ConnectionError("closed before the response head")
            buf += chunk
    except BaseException:
        sock.close()
        raise
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return sock, status, headers, rest


async def drain(sock: socket.socket, rest: bytes, timeout: float = 30) -> tuple[bytes, bool]:
    """Read until EOF or reset; (raw chunked body, reset?)."""
    loop = asyncio.get_running_loop()
    parts = [rest]
    reset = False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), deadline - time.monotonic())
            if not chunk:
                break
            parts.append(chunk)
            if chunk.endswith(b"0\r\n\r\n") and dechunk(b"".join(parts))[1]:
                break
    except (ConnectionError, OSError):
        reset = True
    except asyncio.TimeoutError:
        pass
    finally:
        sock.close()
    return b"".join(parts), reset


def dechunk(data: bytes) -> tuple[bytes, bool]:
    """Decode a chunked body; (body, complete: the last chunk was seen)."""
    out = []
    pos = 0
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            return b"".join(out), False
        try:
            size = int(data[pos:eol].split(b";")[0], 16)
        except ValueError:
            return b"".join(out), False
        if size == 0:
            return b"".join(out), True
        start = eol + 2
        if len(data) < start + size + 2:
            out.append(data[start:start + size])
            return b"".join(out), False
        out.append(data[start:start + size])
        pos = start + size + 2


def limited_ok(status: int, headers: dict) -> bool:
    return (status in (429, 503) and "retry-after" in headers
            and headers.get("content-type", "").startswith(PROBLEM))


# --- exhaustion[exports] ---------------------------------------------------------------------

async def exports_phase(base: str, seconds: float, stall_users: list[dict], trickle_users: list[dict]):
    load = Load(base, connections=48, seconds=seconds, timeout=5.0,
                mix={"get": 40, "list": 12, "post": 25, "patch": 12, "bulk": 8, "cross": 2, "anon": 1})
    answers = []      # export answers: (who, t0, status, headers ok)
    stalls = []       # 200 exports left unread: (t_head, lines read afterwards, complete, reset)
    trickles = []     # (lines, complete, cut while reading, error)
    in_use = []

    async def staller(user, deadline):
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            try:
                sock, status, headers, rest = await export_head(base, user["token"])
            except (OSError, asyncio.TimeoutError) as e:
                answers.append(("staller", t0, None, type(e).__name__))
                await asyncio.sleep(0.2)
                continue
            answers.append(("staller", t0, status, status == 200 or limited_ok(status, headers)))
            if status != 200:
                sock.close()
                await asyncio.sleep(0.2)
                continue
            t_head = time.monotonic()
            await asyncio.sleep(HOLD_S)
            raw, reset = await drain(sock, rest)
            body, complete = dechunk(raw)
            stalls.append((t_head, body.count(b"\n"), complete, reset))

    async def trickler(session, user, deadline):
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            lines, complete, cut, error = 0, False, False, None
            try:
                async with session.get(base + "/notes/export", headers={"authorization": f"Bearer {user['token']}"},
                                       timeout=aiohttp.ClientTimeout(total=seconds + 30)) as r:
                    ok = r.status == 200 or limited_ok(r.status, {k.lower(): v for k, v in r.headers.items()})
                    answers.append(("trickler", t0, r.status, ok))
                    if r.status != 200:
                        await r.read()
                        await asyncio.sleep(0.2)
                        continue
                    while time.monotonic() < deadline:
                        chunk = await r.content.read(32768)
                        if not chunk:
                            complete = True    # read it all (not expected in the time given)
                            break
                        lines += chunk.count(b"\n")
                        await asyncio.sleep(0.5)
            except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, ConnectionError) as e:
                cut, error = True, type(e).__name__
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                error = type(e).__name__
            trickles.append((lines, complete, cut, error))
            return

    async def sampler(deadline):
        while time.monotonic() < deadline:
            value = await asyncio.to_thread(pool_in_use, base)
            if value is not None:
                in_use.append(value)
            await asyncio.sleep(0.5)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=80)) as session:
        await load.setup(session)
        deadline = time.monotonic() + seconds
        tasks = [asyncio.create_task(staller(u, deadline)) for u in stall_users for _ in range(2)]
        tasks += [asyncio.create_task(trickler(session, u, deadline)) for u in trickle_users]
        tasks.append(asyncio.create_task(sampler(deadline)))
        await load.run(session)
        await asyncio.gather(*tasks)
    return load, answers, stalls, trickles, in_use


async def cut_timing(base: str, user: dict):
    """One never-read export; a second client of the same user asks every 100 ms.
    Returns (seconds from the first export's head to the first 200 for the second client,
    answers of the second client before it, lines the first then read, complete, reset)."""
    sock, status, headers, rest = await export_head(base, user["token"])
    if status != 200:
        sock.close()
        raise Failure(f"cut timing: a lone export answered {status}")
    t_head = time.monotonic()
    polls = []
    cut_s = None
    while time.monotonic() - t_head < IDLE_S + 10:
        await asyncio.sleep(0.1)
        s2, st2, h2, _ = await export_head(base, user["token"])
        s2.close()
        if st2 == 200:
            cut_s = time.monotonic() - t_head
            break
        polls.append((st2, limited_ok(st2, h2) and st2 == 429))
    raw, reset = await drain(sock, rest)
    body, complete = dechunk(raw)
    return cut_s, polls, body.count(b"\n"), complete, reset


async def full_export(base: str, user: dict) -> tuple[int | None, int]:
    async with aiohttp.ClientSession() as session:
        async with session.get(base + "/notes/export", headers={"authorization": f"Bearer {user['token']}"},
                               timeout=aiohttp.ClientTimeout(total=60)) as r:
            lines = 0
            async for chunk in r.content.iter_any():
                lines += chunk.count(b"\n")
            return r.status, lines


def part_exports(seconds: float) -> bool:
    name = "exhaustion[exports]"
    db = Database("postgres", "exhaust_ex")
    server = Server(db.url, env={"DB_POOL_MAX": "8", "DB_POOL_MIN": "0",
                                 "EXPORT_IDLE_TIMEOUT_S": str(IDLE_S)}, name="exhaustion-exports")
    ok = False
    try:
        base = server.start().wait_ready()
        exporters = new_users(base, 8, "exporter")
        db.seed_notes(EXPORT_ROWS * len(exporters), [u["id"] for u in exporters])
        stall_users, trickle_users = exporters[:6], exporters[6:]
        log(f"{name}: {seconds:.0f} s, 16 stalled + 2 trickling exports + 48 clients, pool of 8, "
            f"EXPORT_IDLE_TIMEOUT_S={IDLE_S}")
        load, answers, stalls, trickles, in_use = asyncio.run(
            exports_phase(base, seconds, stall_users, trickle_users))
        t = tally(load.records)
        failures = []
        if t["bad"] or t["errors"]:
            failures.append(f"non-export requests: {t['statuses']} {t['error_kinds']} e.g. {t['bad_examples']}")
        r503_other = sum(1 for r in load.records if r.status == 503)
        bad_answers = [a for a in answers if a[3] is not True]
        if bad_answers:
            failures.append(f"{len(bad_answers)} export answers neither 200 nor a well-formed 429/503: "
                            f"{bad_answers[:5]}")
        exp_status = {}
        for a in answers:
            exp_status[a[2]] = exp_status.get(a[2], 0) + 1
        if not exp_status.get(503):
            failures.append(f"no export was refused 503 with 16 stallers and 2 slots: {exp_status}")
        not_cut = [s for s in stalls if s[2] or (s[1] >= EXPORT_ROWS and not s[3])]
        if not_cut:
            failures.append(f"{len(not_cut)} unread exports were not cut after {HOLD_S} s: {not_cut[:3]}")
        trickle_cut = [tr for tr in trickles if tr[2] or tr[3]]
        if trickle_cut:
            failures.append(f"trickle readers cut or failed while reading: {trickle_cut}")

        # quiet: how long a stalled export keeps its slot
        cut_s, polls, cut_lines, cut_complete, cut_reset = asyncio.run(cut_timing(base, stall_users[0]))
        if cut_s is None:
            failures.append(f"a never-read export was not cut within {IDLE_S + 10} s")
        elif not IDLE_S - 0.5 <= cut_s <= IDLE_S + 3:
            failures.append(f"a never-read export was cut {cut_s:.2f} s after its head "
                            f"(EXPORT_IDLE_TIMEOUT_S={IDLE_S})")
        bad_polls = [p for p in polls if not p[1]]
        if bad_polls or not polls:
            failures.append(f"a second export of the same user while the first is held: {polls[:5]} "
                            f"(want 429 with Retry-After, problem+json)")
        if cut_complete or cut_lines >= EXPORT_ROWS:
            failures.append(f"the timed export was complete after its cut ({cut_lines} lines)")

        idle, in_use_after, waited = wait_pool_idle(base, 5)
        if not idle:
            failures.append(f"pool in_use is {in_use_after} after {waited:.1f} s")
        fulls = [asyncio.run(full_export(base, u)) for u in exporters]
        short = [f for f in fulls if f != (200, EXPORT_ROWS)]
        if short:
            failures.append(f"exports after the load (status, lines): {fulls}")
        if server.proc.poll() is not None:
            failures.append(f"server exited with {server.proc.returncode}")
        for f in failures:
            log(f"{name} FAIL: {f}")
        ok = not failures
        summary(name, ok, requests=t["requests"], non_export_bad=t["bad"], non_export_503=r503_other,
                errors=t["errors"], probes=t["probes"],
                export_answers=str(dict(sorted(exp_status.items(), key=lambda kv: str(kv[0])))).replace(" ", ""),
                stalled_200=len(stalls), stalled_cut=len(stalls) - len(not_cut),
                trickle_lines=",".join(str(tr[0]) for tr in trickles),
                cut_s="-" if cut_s is None else f"{cut_s:.2f}", polls_429=len(polls) - len(bad_polls),
                pool_in_use_max=max(in_use, default="-"), pool_in_use_after=in_use_after,
                full_exports_after=sum(1 for f in fulls if f == (200, EXPORT_ROWS)))
    except (Failure, SetupError) as e:
        log(f"{name} FAIL: {e}")
    finally:
        server.stop()
        db.close()
    return ok


# --- exhaustion[pool] ------------------------------------------------------------------------

async def pool_phase(base: str, db: Database, seconds: float):
    """The load, with notes locked by another session for LOCK_S in the middle: every request
    that reaches the notes table then waits in the database while holding its pooled
    connection, so both connections are taken and the others must get a quick 503."""
    load = Load(base, connections=56, seconds=3600, timeout=5.0, mix={"get": 50, "list": 25, "post": 25})
    marks = {}

    async def control():
        await load.ready.wait()
        await asyncio.sleep(max(1.0, (seconds - LOCK_S) / 2))
        marks["lock"] = time.monotonic()
        await asyncio.to_thread(db.sql, None, f"BEGIN; LOCK TABLE notes IN ACCESS EXCLUSIVE MODE; "
                                              f"SELECT pg_sleep({LOCK_S}); COMMIT")
        marks["unlock"] = time.monotonic()
        await asyncio.sleep(max(1.0, (seconds - LOCK_S) / 2))
        load.stop()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=80)) as session:
        ctl = asyncio.create_task(control())
        try:
            await load.run(session)
        except BaseException:
            ctl.cancel()
            raise
        finally:
            load.stop()
            await asyncio.gather(ctl, return_exceptions=True)
        if ctl.exception():
            raise ctl.exception()
    return load, marks


def part_pool(seconds: float) -> bool:
    name = "exhaustion[pool]"
    db = Database("postgres", "exhaust_po")
    server = Server(db.url, env={"DB_POOL_MAX": "2", "DB_POOL_MIN": "0",
                                 "DB_ACQUIRE_TIMEOUT_MS": str(ACQUIRE_MS)}, name="exhaustion-pool")
    ok = False
    try:
        base = server.start().wait_ready()
        log(f"{name}: {seconds:.0f} s, 56 clients, pool of 2, notes locked for {LOCK_S} s in the middle")
        load, m = asyncio.run(pool_phase(base, db, seconds))
        recs = load.records
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
        locked = [r for r in recs if m["lock"] + 0.5 <= r.t0 and r.t1 <= m["unlock"]]
        if not any(r.status == 503 for r in locked):
            failures.append("no 503 while the notes were locked: the pool was never exhausted")
        no_ra = [r for r in r503 if not r.retry_after]
        if no_ra:
            failures.append(f"{len(no_ra)} 503s without Retry-After")
        not_problem = [r for r in r503 if not r.ctype.startswith(PROBLEM)]
        if not_problem:
            failures.append(f"{len(not_problem)} 503s are not problem+json")
        max503 = max((r.t1 - r.t0 for r in r503), default=0.0)
        if max503 > ACQUIRE_MS / 1000 + MARGIN_S:
            failures.append(f"slowest 503 took {max503:.2f} s (> {ACQUIRE_MS} ms + {MARGIN_S} s)")
        late = [r for r in recs if r.t0 >= m["unlock"] + 1 and not r.ok]
        if late:
            failures.append(f"{len(late)} requests failed more than 1 s after the lock was released")
        # at once afterwards: 20 requests in a row, all 2xx
        user = load.users[0]
        mine = [i for i, owner in load.owners.items() if owner == user["id"]][:10]
        t_after = time.monotonic()
        after = [http("GET", f"{base}/notes/{i}", token=user["token"], timeout=5)[0] for i in mine]
        after += [http("POST", f"{base}/notes", {"text": f"after {i}"}, token=user["token"], timeout=5)[0]
                  for i in range(20 - len(mine))]
        after_s = time.monotonic() - t_after
        if any(not 200 <= s < 300 for s in after):
            failures.append(f"after the load: {after}")
        idle, in_use, waited = wait_pool_idle(base, 5)
        if not idle:
            failures.append(f"pool in_use is {in_use} after {waited:.1f} s")
        checked, problems = check_load(db, load)
        if problems:
            failures.append(f"{len(problems)} acknowledged writes are wrong: {problems[:5]}")
        for f in failures:
            log(f"{name} FAIL: {f}")
        ok = not failures
        summary(name, ok, requests=t["requests"], ok_2xx=sum(1 for r in recs if r.status and r.status < 300),
                r503=len(r503), r503_while_locked=sum(1 for r in locked if r.status == 503),
                r503_with_retry_after=len(r503) - len(no_ra), max_503_latency_s=f"{max503:.2f}",
                max_2xx_latency_s=f"{max((r.t1 - r.t0 for r in recs if r.ok), default=0.0):.2f}",
                no_response=len(errors), locked_s=f"{m['unlock'] - m['lock']:.1f}",
                after_20_requests_s=f"{after_s:.2f}", pool_in_use_after=in_use,
                rows_checked=checked, missing=len(problems))
    except (Failure, SetupError) as e:
        log(f"{name} FAIL: {e}")
    finally:
        server.stop()
        db.close()
    return ok


def main(parts: list[str]) -> bool:
    seconds = float(os.environ.get("EXHAUSTION_SECONDS", "10"))
    ok = True
    for part in parts or ["exports", "pool"]:
        ok = {"exports": part_exports, "pool": part_pool}[part](seconds) and ok
    return ok


if __name__ == "__main__":
    sys.exit(0 if main(sys.argv[1:]) else 1)
