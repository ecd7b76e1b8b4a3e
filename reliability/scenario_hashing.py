"""Hashing pressure: hundreds of concurrent sign-ups keep memory bounded and the server live.

    python3 reliability/scenario_hashing.py sqlite|postgres

The server runs with its defaults (HASH_CONCURRENCY = the number of CPUs, DB_ACQUIRE_TIMEOUT_MS
= 2000: a sign-up that waits longer for a hashing slot answers 503). HASHING_SIGNUPS (default
300) `POST /users` with distinct e-mails are sent at once, one connection each; meanwhile
`/healthz` is asked every 50 ms on its own connection, and the server's memory is sampled from
/proc/<pid>/status every 20 ms (VmRSS; VmHWM, read at the end, is the peak since start).
Guarantees:
  - peak RSS (VmHWM) below 160 MiB;
  - every sign-up answer is 201, or 503 with Retry-After as problem+json; no other status, no
    request without a response (60 s client time-out); at least one 201;
  - every /healthz answers 200 in under 1 s;
  - afterwards, the users answered 201 are in the database and those answered 503 are not, and
    a sign-in of one of the created users answers 201 with a token GET /users/me accepts.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

import aiohttp

from common import PASSWORD, Database, Failure, Server, http, log, summary

PEAK_LIMIT_MIB = 160
HEALTHZ_LIMIT_S = 1.0


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of PID in KiB, and Threads."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:", "Threads:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


async def pressure(base: str, pid: int, count: int, tag: str):
    signups = []      # dicts: email, password, status, retry_after, problem, seconds, error
    healthz = []      # (status, seconds)
    rss = []          # KiB
    threads = []
    done = asyncio.Event()

    async def signup(session, i, barrier):
        email = f"hash-{tag}-{i}@example.com"
        password = f"{PASSWORD} {i}"
        await barrier.wait()
        t0 = time.monotonic()
        status, ra, problem, error = None, False, False, None
        try:
            async with session.post(base + "/users", json={"email": email, "password": password},
                                    timeout=aiohttp.ClientTimeout(total=60)) as r:
                await r.read()
                status = r.status
                ra = "retry-after" in r.headers
                problem = r.headers.get("content-type", "").startswith("application/problem+json")
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            error = type(e).__name__
        signups.append({"email": email, "password": password, "status": status, "retry_after": ra,
                        "problem": problem, "seconds": time.monotonic() - t0, "error": error})

    async def probe():
        async with aiohttp.ClientSession() as s:
            while not done.is_set():
                t0 = time.monotonic()
                try:
                    async with s.get(base + "/healthz", timeout=aiohttp.ClientTimeout(total=10)) as r:
                        await r.read()
                        status = r.status
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                    status = None
                healthz.append((status, time.monotonic() - t0))
                await asyncio.sleep(0.05)

    async def sampler():
        while not done.is_set():
            status = proc_status(pid)
            if status.get("VmRSS"):
                rss.append(status["VmRSS"])
                threads.append(status.get("Threads", 0))
            await asyncio.sleep(0.02)

    before = proc_status(pid)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        barrier = asyncio.Event()
        side = [asyncio.create_task(probe()), asyncio.create_task(sampler())]
        tasks = [asyncio.create_task(signup(session, i, barrier)) for i in range(count)]
        await asyncio.sleep(0.3)        # every task waits at the barrier
        await asyncio.sleep(0.3)        # a few /healthz before
        t0 = time.monotonic()
        barrier.set()
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - t0
        await asyncio.sleep(0.3)        # a few /healthz after
        done.set()
        await asyncio.gather(*side)
    after = proc_status(pid)
    return signups, healthz, rss, threads, before, after, elapsed


def main(backend: str) -> bool:
    name = f"hashing[{backend}]"
    count = int(os.environ.get("HASHING_SIGNUPS", "300"))
    db = Database(backend, f"hash_{backend[:2]}")
    server = Server(db.url, name=f"hashing-{backend}")
    ok = False
    try:
        base = server.start().wait_ready()
        tag = f"{os.getpid()}{backend[:2]}"
        log(f"{name}: {count} concurrent sign-ups on {base}, /healthz every 50 ms")
        signups, healthz, rss, threads, before, after, elapsed = asyncio.run(pressure(base, server.proc.pid, count, tag))
        failures = []
        peak_kib = after.get("VmHWM", 0)
        peak_mib = peak_kib / 1024
        if not peak_kib:
            failures.append("could not read VmHWM of the server")
        elif peak_mib >= PEAK_LIMIT_MIB:
            failures.append(f"peak RSS {peak_mib:.0f} MiB (>= {PEAK_LIMIT_MIB} MiB)")
        created = [s for s in signups if s["status"] == 201]
        refused = [s for s in signups if s["status"] == 503]
        bad503 = [s for s in refused if not (s["retry_after"] and s["problem"])]
        if bad503:
            failures.append(f"{len(bad503)} 503s without Retry-After or not problem+json")
        other = [s for s in signups if s["status"] not in (201, 503)]
        if other:
            failures.append(f"{len(other)} sign-ups answered otherwise: "
                            f"{[(s['status'], s['error']) for s in other[:5]]}")
        if not created:
            failures.append("no sign-up succeeded")
        slow = [h for h in healthz if h[0] != 200 or h[1] >= HEALTHZ_LIMIT_S]
        max_healthz = max((h[1] for h in healthz), default=0.0)
        if slow:
            failures.append(f"{len(slow)} /healthz not 200 within {HEALTHZ_LIMIT_S} s: {slow[:5]}")
        stored = int(db.scalar(f"SELECT count(*) FROM users WHERE email LIKE 'hash-{tag}-%'"))
        if stored != len(created):
            failures.append(f"{stored} users stored, {len(created)} sign-ups answered 201")
        signin_ok = False
        if created:
            # one attempt, no retry: with the burst over, a hashing slot must be free at once
            someone = created[len(created) // 2]
            status, _, body = http("POST", f"{base}/sessions",
                                   {"email": someone["email"], "password": someone["password"]}, timeout=30)
            if status != 201:
                failures.append(f"sign-in after the pressure answered {status}: {body[:200]!r}")
            else:
                token = json.loads(body)["token"]
                status, _, body = http("GET", f"{base}/users/me", token=token)
                signin_ok = status == 200 and json.loads(body).get("email") == someone["email"]
                if not signin_ok:
                    failures.append(f"GET /users/me with the new token answered {status}: {body[:200]!r}")
        if server.proc.poll() is not None:
            failures.append(f"server exited with {server.proc.returncode}")
        for f in failures:
            log(f"{name} FAIL: {f}")
        ok = not failures
        latencies = sorted(s["seconds"] for s in signups if s["status"] is not None)
        summary(name, ok, peak_rss_mib=f"{peak_mib:.1f}", rss_before_mib=f"{before.get('VmRSS', 0) / 1024:.1f}",
                rss_after_mib=f"{after.get('VmRSS', 0) / 1024:.1f}",
                max_sampled_rss_mib=f"{max(rss, default=0) / 1024:.1f}",
                threads_before=before.get("Threads", "-"), threads_max=max(threads, default="-"),
                signups=len(signups),
                count_201=len(created), count_503=len(refused), other=len(other),
                burst_s=f"{elapsed:.1f}", max_signup_s=f"{latencies[-1]:.2f}" if latencies else "-",
                healthz_probes=len(healthz), max_healthz_s=f"{max_healthz:.3f}",
                stored=stored, signin_after="ok" if signin_ok else "FAIL")
    except Failure as e:
        log(f"{name} FAIL: {e}")
    finally:
        server.stop()
        db.close()
    return ok


if __name__ == "__main__":
    sys.exit(0 if main(sys.argv[1] if len(sys.argv) > 1 else "sqlite") else 1)
