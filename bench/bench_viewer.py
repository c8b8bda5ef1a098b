#!/usr/bin/env python3
"""Benchmark of progress_viewer.py over a term's history: 10k, 100k and 1M summary rows.

For each size a database is generated with make_database's schema (summary, problems,
version_details, its triggers): 20 notebooks per student (300 students at 1M rows), each
saved in some of the term's sync cycles, the version it replaced kept as a backup, 6
graded problems per notebook, worked through over the versions (empty, tried, often an
error, answered). Then, in a fresh process per size:
  start     the viewer's start: import, app, the first activity-view update (a full read)
  default   p50 / p95 of an activity-view update with the default inputs
  regexp    p50 / p95 of an update with a path regexp
  bytes     what one default update sends (the figure's JSON), per marker shown
  teacher   the first screen (status line and stuck list across every assignment, heatmap
            and progress of one): cold (every history read), then p50 warm
  commits   COMMITS times, a commit of 300 changed notebooks as make_database writes it
            (the current row of each becomes its backup, the new version takes the name),
            then the first update of each view after it (the activity view first after
            half of them, the teacher views first after the other half); then COMMITS
            more with the follower running (data.Follower, as under the app), each
            view's update 2 s after each
  memory    the viewer process's RSS before the commits and after them (the commits are
            written by another process, as the loop's make_database is)
Then, in another fresh process, a viewer started again from the catalog and histories the
first one saved (progress_views.snapshot; a restart, or a new gunicorn worker), the
database having moved on by the commits since:
  restart   its start (import, app, the first activity-view update), its first screen
            (every assignment's History), its RSS after both
Writes bench/results/viewer.md.

Example:
    .venv/bin/python bench/bench_viewer.py --sizes 10000 100000 1000000
"""

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from bench_sync import write_results  # noqa: E402

import make_database as md  # noqa: E402

NOTEBOOKS = 20  # per student
PROBLEMS = 6  # per notebook
STUDENTS_AT_1M = 300
CYCLE = 300  # seconds between two sync cycles
CHANGED = 300  # notebooks changed by each measured commit
TERM_START = np.datetime64("2026-09-07T08:00:00")
COUNTS_QUERY = (
    "SELECT t, owner, " + ", ".join(md.COUNT_COLUMNS) + " FROM summary WHERE filename = ?"  # noqa: S608
)


def shape(rows):
    """(students, versions per notebook) for a database of about `rows` summary rows."""
    students = max(1, min(STUDENTS_AT_1M, rows // (NOTEBOOKS * 50)))
    return students, max(1, rows // (students * NOTEBOOKS))


def notebook_name(student, number):
    return f"home/s{student:05d}/notebooks/pl{number:02d}/pl{number:02d}.ipynb"


def stamps(seconds):
    """Local time texts of seconds since TERM_START."""
    return np.datetime_as_string(TERM_START + seconds.astype("timedelta64[s]"), unit="s")


def epochs(texts):
    """UTC seconds of local time texts (one mktime per distinct hour)."""
    local = np.array(texts, dtype="datetime64[s]").astype(np.int64)
    hours, inverse = np.unique(local // 3600, return_inverse=True)
    offsets = [time.mktime(time.gmtime(h * 3600)[:8] + (-1,)) - h * 3600 for h in hours.tolist()]
    return (local + np.array(offsets, dtype=np.int64)[inverse]).tolist()


def make_database(path, users_csv, rows, seed=3):
    """A term of `rows` versions; returns the number of cycles it spans."""
    rng = np.random.default_rng(seed)
    students, versions = shape(rows)
    cycles = versions * 4
    with open(users_csv, "w") as stream:
        stream.write("uid,notebooks,real_name,team\n")
        for s in range(students):
            stream.write(f"s{s:05d},home/s{s:05d}/notebooks,Student {s},team{s % 7}\n")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    tables = [line for line in md.SCHEMA.splitlines() if line.startswith("CREATE TABLE")]
    conn.executescript("\n".join(tables))  # the tables bare: indexes and triggers after
    conn.execute("BEGIN")
    for student in range(students):
        for number in range(NOTEBOOKS):
            write_notebook(conn, rng, student, number, versions, cycles)
    conn.execute("COMMIT")
    conn.executescript(md.SCHEMA)  # indexes, side tables and triggers, over the rows
    conn.close()
    return cycles


def write_notebook(conn, rng, student, number, versions, cycles):
    """Every version of one notebook: saved in `versions` of the cycles, each but the last
    kept under the backup name of the cycle that replaced it."""
    saved_in = np.sort(rng.choice(cycles, versions, replace=False))
    times = stamps(saved_in * CYCLE - rng.integers(1, CYCLE, versions))
    replaced_in = stamps(np.append(saved_in[1:], 0) * CYCLE)
    name = notebook_name(student, number)
    names = [name.replace(".ipynb", f".bak_{t}.ipynb") for t in replaced_in[:-1].tolist()]
    names.append(name)
    owner = f"s{student:05d}"
    counts = rng.integers(0, 4, (versions, 5)).tolist()
    conn.executemany(
        "INSERT INTO summary VALUES (?,?,?,?,?,?,?,?)",
        [(n, t, owner, *c) for n, t, c in zip(names, times.tolist(), counts)],
    )
    results = progressing_results(rng, versions)
    conn.executemany(
        "INSERT INTO problems VALUES (?,?,?)",
        [(n, f"p{i}", r) for n, rs in zip(names, results) for i, r in enumerate(rs)],
    )
    conn.executemany(
        "INSERT INTO version_details(filename, epoch) VALUES (?,?)",
        zip(names, epochs(times.tolist())),
    )


def progressing_results(rng, versions, done=0.0):
    """[[result of each problem]] of a notebook's versions as a student works through it:
    problem i empty until its turn, then tried (non-empty, often an error), then answered
    (an error again now and then). `done`: how far along the first version is."""
    progress = done + (1 - done) * (np.arange(1, versions + 1) / versions)
    turn = (np.arange(PROBLEMS) + 1) / (PROBLEMS + 1)
    ahead = progress[:, None] - turn[None, :] + rng.normal(0, 0.05, (versions, PROBLEMS))
    noise = rng.random((versions, PROBLEMS))
    results = np.where(
        ahead < -0.1,
        "empty",
        np.where(
            ahead < 0,
            np.where(noise < 0.5, "error", "non-empty"),
            np.where(noise < 0.05, "error", np.where(noise < 0.6, "execute_result", "stream")),
        ),
    )
    return results.tolist()


def commit_cycle(db, rng, students, cycle):
    """One sync cycle's commit as make_database writes it: CHANGED notebooks saved again,
    each one's current row becoming its backup. Returns the cycle's time (seconds)."""
    conn = md.connect(db)
    cycle_t = str(stamps(np.array([cycle * CYCLE]))[0])
    records = []
    chosen = rng.choice(students * NOTEBOOKS, min(CHANGED, students * NOTEBOOKS), replace=False)
    for pick in chosen.tolist():
        name = notebook_name(pick // NOTEBOOKS, pick % NOTEBOOKS)
        t, owner, *counts = conn.execute(COUNTS_QUERY, (name,)).fetchone()
        problems = conn.execute(
            "SELECT grade_id, result FROM problems WHERE filename = ?", (name,)
        ).fetchall()
        backup = name.replace(".ipynb", f".bak_{cycle_t}.ipynb")
        new_t = str(stamps(np.array([cycle * CYCLE - int(rng.integers(1, CYCLE))]))[0])
        new_results = progressing_results(rng, 1, done=float(rng.random()))[0]
        new_problems = [(f"p{i}", result) for i, result in enumerate(new_results)]
        for filename, at, numbers, outcomes in (
            (backup, t, counts, problems),
            (name, new_t, rng.integers(0, 4, 5).tolist(), new_problems),
        ):
            epoch = epochs([at])[0]
            records.append(
                md.Record(filename, at, owner, tuple(numbers), outcomes, epoch, epoch, "")
            )
    conn.execute("BEGIN IMMEDIATE")
    md.write_summary(conn, records)
    md.write_problems(conn, records)
    md.write_details(conn, records)
    conn.execute("COMMIT")
    conn.close()
    return int(np.datetime64(cycle_t, "s").astype(np.int64))


def commit_elsewhere(db, seed, students, cycle):
    """commit_cycle in a process of its own, as the loop's make_database is (its memory is
    not the viewer's); returns the cycle's time."""
    command = [sys.executable, __file__, "--commit", db, str(seed), str(students), str(cycle)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return int(output.split()[-1])


def viewer(db, users_csv):
    """(app, Data) of a viewer over the database, its Data configured as the app's (with
    the store of what it saves for the next start)."""
    import progress_viewer as pv
    from progress_views import access, snapshot
    from progress_views.data import Data

    settings = {
        **pv.DEFAULTS,
        "SYNC_SQLITE": db,
        "USERS_CSV": users_csv,
        "USER_ATTRS": ["real_name", "team"],
        "PASSWD": "pw",
        "ACCESS_DB": os.path.join(os.path.dirname(db), "access.sqlite"),
    }
    store = snapshot.Store.for_settings(settings)
    return pv.create_app(settings), Data(settings, access.PasswordGate(settings), store=store)


def measure(db, users_csv, repeats, commits, cycles):
    """Runs in its own process: the numbers for one database."""
    from progress_views import activity

    app, view = viewer(db, users_csv)
    default = activity.Filters()
    regexp = activity.Filters(path_re="pl0[13]/")
    with app.server.test_request_context("/"):
        figure, _, _ = activity.graph(view, default)
        start = time.time() - psutil_create_time()  # since the process began
        timings = {"default": [], "regexp": []}
        for _ in range(repeats):
            for name, filters in (("default", default), ("regexp", regexp)):
                timings[name].append(timed(lambda f=filters: activity_update(activity, view, f)))
    from plotly.io.json import to_json_plotly

    sent = len(to_json_plotly(figure).encode())
    teacher = measure_teacher(view, app, repeats, cycles)
    after = measure_commits(view, app, activity, commits, cycles)
    followed = measure_followed(view, app, activity, commits, cycles + 1 + commits)
    markers = sum(len(trace["x"]) for trace in figure["data"])
    return {
        "start": start,
        **{f"{k}_p50": statistics.median(v) for k, v in timings.items()},
        **{f"{k}_p95": statistics.quantiles(v, n=20)[-1] for k, v in timings.items()},
        "bytes": sent,
        "markers": markers,
        **teacher,
        **after,
        **followed,
        "full_reads": view.catalogs.full_reads,
        "rss_mb": psutil_rss(),
    }


def measure_restart(db, users_csv, cycles):
    """Runs in its own process, after measure(): a viewer started again (a restart, a new
    gunicorn worker) from what the first one saved, the database having moved on by the
    commits since: its start (first activity update), its first screen, its RSS."""
    from progress_views import activity

    app, view = viewer(db, users_csv)
    end = int(np.datetime64(str(stamps(np.array([cycles * CYCLE]))[0]), "s").astype(np.int64))
    with app.server.test_request_context("/"):
        activity.graph(view, activity.Filters())
        start = time.time() - psutil_create_time()
        teacher = timed(lambda: teacher_update(view, teacher_controls(end)))
    return {
        "restart": start,
        "restart_teacher": teacher,
        "restart_full_reads": view.catalogs.full_reads,
        "restart_rss_mb": psutil_rss(),
    }


def psutil_create_time():
    import psutil

    return psutil.Process().create_time()


def psutil_rss():
    import psutil

    return psutil.Process().memory_info().rss / 1e6


def timed(work):
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def activity_update(activity, view, filters):
    from plotly.io.json import to_json_plotly

    figure, _, _ = activity.graph(view, filters)
    to_json_plotly(figure)


def teacher_update(view, controls):
    """The first screen's callbacks on one update: status and table, heatmap and progress."""
    from plotly.io.json import to_json_plotly

    from progress_views import problems

    first = problems.first_screen(view, controls)
    heatmap = problems.heatmap_view(view, controls)
    to_json_plotly([first, heatmap])


def teacher_controls(cycle_seconds):
    from progress_views import moment, problems

    return problems.Controls(moment=moment.stamp_of(cycle_seconds), assignment="pl00/pl00.ipynb")


def measure_teacher(view, app, repeats, cycles):
    """The first screen, cold (every history read) then warm; and the version view of a
    500 KB notebook."""
    from plotly.io.json import to_json_plotly

    from progress_views import model, version

    end = int(np.datetime64(str(stamps(np.array([cycles * CYCLE]))[0]), "s").astype(np.int64))
    controls = teacher_controls(end)
    with app.server.test_request_context("/"):
        cold = timed(lambda: teacher_update(view, controls))
        warm = [timed(lambda: teacher_update(view, controls)) for _ in range(repeats)]
    history = view.history("pl00/pl00.ipynb")
    return {
        "teacher_cold": cold,
        "heatmap_p50": statistics.median(warm),
        "heatmap_students": len(history.students),
        "heatmap_versions": len(history.table.rowid),
        "assignments": len(view.assignments()),
        "version_p50": measure_version_view(to_json_plotly, model, version, repeats),
    }


def measure_commits(view, app, activity, commits, cycles):
    """After each of `commits` commits, the first update of each view (which one first
    alternates)."""
    rng = np.random.default_rng(11)
    students = len(view.people().by_uid)
    rss_before = psutil_rss()
    first = {"activity": [], "teacher": []}
    after = {"activity": [], "teacher": []}
    default = activity.Filters()
    with app.server.test_request_context("/"):
        for number in range(commits):
            cycle_seconds = commit_elsewhere(
                view.settings["SYNC_SQLITE"],
                int(rng.integers(1 << 31)),
                students,
                cycles + 1 + number,
            )
            controls = teacher_controls(cycle_seconds)
            updates = {
                "activity": lambda: activity_update(activity, view, default),
                "teacher": lambda c=controls: teacher_update(view, c),
            }
            order = ("activity", "teacher") if number % 2 == 0 else ("teacher", "activity")
            first[order[0]].append(timed(updates[order[0]]))
            after[order[1]].append(timed(updates[order[1]]))
    return {
        "rss_before_commits_mb": rss_before,
        "commits": commits,
        **{f"{k}_first_p50": statistics.median(v) for k, v in first.items()},
        **{f"{k}_first_max": max(v) for k, v in first.items()},
        **{f"{k}_second_p50": statistics.median(v) for k, v in after.items()},
    }


def measure_followed(view, app, activity, commits, cycles):
    """`commits` more commits with the follower running (as under the app, whose requests
    start it): the update of each view a page asks 2 s after each commit."""
    rng = np.random.default_rng(13)
    students = len(view.people().by_uid)
    found = {"activity": [], "teacher": []}
    view.follower.touch()
    with app.server.test_request_context("/"):
        for number in range(commits):
            cycle_seconds = commit_elsewhere(
                view.settings["SYNC_SQLITE"], int(rng.integers(1 << 31)), students, cycles + number
            )
            time.sleep(2)
            controls = teacher_controls(cycle_seconds)
            found["activity"].append(
                timed(lambda: activity_update(activity, view, activity.Filters()))
            )
            found["teacher"].append(timed(lambda c=controls: teacher_update(view, c)))
    return {f"{k}_followed_p50": statistics.median(v) for k, v in found.items()}


def measure_version_view(to_json_plotly, model, version, repeats):
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
        "Times in ms. The activity view: one update (query, figure, JSON); the teacher views:",
        "the first screen's update (status line and stuck list across every assignment,",
        "heatmap and progress of one).",
        "",
        "A first start reads the database in full; a restart (a new gunicorn worker, the",
        "service restarted) starts from the catalog and histories saved by the first one.",
        "",
        "| summary rows | students x notebooks x versions | first start | restart "
        "| activity p50 / p95 | regexp p50 / p95 | bytes/marker | teacher cold: first start "
        "/ restart | teacher warm p50 | RSS before / after the commits / restart (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for rows, r in results:
        students, versions = shape(rows)
        lines.append(
            f"| {rows:,} | {students} x {NOTEBOOKS} x {versions} | {r['start'] * 1e3:.0f} "
            f"| {r['restart'] * 1e3:.0f} "
            f"| {r['default_p50'] * 1e3:.0f} / {r['default_p95'] * 1e3:.0f} "
            f"| {r['regexp_p50'] * 1e3:.0f} / {r['regexp_p95'] * 1e3:.0f} "
            f"| {r['bytes'] / max(1, r['markers']):.0f} | {r['teacher_cold'] * 1e3:.0f} "
            f"/ {r['restart_teacher'] * 1e3:.0f} | {r['heatmap_p50'] * 1e3:.0f} "
            f"| {r['rss_before_commits_mb']:.0f} / {r['rss_mb']:.0f} "
            f"/ {r['restart_rss_mb']:.0f} |"
        )
    lines += [
        "",
        f"After a commit of {CHANGED} changed notebooks (600 new rows, 300 replaced): the first",
        "update of each view, which reads what changed (the activity view first after half",
        "of the commits, the teacher views first after the other half), and the other view's",
        "update right after it; then as many commits again with the follower running (a",
        "thread that reads each commit as it lands while pages are open), each view's update",
        "2 s after each:",
        "",
        "| summary rows | commits | activity first p50 (max) | teacher first p50 (max) "
        "| activity second p50 | teacher second p50 | with the follower, 2 s after: activity "
        "/ teacher p50 | full reads (first start / restart) | version view p50 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for rows, r in results:
        lines.append(
            f"| {rows:,} | {r['commits']} | {r['activity_first_p50'] * 1e3:.0f} "
            f"({r['activity_first_max'] * 1e3:.0f}) | {r['teacher_first_p50'] * 1e3:.0f} "
            f"({r['teacher_first_max'] * 1e3:.0f}) | {r['activity_second_p50'] * 1e3:.0f} "
            f"| {r['teacher_second_p50'] * 1e3:.0f} "
            f"| {r['activity_followed_p50'] * 1e3:.0f} / {r['teacher_followed_p50'] * 1e3:.0f} "
            f"| {r['full_reads']} / {r['restart_full_reads']} "
            f"| {r['version_p50'] * 1e3:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--commits", type=int, default=10)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "viewer.md"))
    parser.add_argument(
        "--measure", nargs=3, metavar=("DB", "USERS_CSV", "CYCLES"), help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--commit", nargs=4, metavar=("DB", "SEED", "STUDENTS", "CYCLE"), help=argparse.SUPPRESS
    )
    parser.add_argument("--restart", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.commit:
        db, seed, students, cycle = args.commit
        rng = np.random.default_rng(int(seed))
        print(commit_cycle(db, rng, int(students), int(cycle)))
        return 0
    if args.measure:
        db, users, cycles = args.measure
        if args.restart:
            print(json.dumps(measure_restart(db, users, int(cycles) + 2 * args.commits)))
        else:
            print(json.dumps(measure(db, users, args.repeats, args.commits, int(cycles))))
        return 0
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_viewer_") as tmp:
        for rows in args.sizes:
            db, users = os.path.join(tmp, f"{rows}.sqlite"), os.path.join(tmp, f"{rows}.csv")
            started = time.perf_counter()
            cycles = make_database(db, users, rows)
            print(f"{rows} rows generated in {time.perf_counter() - started:.0f} s", flush=True)
            command = [
                sys.executable,
                __file__,
                "--measure",
                db,
                users,
                str(cycles),
                "--repeats",
                str(args.repeats),
                "--commits",
                str(args.commits),
            ]
            found = {}
            for again in ([], ["--restart"]):  # a first start, then one from what it saved
                run = subprocess.run(command + again, check=True, capture_output=True, text=True)
                found.update(json.loads(run.stdout.splitlines()[-1]))
            results.append((rows, found))
            print(rows, found, flush=True)
    text = report(results)
    write_results(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
