#!/usr/bin/env python3
"""Benchmark of progress_viewer.py's activity view at 10k, 100k and 1M summary rows.

For each size, a database of the seed's schema is generated (files with many backup
versions: rows / 100 notebooks of 100 versions each, 10 notebooks per student), and in a
fresh process per size:
  load     the first update, which reads the catalog (once per database change)
  default  p50 / p95 of an update with the default inputs (100 files, every version)
  regexp   p50 / p95 of an update with a path regexp
  bytes    what one default update sends (the figure's JSON), per marker shown
  memory   the viewer process's RSS after the updates
Writes bench/results/viewer.md.

Example:
    .venv/bin/python bench/bench_viewer.py --sizes 10000 100000 1000000
"""

import argparse
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)


def make_database(path, users_csv, rows, versions=100, per_student=10, seed=3):
    rng = random.Random(seed)
    n_files = max(1, rows // versions)
    n_students = max(1, n_files // per_student)
    with open(users_csv, "w") as stream:
        stream.write("uid,notebooks,real_name,team\n")
        for s in range(n_students):
            stream.write(f"s{s:05d},home/s{s:05d}/notebooks,Student {s},team{s % 7}\n")
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(
        "CREATE TABLE summary(filename unique, t, owner, code_ok, code_display, code_stream, "
        "code_error, code_empty)"
    )
    conn.execute("CREATE TABLE problems(filename, grade_id, result)")
    start = time.mktime((2026, 11, 2, 9, 0, 0, 0, 0, -1))

    def generate():
        for f in range(n_files):
            student = f % n_students
            base = f"home/s{student:05d}/notebooks/pl{f // n_students:02d}/pl{f // n_students:02d}"
            t = start + rng.randrange(3600)
            for v in range(versions):
                t += rng.randrange(30, 600)
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t))
                name = f"{base}.ipynb" if v == versions - 1 else f"{base}.bak_{stamp}.ipynb"
                counts = [rng.randrange(4) for _ in range(5)]
                yield (name, stamp, f"s{student:05d}", *counts)

    conn.executemany("INSERT INTO summary VALUES (?,?,?,?,?,?,?,?)", generate())
    conn.commit()
    conn.close()


def measure(db, users_csv, repeats):
    """Runs in its own process: the numbers for one database."""
    import psutil
    from plotly.io.json import to_json_plotly  # what Dash sends

    import progress_viewer as pv

    settings = {**pv.DEFAULTS, "SYNC_SQLITE": db, "USERS_CSV": users_csv,
                "USER_ATTRS": ["real_name", "team"], "PASSWD": "pw"}  # fmt: skip
    view = pv.ActivityView(settings)
    app = pv.create_app(settings)
    default = (None, "", [], "", "", "latest", [], 100)
    regexp = (None, "pl0[13]/", [], "", "", "latest", [], 100)
    with app.server.test_request_context("/"):
        started = time.perf_counter()
        figure, _, _ = view.graph(*default)
        load = time.perf_counter() - started
        timings = {"default": [], "regexp": []}
        for _ in range(repeats):
            for name, args in (("default", default), ("regexp", regexp)):
                started = time.perf_counter()
                figure_now, _, _ = view.graph(*args)
                to_json_plotly(figure_now)
                timings[name].append(time.perf_counter() - started)
    sent = len(to_json_plotly(figure).encode())
    markers = sum(len(trace["x"]) for trace in figure["data"])
    return {
        "load": load,
        **{f"{k}_p50": statistics.median(v) for k, v in timings.items()},
        **{f"{k}_p95": statistics.quantiles(v, n=20)[-1] for k, v in timings.items()},
        "bytes": sent,
        "markers": markers,
        "rss_mb": psutil.Process().memory_info().rss / 1e6,
    }


def report(results):
    lines = [
        f"# Viewer benchmark ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores)",
        "",
        "Times are one update of the activity view (query, figure, JSON), in ms.",
        "",
        "| summary rows | first load (ms) | default p50 / p95 | regexp p50 / p95 "
        "| bytes sent | markers | bytes/marker | RSS (MB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for rows, r in results:
        lines.append(
            f"| {rows:,} | {r['load'] * 1e3:.0f} | {r['default_p50'] * 1e3:.0f} / "
            f"{r['default_p95'] * 1e3:.0f} | {r['regexp_p50'] * 1e3:.0f} / "
            f"{r['regexp_p95'] * 1e3:.0f} | {r['bytes']:,} | {r['markers']:,} | "
            f"{r['bytes'] / max(1, r['markers']):.0f} | {r['rss_mb']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "viewer.md"))
    parser.add_argument("--measure", nargs=2, metavar=("DB", "USERS_CSV"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(*args.measure, args.repeats)))
        return 0
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_viewer_") as tmp:
        for rows in args.sizes:
            db, users = os.path.join(tmp, f"{rows}.sqlite"), os.path.join(tmp, f"{rows}.csv")
            make_database(db, users, rows)
            command = [
                sys.executable,
                __file__,
                "--measure",
                db,
                users,
                "--repeats",
                str(args.repeats),
            ]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            results.append((rows, json.loads(output.splitlines()[-1])))
            print(rows, results[-1][1], flush=True)
    text = report(results)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as stream:
        stream.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
