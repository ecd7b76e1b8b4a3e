#!/usr/bin/env python3
"""Turn bench/run.sh's raw measurements (JSON lines) into bench/results.json and bench/RESULTS.md.

usage: report.py RAW.jsonl results.json RESULTS.md   (run.sh passes the settings in BENCH_* vars)
"""

import json
import os
import platform
import subprocess
import sys
from collections import defaultdict
from statistics import median

SCENARIOS = {
    "get": "GET /notes/{id}",
    "list": "GET /notes?limit=100",
    "post": "POST /notes",
    "mix": "90/10 GET/POST",
    "postkey": "POST /notes + Idempotency-Key",
}
# The speed targets (signed-in requests): api/baseline requests/s per
# scenario, and absolute bounds.
MIN_RATIO = {"get": 0.90, "list": 0.90, "post": 0.85, "mix": 0.85}
MAX_P99_MS_GET_POSTGRES = 10.0
MAX_RSS_MIB = 64.0
MAX_EXPORT_GROWTH_MIB = 32.0
# The read-replica part (`replica`): the api alone on the primary, and with DATABASE_READ_URL.
REPLICA_SETUPS = {"api": "primary alone", "api_read": "primary + replica"}


def machine():
    mem_kib = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "memory_gib": round(mem_kib / 1048576, 1), "cpu": cpu}


def git_commit():
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return out.stdout.strip() + ("+changes" if dirty else "")
    except OSError:
        return ""


def replica_results(raw):
    """The read-replica part: every run, medians per scenario and setup, ratios, or why skipped."""
    skipped = [r["reason"] for r in raw if r["kind"] == "replica_skipped"]
    info = next((r for r in raw if r["kind"] == "replica_info"), None)
    runs = []
    for r in raw:
        if r["kind"] != "replica":
            continue
        w = r["wrk"]
        reads = r.get("reads", {})
        runs.append({
            "scenario": r["scenario"],
            "setup": REPLICA_SETUPS[r["server"]],
            "round": r.get("round", 1),
            "requests": w["requests"],
            "seconds": round(w["duration_us"] / 1e6, 3),
            "requests_per_s": round(w["requests"] * 1e6 / w["duration_us"], 1),
            "p50_ms": round(w["p50_us"] / 1000, 3),
            "p99_ms": round(w["p99_us"] / 1000, 3),
            "max_ms": round(w["max_us"] / 1000, 3),
            "errors": sum(v for k, v in w.items() if k.startswith("errors_")),
            "reads_on_replica": reads.get("replica", 0),
            "reads_on_primary": reads.get("primary", 0),
            "peak_rss_mib": round(r["peak_rss_kib"] / 1024, 1),
            "background_busy_pct": r.get("background_busy_pct"),
        })
    grouped = defaultdict(list)
    for r in runs:
        grouped[(r["scenario"], r["setup"])].append(r)
    medians = []
    for (scenario, setup), rs in grouped.items():
        on_replica = sum(r["reads_on_replica"] for r in rs)
        counted = on_replica + sum(r["reads_on_primary"] for r in rs)
        medians.append({
            "scenario": scenario,
            "setup": setup,
            "rounds": len(rs),
            "requests_per_s": round(median(r["requests_per_s"] for r in rs), 1),
            "p50_ms": round(median(r["p50_ms"] for r in rs), 3),
            "p99_ms": round(median(r["p99_ms"] for r in rs), 3),
            "errors": sum(r["errors"] for r in rs),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in rs),
            # Without a replica the api counts no db_reads_total: every read is on the primary.
            "replica_share": round(on_replica / counted, 4) if counted else 0.0,
        })
    comparisons = []
    for scenario in dict.fromkeys(r["scenario"] for r in runs):
        rps = {(r["setup"], r["round"]): r["requests_per_s"] for r in runs if r["scenario"] == scenario}
        alone, with_replica = REPLICA_SETUPS["api"], REPLICA_SETUPS["api_read"]
        ratios = [round(rps[(with_replica, n)] / rps[(alone, n)], 3)
                  for n in sorted({n for _, n in rps})
                  if (with_replica, n) in rps and rps.get((alone, n))]
        if ratios:
            comparisons.append({"scenario": scenario, "ratio_requests_per_s": round(median(ratios), 3),
                                "ratios_by_round": ratios})
    return {"skipped": skipped, "info": info and {k: v for k, v in info.items() if k != "kind"},
            "runs": runs, "medians": medians, "comparisons": comparisons}


def replica_section(rep, nproc):
    """RESULTS.md's "Read replica" section."""
    out = ["\n## Read replica (`DATABASE_READ_URL`)\n"]
    if not rep["comparisons"]:
        reasons = "; ".join(rep["skipped"]) or "the `replica` scenario was not in BENCH_SCENARIOS"
        out.append(f"**Not measured**: {reasons}. It runs when a streaming replica of the bench's "
                   "PostgreSQL answers on `BENCH_REPLICA_URL` (`scripts/pg-replica.sh up` makes one on "
                   "127.0.0.1:5433).")
        return out
    info = rep["info"] or {}
    med = {(m["scenario"], m["setup"]): m for m in rep["medians"]}
    alone, with_replica = REPLICA_SETUPS["api"], REPLICA_SETUPS["api_read"]
    out.append("The api twice on the same PostgreSQL data: alone on the primary, and with "
               f"`DATABASE_READ_URL` set to a streaming replica of it ({info.get('url', '?')}, apply delay "
               f"{info.get('apply_delay', '?')}, `READ_MAX_LAG_MS` {info.get('read_max_lag_ms', '?')}); "
               "both run at once and are driven one at a time with the same wrk scenarios, alternating "
               "who goes first. \"Reads on the replica\" is the share of read-only requests the "
               "replica served over the measured run (`db_reads_total{target=...}` in the api's "
               "`/metrics`); the sign-in lookup stays on the primary, at most one query per 500 ms "
               "for the bench's one token. with/alone is the median of the rounds' ratios.\n")
    busy = [r for r in rep["runs"] if (r["background_busy_pct"] or 0) > 15]
    if busy:
        out.append("**Noisy**: other processes kept the CPUs busy before " +
                   ", ".join(f"{r['scenario']} {r['setup']} round {r['round']} ({r['background_busy_pct']} %)"
                             for r in busy) + "; treat those figures with care.\n")
    out.append("| scenario | alone req/s | with replica req/s | with/alone | ratio by round | alone p50 ms "
               "| with p50 ms | alone p99 ms | with p99 ms | reads on the replica (alone / with) "
               "| errors (alone / with) | RSS MiB (alone / with) |")
    out.append("|---|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|")
    for c in rep["comparisons"]:
        a, w = med[(c["scenario"], alone)], med[(c["scenario"], with_replica)]
        out.append(
            f"| {SCENARIOS.get(c['scenario'], c['scenario'])} | {a['requests_per_s']:.0f} | {w['requests_per_s']:.0f} "
            f"| **{c['ratio_requests_per_s']:.2f}** | {' '.join(f'{x:.2f}' for x in c['ratios_by_round'])} "
            f"| {a['p50_ms']:.2f} | {w['p50_ms']:.2f} | {a['p99_ms']:.2f} | {w['p99_ms']:.2f} "
            f"| {a['replica_share'] * 100:.0f} % / {w['replica_share'] * 100:.1f} % "
            f"| {a['errors']} / {w['errors']} | {a['peak_rss_mib']} / {w['peak_rss_mib']} |")
    ratios = ", ".join(f"{c['ratio_requests_per_s']:.2f}× on {SCENARIOS.get(c['scenario'], c['scenario'])}"
                       for c in rep["comparisons"])
    out.append(f"\n**What this shows: overhead, not scaling.** Here ({nproc} CPUs) wrk, the api and both "
               "PostgreSQL servers share the same cores, so sending the reads to the replica only moves "
               "the same work from one server process to another; no capacity is added. The ratio "
               f"({ratios}) is the cost of the replica path: a second pool and its connections, the "
               "per-request check (the replica's lag and replay position against the client's last "
               "write: two atomic loads), the monitor's two queries every 100 ms on each server, and a "
               "second server's caches competing for the same memory. A ratio close to 1 means that "
               "cost is small; it is not a throughput gain, and a ratio above 1 would be noise or "
               "cache luck, not scaling.\n")
    out.append("**What to expect on separate machines** (each PostgreSQL server on a machine of its own, "
               "enough api instances, a fast network). Let *q* be the one-row indexed queries/s one "
               "PostgreSQL server sustains, *r* the queries one read costs (1 for `GET /notes/{id}`; a "
               "page of 100 costs several: say *r* = 3), and *m* the sign-in lookups per request that "
               "reach the primary (the one query the primary keeps for a read). Each api process remembers a token for 500 ms, so a token in steady "
               "use costs at most 2 lookups/s per process whatever its request rate: *m* ≈ 0 for a few "
               "busy clients (this bench), up to *m* = 1 when no request's token was seen by its process "
               "in the last 500 ms (many light clients spread over many instances). While a replica is "
               "fit, every read goes to it and none to the primary, so for reads:\n")
    out.append("- primary alone: reads/s ≤ *R* = *q* / (*r* + *m*);")
    out.append("- *k* replicas (each api instance reading on one of them, instances spread evenly): "
               "reads/s ≤ min(*k*·*q*/*r*, *q*/*m*) — the replicas' reads, and the primary's lookups;")
    out.append("- so with *m* ≈ 0, reads scale to about *k*·*R* — *k*·*R*, not (1+*k*)·*R*: the primary "
               "serves no reads while a replica is fit, it keeps the writes and the lookups. One replica "
               "alone gives the same read rate as the primary alone (and frees the primary for writes); "
               "three give about 3×. With *m* = 1, `GET /notes/{id}` (*r* = 1) goes from *q*/2 to at most "
               "*q*: 2× from the first replica, nothing more from the others; a page of 100 "
               "(*r* = 3) goes from *q*/4 to min(*k*·*q*/3, *q*): up to 4× with 3 replicas.")
    out.append("- with writes (a share 1−*f* of requests, *w* queries each on the primary plus one cheap "
               "`pg_current_wal_lsn()` for the client's cookie, and replayed by every replica at a fraction "
               "*ρ* of their cost): alone, requests/s ≤ *q* / (*f*·*r* + (1−*f*)·*w* + *m*); with *k* "
               "replicas, ≤ min(*q* / ((1−*f*)·*w* + *m*), *q* / (*f*·*r*/*k* + *ρ*·(1−*f*)·*w*)). For the "
               "90/10 mix (*f* = 0.9, *r* = 1, *w* ≈ 2, *m* ≈ 0, *ρ* ≈ 0.5): 0.91 *q* alone, 1.0 *q* "
               "with one replica (+10 %), 3.1 *q* with four (3.4×), and never more than 5 *q* (5.5×, the "
               "primary's writes). Read-your-writes lowers *f* further: a client's reads within the "
               "replica's lag after its own write read on the primary (`db_reads_total{target=\"primary\"}`).")
    return out


def main(raw_path, json_path, md_path):
    env = os.environ
    raw = [json.loads(line) for line in open(raw_path) if line.strip()]
    runs = []
    for r in raw:
        if r["kind"] != "load":
            continue
        w = r["wrk"]
        errors = sum(v for k, v in w.items() if k.startswith("errors_"))
        runs.append({
            "backend": r["backend"],
            "scenario": r["scenario"],
            "server": r["server"],
            "round": r.get("round", 1),
            "requests": w["requests"],
            "seconds": round(w["duration_us"] / 1e6, 3),
            "requests_per_s": round(w["requests"] * 1e6 / w["duration_us"], 1),
            "p50_ms": round(w["p50_us"] / 1000, 3),
            "p99_ms": round(w["p99_us"] / 1000, 3),
            "max_ms": round(w["max_us"] / 1000, 3),
            "errors": errors,
            "errors_detail": {k[len("errors_"):]: v for k, v in w.items() if k.startswith("errors_")},
            "peak_rss_mib": round(r["peak_rss_kib"] / 1024, 1),
            "background_busy_pct": r.get("background_busy_pct"),
        })
    # Each server's figures over the rounds: medians, the worst RSS, every error.
    grouped = defaultdict(list)
    for r in runs:
        grouped[(r["backend"], r["scenario"], r["server"])].append(r)
    by = {}
    for key, rs in grouped.items():
        by[key] = {
            "rounds": len(rs),
            "requests_per_s": round(median(r["requests_per_s"] for r in rs), 1),
            "p50_ms": round(median(r["p50_ms"] for r in rs), 3),
            "p99_ms": round(median(r["p99_ms"] for r in rs), 3),
            "errors": sum(r["errors"] for r in rs),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in rs),
        }
    backends = list(dict.fromkeys(r["backend"] for r in runs))
    comparisons = []
    for b in backends:
        for s in SCENARIOS:
            a, base = by.get((b, s, "api")), by.get((b, s, "baseline"))
            if not a or not base:
                continue
            # The ratio of each round (api and baseline measured back to back), then their median.
            rps = {(r["server"], r["round"]): r["requests_per_s"]
                   for r in runs if r["backend"] == b and r["scenario"] == s}
            rounds = sorted({n for _, n in rps})
            ratios = [round(rps[("api", n)] / rps[("baseline", n)], 3) for n in rounds
                      if ("api", n) in rps and rps.get(("baseline", n))]
            comparisons.append({
                "backend": b,
                "scenario": s,
                "ratio_requests_per_s": round(median(ratios), 3),
                "ratios_by_round": ratios,
                "ratio_p99": round(a["p99_ms"] / base["p99_ms"], 3) if base["p99_ms"] else None,
                "target_ratio": MIN_RATIO.get(s),
            })
    exports = []
    for r in raw:
        if r["kind"] != "export":
            continue
        exports.append({
            "backend": r["backend"],
            "server": r["server"],
            "rows": r["rows"],
            "seconds": r["seconds"],
            "rows_per_s": round(r["rows"] / r["seconds"]) if r["seconds"] else None,
            "rss_before_mib": round(r["rss_before_kib"] / 1024, 1),
            "peak_rss_mib": round(r["peak_rss_kib"] / 1024, 1),
            "rss_growth_mib": round((r["peak_rss_kib"] - r["rss_before_kib"]) / 1024, 1),
            "background_busy_pct": r.get("background_busy_pct"),
        })

    targets = []
    for c in comparisons:
        if c["target_ratio"] is None:
            continue
        targets.append({
            "target": f"{c['backend']} {SCENARIOS[c['scenario']]}: api ≥ {c['target_ratio']:.2f}× baseline req/s",
            "value": f"{c['ratio_requests_per_s']:.2f}×",
            "met": c["ratio_requests_per_s"] >= c["target_ratio"],
        })
    g = by.get(("postgres", "get", "api"))
    if g:
        targets.append({
            "target": f"postgres GET /notes/{{id}}: api p99 ≤ {MAX_P99_MS_GET_POSTGRES:g} ms",
            "value": f"{g['p99_ms']:.2f} ms",
            "met": g["p99_ms"] <= MAX_P99_MS_GET_POSTGRES,
        })
    api_runs = [r for r in runs if r["server"] == "api"]
    if api_runs:
        worst = max(api_runs, key=lambda r: r["peak_rss_mib"])
        targets.append({
            "target": f"api peak RSS under load ≤ {MAX_RSS_MIB:g} MiB",
            "value": f"{worst['peak_rss_mib']} MiB ({worst['backend']} {worst['scenario']})",
            "met": worst["peak_rss_mib"] <= MAX_RSS_MIB,
        })
    for e in exports:
        if e["server"] == "api":
            targets.append({
                "target": f"{e['backend']} export of {e['rows']} rows: api RSS growth ≤ {MAX_EXPORT_GROWTH_MIB:g} MiB",
                "value": f"{e['rss_growth_mib']} MiB",
                "met": e["rss_growth_mib"] <= MAX_EXPORT_GROWTH_MIB,
            })
    failing = [r for r in runs if r["errors"]]
    targets.append({
        "target": "zero errors in every scenario (both servers)",
        "value": ", ".join(f"{r['backend']} {r['scenario']} {r['server']} round {r['round']}: {r['errors']}"
                           for r in failing) or "0",
        "met": not failing,
    })
    replica = replica_results(raw)
    if replica["runs"]:
        failing = [r for r in replica["runs"] if r["errors"]]
        targets.append({
            "target": "zero errors in the read-replica runs (api alone and with the replica)",
            "value": ", ".join(f"{r['scenario']} {r['setup']} round {r['round']}: {r['errors']}"
                               for r in failing) or "0",
            "met": not failing,
        })

    settings = {
        "duration_s": int(env["BENCH_DURATION"]),
        "warmup_s": int(env["BENCH_WARMUP"]),
        "rounds": int(env.get("BENCH_ROUNDS", "1")),
        "connections": int(env["BENCH_CONNECTIONS"]),
        "threads": int(env["BENCH_THREADS"]),
        "rows": int(env["BENCH_ROWS"]),
        "export_rows": int(env["BENCH_EXPORT_ROWS"]),
        "load_generator": subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split("\n")[0].strip(),
    }
    result = {
        "date": env["BENCH_STARTED"],
        "command": env["BENCH_COMMAND"],
        "commit": git_commit(),
        "machine": machine() | {"load_average_at_start": env["BENCH_LOADAVG"],
                                "load_average_at_end": env.get("BENCH_LOADAVG_END", "")},
        "settings": settings,
        "runs": runs,
        "medians": [{"backend": k[0], "scenario": k[1], "server": k[2]} | v for k, v in by.items()],
        "comparisons": comparisons,
        "exports": exports,
        "replica": replica,
        "targets": targets,
    }
    with open(json_path, "w") as f:
        json.dump(result, f, indent=2, ensure_ascii=False)
        f.write("\n")

    m = result["machine"]
    out = []
    out.append("# Benchmark: api (actix-web + SeaORM) against a hand-written actix-web + sqlx baseline\n")
    out.append(f"- date: {result['date']}, commit `{result['commit']}`")
    out.append(f"- machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB memory; "
               f"load average at start {m['load_average_at_start']}, at end {m['load_average_at_end']}. "
               "Servers and load generator share it.")
    busy = [r for r in runs if (r["background_busy_pct"] or 0) > 15]
    if busy:
        out.append("- **noisy**: other processes kept the CPUs busy before " +
                   ", ".join(f"{r['backend']} {r['scenario']} {r['server']} ({r['background_busy_pct']} %)" for r in busy) +
                   "; treat those figures with care.")
    out.append(f"- command: `{result['command']}`")
    out.append(f"- load: {settings['load_generator']}, {settings['connections']} connections, "
               f"{settings['threads']} threads, {settings['duration_s']} s per run after a "
               f"{settings['warmup_s']} s warm-up; {settings['rows']} notes; both servers run at once on "
               "the same database and pool size, driven one at a time, alternating who goes first.")
    out.append("- Every request is signed in: it carries the bench user's bearer token, and every note read "
               "or written is that user's. The baseline looks the token up on every request (SHA-256 "
               "digest, one query joining `sessions` and `users`); the api makes the same lookup but "
               "trusts what it read for 500 ms (`api/src/session_cache.rs`; the API lets a "
               "revocation take up to 1 s to reach every instance), so under load it rarely queries. "
               "Like for like (commit `d3d2cd2`, before that memory), callgrind counted 143.7 k instructions per "
               "`GET /notes/{id}` for the api against 119.0 k for the baseline (SQLite); with it, 100.1 k "
               "against 118.4 k (`BENCH_BACKEND=sqlite bench/callgrind.sh get 1000`).")
    out.append(f"- Each scenario ran {settings['rounds']} round(s) (api and baseline back to back); the "
               "table gives medians over the rounds (req/s, latencies; api/baseline is the median of "
               "the rounds' ratios), the worst RSS and the sum of errors; every run is in results.json.")
    out.append("- RSS is the server's peak resident set (VmHWM) during the measured run. Errors are "
               "non-2xx answers plus socket errors and timeouts.")
    out.append("- The ratios of one run are the figures that count; absolute numbers depend on the machine.\n")
    out.append("## Load\n")
    out.append("| backend | scenario | api req/s | baseline req/s | api/baseline | ratio by round | api p50 ms "
               "| baseline p50 ms | api p99 ms | baseline p99 ms | api errors | baseline errors | api RSS MiB "
               "| baseline RSS MiB |")
    out.append("|---|---|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    for c in comparisons:
        a = by[(c["backend"], c["scenario"], "api")]
        base = by[(c["backend"], c["scenario"], "baseline")]
        out.append(
            f"| {c['backend']} | {SCENARIOS[c['scenario']]} | {a['requests_per_s']:.0f} | {base['requests_per_s']:.0f} "
            f"| **{c['ratio_requests_per_s']:.2f}** | {' '.join(f'{x:.2f}' for x in c['ratios_by_round'])} "
            f"| {a['p50_ms']:.2f} | {base['p50_ms']:.2f} | {a['p99_ms']:.2f} "
            f"| {base['p99_ms']:.2f} | {a['errors']} | {base['errors']} | {a['peak_rss_mib']} | {base['peak_rss_mib']} |")
    keyed = [(b, by.get((b, "post", "api")), by.get((b, "postkey", "api"))) for b in backends]
    keyed = [(b, plain, key) for b, plain, key in keyed if plain and key]
    if keyed:
        out.append("\n## What an `Idempotency-Key` costs\n")
        out.append("`POST /notes` without a key runs as before (one autocommitted `INSERT … RETURNING`); "
                   "with a fresh key per request, the api runs the insert in a transaction and stores "
                   "the answer with one more statement in it (`BEGIN`, the note's `INSERT … RETURNING`, "
                   "the key's `INSERT`, `COMMIT`: one commit, as without a key). The baseline ignores "
                   "the header, so the `POST /notes + Idempotency-Key` row above compares a keyed api "
                   "with a plain baseline; this table compares the api with itself.\n")
        out.append("| backend | api POST req/s, no key | with a key | with/without | p50 ms no key | p50 ms with a key |")
        out.append("|---|--:|--:|--:|--:|--:|")
        for b, plain, key in keyed:
            out.append(f"| {b} | {plain['requests_per_s']:.0f} | {key['requests_per_s']:.0f} "
                       f"| **{key['requests_per_s'] / plain['requests_per_s']:.2f}** "
                       f"| {plain['p50_ms']:.2f} | {key['p50_ms']:.2f} |")
    out.extend(replica_section(replica, m["nproc"]))
    if exports:
        out.append(f"\n## `GET /notes/export` over {exports[0]['rows']} rows\n")
        out.append("| backend | server | rows | seconds | rows/s | RSS before MiB | peak RSS MiB | growth MiB |")
        out.append("|---|---|--:|--:|--:|--:|--:|--:|")
        for e in exports:
            out.append(f"| {e['backend']} | {e['server']} | {e['rows']} | {e['seconds']:.2f} | {e['rows_per_s']} "
                       f"| {e['rss_before_mib']} | {e['peak_rss_mib']} | {e['rss_growth_mib']} |")
    out.append("\n## Targets (reads ≥ 0.90×, writes ≥ 0.85× the baseline; PostgreSQL p99 of GET /notes/{id} ≤ 10 ms)\n")
    out.append("| target | measured | met |")
    out.append("|---|---|---|")
    for t in targets:
        out.append(f"| {t['target']} | {t['value']} | {'yes' if t['met'] else '**no**'} |")
    with open(md_path, "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:4])
