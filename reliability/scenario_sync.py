"""Staying in sync under faults: SYNC_USERS x SYNC_STREAMS_PER_USER event streams over two `api`
instances behind nginx, while the notes change, one instance is stopped and PostgreSQL restarts.

    python3 reliability/scenario_sync.py            (about 1.5 minutes)

Setup: one PostgreSQL database, instances A and B (each LISTENs for the log's notifications),
nginx in front (round robin, proxy_buffering off; the scenario_instances configuration).
SYNC_USERS (50) users, each with SYNC_STREAMS_PER_USER (4) streams through nginx, so 200
streams spread over both instances, all open before the first write. A stream client is what
the contract asks of one: it records every event, and after any end of its stream (a clean
close, a cut, a refusal) it connects again through nginx with `Last-Event-ID`, the last
number it saw.
  1. soak: SYNC_SECONDS (30) of writes through nginx at SYNC_RATE (150) a second, spread over the
     users, one at a time per user: creates (POST /notes with an Idempotency-Key, sent again
     with the same key after a 502/503 or a connection error), edits, marks done, deletes.
     Halfway, instance A gets SIGTERM: it must exit 0 within SYNC_EXIT_S (10) s, since its
     streams do not hold the shutdown; their clients reconnect through nginx (to B).
  2. PostgreSQL restart: the cluster restarts (pg_ctlcluster restart) with the streams open on
     B and the writers going on (their writes refused meanwhile are retried); SYNC_AFTER_S (5)
     s of writes once it is back.
Then every stream must catch up within SYNC_CATCH_UP_S (10) s, and, for every user, each of
their streams has seen, de-duplicated by sequence number, exactly the user's change log in the
database (numbers 1..last, each with the note and the kind the database has for it), in
increasing order within each connection. Every acknowledged create is in the log. Reported:
writes, events, reconnections, duplicates before de-duplication (expected 0: a resume starts
after `Last-Event-ID`), A's exit time, the catch-up time.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import random
import sys
import time
import uuid

import aiohttp

from common import Database, Failure, Server, log, new_users, pg_ctl, pg_ensure_up, summary
from scenario_instances import Nginx

USERS = int(os.environ.get("SYNC_USERS", "50"))
PER_USER = int(os.environ.get("SYNC_STREAMS_PER_USER", "4"))
SECONDS = float(os.environ.get("SYNC_SECONDS", "30"))
RATE = float(os.environ.get("SYNC_RATE", "150"))
EXIT_S = float(os.environ.get("SYNC_EXIT_S", "10"))
AFTER_S = float(os.environ.get("SYNC_AFTER_S", "5"))
CATCH_UP_S = float(os.environ.get("SYNC_CATCH_UP_S", "10"))
WRITERS = 16
NO_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_read=None, sock_connect=5)
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=30)


class Stream:
    """One client of `GET /notes/events`, reconnecting with `Last-Event-ID` until stopped."""

    def __init__(self, base: str, user: dict):
        self.base = base
        self.user = user
        self.seen: dict[int, tuple[int, bool]] = {}  # seq -> (note id, deleted)
        self.last: int | None = None
        self.connections = 0
        self.refusals: dict[int, int] = {}  # status -> count
        self.duplicates = 0
        self.out_of_order: list[str] = []
        self.mismatches: list[str] = []
        self.open = asyncio.Event()
        self.stopped = False

    async def run(self, session: aiohttp.ClientSession) -> None:
        while not self.stopped:
            headers = {"authorization": f"Bearer {self.user['token']}"}
            if self.last is not None:
                headers["last-event-id"] = str(self.last)
            try:
                async with session.get(f"{self.base}/notes/events", headers=headers, timeout=NO_TIMEOUT) as r:
                    if r.status != 200:
                        self.refusals[r.status] = self.refusals.get(r.status, 0) + 1
                        await r.read()
                        await asyncio.sleep(min(2.0, float(r.headers.get("retry-after", "1"))))
                        continue
                    self.connections += 1
                    await self.read(r)
            except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError):
                pass  # cut: connect again
            if not self.stopped:
                await asyncio.sleep(random.uniform(0.05, 0.3))

    async def read(self, response: aiohttp.ClientResponse) -> None:
        buffer = b""
        previous = self.last
        async for chunk in response.content.iter_any():
            buffer += chunk
            while b"\n\n" in buffer:
                frame, buffer = buffer.split(b"\n\n", 1)
                if frame.startswith(b": connected"):
                    self.open.set()
                seq = data = None
                for line in frame.split(b"\n"):
                    if line.startswith(b"id: "):
                        seq = int(line[4:])
                    elif line.startswith(b"data: "):
                        data = line[6:]
                if seq is None:
                    continue
                change = json.loads(data)
                if change.get("seq") != seq:
                    self.mismatches.append(f"event id {seq} carries seq {change.get('seq')}")
                if previous is not None and seq <= previous:
                    self.out_of_order.append(f"{seq} after {previous}")
                previous = seq
                kind = (change["id"], bool(change["deleted"]))
                if seq in self.seen:
                    self.duplicates += 1
                    if self.seen[seq] != kind:
                        self.mismatches.append(f"seq {seq} seen as {self.seen[seq]} and as {kind}")
                self.seen[seq] = kind
                self.last = seq if self.last is None else max(self.last, seq)


class Writer:
    """Writes for its users one at a time, at its share of SYNC_RATE; retries what the faults
    refuse. Keeps each user's notes and every acknowledged create."""

    def __init__(self, base: str, users: list[dict], rate: float):
        self.base = base
        self.users = users
        self.interval = 1.0 / rate
        self.notes: dict[int, list[int]] = {u["id"]: [] for u in users}
        self.created: dict[int, set[int]] = {u["id"]: set() for u in users}
        self.writes = 0
        self.retries = 0
        self.unexpected: list[str] = []

    async def request(self, session, method, path, token, body=None, key=None) -> tuple[int, dict | None]:
        headers = {"authorization": f"Bearer {token}"}
        if key:
            headers["idempotency-key"] = key
        for _ in range(200):
            try:
                async with session.request(method, f"{self.base}{path}", json=body, headers=headers,
                                           timeout=REQUEST_TIMEOUT) as r:
                    raw = await r.read()
                    if r.status in (502, 503, 504):
                        self.retries += 1
                        await asyncio.sleep(min(1.0, float(r.headers.get("retry-after", "0.2") or 0.2)))
                        continue
                    return r.status, (json.loads(raw) if raw and r.content_type.endswith("json") else None)
            except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError):
                self.retries += 1
                await asyncio.sleep(0.2)
        raise Failure(f"{method} {path} kept failing")

    async def one(self, session, user: dict) -> None:
        notes = self.notes[user["id"]]
        pick = random.random()
        token = user["token"]
        if notes and pick < 0.25:
            note = random.choice(notes)
            status, _ = await self.request(session, "PATCH", f"/notes/{note}", token, {"text": f"edited {uuid.uuid4()}"})
            if status != 200:
                self.unexpected.append(f"PATCH /notes/{note}: {status}")
        elif notes and pick < 0.4:
            note = random.choice(notes)
            status, _ = await self.request(session, "PATCH", f"/notes/{note}", token, {"completed": True})
            if status != 200:
                self.unexpected.append(f"PATCH /notes/{note} (done): {status}")
        elif notes and pick < 0.55:
            note = notes.pop(random.randrange(len(notes)))
            status, _ = await self.request(session, "DELETE", f"/notes/{note}", token)
            # 404: a retry of a delete that was done, the answer lost on the way.
            if status not in (204, 404):
                self.unexpected.append(f"DELETE /notes/{note}: {status}")
        else:
            status, body = await self.request(session, "POST", "/notes", token, {"text": f"note {uuid.uuid4()}"},
                                              key=str(uuid.uuid4()))
            if status != 201:
                self.unexpected.append(f"POST /notes: {status}")
                return
            notes.append(body["id"])
            self.created[user["id"]].add(body["id"])
        self.writes += 1

    async def run(self, session, until: asyncio.Event) -> None:
        next_at = time.monotonic()
        i = 0
        while not until.is_set():
            await self.one(session, self.users[i % len(self.users)])
            i += 1
            next_at += self.interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))


def change_log(db: Database) -> dict[int, dict[int, tuple[int, bool]]]:
    """The database's log: user -> seq -> (note id, deleted)."""
    out = db.sql(None, "COPY (SELECT user_id, seq, note_id, deleted FROM note_changes) TO STDOUT WITH (FORMAT csv)")
    log_ = {}
    for row in csv.reader(io.StringIO(out)):
        if row:
            log_.setdefault(int(row[0]), {})[int(row[1])] = (int(row[2]), row[3] == "t")
    return log_


async def scenario(db: Database, base: str, a: Server, users: list[dict]) -> tuple[bool, dict]:
    figures: dict = {}
    problems: list[str] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        streams = [Stream(base, u) for u in users for _ in range(PER_USER)]
        stream_tasks = [asyncio.create_task(s.run(session)) for s in streams]
        try:
            await asyncio.wait_for(asyncio.gather(*(s.open.wait() for s in streams)), 30)
        except asyncio.TimeoutError:
            raise Failure(f"only {sum(s.open.is_set() for s in streams)} of {len(streams)} streams opened in 30 s")
        log(f"{len(streams)} streams open")

        writers = [Writer(base, users[w::WRITERS], RATE / WRITERS) for w in range(WRITERS)]
        stop_writing = asyncio.Event()
        writer_tasks = [asyncio.create_task(w.run(session, stop_writing)) for w in writers]

        # 1. the soak, A stopped halfway
        await asyncio.sleep(SECONDS / 2)
        log("SIGTERM to instance A")
        sent = time.monotonic()
        a.signal()
        try:
            code = await asyncio.to_thread(a.proc.wait, EXIT_S)
        except Exception:  # subprocess.TimeoutExpired
            code = None
        exit_s = time.monotonic() - sent
        figures["a_exit_s"] = f"{exit_s:.2f}"
        if code != 0:
            problems.append(f"instance A did not exit 0 within {EXIT_S:.0f} s of SIGTERM (code {code})")
        await asyncio.sleep(SECONDS / 2)
        soak_writes = sum(w.writes for w in writers)
        figures["soak_writes"] = soak_writes

        # 2. PostgreSQL restarts under the streams and the writers
        log("restarting PostgreSQL")
        restart_at = time.monotonic()
        await asyncio.to_thread(pg_ctl, "restart")
        await asyncio.to_thread(pg_ensure_up)
        figures["pg_restart_s"] = f"{time.monotonic() - restart_at:.1f}"
        await asyncio.sleep(AFTER_S)
        stop_writing.set()
        await asyncio.gather(*writer_tasks)
        figures["writes"] = sum(w.writes for w in writers)
        figures["write_retries"] = sum(w.retries for w in writers)
        for w in writers:
            problems.extend(w.unexpected[:5])

        # Catch-up: every stream reaches its user's last change.
        expected = await asyncio.to_thread(change_log, db)
        last = {u["id"]: max(expected.get(u["id"], {0: None})) for u in users}
        caught_from = time.monotonic()
        while time.monotonic() - caught_from < CATCH_UP_S:
            if all((s.last or 0) >= last[s.user["id"]] for s in streams):
                break
            await asyncio.sleep(0.1)
        figures["catch_up_s"] = f"{time.monotonic() - caught_from:.2f}"
        for s in streams:
            s.stopped = True
        for t in stream_tasks:
            t.cancel()
        await asyncio.gather(*stream_tasks, return_exceptions=True)

    # The checks.
    missing = extra = 0
    for s in streams:
        mine = expected.get(s.user["id"], {})
        gone = [seq for seq in mine if seq not in s.seen]
        unknown = [seq for seq in s.seen if seq not in mine]
        wrong = [seq for seq in mine if seq in s.seen and s.seen[seq] != mine[seq]]
        missing += len(gone)
        extra += len(unknown)
        if gone:
            problems.append(f"user {s.user['id']}: a stream missed {len(gone)} changes, e.g. {sorted(gone)[:5]}")
        if unknown:
            problems.append(f"user {s.user['id']}: a stream saw changes not in the log: {sorted(unknown)[:5]}")
        if wrong:
            problems.append(f"user {s.user['id']}: a stream saw other notes/kinds for {sorted(wrong)[:5]}")
        problems.extend(s.out_of_order[:3])
        problems.extend(s.mismatches[:3])
    for user_id, seqs in expected.items():
        if sorted(seqs) != list(range(1, len(seqs) + 1)):
            problems.append(f"user {user_id}: the log's numbers are not 1..{len(seqs)}")
    logged = {(u, note) for u, seqs in expected.items() for note, deleted in seqs.values() if not deleted}
    for w in writers:
        for user_id, created in w.created.items():
            lost = [n for n in created if (user_id, n) not in logged]
            if lost:
                problems.append(f"user {user_id}: acknowledged creates not in the log: {lost[:5]}")
    refusals: dict[int, int] = {}
    for s in streams:
        for status, n in s.refusals.items():
            refusals[status] = refusals.get(status, 0) + n
    figures.update({
        "streams": len(streams),
        "changes": sum(len(v) for v in expected.values()),
        "events_kept": sum(len(s.seen) for s in streams),
        "missing": missing,
        "unknown": extra,
        "duplicates_before_dedup": sum(s.duplicates for s in streams),
        "connections": sum(s.connections for s in streams),
        "refused": ",".join(f"{k}x{v}" for k, v in sorted(refusals.items())) or "0",
    })
    for p in problems[:20]:
        log(f"  problem: {p}")
    return not problems, figures


def main() -> bool:
    db = Database("postgres", "sync")
    env = {"DB_ACQUIRE_TIMEOUT_MS": "5000", "SHUTDOWN_TIMEOUT_S": "30"}
    a = Server(db.url, env=env, name="sync-a")
    b = Server(db.url, env=env, name="sync-b")
    nginx = None
    figures: dict = {}
    ok = False
    try:
        a.start().wait_ready(60)
        b.start().wait_ready(60)
        nginx = Nginx(a.address, b.address)
        base = nginx.start()
        users = new_users(base, USERS, "sync")
        log(f"{USERS} users signed up through nginx")
        ok, figures = asyncio.run(scenario(db, base, a, users))
    except Failure as failure:
        log(f"FAIL: {failure}")
        ok = False
    finally:
        if nginx:
            nginx.stop()
        a.stop()
        b.stop()
        pg_ensure_up()
        db.close()
    summary("sync", ok, **figures)
    return ok


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
