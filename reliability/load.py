"""Asyncio + aiohttp load generator with a ledger of acknowledged writes, per owner.

    python3 reliability/load.py http://127.0.0.1:8000 [--seconds 30] [--connections 64] [--users 16]

Before the load, USERS accounts are signed up (POST /users) and signed in (POST /sessions); a
503 + Retry-After from the bounded password hashing is waited out. Worker w acts as user
w % USERS and sends that user's `Authorization: Bearer <token>` on every notes request. Each
worker loops over a weighted mix of operations:

    get     GET /notes/{id}            (a note of its user)
    list    GET /notes?limit=100&after=N   every item must be its user's
    post    POST /notes                 201 -> ledger[id] = {text}, owners[id] = user
    patch   PATCH /notes/{id}           (a note this worker created; 200 -> ledger[id] = {text})
    bulk    POST /notes/bulk, 3 items   201 -> ledger for each
    export  GET /notes/export           the whole NDJSON stream is read; every line must be
                                        its user's. 429 (one export per user) and 503 (all
                                        export slots taken) are legitimate answers when they
                                        carry Retry-After and are problem+json ("limited")
    cross   GET, PATCH or DELETE of ANOTHER user's note with one's own token: must be 404
                                        problem+json; the PATCH text is never acceptable in
                                        the database (`forbidden`), the note must stay intact
    anon    a notes request with no token, a malformed or an unknown one: must be 401
                                        problem+json with `WWW-Authenticate: Bearer`
    keyed   POST /notes with an Idempotency-Key, sent twice at once and then up to twice
            more (not in the default mix; the soak adds it): every answer is the note
                                        (201; the repeats `Idempotent-Replayed: true`) or
                                        409 + Retry-After while the first is in flight
                                        (retried until answered); all name one note, and
                                        the database must hold that text exactly once

With `cookies=True` (the `replica` scenario) every user has a cookie jar of its own that keeps
the cookies the server sets (the read replica's written-position cookie), as an ordinary HTTP
client does, and half of the `get`s read the user's newest note (read-your-writes). Give it one
connection per user (`n_users == connections`): a user is then one client making one request at
a time. Without it (the default) no cookie is kept: aiohttp's default jar ignores cookies from an
IP address such as 127.0.0.1.

Every request is recorded as a `Rec` (start, end, op, status, error kind, content type,
Retry-After present, x-request-id, `expected`: the status is the right refusal for a probe or
a well-formed export limit). A PATCH without a clear answer (no response, or a 5xx) leaves both
the old and the new text acceptable for that note. A POST without an answer may or may not
have created a note; such notes are not in the ledger (only acknowledged writes are checked).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import secrets
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import aiohttp

DEFAULT_MIX = {"get": 37, "list": 12, "post": 25, "patch": 12, "bulk": 8, "export": 3, "cross": 2, "anon": 1}
PASSWORD = "reliability horse battery"
PROBLEM = "application/problem+json"
USER_ID_RE = re.compile(rb'"user_id":\s*(\d+)')


def is_probe(op: str) -> bool:
    """Requests that must be refused (cross-user, anonymous)."""
    return op.startswith("cross") or op.startswith("anon")


@dataclass
class Rec:
    t0: float
    t1: float
    op: str
    status: int | None      # None: no HTTP response
    error: str | None       # exception class name, 'timeout', 'bad-body' or 'foreign-note'
    ctype: str = ""
    retry_after: bool = False
    rid: str = ""           # the x-request-id sent
    expected: bool = False  # the right refusal of a probe, or a well-formed export 429/503

    @property
    def ok(self) -> bool:
        """Answered as the API documents: 2xx (probes: their refusal), or an export limited."""
        if self.status is None or self.error:
            return False
        if is_probe(self.op):
            return self.expected
        return 200 <= self.status < 300 or self.expected

    @property
    def limited(self) -> bool:
        """An export refused by the export limits, with Retry-After, as problem+json."""
        return self.op == "export" and self.expected


class SetupError(Exception):
    """The accounts for the load could not be made."""


@dataclass
class Load:
    base: str
    connections: int = 64
    seconds: float = 30
    mix: dict = field(default_factory=lambda: dict(DEFAULT_MIX))
    timeout: float = 5.0            # client timeout per request (export: export_timeout)
    export_timeout: float = 60.0
    stop_on_refused: bool = False   # a worker stops at its first "connection refused"
    users: list | None = None       # [{"id", "email", "token"}]; None: USERS made by setup
    n_users: int = 16
    bulk_size: int = 3
    list_limit: int = 100
    records: list = field(default_factory=list)
    ledger: dict = field(default_factory=dict)     # id -> set of acceptable texts
    owners: dict = field(default_factory=dict)     # id -> owner's user id
    forbidden: set = field(default_factory=set)    # texts only sent in requests that must fail
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    export_lines: list = field(default_factory=list)
    keyed: dict = field(default_factory=dict)      # text of a keyed POST -> the note's id
    keyed_split: list = field(default_factory=list)  # keys whose answers named several notes
    cookies: bool = False           # a cookie jar per user (see the module's docstring)
    fresh_gets: int = 0             # `get`s of the user's newest note (cookies=True)

    def __post_init__(self):
        self._ops, self._weights = zip(*self.mix.items())
        self._ids: dict[int, list[int]] = {}     # user index -> ids of its notes
        self._all: list[tuple[int, int]] = []    # (note id, user index)
        self._stop = asyncio.Event()
        self.ready = asyncio.Event()             # set once the accounts exist and seeds are in
        self._counter = 0
        self.t_ready: float | None = None        # when the load proper began
        self._sessions: dict[int, aiohttp.ClientSession] = {}   # user index -> its own (cookies)

    def _session_of(self, session, uidx: int):
        """The session user UIDX's requests go through: its own with `cookies`, else SESSION."""
        if not self.cookies:
            return session
        if uidx not in self._sessions:
            self._sessions[uidx] = aiohttp.ClientSession(
                connector=session.connector, connector_owner=False,
                cookie_jar=aiohttp.CookieJar(unsafe=True))    # unsafe: keeps 127.0.0.1's cookies
        return self._sessions[uidx]

    def stop(self) -> None:
        self._stop.set()

    def _text(self, worker: int, kind: str = "n") -> str:
        self._counter += 1
        return f"rel {self.run_id} w{worker} {kind}{self._counter}"

    # --- accounts --------------------------------------------------------------------------

    async def _call(self, session, method, path, body, want, deadline):
        """A setup request; 503 + Retry-After (hashing or pool busy) is waited out."""
        while True:
            try:
                async with session.request(method, self.base + path, json=body,
                                           timeout=aiohttp.ClientTimeout(total=30)) as r:
                    raw = await r.read()
                    if r.status == want:
                        return json.loads(raw)
                    if r.status == 503 and "retry-after" in r.headers and time.monotonic() < deadline:
                        await asyncio.sleep(min(1.0, float(r.headers.get("retry-after") or 1)))
                        continue
                    raise SetupError(f"{method} {path}: {r.status} {raw[:200]!r}")
            except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                if time.monotonic() >= deadline:
                    raise SetupError(f"{method} {path}: {type(e).__name__}") from e
                await asyncio.sleep(0.5)

    async def setup(self, session) -> None:
        """Sign up and sign in the load's users (four at a time: hashing is bounded)."""
        if self.users is None:
            deadline = time.monotonic() + 60
            sem = asyncio.Semaphore(4)

            async def make(i):
                async with sem:
                    email = f"rel-{self.run_id}-{os.getpid()}-{i}@example.com"
                    user = await self._call(session, "POST", "/users",
                                            {"email": email, "password": PASSWORD, "name": f"load {i}"},
                                            201, deadline)
                    sess = await self._call(session, "POST", "/sessions",
                                            {"email": email, "password": PASSWORD}, 201, deadline)
                    return {"id": user["id"], "email": email, "password": PASSWORD, "token": sess["token"]}

            self.users = list(await asyncio.gather(*(make(i) for i in range(max(1, self.n_users)))))
        self.n_users = len(self.users)
        for u in range(self.n_users):
            self._ids.setdefault(u, [])

    # --- the load --------------------------------------------------------------------------

    async def run(self, session: aiohttp.ClientSession | None = None) -> "Load":
        own = session is None
        if own:
            conn = aiohttp.TCPConnector(limit=self.connections, force_close=False)
            session = aiohttp.ClientSession(connector=conn)
        try:
            await self.setup(session)
            # a few notes per user first, so reads (and cross-user probes) have targets
            await asyncio.gather(*(self._request(session, "bulk", -1 - u, [], seed=True)
                                   for u in range(self.n_users)))
            self.ready.set()
            self.t_ready = time.monotonic()
            deadline = self.t_ready + self.seconds
            workers = [asyncio.create_task(self._worker(session, w, deadline))
                       for w in range(self.connections)]
            await asyncio.gather(*workers)
        finally:
            for own_session in self._sessions.values():
                await own_session.close()
            self._sessions.clear()
            if own:
                await session.close()
        return self

    async def _keyed(self, session, worker: int, rnd) -> None:
        """The `keyed` operation (see the module's docstring)."""
        uidx = self.user_of(worker)
        user = self.users[uidx]
        session = self._session_of(session, uidx)
        key = uuid.uuid4().hex
        text = self._text(worker, "k")
        answers = list(await asyncio.gather(_keyed_send(self, session, user, key, text),
                                            _keyed_send(self, session, user, key, text)))
        for _ in range(rnd.randint(0, 2)):
            answers.append(await _keyed_send(self, session, user, key, text))
        deadline = time.monotonic() + 10
        while not any(status == 201 for status, _ in answers) and time.monotonic() < deadline:
            await asyncio.sleep(1.0)      # the 409's Retry-After
            answers.append(await _keyed_send(self, session, user, key, text))
        ids = {note["id"] for status, note in answers if status == 201 and note}
        if len(ids) > 1:
            self.keyed_split.append((key, sorted(ids)))
        for note_id in ids:
            self.ledger[note_id] = {text}
            self.owners[note_id] = user["id"]
            self._ids[uidx].append(note_id)
            self._all.append((note_id, uidx))
            self.keyed[text] = note_id

    def user_of(self, worker: int) -> int:
        """The user index a worker acts as (seeding uses -1 - user index)."""
        return -1 - worker if worker < 0 else worker % self.n_users

    async def _worker(self, session, worker: int, deadline: float) -> None:
        mine: list[int] = []
        rnd = random.Random(worker * 7919 + hash(self.run_id))
        while time.monotonic() < deadline and not self._stop.is_set():
            op = rnd.choices(self._ops, self._weights)[0]
            if op == "patch" and not mine:
                op = "post"
            if op == "keyed":
                await self._keyed(session, worker, rnd)
                continue
            rec = await self._request(session, op, worker, mine, rnd=rnd)
            if self.stop_on_refused and rec.error == "ClientConnectorError":
                return

    async def _request(self, session, op, worker, mine, rnd=random, seed=False) -> Rec:
        t0 = time.monotonic()
        status = None
        error = None
        ctype = ""
        retry_after = False
        expected = False
        patched = None
        uidx = self.user_of(worker)
        user = self.users[uidx]
        session = self._session_of(session, uidx)
        own_ids = self._ids[uidx]
        timeout = aiohttp.ClientTimeout(total=self.export_timeout if op == "export" else self.timeout)
        self._counter += 1
        rid = f"rel-{self.run_id}-{self._counter}"
        hdr = {"x-request-id": rid, "authorization": f"Bearer {user['token']}"}
        if op == "get" and not own_ids:
            op = "post"
        if op == "cross":
            # a note of another user (a few random tries; the load never deletes notes)
            victim = None
            for _ in range(5 if self._all else 0):
                note_id, owner = rnd.choice(self._all)
                if owner != uidx:
                    victim = note_id
                    break
            if victim is not None:
                op = rnd.choice(["cross-get", "cross-patch", "cross-delete"])
            else:
                op = "get" if own_ids else "post"
        if op == "anon":
            op = rnd.choice(["anon-none", "anon-unknown", "anon-malformed", "anon-post"])
            if op == "anon-none":
                del hdr["authorization"]
            elif op == "anon-unknown":
                hdr["authorization"] = f"Bearer {secrets.token_hex(32)}"
            elif op == "anon-malformed":
                hdr["authorization"] = rnd.choice(["Bearer", "Basic cmVsOnJlbA==", user["token"],
                                                   f"Bearer {user['token']} extra"])
            elif rnd.random() < 0.5:      # anon-post: no token, or an unknown one
                del hdr["authorization"]
            else:
                hdr["authorization"] = f"Bearer {secrets.token_urlsafe(24)}"
        try:
            if op == "get":
                if self.cookies and rnd.random() < 0.5:
                    note_id = own_ids[-1]             # its newest: read-your-writes
                    self.fresh_gets += 1
                else:
                    note_id = rnd.choice(own_ids)
                req = session.get(f"{self.base}/notes/{note_id}", headers=hdr, timeout=timeout)
            elif op == "list":
                after = rnd.choice(own_ids) if own_ids and rnd.random() < 0.5 else 0
                req = session.get(f"{self.base}/notes?limit={self.list_limit}&after={after}",
                                  headers=hdr, timeout=timeout)
            elif op == "post":
                text = self._text(worker)
                req = session.post(f"{self.base}/notes", headers=hdr, json={"text": text}, timeout=timeout)
            elif op == "patch":
                note_id = rnd.choice(mine)
                patched = (note_id, self._text(worker))
                req = session.patch(f"{self.base}/notes/{note_id}", headers=hdr,
                                    json={"text": patched[1], "completed": rnd.random() < 0.5},
                                    timeout=timeout)
            elif op == "bulk":
                items = [{"text": self._text(worker)} for _ in range(5 if seed else self.bulk_size)]
                req = session.post(f"{self.base}/notes/bulk", headers=hdr, json=items, timeout=timeout)
            elif op == "export":
                req = session.get(f"{self.base}/notes/export", headers=hdr, timeout=timeout)
            elif op == "cross-get":
                req = session.get(f"{self.base}/notes/{victim}", headers=hdr, timeout=timeout)
            elif op == "cross-patch":
                text = self._text(worker, "x")
                self.forbidden.add(text)
                req = session.patch(f"{self.base}/notes/{victim}", headers=hdr,
                                    json={"text": text, "completed": True}, timeout=timeout)
            elif op == "cross-delete":
                req = session.delete(f"{self.base}/notes/{victim}", headers=hdr, timeout=timeout)
            elif op in ("anon-none", "anon-unknown", "anon-malformed"):
                target = rnd.choice(own_ids) if own_ids else 1
                method, path = rnd.choice([("GET", f"/notes/{target}"), ("GET", "/notes?limit=10"),
                                           ("DELETE", f"/notes/{target}"), ("GET", "/notes/export")])
                req = session.request(method, self.base + path, headers=hdr, timeout=timeout)
            elif op == "anon-post":
                text = self._text(worker, "anon")
                self.forbidden.add(text)
                req = session.post(f"{self.base}/notes", headers=hdr, json={"text": text}, timeout=timeout)
            else:
                raise ValueError(op)
            async with req as resp:
                status = resp.status
                ctype = resp.headers.get("content-type", "")
                retry_after = "retry-after" in resp.headers
                problem = ctype.startswith(PROBLEM)
                if op.startswith("cross"):
                    expected = status == 404 and problem
                elif op.startswith("anon"):
                    expected = (status == 401 and problem and resp.headers.get("www-authenticate", "")
                                .lower().startswith("bearer"))
                elif op == "export" and status in (429, 503):
                    expected = retry_after and problem
                if op == "export" and status == 200:
                    # count lines; parse the first and the last (parsing all would make the
                    # client, not the server, the bottleneck); every line's user_id is checked
                    lines = 0
                    buf = b""
                    first = None
                    foreign = False
                    async for chunk in resp.content.iter_any():
                        buf += chunk
                        cut = buf.rfind(b"\n")
                        if cut >= 0:
                            complete, buf = buf[:cut], buf[cut + 1:]
                            lines += complete.count(b"\n") + 1
                            if first is None:
                                first = json.loads(complete.split(b"\n", 1)[0])
                            last = complete.rsplit(b"\n", 1)[-1]
                            owners = USER_ID_RE.findall(complete)
                            if len(owners) != complete.count(b"\n") + 1 or \
                                    any(int(o) != user["id"] for o in set(owners)):
                                foreign = True
                    if lines:
                        json.loads(last)
                    if buf.strip():
                        error = "bad-body"    # a truncated last line
                    elif foreign:
                        error = "foreign-note"
                    self.export_lines.append(lines)
                else:
                    body = await resp.read()
                    if status in (200, 201) and op in ("get", "list", "post", "patch", "bulk"):
                        data = json.loads(body)
                        notes = data if isinstance(data, list) else [data]
                        if any(n.get("user_id") != user["id"] for n in notes):
                            error = "foreign-note"
                        elif op in ("post", "patch", "bulk"):
                            for note in notes:
                                self.ledger[note["id"]] = {note["text"]}
                                self.owners[note["id"]] = user["id"]
                                if op != "patch":
                                    own_ids.append(note["id"])
                                    self._all.append((note["id"], uidx))
                                    if not seed:
                                        mine.append(note["id"])
        except asyncio.TimeoutError:
            error = "timeout"
        except (aiohttp.ClientError, OSError) as e:
            error = type(e).__name__
        except (ValueError, KeyError, AttributeError):
            error = "bad-body"
        if patched and (status is None or status >= 500):
            # outcome unknown: the old or the new text may be stored
            self.ledger.setdefault(patched[0], set()).add(patched[1])
        rec = Rec(t0, time.monotonic(), op, status, error, ctype, retry_after, rid, expected)
        self.records.append(rec)
        return rec


async def _keyed_send(load: "Load", session, user: dict, key: str, text: str):
    """One POST /notes with KEY; records it and returns (status, note or None)."""
    t0 = time.monotonic()
    status, error, ctype, retry_after, expected, note = None, None, "", False, False, None
    load._counter += 1
    rid = f"rel-{load.run_id}-{load._counter}"
    hdr = {"x-request-id": rid, "authorization": f"Bearer {user['token']}", "idempotency-key": key}
    try:
        async with session.post(f"{load.base}/notes", headers=hdr, json={"text": text},
                                timeout=aiohttp.ClientTimeout(total=load.timeout)) as resp:
            status = resp.status
            ctype = resp.headers.get("content-type", "")
            retry_after = "retry-after" in resp.headers
            body = await resp.read()
            if status == 201:
                note = json.loads(body)
                if note.get("user_id") != user["id"] or note.get("text") != text:
                    error = "foreign-note"
            elif status == 409:
                expected = retry_after and ctype.startswith(PROBLEM)
    except asyncio.TimeoutError:
        error = "timeout"
    except (aiohttp.ClientError, OSError) as e:
        error = type(e).__name__
    except (ValueError, KeyError, AttributeError):
        error = "bad-body"
    load.records.append(Rec(t0, time.monotonic(), "keyed", status, error, ctype, retry_after, rid, expected))
    return status, note


def tally(records) -> dict:
    """Figures for a summary line. `5xx`/`4xx` count only answers that are not what the
    API documents (the refusals of probes and well-formed export limits are not counted);
    `probe_bad` counts probes answered otherwise than refused, 2xx included."""
    statuses = Counter(r.status for r in records if r.status is not None)
    errors = Counter(r.error for r in records if r.error)
    bad = [r for r in records if r.status is not None and not r.error and not r.ok]
    limited = Counter(r.status for r in records if r.limited)
    probes = [r for r in records if is_probe(r.op)]
    return {
        "requests": len(records),
        "5xx": sum(1 for r in bad if r.status >= 500),
        "4xx": sum(1 for r in bad if 400 <= r.status < 500),
        "bad": len(bad),
        "probe_bad": sum(1 for r in bad if is_probe(r.op)),
        "probes": len(probes),
        "export_429": limited.get(429, 0),
        "export_503": limited.get(503, 0),
        "errors": sum(errors.values()),
        "statuses": dict(sorted(statuses.items())),
        "error_kinds": dict(errors),
        "bad_examples": [(r.op, r.status, r.ctype, r.retry_after) for r in bad[:5]],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("base")
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--users", type=int, default=16)
    a = p.parse_args()
    load = Load(a.base, a.connections, a.seconds, n_users=a.users)
    asyncio.run(load.run())
    t = tally(load.records)
    print(json.dumps({**t, "ledger": len(load.ledger)}))


if __name__ == "__main__":
    main()
