"""Mail under faults: two `api` instances on one PostgreSQL database, each running the mail
worker, deliver to one SMTP receiver (aiosmtpd: a real SMTP conversation over TCP).

    python3 reliability/scenario_mail.py            the scenario (about 3 minutes)
    python3 reliability/scenario_mail.py --bench    figures only: POST /password-resets latency
                                                    with the receiver up, down and slow

Setup: MAIL_USERS (200) users signed up over both instances; their verification mails must all
arrive. Every reset is `POST /password-resets` sent 16 at a time, alternating instances, and
every mail is told apart by the token in its link.
  1. sameness: a reset for each user's address interleaved with one for an unknown address.
     Every answer is 202 with the same body, the same header names and the same Content-Type;
     the two latency distributions do not differ by a two-sample Kolmogorov-Smirnov test at
     alpha = 0.001 (D below 1.95 * sqrt((n + m) / nm)); medians and p99s are reported.
  2. down: the receiver stopped (connections refused); one reset per user; after
     MAIL_OUTAGE_SECONDS (20) the receiver is back. Every mail arrives within 90 s, none twice
     (a duplicate is reported with its recipient and fails the phase: nothing was cut
     mid-conversation, so there is no reason for one), each answer 202.
  3. slow + SIGKILL: the receiver answers each mail's DATA after MAIL_SLOW_SECONDS (3).
     MAIL_KILL_RESETS (40) resets through instance 1 only; as soon as instance 1 holds claimed
     mails (rows locked by its pid), it is killed with SIGKILL and the receiver turns fast.
     Every mail arrives within the lease (60 s) + 30 s, the ones instance 1 held sent by
     instance 2. A mail instance 1 was inside the DATA of when killed may arrive twice (the
     receiver had it; the sender never heard so): at most one such duplicate, reported.
     No answer waited for SMTP: each is 202 within 2 s (a request that waited would take the
     slow receiver's 3 s at least).
Finally no pending mail job is left and instance 2's `mail_queued` is 0.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import math
import os
import re
import sys
import tempfile
import threading
import time
from collections import Counter

import aiohttp
from aiosmtpd.controller import Controller

from common import Database, Failure, Server, free_port, http, log, summary

USERS = int(os.environ.get("MAIL_USERS", "200"))
OUTAGE_S = float(os.environ.get("MAIL_OUTAGE_SECONDS", "20"))
SLOW_S = float(os.environ.get("MAIL_SLOW_SECONDS", "3"))
KILL_RESETS = int(os.environ.get("MAIL_KILL_RESETS", "40"))
LEASE_S = 60
TOKEN = re.compile(r"#(reset-password|verify-email)=([A-Za-z0-9_-]+)")
PASSWORD = "reliability horse battery"


# --- the SMTP receiver -------------------------------------------------------------------------

class Sink:
    """aiosmtpd handler: keeps every mail's (kind, token, recipient); answers DATA after
    `delay` seconds. A mail counts as received once its DATA is complete, before the answer."""

    def __init__(self):
        self.lock = threading.Lock()
        self.received: list[tuple[str, str, str]] = []
        self.unreadable = 0
        self.delay = 0.0

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.original_content or envelope.content,
                                           policy=email.policy.default)
        body = message.get_body(("plain",))
        found = TOKEN.search(body.get_content() if body else "")
        with self.lock:
            if found:
                self.received.append((found.group(1), found.group(2), ",".join(envelope.rcpt_tos)))
            else:
                self.unreadable += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        return "250 2.0.0 OK"

    def tokens(self, kind: str) -> Counter:
        with self.lock:
            return Counter(token for k, token, _ in self.received if k == kind)

    def recipients(self, kind: str) -> dict[str, str]:
        with self.lock:
            return {token: to for k, token, to in self.received if k == kind}


class Receiver:
    """The SMTP server on a fixed port, stopped and started again on demand."""

    def __init__(self, sink: Sink):
        self.sink = sink
        self.port = free_port()
        self.controller = None

    def start(self) -> None:
        self.controller = Controller(self.sink, hostname="127.0.0.1", port=self.port,
                                     enable_SMTPUTF8=True, ready_timeout=10)
        self.controller.start()

    def stop(self) -> None:
        if self.controller:
            self.controller.stop()
            self.controller = None


# --- requests ----------------------------------------------------------------------------------

async def resets(bases: list[str], addresses: list[str], concurrency: int = 16) -> list[dict]:
    """POST /password-resets for each address, alternating `bases`, CONCURRENCY at a time:
    [{address, status, seconds, headers, body}] in the order given."""
    results: list[dict | None] = [None] * len(addresses)
    queue = list(enumerate(addresses))
    queue.reverse()

    async def worker(session):
        while queue:
            i, address = queue.pop()
            t0 = time.monotonic()
            try:
                async with session.post(bases[i % len(bases)] + "/password-resets", json={"email": address},
                                        timeout=aiohttp.ClientTimeout(total=30)) as r:
                    body = await r.read()
                    results[i] = {"address": address, "status": r.status, "seconds": time.monotonic() - t0,
                                  "headers": {k.lower(): v for k, v in r.headers.items()}, "body": body}
            except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                results[i] = {"address": address, "status": None, "seconds": time.monotonic() - t0,
                              "headers": {}, "body": repr(e).encode()}

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return results


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def ks_statistic(a: list[float], b: list[float]) -> float:
    """The two-sample Kolmogorov-Smirnov D: the largest gap between the empirical CDFs."""
    a, b = sorted(a), sorted(b)
    i = j = 0
    d = 0.0
    while i < len(a) and j < len(b):
        x = min(a[i], b[j])
        while i < len(a) and a[i] <= x:
            i += 1
        while j < len(b) and b[j] <= x:
            j += 1
        d = max(d, abs(i / len(a) - j / len(b)))
    return d


def wait_for(sink: Sink, kind: str, expected: int, seconds: float) -> float | None:
    """Seconds until SINK holds EXPECTED distinct tokens of KIND, or None after SECONDS."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        if len(sink.tokens(kind)) >= expected:
            return time.monotonic() - t0
        time.sleep(0.1)
    return None


def metric(base: str, name: str) -> float | None:
    try:
        _, _, body = http("GET", f"{base}/metrics", timeout=5)
    except OSError:
        return None
    m = re.search(rb"^" + name.encode() + rb"\s+([0-9.e+-]+)$", body, re.M)
    return float(m.group(1)) if m else None


def start_servers(db: Database, smtp_port: int, logdir: str) -> list[Server]:
    env = {"SMTP_URL": f"smtp://127.0.0.1:{smtp_port}", "PUBLIC_URL": "http://notes.test",
           "DB_ACQUIRE_TIMEOUT_MS": "10000"}
    servers = [Server(db.url, env=env, name=f"mail{i}", logdir=logdir) for i in (1, 2)]
    servers[0].start().wait_ready(60)        # one migrates, then the other joins
    servers[1].start().wait_ready(60)
    return servers


def sign_up_all(bases: list[str], count: int) -> list[str]:
    async def go():
        addresses = [f"mail-{os.getpid()}-{i}@example.com" for i in range(count)]
        queue = list(enumerate(addresses))
        statuses = Counter()

        async def worker(session):
            while queue:
                i, address = queue.pop()
                for _ in range(60):
                    async with session.post(bases[i % len(bases)] + "/users",
                                            json={"email": address, "password": PASSWORD}) as r:
                        await r.read()
                        if r.status == 503:
                            await asyncio.sleep(float(r.headers.get("retry-after", "1")))
                            continue
                        statuses[r.status] += 1
                        break

        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(worker(session) for _ in range(4)))
        if statuses != Counter({201: count}):
            raise Failure(f"sign-ups answered {dict(statuses)}")
        return addresses

    return asyncio.run(go())


def same_answers(results: list[dict]) -> list[str]:
    """Problems if the answers differ in anything but their Date and request id."""
    problems = []
    first = results[0]
    varying = {"date", "x-request-id"}
    for r in results:
        if r["status"] != 202:
            problems.append(f"{r['address']}: {r['status']} {r['body'][:200]!r}")
        elif r["body"] != first["body"] or set(r["headers"]) != set(first["headers"]) or any(
                r["headers"][k] != first["headers"][k] for k in r["headers"] if k not in varying):
            problems.append(f"{r['address']}: {r['headers']} {r['body']!r} differs from "
                            f"{first['headers']} {first['body']!r}")
    return problems[:5]


def main(bench: bool) -> bool:
    db = Database("postgres", "mail")
    logdir = os.environ.get("REL_LOG_DIR") or tempfile.mkdtemp(prefix="rel_mail_")
    sink = Sink()
    receiver = Receiver(sink)
    servers: list[Server] = []
    ok = False
    try:
        receiver.start()
        servers = start_servers(db, receiver.port, logdir)
        bases = [s.base for s in servers]
        users = sign_up_all(bases, USERS if not bench else 400)
        if wait_for(sink, "verify-email", len(users), 30) is None:
            raise Failure(f"{len(sink.tokens('verify-email'))} of {len(users)} verification mails arrived")
        if bench:
            return bench_latency(bases, users, sink, receiver)
        failures = []
        figures = {}

        # 1. the same answer, in the same time, whether or not the address has an account
        unknown = [f"nobody-{os.getpid()}-{i}@example.com" for i in range(len(users))]
        mixed = [a for pair in zip(users, unknown) for a in pair]
        results = asyncio.run(resets(bases, mixed))
        failures += [f"sameness: {p}" for p in same_answers(results)]
        known_s = [r["seconds"] for r in results[0::2]]
        unknown_s = [r["seconds"] for r in results[1::2]]
        d = ks_statistic(known_s, unknown_s)
        limit = 1.95 * math.sqrt((len(known_s) + len(unknown_s)) / (len(known_s) * len(unknown_s)))
        figures.update(ks_d=f"{d:.3f}", ks_limit=f"{limit:.3f}",
                       known_p50_ms=ms(quantile(known_s, 0.5)), unknown_p50_ms=ms(quantile(unknown_s, 0.5)),
                       known_p99_ms=ms(quantile(known_s, 0.99)), unknown_p99_ms=ms(quantile(unknown_s, 0.99)))
        if d >= limit:
            failures.append(f"sameness: the latency distributions differ (KS D={d:.3f} >= {limit:.3f})")
        if wait_for(sink, "reset-password", len(users), 30) is None:
            failures.append(f"sameness: {len(sink.tokens('reset-password'))} of {len(users)} reset mails arrived")
        before = set(sink.tokens("reset-password"))

        # 2. the receiver down for OUTAGE_S while every user asks again
        receiver.stop()
        t_down = time.monotonic()
        results = asyncio.run(resets(bases, users))
        down_s = [r["seconds"] for r in results]
        bad = [r for r in results if r["status"] != 202]
        if bad:
            failures.append(f"down: {len(bad)} answers not 202, e.g. {bad[0]['status']} {bad[0]['body'][:200]!r}")
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - t_down)))
        queued = metric(bases[0], "mail_queued")
        receiver.start()
        back = time.monotonic()
        took = wait_for(sink, "reset-password", 2 * len(users), 90)
        delivered = sink.tokens("reset-password")
        outage_dupes = {t: n for t, n in delivered.items() if n > 1 and t not in before}
        figures.update(down_p99_ms=ms(quantile(down_s, 0.99)), down_max_ms=ms(max(down_s)),
                       queued_at_return=queued, delivered_after_s="-" if took is None else f"{took:.1f}",
                       outage_duplicates=len(outage_dupes))
        if took is None:
            failures.append(f"down: {len(delivered) - len(before)} of {len(users)} mails arrived "
                            f"within 90 s of the receiver's return")
        if outage_dupes:
            failures.append(f"down: mails arrived more than once: {list(outage_dupes.items())[:5]}")
        log(f"mail: the outage's {len(users)} mails arrived {time.monotonic() - back:.1f} s after the receiver's return")

        # 3. a slow receiver; instance 1 killed while it holds claimed mails
        sink.delay = SLOW_S
        seen = set(delivered)
        victims, survivor = servers[0], servers[1]
        pid = victims.proc.pid
        results = asyncio.run(resets([victims.base], users[:KILL_RESETS]))
        slow_s = [r["seconds"] for r in results]
        bad = [r for r in results if r["status"] != 202]
        if bad:
            failures.append(f"slow: {len(bad)} answers not 202, e.g. {bad[0]['status']} {bad[0]['body'][:200]!r}")
        if max(slow_s) >= 2.0:
            failures.append(f"slow: an answer took {max(slow_s):.2f} s: it waited for SMTP")
        held = ""
        for _ in range(100):
            held = db.scalar(f"SELECT string_agg(id::text, ',') FROM jobs WHERE state = 'pending' "
                             f"AND locked_by LIKE '{pid}-%' AND locked_until > now()")
            if held:
                break
            time.sleep(0.1)
        victims.signal(9)
        victims.proc.wait()
        held_ids = [int(i) for i in held.split(",")] if held else []
        sink.delay = 0.0
        if not held_ids:
            failures.append("kill: instance 1 held no claimed mail when killed (nothing proved)")
        killed = time.monotonic()
        took = wait_for(sink, "reset-password", len(seen) + KILL_RESETS, LEASE_S + 30)
        # The mail cut inside DATA reached the receiver, but its job is still held by the dead
        # instance: wait (the lease + 30 s at most) until every mail job is done.
        while time.monotonic() - killed < LEASE_S + 30 and took is not None:
            if db.scalar("SELECT count(*) FROM jobs WHERE kind = 'mail' AND state <> 'done'") == "0":
                break
            time.sleep(0.5)
        delivered = sink.tokens("reset-password")
        kill_dupes = {t: n for t, n in delivered.items() if n > 1 and t not in seen}
        unsent = db.scalar(f"SELECT count(*) FROM jobs WHERE kind = 'mail' AND state <> 'done'")
        taken_over = db.scalar(f"SELECT count(*) FROM jobs WHERE id IN ({held or 0}) AND state = 'done' "
                               f"AND locked_by LIKE '{survivor.proc.pid}-%'")
        figures.update(slow_p99_ms=ms(quantile(slow_s, 0.99)), slow_max_ms=ms(max(slow_s)),
                       held_at_kill=len(held_ids), taken_over=taken_over,
                       kill_delivered_after_s="-" if took is None else f"{time.monotonic() - killed:.1f}",
                       kill_duplicates=len(kill_dupes), unsent=unsent)
        if took is None:
            failures.append(f"kill: {len(delivered) - len(seen)} of {KILL_RESETS} mails arrived within "
                            f"{LEASE_S + 30} s of the kill")
        if int(taken_over) != len(held_ids):
            failures.append(f"kill: {taken_over} of the {len(held_ids)} mails instance 1 held were sent by instance 2")
        if len(kill_dupes) > 1:
            failures.append(f"kill: {len(kill_dupes)} mails arrived twice (one at most: the one cut in DATA)")
        if kill_dupes:
            log(f"mail: {len(kill_dupes)} mail arrived twice: instance 1 was killed inside its DATA "
                f"(the receiver had it, instance 1 never heard so; at least once)")
        if unsent != "0":
            failures.append(f"{unsent} mail jobs are not done")
        if sink.unreadable:
            failures.append(f"{sink.unreadable} mails held no link")
        time.sleep(1.5)   # the survivor's worker observes the queue once a poll
        if metric(survivor.base, "mail_queued") != 0:
            failures.append(f"instance 2's mail_queued is {metric(survivor.base, 'mail_queued')}, not 0")
        for f in failures:
            log(f"mail FAIL: {f}")
        ok = not failures
        summary("mail", ok, users=len(users), **figures)
        if not ok:
            for s in servers:
                log(f"--- {s.name}\n{s.tail()}")
    except Failure as e:
        log(f"mail FAIL: {e}")
    finally:
        for s in servers:
            s.stop()
        receiver.stop()
        db.close()
    return ok


def bench_latency(bases: list[str], users: list[str], sink: Sink, receiver: Receiver) -> bool:
    """POST /password-resets latency (16 at a time, two instances) with the receiver up, down and
    slow, over as many distinct addresses each, printed as a table."""
    rows = []
    per_state = len(users) // 2
    for i, state in enumerate(("up", "down", "slow")):
        addresses = users[:per_state] if i != 1 else users[per_state:]
        if state == "down":
            receiver.stop()
        if state == "slow":
            receiver.start()
            sink.delay = SLOW_S
        results = asyncio.run(resets(bases, addresses))
        seconds = [r["seconds"] for r in results]
        statuses = Counter(r["status"] for r in results)
        rows.append((state, len(seconds), quantile(seconds, 0.5), quantile(seconds, 0.99), max(seconds), statuses))
    sink.delay = 0.0
    print("| SMTP receiver | requests | p50 ms | p99 ms | max ms | statuses |")
    print("|---|---|---|---|---|---|")
    for state, n, p50, p99, top, statuses in rows:
        print(f"| {state} | {n} | {ms(p50)} | {ms(p99)} | {ms(top)} | {dict(statuses)} |")
    return all(set(r[5]) == {202} for r in rows)


if __name__ == "__main__":
    sys.exit(0 if main("--bench" in sys.argv[1:]) else 1)
