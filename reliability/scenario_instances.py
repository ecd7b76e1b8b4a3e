"""Several instances: two `api` processes on one EMPTY database, behind nginx (round robin).

    python3 reliability/scenario_instances.py [postgres|mysql]

Both processes start at the same moment with AUTO_MIGRATE=true; migrations take the database
lock. nginx (Debian package, loopback only) balances them round robin and adds the upstream it
used as `X-Upstream`. Guarantees:
  - each migration is recorded once in seaql_migrations, all of them are there, and the two
    logs together apply each migration exactly once; both instances answer /readyz 200;
  - 8 s of mixed load at 32 connections through nginx (16 users signed up and signed in
    through nginx, so tokens made on one instance are used on both): zero 5xx, zero connection
    errors, no 4xx but the refusals of the cross-user (404) and anonymous (401) probes, exports
    refused only by their limits (429/503 with Retry-After), both instances served, every
    acknowledged note is in the database with its owner;
  - a token signed out on one instance is refused (401) by the other within 1 s (checked
    REVOKE_ROUNDS times, default 3, polling GET /users/me every 20 ms);
  - RACE_ROUNDS (default 3) rounds of sixteen concurrent POST /users with one e-mail address
    (in different letter cases and with surrounding spaces), spread over both instances: exactly
    one 201 and fifteen 409 each round, and one row for that address in the database. Every
    sign-up hashes its password and hashing is bounded (HASH_CONCURRENCY = CPUs, a wait longer
    than DB_ACQUIRE_TIMEOUT_MS answers 503): the servers run with DB_ACQUIRE_TIMEOUT_MS=10000 so
    that a busy machine cannot turn the race into 503s (that limit is the hashing scenario's).
"""

from __future__ import annotations

import asyncio
import glob
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter

import aiohttp

from common import Database, Failure, Server, check_load, free_port, http, log, signin, signup, summary
from load import Load, SetupError, tally

HERE = os.path.dirname(os.path.abspath(__file__))
MIGRATIONS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(HERE, "..", "migration", "src", "m2*.rs")))

NGINX_CONF = """
user root;
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream api {{
        server {a} max_fails=0;
        server {b} max_fails=0;
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 2m;
        location / {{
            proxy_pass http://api;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_buffering off;
            proxy_read_timeout 60s;
            add_header X-Upstream $upstream_addr always;
        }}
    }}
}}
"""


class Nginx:
    def __init__(self, a: str, b: str):
        self.dir = tempfile.mkdtemp(prefix="rel_nginx_")
        self.port = free_port()
        self.conf = os.path.join(self.dir, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(NGINX_CONF.format(dir=self.dir, a=a, b=b, port=self.port))
        self.proc = None

    def start(self) -> str:
        self.proc = subprocess.Popen(["nginx", "-p", self.dir, "-c", self.conf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        base = f"http://127.0.0.1:{self.port}"
        for _ in range(100):
            if self.proc.poll() is not None:
                raise Failure(f"nginx exited: {self.proc.stderr.read().decode()}")
            try:
                if http("GET", base + "/healthz", timeout=2)[0] == 200:
                    return base
            except OSError:
                pass
            time.sleep(0.1)
        raise Failure("nginx did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


async def race(base: str, email: str, n: int = 16):
    variants = [email, email.upper(), f"  {email}  ", email.capitalize()]
    barrier = asyncio.Event()

    async def signup(i):
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
            await barrier.wait()
            async with s.post(base + "/users", json={"email": variants[i % len(variants)],
                                                     "password": f"correct horse {i}", "name": f"racer {i}"},
                              timeout=aiohttp.ClientTimeout(total=30)) as r:
                await r.read()
                return r.status, r.headers.get("x-upstream", "?")

    tasks = [asyncio.create_task(signup(i)) for i in range(n)]
    await asyncio.sleep(0.2)
    barrier.set()
    return await asyncio.gather(*tasks, return_exceptions=True)


def revoke_across(one: str, other: str, email: str) -> tuple[float | None, str | None]:
    """Sign in on ONE, check the token on OTHER, sign out on ONE, poll OTHER until it refuses
    the token: (seconds from the 204 to the first 401, problem or None)."""
    signup(one, email)
    token = signin(one, email)
    status = http("GET", f"{other}/users/me", token=token)[0]
    if status != 200:
        return None, f"a fresh token is {status} on the other instance"
    status = http("DELETE", f"{one}/sessions/current", token=token)[0]
    if status != 204:
        return None, f"sign-out answered {status}"
    t0 = time.monotonic()
    while True:
        status, hdrs, _ = http("GET", f"{other}/users/me", token=token)
        elapsed = time.monotonic() - t0
        if status == 401:
            if not hdrs.get("www-authenticate", "").lower().startswith("bearer"):
                return elapsed, "401 without WWW-Authenticate: Bearer"
            return elapsed, None if elapsed <= 1.0 else f"refused only after {elapsed:.2f} s (> 1 s)"
        if status != 200 or elapsed > 5:
            return None, f"the revoked token is still {status} on the other instance after {elapsed:.2f} s"
        time.sleep(0.02)


async def load_through(base: str, seconds: float):
    load = Load(base, connections=32, seconds=seconds, timeout=10, export_timeout=60,
                mix={"get": 38, "list": 12, "post": 25, "patch": 12, "bulk": 8, "export": 1, "cross": 2, "anon": 1})
    upstreams = Counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=40)) as session:
        await load.run(session)
        for _ in range(10):
            async with session.get(base + "/readyz") as r:
                upstreams[r.headers.get("x-upstream", "?")] += 1
    return load, upstreams


def main(backend: str) -> bool:
    rounds = int(os.environ.get("RACE_ROUNDS", "3"))
    db = Database(backend, f"inst_{backend[:2]}")
    logdir = os.environ.get("REL_LOG_DIR") or tempfile.mkdtemp(prefix="rel_inst_")
    servers = [Server(db.url, env={"DB_ACQUIRE_TIMEOUT_MS": "10000"}, name=f"instance{i}-{backend}",
                      logdir=logdir) for i in (1, 2)]
    nginx = None
    ok = False
    try:
        for s in servers:          # same moment: two fork/execs back to back
            s.start()
        t0 = time.monotonic()
        for s in servers:
            s.wait_ready(60)
        startup_s = time.monotonic() - t0
        failures = []
        rows = db.sql(None, "SELECT version FROM seaql_migrations")
        versions = [line.strip().strip('"') for line in rows.splitlines()
                    if line.strip().strip('"').startswith("m2")]
        per_version = Counter(versions)
        if sorted(per_version) != MIGRATIONS or any(n != 1 for n in per_version.values()):
            failures.append(f"seaql_migrations holds {dict(per_version)}; expected each of {MIGRATIONS} once")
        applied = Counter()
        for s in servers:
            for line in open(s.logfile):
                if "Applying migration '" in line:
                    applied[line.split("Applying migration '")[1].split("'")[0]] += 1
        if sorted(applied) != MIGRATIONS or any(n != 1 for n in applied.values()):
            failures.append(f"the two instances applied {dict(applied)}")
        for s in servers:
            if http("GET", s.base + "/readyz")[0] != 200:
                failures.append(f"{s.name} /readyz is not 200")
        nginx = Nginx(servers[0].address, servers[1].address)
        base = nginx.start()
        log(f"instances[{backend}]: {servers[0].address} + {servers[1].address} behind nginx {base}")
        load, upstreams = asyncio.run(load_through(base, float(os.environ.get("INSTANCES_LOAD_SECONDS", "8"))))
        t = tally(load.records)
        if t["bad"] or t["errors"]:
            failures.append(f"load through nginx: {t['statuses']} {t['error_kinds']} e.g. {t['bad_examples']}")
        if len([u for u in upstreams if u != "?"]) != 2:
            failures.append(f"nginx did not use both instances: {dict(upstreams)}")
        checked, problems = check_load(db, load)
        if problems:
            failures.append(f"{len(problems)} acknowledged writes are wrong: {problems[:5]}")
        revoke_figures = []
        for rnd in range(int(os.environ.get("REVOKE_ROUNDS", "3"))):
            one, other = servers[rnd % 2], servers[(rnd + 1) % 2]
            delay, problem = revoke_across(one.base, other.base, f"revoke{os.getpid()}.{rnd}@example.com")
            revoke_figures.append("-" if delay is None else f"{delay:.2f}")
            if problem:
                failures.append(f"revocation {rnd}: {problem}")
        race_figures = []
        for rnd in range(rounds):
            email = f"race{os.getpid()}.{rnd}.{random.randint(0, 1 << 30)}@example.com"
            results = asyncio.run(race(base, email))
            errs = [r for r in results if isinstance(r, BaseException)]
            statuses = Counter(r[0] for r in results if not isinstance(r, BaseException))
            via = Counter(r[1] for r in results if not isinstance(r, BaseException))
            stored = int(db.scalar(f"SELECT count(*) FROM users WHERE email = '{email}'"))
            race_figures.append(f"{statuses.get(201, 0)}x201/{statuses.get(409, 0)}x409/{len(via)}inst")
            if errs or statuses != Counter({201: 1, 409: 15}) or stored != 1:
                failures.append(f"race {rnd}: statuses {dict(statuses)}, errors {errs[:3]}, rows {stored}")
            if len(via) != 2:
                failures.append(f"race {rnd}: not spread over both instances: {dict(via)}")
        for s in servers:
            if s.proc.poll() is not None:
                failures.append(f"{s.name} exited with {s.proc.returncode}")
        for f in failures:
            log(f"instances[{backend}] FAIL: {f}")
        ok = not failures
        summary(f"instances[{backend}]", ok, startup_s=f"{startup_s:.1f}",
                migrations=",".join(f"{v[:16]}x{n}" for v, n in sorted(per_version.items())),
                load_requests=t["requests"], load_5xx=t["5xx"], load_errors=t["errors"],
                upstreams="/".join(str(n) for n in upstreams.values()), rows_checked=checked,
                missing=len(problems), probes=t["probes"], export_limited=t["export_429"] + t["export_503"],
                revoke_s="/".join(revoke_figures), races=";".join(race_figures))
        if not ok:
            for s in servers:
                log(f"--- {s.name}\n{s.tail()}")
    except (Failure, SetupError) as e:
        log(f"instances[{backend}] FAIL: {e}")
    finally:
        if nginx:
            nginx.stop()
        for s in servers:
            s.stop()
        db.close()
    return ok


if __name__ == "__main__":
    sys.exit(0 if main(sys.argv[1] if len(sys.argv) > 1 else "postgres") else 1)
