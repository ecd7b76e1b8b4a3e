"""Property-based API testing: schemathesis with all checks against /openapi.json.

    python3 reliability/scenario_schemathesis.py

The server runs on a fresh SQLite database. Schemathesis runs every phase (examples, coverage,
fuzzing, stateful) with `--checks all`, at most SCHEMATHESIS_MAX_EXAMPLES examples per operation
(default 25) within SCHEMATHESIS_MAX_TIME seconds (default 90). Any failure fails the scenario;
the full report is printed then. Adjustments to the contract (each explained):
  - st_hooks.py adds `minItems: 1, maxItems: 5000` to the `POST /notes/bulk` body, as the
    contract mandates 422 for an empty array;
  - `--generation-allow-x00 false`: the contract says "non-empty string"; the server rejects NUL
    characters in strings with 422 (PostgreSQL text cannot hold them), which the schema does not
    express. Not generating NULs keeps `positive_data_acceptance` about what the contract defines.
  - schemathesis.toml adds 413 to the statuses that count as rejecting an invalid request
    (the contract answers 413 for bodies over the limit, also for bulk bodies over 5000 items);
  - `--workers 1`: with several threads, hypothesis' lambda description trips a CPython 3.11
    bug ("AST constructor recursion depth mismatch"), an error of the tool, not of the server.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

from common import Database, Failure, Server, log, summary

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> bool:
    max_examples = os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "25")
    max_time = os.environ.get("SCHEMATHESIS_MAX_TIME", "90")
    db = Database("sqlite", "st")
    server = Server(db.url, name="schemathesis")
    ok = False
    try:
        base = server.start().wait_ready()
        cmd = ["schemathesis", "--config-file", os.path.join(HERE, "schemathesis.toml"),
               "run", f"{base}/openapi.json", "--checks", "all",
               "--max-examples", max_examples, "--max-time", max_time, "--workers", "1",
               "--request-timeout", "10", "--generation-allow-x00", "false", "--no-color"]
        log("schemathesis: " + " ".join(cmd))
        env = dict(os.environ, SCHEMATHESIS_HOOKS="st_hooks",
                   PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
        t0 = time.monotonic()
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=db.tmpdir)
        elapsed = time.monotonic() - t0
        out = res.stdout + res.stderr
        with open(os.path.join(server.logdir, "schemathesis.out"), "w") as f:
            f.write(out)
        cases = re.search(r"(\d+) generated", out)
        found = re.search(r"found (\d+) unique failures", out)
        failures = int(found.group(1)) if found else (0 if res.returncode == 0 else -1)
        errors = len(re.findall(r"^(Runtime Error|Network Error|Schema Error)", out, re.M))
        if server.proc.poll() is not None:
            log("schemathesis FAIL: the server died")
            res.returncode = res.returncode or 1
        ok = res.returncode == 0 and failures == 0
        if not ok:
            print(out[-20000:], file=sys.stderr)
        summary("schemathesis", ok, seconds=f"{elapsed:.0f}", test_cases=cases.group(1) if cases else "?",
                failures=failures, errors=errors, exit_status=res.returncode,
                report=os.path.join(server.logdir, "schemathesis.out"))
    except Failure as e:
        log(f"schemathesis FAIL: {e}")
    finally:
        server.stop()
        db.close()
    return ok


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
