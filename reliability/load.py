"""Asyncio + aiohttp load generator with a ledger of acknowledged writes.

    python3 reliability/load.py http://127.0.0.1:8000 [--seconds 30] [--connections 64]

Each worker loops over a weighted mix of operations:

    get     GET /notes/{id}            (an id the load created)
    list    GET /notes?limit=100&after=N
    post    POST /notes                 201 -> ledger[id] = {text}
    patch   PATCH /notes/{id}           (a note this worker created; 200 -> ledger[id] = {text})
    bulk    POST /notes/bulk, 3 items   201 -> ledger for each
    export  GET /notes/export           the whole NDJSON stream is read and parsed

Every request is recorded as a `Rec` (start, end, op, status, error kind, content type,
Retry-After present). A PATCH without a clear answer (no response, or a 5xx) leaves both the old
and the new text acceptable for that note. A POST without an answer may or may not have created
a note; such notes are not in the ledger (only acknowledged writes are checked).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import aiohttp

DEFAULT_MIX = {"get": 40, "list": 12, "post": 25, "patch": 12, "bulk": 8, "export": 3}


@dataclass
class Rec:
    t0: float
    t1: float
    op: str
    status: int | None      # None: no HTTP response
    error: str | None       # exception class name, 'timeout', or 'bad-body'
    ctype: str = ""
    retry_after: bool = False
    rid: str = ""           # the x-request-id sent


@dataclass
class Load:
    base: str
    connections: int = 64
    seconds: float = 30
    mix: dict = field(default_factory=lambda: dict(DEFAULT_MIX))
    timeout: float = 5.0            # client timeout per request (export: export_timeout)
    export_timeout: float = 60.0
    stop_on_refused: bool = False   # a worker stops at its first "connection refused"
    records: list = field(default_factory=list)
    ledger: dict = field(default_factory=dict)     # id -> set of acceptable texts
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    export_lines: list = field(default_factory=list)

    def __post_init__(self):
        self._ops, self._weights = zip(*self.mix.items())
        self._ids: list[int] = []
        self._stop = asyncio.Event()
        self._counter = 0

    def stop(self) -> None:
        self._stop.set()

    def _text(self, worker: int) -> str:
        self._counter += 1
        return f"rel {self.run_id} w{worker} n{self._counter}"

    async def run(self, session: aiohttp.ClientSession | None = None) -> "Load":
        own = session is None
        if own:
            conn = aiohttp.TCPConnector(limit=self.connections, force_close=False)
            session = aiohttp.ClientSession(connector=conn)
        try:
            # a few notes first, so reads have targets
            await self._request(session, "bulk", 0, [], seed=True)
            deadline = time.monotonic() + self.seconds
            workers = [asyncio.create_task(self._worker(session, w, deadline))
                       for w in range(self.connections)]
            await asyncio.gather(*workers)
        finally:
            if own:
                await session.close()
        return self

    async def _worker(self, session, worker: int, deadline: float) -> None:
        mine: list[int] = []
        rnd = random.Random(worker * 7919 + hash(self.run_id))
        while time.monotonic() < deadline and not self._stop.is_set():
            op = rnd.choices(self._ops, self._weights)[0]
            if op == "patch" and not mine:
                op = "post"
            rec = await self._request(session, op, worker, mine, rnd=rnd)
            if self.stop_on_refused and rec.error == "ClientConnectorError":
                return

    async def _request(self, session, op, worker, mine, rnd=random, seed=False) -> Rec:
        t0 = time.monotonic()
        status = None
        error = None
        ctype = ""
        retry_after = False
        patched = None
        timeout = aiohttp.ClientTimeout(total=self.export_timeout if op == "export" else self.timeout)
        self._counter += 1
        rid = f"rel-{self.run_id}-{self._counter}"
        hdr = {"x-request-id": rid}
        try:
            if op == "get":
                note_id = rnd.choice(self._ids) if self._ids else 1
                req = session.get(f"{self.base}/notes/{note_id}", headers=hdr, timeout=timeout)
            elif op == "list":
                after = rnd.choice(self._ids) if self._ids and rnd.random() < 0.5 else 0
                req = session.get(f"{self.base}/notes?limit=100&after={after}", headers=hdr, timeout=timeout)
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
                items = [{"text": self._text(worker)} for _ in range(20 if seed else 3)]
                req = session.post(f"{self.base}/notes/bulk", headers=hdr, json=items, timeout=timeout)
            elif op == "export":
                req = session.get(f"{self.base}/notes/export", headers=hdr, timeout=timeout)
            else:
                raise ValueError(op)
            async with req as resp:
                status = resp.status
                ctype = resp.headers.get("content-type", "")
                retry_after = "retry-after" in resp.headers
                if op == "export" and status == 200:
                    # count lines; parse the first and the last (parsing all would make the
                    # client, not the server, the bottleneck)
                    lines = 0
                    buf = b""
                    first = None
                    async for chunk in resp.content.iter_any():
                        buf += chunk
                        cut = buf.rfind(b"\n")
                        if cut >= 0:
                            complete, buf = buf[:cut], buf[cut + 1:]
                            lines += complete.count(b"\n") + 1
                            if first is None:
                                first = json.loads(complete.split(b"\n", 1)[0])
                            last = complete.rsplit(b"\n", 1)[-1]
                    if lines:
                        json.loads(last)
                    if buf.strip():
                        error = "bad-body"    # a truncated last line
                    self.export_lines.append(lines)
                else:
                    body = await resp.read()
                    if status in (200, 201) and op in ("post", "patch", "bulk"):
                        data = json.loads(body)
                        for note in (data if op == "bulk" else [data]):
                            self.ledger[note["id"]] = {note["text"]}
                            if op != "patch":
                                self._ids.append(note["id"])
                                if not seed:
                                    mine.append(note["id"])
        except asyncio.TimeoutError:
            error = "timeout"
        except (aiohttp.ClientError, OSError) as e:
            error = type(e).__name__
        except ValueError:
            error = "bad-body"
        if patched and (status is None or status >= 500):
            # outcome unknown: the old or the new text may be stored
            self.ledger.setdefault(patched[0], set()).add(patched[1])
        rec = Rec(t0, time.monotonic(), op, status, error, ctype, retry_after, rid)
        self.records.append(rec)
        return rec


def tally(records) -> dict:
    """Figures for a summary line."""
    statuses = Counter(r.status for r in records if r.status is not None)
    errors = Counter(r.error for r in records if r.error)
    return {
        "requests": len(records),
        "5xx": sum(n for s, n in statuses.items() if s >= 500),
        "4xx": sum(n for s, n in statuses.items() if 400 <= s < 500),
        "errors": sum(errors.values()),
        "statuses": dict(sorted(statuses.items())),
        "error_kinds": dict(errors),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("base")
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--connections", type=int, default=64)
    a = p.parse_args()
    load = Load(a.base, a.connections, a.seconds)
    asyncio.run(load.run())
    t = tally(load.records)
    print(json.dumps({**t, "ledger": len(load.ledger)}))


if __name__ == "__main__":
    main()
