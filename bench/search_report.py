#!/usr/bin/env python3
"""Report of bench/search.sh: reads its JSON lines, writes every run to a JSON file and prints
the Markdown section (for bench/RESULTS.md).

    search_report.py RAW.jsonl OUT.json PLANS.txt

Run parameters come from the environment (BENCH_*), as bench/search.sh sets them.
"""

import json
import os
import re
import statistics
import subprocess
import sys

import report  # bench/report.py, beside this script

MIB = 1024 * 1024
NAMES = {"cc": "common+common", "cr": "common+rare", "rr": "rare+rare",
         "asc": "GET /notes?limit=20", "desc": "GET /notes?limit=20&order=desc"}
BACKENDS = ["postgres", "sqlite", "mariadb"]
SEARCH_P99_MS = 50
PAGE_P99_MS = 20
RSS_MIB = 64
RATIO = 10


def env(name, default=""):
    return os.environ.get(name, default)


def git(*args):
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def machine():
    info = report.machine()
    return f"{info['nproc']} CPUs ({info['cpu']}), {info['memory_gib']} GiB memory"


def num(n):
    return f"{int(n):,}".replace(",", " ")


def times(r):
    """A ratio as N×, with the inverse when below 1 (0.0018× reads better as 1/556)."""
    if r >= 1:
        return f"{r:.1f}×" if r < 100 else f"{r:.0f}×"
    return f"{r:.4f}× (1/{1 / r:.0f})" if r < 0.1 else f"{r:.2f}×"


def mib(n):
    return f"{n / MIB:.1f}"


def ms(us):
    return f"{us / 1000:.2f}"


def rps(w):
    return w["requests"] * 1e6 / w["duration_us"]


def errors(w):
    return sum(v for k, v in w.items() if k.startswith("errors_"))


def main():
    raw_path, json_path, plans_path = sys.argv[1:4]
    with open(raw_path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    plans = open(plans_path).read() if os.path.exists(plans_path) else ""
    meta = {k: v for k, v in os.environ.items() if k.startswith("BENCH_")}
    with open(json_path, "w") as f:
        json.dump({"meta": meta, "runs": rows}, f, indent=1)
        f.write("\n")

    kind = lambda k: [r for r in rows if r["kind"] == k]
    setups = {r["backend"]: r for r in kind("setup")}
    backends = [b for b in BACKENDS if b in setups]
    words = (kind("words") or [None])[0]
    checks = {(r["backend"], r["scenario"], r["user"]): r for r in kind("check")}
    migrations = {r["backend"]: r for r in kind("migration")}
    sizes = {(r["backend"], r["when"]): r for r in kind("size")}
    columns = [r for r in kind("column")]

    # wrk: medians over rounds per (backend, scenario, user).
    runs = {}
    for r in kind("wrk"):
        runs.setdefault((r["backend"], r["scenario"], r["user"]), []).append(r)
    api = {}
    for key, rs in runs.items():
        api[key] = {
            "rps": statistics.median(rps(r["wrk"]) for r in rs),
            "p50": statistics.median(r["wrk"]["p50_us"] for r in rs),
            "p99": statistics.median(r["wrk"]["p99_us"] for r in rs),
            "p99_worst": max(r["wrk"]["p99_us"] for r in rs),
            "errors": sum(errors(r["wrk"]) for r in rs),
            "timeouts": sum(r["wrk"]["errors_timeout"] for r in rs),
            "rss": max(r["peak_rss_kib"] for r in rs) * 1024,
            "path": rs[0]["path"],
            "rounds": len(rs),
        }
    measured = kind("wrk") + kind("pgbench") + kind("migration")
    with_rustc = [r for r in measured if r.get("rustc", 0) > 0]
    busiest = max((r.get("background_busy_pct", 0) for r in measured), default=0)
    pgb = {(r["script"], r["scenario"]): r for r in kind("pgbench")}

    out = []
    p = out.append
    total = setups.get("postgres", {}).get("notes")
    p(f"## Full-text search (`GET /notes?q=…`) on {total:,} notes".replace(",", " ") if total else
      "## Full-text search (`GET /notes?q=…`)")
    p("")
    status = git("status", "--porcelain", "--", "api", "entity", "migration")
    p(f"- date: {env('BENCH_STARTED')}, commit `{git('rev-parse', '--short', 'HEAD')}`"
      + (" plus the uncommitted search work in the tree (api/, migration/)" if status else ""))
    p(f"- machine: {machine()}; load average at start {env('BENCH_LOADAVG')}, at end "
      f"{env('BENCH_LOADAVG_END')}. The api, the databases, wrk and pgbench share it.")
    compiles = (f"a compile (rustc) was running during {len(with_rustc)} of the {len(measured)} measured runs"
                if with_rustc else f"no compile (rustc) ran during any of the {len(measured)} measured runs")
    p(f"- {compiles}; busiest background seen just before a measured run: {busiest} % CPU.")
    p(f"- command: `{env('BENCH_COMMAND')}`")
    users, per_user, heavy = int(env("BENCH_USERS", 0)), int(env("BENCH_PER_USER", 0)), int(env("BENCH_HEAVY_NOTES", 0))
    pg_setup = setups.get("postgres")
    if pg_setup:
        p(f"- data (bench/search-data.sql, in PostgreSQL, {pg_setup['load_seconds']:.1f} s, then VACUUM ANALYZE): "
          f"{users} users × {per_user} notes (the typical user is one of them) and a heavy user with "
          f"{num(heavy)} notes, all newer (higher ids) than the others'; 6–18 words a note (12 on average) from a "
          f"vocabulary of {num(env('BENCH_VOCAB', 0))} made-up five-letter words with a Zipf-like skew.")
    if words:
        freq = words["frequency"]
        desc = ", ".join(f"`{w}` in {100 * freq[w]['notes'] / total:.2f} % of all notes "
                         f"({freq[w]['heavy']} of the heavy user's, {freq[w]['typical']} of the typical user's)"
                         for w in words["common"] + words["rare"])
        p(f"- query words: common {', '.join(f'`{w}`' for w in words['common'])}, rare "
          f"{', '.join(f'`{w}`' for w in words['rare'])}: {desc}. Searches: common+common "
          f"`{' '.join(words['common'])}`, common+rare `{words['common'][0]} {words['rare'][0]}`, rare+rare "
          f"`{' '.join(words['rare'])}`, as `GET /notes?q=W1%20W2&limit=20`.")
    others = [b for b in backends if b != "postgres"]
    if others:
        p(f"- " + "; ".join(f"{b}: {setups[b]['notes']:,}".replace(",", " ") + " notes" for b in others)
          + " — copies of PostgreSQL's notes (the typical and heavy users' identical), loaded in "
          + ", ".join(f"{setups[b]['load_seconds']:.1f} s ({b})" for b in others) + ".")
    p(f"- load: wrk, {env('BENCH_CONNECTIONS')} connections, {env('BENCH_THREADS')} threads, "
      f"{env('BENCH_DURATION')} s per run after {env('BENCH_WARMUP')} s of warm-up, {env('BENCH_ROUNDS')} round(s), "
      f"requests given up after {env('BENCH_WRK_TIMEOUT')} s (`wrk --timeout`, counted as errors; wrk's "
      "latencies leave them out); "
      "the tables give the median of the rounds, the worst peak RSS (VmHWM of the api, reset before each run) "
      "and the sum of errors (non-2xx and socket errors). Each search was checked first: 200, a first page of "
      "min(20, matches) notes, and every match once through the `Link`s when there are at most 200. "
      "\"matches\" counts the user's notes holding both words (LIKE); \"alone\" is one request on the "
      "idle api (median of three, after the check), as curl times it; a request slower than "
      f"{env('BENCH_SKIP_MS')} ms alone is not driven with wrk (its requests would only queue).")
    p("")

    p("### Through the api")
    p("")
    p("| backend | request | user | matches | alone ms | req/s | p50 ms | p99 ms | p99 worst round ms | errors | api peak RSS MiB |")
    p("|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    order = [("cc", "typical"), ("cr", "typical"), ("rr", "typical"), ("cc", "heavy"), ("cr", "heavy"),
             ("rr", "heavy"), ("asc", "heavy"), ("desc", "heavy")]
    for b in backends:
        for s, u in order:
            a = api.get((b, s, u))
            c = checks.get((b, s, u))
            if not c:
                continue
            matches = c.get("matches")
            label = NAMES[s] if s in ("asc", "desc") else f"search {NAMES[s]}"
            lead = f"| {b} | {label} | {u} | {matches if matches is not None else '—'} | {ms(c['alone_us'])} | "
            if not a:
                p(lead + f"not driven: over {env('BENCH_SKIP_MS')} ms alone | | | | | |")
                continue
            p(lead + f"{a['rps']:.0f} | {ms(a['p50'])} | "
              f"{ms(a['p99'])} | {ms(a['p99_worst'])} | {a['errors']}"
              + (f" ({a['timeouts']} timeouts)" if a["timeouts"] else "") + f" | {mib(a['rss'])} |")
    p("")

    if pgb:
        p("### The heavy user's searches as SQL (PostgreSQL, pgbench)")
        p("")
        p(f"pgbench -M prepared, {env('BENCH_CONNECTIONS')} clients, {env('BENCH_THREADS')} threads, "
          f"{env('BENCH_PGBENCH_SECONDS')} s after 1 s of warm-up; p50/p99 from its per-transaction log. "
          "LIKE is `bench/search-like.sql` (`WHERE user_id = $1 AND LOWER(text) LIKE '%w1%' AND LOWER(text) "
          "LIKE '%w2%'`, ranked by how often the words occur, then newest: the api's answer), search SQL is "
          "the api's first statement for a first page (`bench/search-fts.sql`: the top rank tier, as "
          "`api/src/search/sql.rs` builds it). api/LIKE compares the api's req/s (table above) with LIKE's "
          "transactions/s at the same concurrency.")
        p("")
        p("| search | matches | LIKE tps | LIKE p50 ms | LIKE p99 ms | search SQL tps | search SQL p50 ms | "
          "search SQL p99 ms | api req/s | api p50 ms | api/LIKE (req/s) |")
        p("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
        for s in ("cc", "cr", "rr"):
            like, fts, a = pgb.get(("search-like.sql", s)), pgb.get(("search-fts.sql", s)), api.get(("postgres", s, "heavy"))
            if not like:
                continue
            ratio = f"**{times(a['rps'] / like['tps'])}**" if a else "—"
            p(f"| {NAMES[s]} | {checks.get(('postgres', s, 'heavy'), {}).get('matches', '—')} | {like['tps']:.0f} | "
              f"{ms(like['p50_us'])} | {ms(like['p99_us'])} | "
              + (f"{fts['tps']:.0f} | {ms(fts['p50_us'])} | {ms(fts['p99_us'])} | " if fts else "— | — | — | ")
              + (f"{a['rps']:.0f} | {ms(a['p50'])} | " if a else "— | — | ") + f"{ratio} |")
        p("")

    if migrations:
        p("### The search migration and the index's size")
        p("")
        p("| backend | notes | `migration up` (search migration alone) s | what it added | size MiB |")
        p("|---|--:|--:|---|--:|")
        for b in backends:
            m = migrations.get(b)
            if not m:
                continue
            before, after = sizes.get((b, "before")), sizes.get((b, "after"))
            parts = []
            if b == "postgres" and before and after:
                for name, size in after["indexes"].items():
                    if name not in before["indexes"]:
                        parts.append((f"index `{name}` (`{after['index_defs'].get(name, '')}`)", size))
                for c in columns:
                    parts.append((f"generated column `{c['column']}` (`{after['columns'].get(c['column'], '')}`): "
                                  f"sum of pg_column_size (the text column: {mib(c['text_bytes'])} MiB)", c["bytes"]))
                parts.append((f"table heap, before → after: {mib(before['heap'])} → {mib(after['heap'])}",
                              after["heap"] - before["heap"]))
                parts.append((f"table with its indexes and TOAST (pg_total_relation_size), before → after: "
                              f"{mib(before['total'])} → {mib(after['total'])}", after["total"] - before["total"]))
            elif b == "sqlite" and before and after:
                for name, size in sorted(after["objects"].items()):
                    if name not in before["objects"]:
                        parts.append((f"`{name}` (dbstat)", size))
                parts.append((f"database file, before → after: {mib(before['file'])} → {mib(after['file'])}",
                              after["file"] - before["file"]))
            elif b == "mariadb" and before and after:
                fts = {k: v for k, v in (after.get("tablespaces") or {}).items()
                       if k not in (before.get("tablespaces") or {})}
                parts.append((f"FULLTEXT index: {len(fts)} auxiliary InnoDB tables "
                              f"(`FTS_…`, allocated size)", sum(fts.values())))
                parts.append((f"table data (data_length, with the generated column), before → after: "
                              f"{mib(before['data'])} → {mib(after['data'])}", after["data"] - before["data"]))
                parts.append((f"the table's other indexes (index_length), before → after: "
                              f"{mib(before['index'])} → {mib(after['index'])}", after["index"] - before["index"]))
            first = True
            for what, size in parts or [("?", 0)]:
                lead = (f"| {b} | {setups[b]['notes']} | {m['seconds']:.1f} | " if first else "| | | | ")
                p(f"{lead}{what} | {'+' if size >= 0 and 'before →' in what else ''}{mib(size)} |")
                first = False
        p("")
        p("The notes were loaded at the migration before search, then `migration up` ran the search "
          f"migration ({', '.join(sorted({m['migrations'] for m in migrations.values()}))}) alone, timed by the "
          "script around the command.")
        p("")

    p("### Targets")
    p("")
    p("| target | measured | met |")
    p("|---|---|---|")
    for b in [b for b in backends if any(k[0] == b for k in checks)]:
        for u in ("typical", "heavy"):
            for s in ("cc", "cr", "rr"):
                a, c = api.get((b, s, u)), checks.get((b, s, u))
                if a:
                    ok = a["p99"] <= SEARCH_P99_MS * 1000
                    p(f"| {b} search {NAMES[s]}, {u} user: p99 ≤ {SEARCH_P99_MS} ms | {ms(a['p99'])} ms | "
                      f"{'yes' if ok else '**no**'} |")
                elif c:
                    p(f"| {b} search {NAMES[s]}, {u} user: p99 ≤ {SEARCH_P99_MS} ms | not driven: "
                      f"{ms(c['alone_us'])} ms for one request alone | **no** |")
        if b == "postgres":
            for s in ("cc", "cr", "rr"):
                like, a = pgb.get(("search-like.sql", s)), api.get((b, s, "heavy"))
                if like and a:
                    r = a["rps"] / like["tps"]
                    p(f"| postgres search {NAMES[s]}, heavy user: api ≥ {RATIO}× LIKE (req/s) | {times(r)} | "
                      f"{'yes' if r >= RATIO else '**no**'} |")
        for s in ("asc", "desc"):
            a = api.get((b, s, "heavy"))
            if a:
                ok = a["p99"] <= PAGE_P99_MS * 1000
                p(f"| {b} {NAMES[s]}, heavy user: p99 ≤ {PAGE_P99_MS} ms | {ms(a['p99'])} ms | {'yes' if ok else '**no**'} |")
        rss = max((a["rss"] for (bb, _, _), a in api.items() if bb == b), default=0)
        p(f"| {b} api peak RSS ≤ {RSS_MIB} MiB | {mib(rss)} MiB | {'yes' if rss <= RSS_MIB * MIB else '**no**'} |")
        errs = sum(a["errors"] for (bb, _, _), a in api.items() if bb == b)
        p(f"| {b} zero errors | {errs} | {'yes' if errs == 0 else '**no**'} |")
    p("")

    # The plan of the heavy user's slowest search (by the api's median latency) on PostgreSQL.
    slow = max((s for s in ("cc", "cr", "rr") if ("postgres", s, "heavy") in api),
               key=lambda s: api[("postgres", s, "heavy")]["p50"], default=None)
    if slow and plans:
        m = re.search(r"=== search-fts\.sql, heavy user, " + slow + r"\n(.*?)\n\n", plans, re.S)
        if m:
            p(f"The heavy user's slowest search through the api (by p50), {NAMES[slow]}: its statement's plan alone "
              "(`EXPLAIN (ANALYZE, BUFFERS)`, one execution on an idle server; every plan is in "
              "`bench/results-search-plans.txt`):")
            p("")
            p("```")
            p(m.group(1).rstrip())
            p("```")
            p("")
    print("\n".join(out).rstrip())


if __name__ == "__main__":
    main()
