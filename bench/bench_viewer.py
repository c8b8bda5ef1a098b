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


RESULTS = ("error", "execute_result", "stream", "non-empty", "empty")


def make_database(path, users_csv, rows, versions=100, per_student=10, seed=3, problems=6):
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
    if problems:
        conn.execute("CREATE INDEX problems_filename ON problems(filename)")
        conn.executemany(
            "INSERT INTO problems VALUES (?,?,?)",
            (
                (filename, f"p{i}", rng.choice(RESULTS))
                for (filename,) in conn.execute("SELECT filename FROM summary").fetchall()
                for i in range(problems)
            ),
        )
    conn.commit()
    conn.close()


def measure(db, users_csv, repeats):
    """Runs in its own process: the numbers for one database."""
    import psutil
    from plotly.io.json import to_json_plotly  # what Dash sends

    import progress_viewer as pv
    from progress_views import access, activity
    from progress_views.data import Data

    settings = {
        **pv.DEFAULTS,
        "SYNC_SQLITE": db,
        "USERS_CSV": users_csv,
        "USER_ATTRS": ["real_name", "team"],
        "PASSWD": "pw",
        "ACCESS_DB": os.path.join(os.path.dirname(db), "access.sqlite"),
    }
    view = Data(settings, access.PasswordGate(settings))
    app = pv.create_app(settings)
    default = activity.Filters()
    regexp = activity.Filters(path_re="pl0[13]/")
    with app.server.test_request_context("/"):
        started = time.perf_counter()
        figure, _, _ = activity.graph(view, default)
        load = time.perf_counter() - started
        timings = {"default": [], "regexp": []}
        for _ in range(repeats):
            for name, filters in (("default", default), ("regexp", regexp)):
                started = time.perf_counter()
                figure_now, _, _ = activity.graph(view, filters)
                to_json_plotly(figure_now)
                timings[name].append(time.perf_counter() - started)
    sent = len(to_json_plotly(figure).encode())
    teacher = measure_teacher(view, app, repeats)
    markers = sum(len(trace["x"]) for trace in figure["data"])
    return {
        "load": load,
        **{f"{k}_p50": statistics.median(v) for k, v in timings.items()},
        **{f"{k}_p95": statistics.quantiles(v, n=20)[-1] for k, v in timings.items()},
        "bytes": sent,
        "markers": markers,
        "rss_mb": psutil.Process().memory_info().rss / 1e6,
        **teacher,
    }


def measure_teacher(view, app, repeats):
    """The first screen (status line and stuck list across every assignment, heatmap and
    progress of one), and the version view of a 500 KB notebook."""
    import numpy as np
    from plotly.io.json import to_json_plotly

    from progress_views import model, moment, problems, version

    started = time.perf_counter()
    histories, _ = view.histories(), view.saves()
    load = time.perf_counter() - started
    history = histories["pl00/pl00.ipynb"]
    at = moment.stamp_of(max(vs[-1].t for vs in history.versions.values()))
    controls = problems.Controls(moment=at, assignment="pl00/pl00.ipynb")
    timings = []
    with app.server.test_request_context("/"):
        for _ in range(repeats):
            started = time.perf_counter()
            first = problems.first_screen(view, controls)
            heatmap = problems.heatmap_view(view, controls)
            to_json_plotly([first, heatmap])
            timings.append(time.perf_counter() - started)
    render = measure_version_view(np, to_json_plotly, model, version, repeats)
    return {
        "history_load": load,
        "heatmap_p50": statistics.median(timings),
        "heatmap_students": len(history.students),
        "heatmap_versions": sum(len(vs) for vs in history.versions.values()),
        "assignments": len(histories),
        "version_p50": render,
    }


def measure_version_view(np, to_json_plotly, model, version, repeats):
    """Read, render and serialize a 500 KB notebook (mostly one PNG) and its diff."""
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import demo_course

    with tempfile.TemporaryDirectory() as dest:
        assignment = demo_course.Assignment(
            "nb.ipynb", "plot", [f"q{i}" for i in range(20)], padding=500_000
        )
        outcomes = {q: "answered" for q in assignment.problems}
        for name, seed in (("nb.bak_1.ipynb", 1), ("nb.ipynb", 2)):
            content = demo_course.assignment_notebook(assignment, outcomes, padding_seed=seed)
            demo_course.write_notebook(os.path.join(dest, name), content, time.time())
        size = os.path.getsize(os.path.join(dest, "nb.ipynb"))
        versions = [model.Version(0, 1, "nb.bak_1.ipynb", {}), model.Version(60, 2, "nb.ipynb", {})]
        history = model.History("nb.ipynb", assignment.problems, {"u": versions})
        timings = []
        for _ in range(repeats):
            started = time.perf_counter()
            to_json_plotly(version.render_version(dest, history, "u", 2, None))
            timings.append(time.perf_counter() - started)
    assert size > 450_000, size
    return statistics.median(timings)


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
    lines += [
        "",
        "The first screen: status line and stuck list across every assignment, heatmap and",
        "progress graph of one (histories read once per database change, then cached):",
        "",
        "| summary rows | assignments | students x versions (one assignment) "
        "| histories load (ms) | first screen p50 (ms) "
        "| version view of a 500 KB notebook p50 (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for rows, r in results:
        if r.get("heatmap_students"):
            per_student = r["heatmap_versions"] // r["heatmap_students"]
            lines.append(
                f"| {rows:,} | {r['assignments']} | {r['heatmap_students']} x {per_student}"
                f" | {r['history_load'] * 1e3:.0f} | {r['heatmap_p50'] * 1e3:.0f} |"
                f" {r['version_p50'] * 1e3:.0f} |"
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
            make_database(db, users, rows, problems=6 if rows <= 100_000 else 0)
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
