"""Property-based API testing: schemathesis with all checks against /openapi.json.

    python3 reliability/scenario_schemathesis.py

The server runs on a fresh SQLite database. One user is signed up, made an admin with
`api create-admin` (password on stdin) and signed in first; its credentials go to st_hooks.py,
whose `@schemathesis.auth` provider sends the bearer token on every request and restores the
identity whenever a generated request ended or changed it (see st_hooks.py: schemathesis itself
signs out, deletes its own user or deactivates it now and then). Schemathesis runs every phase (examples, coverage,
fuzzing, stateful) with `--checks all`, at most SCHEMATHESIS_MAX_EXAMPLES examples per operation
(default 25) within SCHEMATHESIS_MAX_TIME seconds (default 90). Any failure fails the scenario;
the full report is printed then. Adjustments (each explained):
  - it runs as an admin (as a plain user, `POST /users` then `GET /users/{id}` is 404 by
    design, which `ensure_resource_availability` reports, and `GET /users` is only ever 403);
  - st_hooks.py gives the token through an auth provider, not a fixed `--header`, and restores
    the identity (`api create-admin` + sign-in) when a generated request ended or changed it;
  - st_hooks.py adds `minItems: 1, maxItems: 5000` to the `POST /notes/bulk` body, as the
    the API requires 422 for an empty array;
  - `--generation-allow-x00 false`: the README says "non-empty string"; the server rejects NUL
    characters in strings with 422 (PostgreSQL text cannot hold them), which the schema does not
    express. Not generating NULs keeps `positive_data_acceptance` about what the API documents.
  - schemathesis.toml adds 413 to the statuses that count as rejecting an invalid request
    (the API answers 413 for bodies over the limit, also for bulk bodies over 5000 items);
  - SIGNIN_MAX_FAILURES=1000: schemathesis repeats a few e-mail addresses, so with the default
    of 5 most generated sign-ins would answer 429 (the sign-in throttle, tested by the test
    suite) and the route's own validation and 401s would go untested;
  - schemathesis.toml leaves `DELETE /users/{id}` out of the stateful phase only (see there);
  - `--workers 1`: with several threads, hypothesis' lambda description trips a CPython 3.11
    bug ("AST constructor recursion depth mismatch"), an error of the tool, not of the server.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

from common import API_BIN, PASSWORD, Database, Failure, Server, http, log, signin, signup, summary

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> bool:
    max_examples = os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "25")
    max_time = os.environ.get("SCHEMATHESIS_MAX_TIME", "90")
    db = Database("sqlite", "st")
    # the sign-in throttle (tested by the test suite) would answer most generated sign-ins 429
    # (schemathesis repeats a few addresses) and hide the route's own answers from it
    server = Server(db.url, env={"SIGNIN_MAX_FAILURES": "1000"}, name="schemathesis")
    ok = False
    try:
        base = server.start().wait_ready()
        # one user, made an admin (see st_hooks.py), then signed in
        email = f"rel-st-{os.getpid()}@example.com"
        user = signup(base, email)
        res = subprocess.run([API_BIN, "create-admin", email], input=PASSWORD + "\n", capture_output=True,
                             text=True, env=dict(server.env, LOG_FORMAT="json", RUST_LOG="warn"), timeout=60)
        if res.returncode != 0:
            raise Failure(f"api create-admin {email} exited {res.returncode}: {res.stderr.strip()[-300:]}")
        token = signin(base, email)
        status, _, me = http("GET", f"{base}/users/me", token=token)
        if status != 200 or not json.loads(me).get("is_admin"):
            raise Failure(f"after create-admin, GET /users/me answered {status}: {me[:200]!r}")
        auth_log = os.path.join(server.logdir, "schemathesis-auth.log")
        if os.path.exists(auth_log):
            os.remove(auth_log)
        cmd = ["schemathesis", "--config-file", os.path.join(HERE, "schemathesis.toml"),
               "run", f"{base}/openapi.json", "--checks", "all",
               "--max-examples", max_examples, "--max-time", max_time, "--workers", "1",
               "--request-timeout", "10", "--generation-allow-x00", "false", "--no-color"]
        log("schemathesis: " + " ".join(cmd))
        env = dict(os.environ, SCHEMATHESIS_HOOKS="st_hooks",
                   PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   REL_ST_BASE=base, REL_ST_EMAIL=email, REL_ST_PASSWORD=PASSWORD, REL_ST_TOKEN=token,
                   REL_ST_USER_ID=str(user["id"]), REL_ST_AUTH_LOG=auth_log, REL_ST_API_BIN=API_BIN,
                   REL_ST_DATABASE_URL=db.url)
        t0 = time.monotonic()
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=db.tmpdir)
        elapsed = time.monotonic() - t0
        out = res.stdout + res.stderr
        with open(os.path.join(server.logdir, "schemathesis.out"), "w") as f:
            f.write(out)
        cases = re.search(r"(\d+) generated", out)
        found = re.search(r"found (\d+) unique failures?", out)
        failures = int(found.group(1)) if found else (0 if res.returncode == 0 else -1)
        errors = len(re.findall(r"^(Runtime Error|Network Error|Schema Error)", out, re.M))
        try:
            renewals = open(auth_log).read().splitlines()
        except OSError:
            renewals = []
        if renewals:
            log("schemathesis: identity renewed: " + "; ".join(renewals[:10]))
        if server.proc.poll() is not None:
            log("schemathesis FAIL: the server died")
            res.returncode = res.returncode or 1
        ok = res.returncode == 0 and failures == 0
        if not ok:
            print(out[-20000:], file=sys.stderr)
        summary("schemathesis", ok, seconds=f"{elapsed:.0f}", test_cases=cases.group(1) if cases else "?",
                failures=failures, errors=errors, reauth=len(renewals), exit_status=res.returncode,
                report=os.path.join(server.logdir, "schemathesis.out"))
    except Failure as e:
        log(f"schemathesis FAIL: {e}")
    finally:
        server.stop()
        db.close()
    return ok


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
