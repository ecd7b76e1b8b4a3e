"""Shared helpers for the reliability scenarios: servers, databases, metrics, checks.

Databases are reached through their command-line clients (sqlite3, psql, mysql) so the checks
do not depend on the server under test. Every database created here is named `rel_*` and is
dropped by `Env.close()`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter

TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/notes-api/target"))
API_BIN = os.path.join(TARGET, "release", "api")
PG_SERVER = os.environ.get("REL_PG_URL", "postgres://postgres@127.0.0.1:5432")
MY_SERVER = os.environ.get("REL_MYSQL_URL", "mysql://root@127.0.0.1:3306")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Failure(Exception):
    """A broken guarantee."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- PostgreSQL service --------------------------------------------------------------------

def _pg_version() -> str:
    return sorted(os.listdir("/etc/postgresql"))[-1]


def pg_ctl(action: str) -> None:
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", _pg_version(), "main", action],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def pg_is_up() -> bool:
    return subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"]).returncode == 0


def pg_ensure_up() -> None:
    if not pg_is_up():
        log("starting PostgreSQL")
        try:
            pg_ctl("start")
        except subprocess.CalledProcessError:
            pass
    for _ in range(60):
        if pg_is_up():
            return
        time.sleep(0.5)
    raise Failure("PostgreSQL does not come up")


# --- databases -----------------------------------------------------------------------------

class Database:
    """One fresh `rel_*` database on one backend, with direct SQL access."""

    def __init__(self, backend: str, tag: str):
        self.backend = backend
        self.name = f"rel_{tag}_{os.getpid()}"
        self.tmpdir = None
        if backend == "sqlite":
            self.tmpdir = tempfile.mkdtemp(prefix="rel_")
            self.path = os.path.join(self.tmpdir, "notes.db")
            self.url = f"sqlite://{self.path}?mode=rwc"
        elif backend == "postgres":
            pg_ensure_up()
            self.sql("postgres", f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
            self.sql("postgres", f"CREATE DATABASE {self.name}")
            self.url = f"{PG_SERVER}/{self.name}"
        elif backend == "mysql":
            self.sql("", f"DROP DATABASE IF EXISTS {self.name}; CREATE DATABASE {self.name}")
            self.url = f"{MY_SERVER}/{self.name}"
        else:
            raise ValueError(backend)

    def sql(self, db: str | None, statement: str) -> str:
        """Run SQL; returns stdout (CSV for SQLite/PostgreSQL, TSV for MariaDB)."""
        db = self.name if db is None else db
        if self.backend == "sqlite":
            cmd = ["sqlite3", "-csv", "-cmd", ".timeout 20000", self.path, statement]
        elif self.backend == "postgres":
            cmd = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", f"{PG_SERVER}/{db}", "-c", statement]
        else:
            cmd = ["mysql", "-h", "127.0.0.1", "-P", "3306", "-u", "root", "-N", "-B"]
            cmd += [db, "-e", statement] if db else ["-e", statement]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise Failure(f"SQL failed on {self.backend}: {statement[:80]}: {res.stderr.strip()}")
        return res.stdout

    def scalar(self, statement: str) -> str:
        if self.backend == "postgres":
            res = subprocess.run(["psql", "-X", "-qAt", f"{PG_SERVER}/{self.name}", "-c", statement],
                                 capture_output=True, text=True, check=True)
            return res.stdout.strip()
        return self.sql(None, statement).strip().splitlines()[-1].strip('"')

    def notes(self) -> dict[int, tuple[int, str]]:
        """Every note in the database, id -> (user_id, text) (texts written by the load have no
        tabs or newlines)."""
        if self.backend == "postgres":
            out = self.sql(None, "COPY (SELECT id, user_id, text FROM notes) TO STDOUT WITH (FORMAT csv)")
            return {int(r[0]): (int(r[1]), r[2]) for r in csv.reader(io.StringIO(out)) if r}
        if self.backend == "sqlite":
            out = self.sql(None, "SELECT id, user_id, text FROM notes")
            return {int(r[0]): (int(r[1]), r[2]) for r in csv.reader(io.StringIO(out)) if r}
        out = self.sql(None, "SELECT id, user_id, text FROM notes")
        result = {}
        for line in out.splitlines():
            i, owner, text = line.split("\t", 2)
            result[int(i)] = (int(owner), text)
        return result

    def seed_notes(self, count: int, user_ids: list[int]) -> None:
        """Insert COUNT notes in one statement (for slow exports), owned in turn by USER_IDS
        (existing users: `notes.user_id` is a foreign key): note i belongs to
        user_ids[i % len(user_ids)], so each owner gets count / len(user_ids) of them."""
        if not user_ids:
            raise ValueError("seed_notes needs at least one owner")
        n = len(user_ids)
        ids = ",".join(str(int(u)) for u in user_ids)
        if self.backend == "postgres":
            # Without the change log's trigger (replica role): in one statement it updates each
            # owner's counter row once per note, which PostgreSQL makes quadratic (docs/sync.md,
            # "What it costs"; 320 000 notes took 12 minutes), and no stream follows a seed.
            self.sql(None, f"SET session_replication_role = replica; "
                           f"INSERT INTO notes (user_id, text, completed, created_at, updated_at) "
                           f"SELECT (ARRAY[{ids}]::bigint[])[1 + i % {n}], "
                           f"'seeded note ' || i || ': buy milk, call mum, water the plants', "
                           f"i % 2 = 0, now(), now() FROM generate_series(1, {count}) AS i; "
                           f"ANALYZE notes")
        elif self.backend == "sqlite":
            self.sql(None, f"WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {count}) "
                           f"INSERT INTO notes (user_id, text, completed, created_at, updated_at) "
                           f"SELECT json_extract('[{ids}]', '$[' || (i % {n}) || ']'), "
                           f"'seeded note ' || i || ': buy milk, call mum, water the plants', i % 2 = 0, "
                           f"strftime('%Y-%m-%dT%H:%M:%S', 'now') || '.000000+00:00', "
                           f"strftime('%Y-%m-%dT%H:%M:%S', 'now') || '.000000+00:00' FROM s")
        else:
            self.sql(None, f"INSERT INTO notes (user_id, text, completed, created_at, updated_at) "
                           f"SELECT ELT(1 + seq % {n}, {ids}), CONCAT('seeded note ', seq), seq % 2 = 0, "
                           f"UTC_TIMESTAMP(6), UTC_TIMESTAMP(6) FROM seq_1_to_{count}")

    def close(self) -> None:
        try:
            if self.backend == "postgres":
                pg_ensure_up()
                self.sql("postgres", f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
            elif self.backend == "mysql":
                self.sql("", f"DROP DATABASE IF EXISTS {self.name}")
        except Exception as e:  # noqa: BLE001 - cleanup must go on
            log(f"could not drop {self.name}: {e}")
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)


# --- the server ----------------------------------------------------------------------------

class Server:
    """One `api` process (PORT=0, LOG_FORMAT=json); its stderr goes to a log file."""

    def __init__(self, db_url: str, env: dict | None = None, name: str = "api", logdir: str | None = None):
        self.name = name
        self.logdir = logdir or os.environ.get("REL_LOG_DIR") or tempfile.mkdtemp(prefix="rel_log_")
        self.logfile = os.path.join(self.logdir, f"{name}.log")
        self.env = dict(os.environ)
        self.env.update({"DATABASE_URL": db_url, "HOST": "127.0.0.1", "PORT": "0",
                         "LOG_FORMAT": "json", "RUST_LOG": os.environ.get("REL_RUST_LOG", "warn,api=info,sea_orm_migration=info"),
                         "AUTO_MIGRATE": "true"})
        self.env.update(env or {})
        self.proc: subprocess.Popen | None = None
        self.address: str | None = None
        self._ready = threading.Event()

    def start(self) -> "Server":
        self.proc = subprocess.Popen([API_BIN], env=self.env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._drain, daemon=True).start()
        return self

    def _drain(self) -> None:
        with open(self.logfile, "w") as out:
            for line in self.proc.stderr:
                out.write(line)
                out.flush()
                if not self._ready.is_set() and '"serving"' in line:
                    try:
                        self.address = json.loads(line).get("address") or \
                            json.loads(line).get("fields", {}).get("address")
                    except ValueError:
                        m = re.search(r'"address":"([^"]+)"', line)
                        self.address = m and m.group(1)
                    self._ready.set()

    def wait_ready(self, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.1):
            if self.proc.poll() is not None:
                raise Failure(f"{self.name} exited with {self.proc.returncode} before serving:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise Failure(f"{self.name} did not start within {timeout}s:\n{self.tail()}")
        return self.base

    @property
    def base(self) -> str:
        return f"http://{self.address}"

    def tail(self, n: int = 20) -> str:
        try:
            with open(self.logfile) as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def signal(self, sig=signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 30) -> int | None:
        if not self.proc:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


# --- HTTP helpers (blocking, for setup and checks) ------------------------------------------

def http(method: str, url: str, body=None, timeout: float = 10, token: str | None = None,
         headers: dict | None = None):
    """One request; (status, headers with lower-case names, body bytes). `token`: sent as
    `Authorization: Bearer <token>`."""
    data = None if body is None else json.dumps(body).encode()
    hdrs = {"content-type": "application/json"} if data else {}
    if token:
        hdrs["authorization"] = f"Bearer {token}"
    hdrs.update(headers or {})
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


PASSWORD = "reliability horse battery"


def _retrying(method: str, url: str, body, want: int, what: str, deadline_s: float = 60):
    """A request that may meet 503 + Retry-After (hashing or the pool is busy): retried until
    DEADLINE_S; any other answer than WANT or such a 503 is a Failure."""
    deadline = time.monotonic() + deadline_s
    while True:
        status, hdrs, raw = http(method, url, body, timeout=30)
        if status == want:
            return json.loads(raw)
        if status == 503 and "retry-after" in hdrs and time.monotonic() < deadline:
            time.sleep(min(1.0, float(hdrs.get("retry-after") or 1)))
            continue
        raise Failure(f"{what}: {method} {url} answered {status}: {raw[:300]!r}")


def signup(base: str, email: str, password: str = PASSWORD, name: str | None = None) -> dict:
    """POST /users; the created user (JSON)."""
    body = {"email": email, "password": password}
    if name:
        body["name"] = name
    return _retrying("POST", f"{base}/users", body, 201, "sign-up")


def signin(base: str, email: str, password: str = PASSWORD) -> str:
    """POST /sessions; the bearer token."""
    data = _retrying("POST", f"{base}/sessions", {"email": email, "password": password}, 201, "sign-in")
    if data.get("token_type") != "Bearer" or not data.get("token"):
        raise Failure(f"sign-in answered {data!r}")
    return data["token"]


def new_users(base: str, count: int, tag: str) -> list[dict]:
    """COUNT fresh users, signed up and signed in: [{"id", "email", "password", "token"}]."""
    users = []
    for i in range(count):
        email = f"rel-{tag}-{os.getpid()}-{i}@example.com"
        user = signup(base, email, name=f"{tag} {i}")
        users.append({"id": user["id"], "email": email, "password": PASSWORD,
                      "token": signin(base, email)})
    return users


def pool_in_use(base: str) -> int | None:
    try:
        _, _, body = http("GET", f"{base}/metrics", timeout=5)
    except OSError:
        return None
    m = re.search(rb'db_pool_connections\{state="in_use"\}\s+([0-9.e+]+)', body)
    return int(float(m.group(1))) if m else None


def wait_pool_idle(base: str, seconds: float = 5) -> tuple[bool, int | None, float]:
    """Poll /metrics until the pool has no connection in use; (ok, last value, seconds waited)."""
    start = time.monotonic()
    value = None
    while time.monotonic() - start < seconds:
        value = pool_in_use(base)
        if value == 0:
            return True, 0, time.monotonic() - start
        time.sleep(0.2)
    return False, value, time.monotonic() - start


def check_ledger(db: Database, ledger: dict[int, set[str]], owners: dict[int, int] | None = None,
                 forbidden: set[str] | None = None) -> tuple[int, list[str]]:
    """Every acknowledged note is in the database with (one of) its acknowledged text(s) and,
    when OWNERS (id -> user id) is given, with its owner; no stored note holds a text from
    FORBIDDEN (texts sent only in requests that had to be refused: another user's note, no
    token)."""
    stored = db.notes()
    problems = []
    for note_id, texts in ledger.items():
        if note_id not in stored:
            problems.append(f"note {note_id} missing")
            continue
        owner, text = stored[note_id]
        if text not in texts:
            problems.append(f"note {note_id} has {text!r}, expected one of {sorted(texts)!r}")
        if owners and note_id in owners and owner != owners[note_id]:
            problems.append(f"note {note_id} belongs to user {owner}, expected {owners[note_id]}")
    if forbidden:
        for note_id, (owner, text) in stored.items():
            if text in forbidden:
                problems.append(f"note {note_id} (user {owner}) has {text!r}, sent only in a refused request")
    return len(ledger), problems


def check_load(db: Database, load) -> tuple[int, list[str]]:
    """check_ledger for a load.Load: texts, owners, and nothing written by refused probes;
    and every keyed POST (Idempotency-Key, sent several times) stored exactly once."""
    checked, problems = check_ledger(db, load.ledger, load.owners, load.forbidden)
    if load.keyed or load.keyed_split:
        texts = Counter(text for _, text in db.notes().values())
        for text in load.keyed:
            if texts[text] != 1:
                problems.append(f"keyed note {text!r} is stored {texts[text]} times, not once")
        for key, ids in load.keyed_split:
            problems.append(f"Idempotency-Key {key} was answered with several notes: {ids}")
    return checked, problems


def summary(name: str, ok: bool, **figures) -> None:
    parts = " ".join(f"{k}={v}" for k, v in figures.items())
    print(f"SUMMARY {name}: {'PASS' if ok else 'FAIL'} {parts}", flush=True)
