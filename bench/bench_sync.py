#!/usr/bin/env python3
"""Benchmark of the sync side: rsync_notebooks.py cycles against bare rsync.

Builds a course of --students x --notebooks notebooks (log-normal sizes, median about
60 KB, mostly PNG images as in real plotting notebooks), then, on --copies destination
pairs, times in the same run:
  full   the first cycle (everything copied and parsed)
  5%     --rounds cycles, each after 5% of the notebooks changed
  none   --rounds cycles where nothing changed
for bare rsync (same flags, same tree, its own destination) and for one running
`rsync_notebooks.py --no-sudo --min-sleep 4 --overhead 1` (--loop-sleep) per destination, as an
instructor runs it all term: the time is the cycle time the loop prints (rsync, the log,
make_database.py), and its WAL checkpoints (every few cycles) fall in the cycles where
they happen. Every timed copy starts after os.sync(), so that the write-back of one copy
never lands in the other's time. While the loop sleeps the benchmark changes the files and
runs bare rsync; if that outlasts the loop's sleep it stops with an error (raise
--loop-sleep for a large course). Medians and means are reported, plus the database's rows
after the full cycle and at the end, and make_database.py's notebooks per second. Writes
bench/results/sync.md.

Example:
    .venv/bin/python bench/bench_sync.py --students 300 --notebooks 20
    .venv/bin/python bench/bench_sync.py --students 3000 --copies 1 --rounds 3 --loop-sleep 60
"""

import argparse
import json
import os
import random
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools"))
import demo_course  # noqa: E402

import rsync_notebooks  # noqa: E402

PHASES = ("full", "5%", "none")


def make_tree(root, students, notebooks, seed=7):
    rng = random.Random(seed)
    users = []
    paths = []
    for s in range(students):
        uid = f"s{s:04d}"
        users.append((uid, f"class/{uid}/notebooks"))
        for n in range(notebooks):
            size = int(min(2_000_000, rng.lognormvariate(11.0, 0.8)))  # median ~60 KB
            assignment = demo_course.Assignment(
                path=f"pl{n:02d}/pl{n:02d}.ipynb",
                kernel="plot",
                problems=[f"p{n}_{i}" for i in range(6)],
                padding=size,
            )
            outcomes = {g: rng.choice(["empty", "error", "answered"]) for g in assignment.problems}
            path = os.path.join(root, "class", uid, "notebooks", assignment.path)
            content = demo_course.assignment_notebook(
                assignment, outcomes, padding_seed=s * 100 + n
            )
            demo_course.write_notebook(path, content, time.time() - 3600)
            paths.append(path)
    with open(os.path.join(root, "users.csv"), "w") as stream:
        stream.write("uid,notebooks\n" + "".join(f"{u},{p}\n" for u, p in users))
    return paths


def touch_some(paths, fraction, rng):
    changed = rng.sample(paths, int(len(paths) * fraction))
    for path in changed:
        with open(path) as stream:
            nb = json.load(stream)
        nb["cells"][2]["source"] = f"x = {rng.randrange(10**6)}"
        demo_course.write_notebook(path, nb, time.time())
    return len(changed)


def bare_rsync(root, dest, suffix):
    sources = sorted(
        os.path.join("class", d, "notebooks") for d in os.listdir(os.path.join(root, "class"))
    )
    command = rsync_notebooks.rsync_command(sources, dest, suffix, sudo=False)
    # rsync's temporary files go there (the loop makes it in its own destination)
    os.makedirs(os.path.join(root, dest, rsync_notebooks.RSYNC_TEMP_DIR), exist_ok=True)
    log = os.path.join(root, f"bare{suffix}.log")
    started = time.perf_counter()
    with open(log, "w") as stream:
        subprocess.run(command, cwd=root, check=True, stdout=stream)
    return time.perf_counter() - started


LOOP_SLEEP = 4  # seconds the loop sleeps between cycles: time to change files and run bare rsync


def start_loop(root, copy, sleep=LOOP_SLEEP):
    command = [
        sys.executable,
        os.path.join(ROOT, "rsync_notebooks.py"),
        "--no-sudo",
        "--min-sleep",
        f"{sleep:g}",
        "--overhead",
        "1",
        "--dest",
        f"sync_dest{copy}",
        "--log-dir",
        f"sync_logs{copy}",
        "--db",
        f"sync{copy}.sqlite",
    ]
    return subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, text=True)


class Cycle:
    """One cycle the running loop printed: the time it took (`took X sec`), the seconds it
    sleeps after it (`sleep P sec`) and when the benchmark read that line."""

    def __init__(self, took, sleep):
        self.took = took
        self.wakes = time.monotonic() + sleep


def next_cycle(loop):
    """The next cycle the running loop prints."""
    for line in loop.stdout:
        took = re.search(r"took ([0-9.]+) sec", line)
        sleep = re.search(r"sleep ([0-9.e+]+) sec", line)
        if took and sleep:
            return Cycle(float(took.group(1)), float(sleep.group(1)))
    raise RuntimeError("rsync_notebooks.py stopped")


def check_asleep(cycle):
    """Stop if the loop woke before the benchmark's work between its cycles was done: the
    loop's next cycle would then overlap bare rsync or miss some of the changes."""
    if time.monotonic() >= cycle.wakes:
        raise RuntimeError(
            "changing the files and bare rsync outlasted the loop's sleep: raise --loop-sleep"
        )


def time_cycles(
    args, paths, rng, times, changed, bare_rsync, start_loop, after_full=None, after_pair=None
):
    """For each of --copies destination pairs: the full copy, then --rounds cycles after 5 %
    of `paths` changed and --rounds with no change, each by `bare_rsync(dest, suffix)` and
    by the next cycle of the running loop `start_loop(copy)`; times appended to `times`
    (phase: (bare, ours)) and the number of changed files to `changed`. `after_full(copy)`,
    if given, runs while the loop sleeps after its full cycle, `after_pair(copy)` once the
    pair is done."""
    for copy in range(args.copies):
        bare_dest = f"bare_dest{copy}"
        # before each timed copy: no write-back of one copy lands in the other's time
        os.sync()
        times["full"][0].append(bare_rsync(bare_dest, ".bak_full"))
        os.sync()
        loop = start_loop(copy)
        try:
            cycle = next_cycle(loop)
            times["full"][1].append(cycle.took)
            if after_full:
                after_full(copy)
            # while the loop sleeps: change files, copy them with bare rsync, then let the
            # loop's next cycle copy them too
            for phase in ("5%", "none"):
                for turn in range(args.rounds):
                    if phase == "5%":
                        changed[phase] = touch_some(paths, 0.05, rng)
                    os.sync()
                    suffix = f".bak_{phase[0]}{copy}_{turn}"
                    times[phase][0].append(bare_rsync(bare_dest, suffix))
                    os.sync()
                    check_asleep(cycle)
                    cycle = next_cycle(loop)
                    times[phase][1].append(cycle.took)
        finally:
            loop.terminate()
            loop.wait()
        if after_pair:
            after_pair(copy)


def write_results(path, text):
    """The benchmark's Markdown into bench/results/ (or --out), and on the terminal."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as stream:
        stream.write(text)
    print(text)


def run(args):
    rng = random.Random(1)
    root = tempfile.mkdtemp(prefix="bench_sync_", dir=args.tmp)
    times = {phase: ([], []) for phase in PHASES}  # phase: (bare times, our times)
    changed = {"full": args.students * args.notebooks, "none": 0}
    databases = {}  # "after the full cycle", "at the end": the first loop's database_size
    try:
        paths = make_tree(root, args.students, args.notebooks)
        total = sum(os.path.getsize(p) for p in paths)
        sizes = sorted(os.path.getsize(p) for p in paths)

        def after_full(copy):
            if copy == 0:
                databases["after the full cycle"] = database_size(root, 0)

        def after_pair(copy):
            # The pair's copies go (but the first loop's, which parse_rate reads): each
            # keeps ~0.7 GB in the page cache, and with them the later pairs' cycles grew
            # slower and slower as the kernel reclaimed memory (a full cycle by hand, the
            # same each time: 4.2, 4.5, 4.8, 5.7, 6.5 s as copies piled up)
            shutil.rmtree(os.path.join(root, f"bare_dest{copy}"))
            if copy:
                shutil.rmtree(os.path.join(root, f"sync_dest{copy}"))

        time_cycles(
            args,
            paths,
            rng,
            times,
            changed,
            lambda d, x: bare_rsync(root, d, x),
            lambda copy: start_loop(root, copy, args.loop_sleep),
            after_full,
            after_pair,
        )
        databases["at the end"] = database_size(root, 0)
        parse = parse_rate(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    results = [(phase, changed[phase], *times[phase]) for phase in PHASES]
    return total, statistics.median(sizes), results, databases, parse


def database_size(root, copy):
    """Rows of `summary` and `problems` in loop `copy`'s database, and its bytes on disk
    (with its write-ahead log)."""
    path = os.path.join(root, f"sync{copy}.sqlite")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        summary = conn.execute("SELECT count(*) FROM summary").fetchone()[0]
        problems = conn.execute("SELECT count(*) FROM problems").fetchone()[0]
    finally:
        conn.close()
    size = sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))
    return summary, problems, size


def parse_rate(root):
    """make_database.py's notebooks per second over the whole copied tree."""
    import make_database

    paths = []
    for folder, _, files in os.walk(os.path.join(root, "sync_dest0")):
        paths += [os.path.join(folder, f) for f in files if f.endswith(".ipynb")]
    started = time.perf_counter()
    for path in paths:
        make_database.parse_notebook(path)
    return len(paths) / (time.perf_counter() - started)


def cycle_tables(results):
    """The lines of the table of medians and ratios of [(phase, files changed, bare rsync
    times, rsync_notebooks.py times)], then every cycle's times."""
    lines = [
        "| cycle | files changed | cycles | bare rsync p50 (s) | rsync_notebooks.py p50 (s) "
        "| ratio of p50 | ratio of means |",
        "|---|---|---|---|---|---|---|",
    ]
    for phase, changed, bare, mine in results:
        p50 = statistics.median(mine) / statistics.median(bare)
        mean = statistics.mean(mine) / statistics.mean(bare)
        lines.append(
            f"| {phase} | {changed} | {len(mine)} | {statistics.median(bare):.2f} "
            f"| {statistics.median(mine):.2f} | {p50:.2f}x | {mean:.2f}x |"
        )
    lines += ["", "Every cycle's time in seconds (bare rsync / rsync_notebooks.py):", ""]
    for phase, _, bare, mine in results:
        pairs = ", ".join(f"{b:.2f}/{m:.2f}" for b, m in zip(bare, mine))
        lines.append(f"- {phase}: {pairs}")
    return lines


def report(args, total, median, results, databases, parse):
    lines = [
        f"# Sync benchmark ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores)",
        "",
        f"Course: {args.students} students x {args.notebooks} notebooks, "
        f"{total / 1e6:.0f} MB, median notebook {median / 1e3:.0f} KB. "
        f"{args.copies} destination pairs; on each the full copy, then {args.rounds} "
        "cycles after 5% of the notebooks changed and as many with no change, in one "
        "running loop.",
        "",
        *cycle_tables(results),
        "",
    ]
    for moment, (summary, problems, size) in databases.items():
        lines.append(
            f"The first loop's database {moment}: {summary:,} summary rows, "
            f"{problems:,} problems rows, {size / 1e6:.0f} MB with its WAL."
        )
    lines += ["", f"make_database.py parses {parse:.0f} notebooks/s in one process.", ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__)
    parser.add_argument("--students", type=int, default=300)
    parser.add_argument("--notebooks", type=int, default=20)
    parser.add_argument("--tmp", default=None, help="Where to build the course.")
    parser.add_argument(
        "--copies",
        type=int,
        default=9,
        help="Destination pairs, each with its own loop (default: %(default)s).",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=4,
        help="5%% cycles, and no-change cycles, per loop (default: %(default)s).",
    )
    parser.add_argument(
        "--loop-sleep",
        type=float,
        default=LOOP_SLEEP,
        help="The loop's --min-sleep: longer than changing 5%% of the files and bare rsync "
        "take (default: %(default)s).",
    )
    parser.add_argument("--out", default=os.path.join(HERE, "results", "sync.md"))
    args = parser.parse_args(argv)
    text = report(args, *run(args))
    write_results(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
