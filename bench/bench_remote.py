#!/usr/bin/env python3
"""Benchmark of several hubs: one rsync_notebooks.py --remote cycle over two rsync daemons
against bare rsync from the same daemons.

Builds two hubs of --students x --notebooks notebooks each (bench_sync.py's course), serves
each with its own `rsync --daemon` on 127.0.0.1, then times in the same run:
  full   the first cycle (everything copied and parsed)
  5%     --rounds cycles, each after 5% of each hub's notebooks changed
  none   --rounds cycles where nothing changed
for bare rsync (the loop's own per-host command, both hosts at once, into its own
destination) and for one running `rsync_notebooks.py --remote --no-sudo --min-sleep 4
--overhead 1` per destination (the cycle time it prints: both hosts' rsyncs, the logs,
make_database.py on each log), on --copies destination pairs. os.sync() runs before each
timed copy.
Writes bench/results/remote.md.

Example:
    .venv/bin/python bench/bench_remote.py --students 100 --notebooks 10
"""

import argparse
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)
from bench_sync import PHASES, cycle_tables, make_tree, time_cycles, write_results  # noqa: E402

import make_database  # noqa: E402
import rsync_notebooks  # noqa: E402

HUBS = ("node1", "node2")
LOOP_SLEEP = 4  # seconds the loop sleeps between cycles: time to change files and run bare rsync


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_daemon(root, hub):
    """`rsync --daemon` serving `root/hub` as module `home`; (process, port)."""
    port, config = free_port(), os.path.join(root, f"{hub}.conf")
    owner = "uid = root\ngid = root\n" if os.geteuid() == 0 else ""
    with open(config, "w") as stream:
        stream.write(f"use chroot = no\n{owner}[home]\npath = {os.path.join(root, hub)}\n")
    command = ["rsync", "--daemon", "--no-detach", "--address", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen([*command, "--config", config])
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, port
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"rsync --daemon for {hub} does not listen")


def write_users(root, ports, students):
    """users.csv with every student of each hub as a remote row."""
    rows = [
        f"{hub}_{s:04d},rsync://127.0.0.1:{port}/home/class/s{s:04d}/notebooks\n"
        for hub, port in zip(HUBS, ports)
        for s in range(students)
    ]
    with open(os.path.join(root, "users.csv"), "w") as stream:
        stream.write("uid,notebooks\n" + "".join(rows))


def bare_rsync(root, dest, suffix):
    """Both hosts' rsync as the loop builds it, at the same time, into `dest`; seconds."""
    users = make_database.read_users_csv(os.path.join(root, "users.csv"))
    hosts = rsync_notebooks.remote_hosts(users).values()
    os.makedirs(os.path.join(root, dest, rsync_notebooks.RSYNC_TEMP_DIR), exist_ok=True)
    started, running = time.perf_counter(), []
    for remote, paths in hosts:
        os.makedirs(os.path.join(root, dest, remote.root), exist_ok=True)
        command = rsync_notebooks.host_rsync_command(
            remote, os.path.join(root, dest), suffix, False, "ssh"
        )
        log = open(os.path.join(root, f"bare{suffix}{len(running)}.log"), "w")
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=log)
        process.stdin.write(rsync_notebooks.nul_terminated(paths))
        process.stdin.close()
        running.append((process, log))
    for process, log in running:
        if process.wait() != 0:
            raise RuntimeError(f"bare rsync exited {process.returncode}")
        log.close()
    return time.perf_counter() - started


def start_loop(root, copy):
    command = [sys.executable, os.path.join(ROOT, "rsync_notebooks.py"), "--no-sudo"]
    command += ["--remote", "--min-sleep", str(LOOP_SLEEP), "--overhead", "1"]
    command += ["--dest", f"sync_dest{copy}", "--log-dir", f"sync_logs{copy}"]
    command += ["--db", f"sync{copy}.sqlite"]
    return subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, text=True)


def run(args):
    rng = random.Random(1)
    root = tempfile.mkdtemp(prefix="bench_remote_", dir=args.tmp)
    times = {phase: ([], []) for phase in PHASES}  # phase: (bare times, our times)
    changed = {"full": len(HUBS) * args.students * args.notebooks, "none": 0}
    daemons = []
    try:
        paths = []
        for hub in HUBS:
            paths += make_tree(os.path.join(root, hub), args.students, args.notebooks)
        total = sum(os.path.getsize(p) for p in paths)
        daemons = [start_daemon(root, hub) for hub in HUBS]
        write_users(root, [port for _, port in daemons], args.students)
        time_cycles(
            args,
            paths,
            rng,
            times,
            changed,
            lambda d, x: bare_rsync(root, d, x),
            lambda copy: start_loop(root, copy),
        )
    finally:
        for process, _ in daemons:
            process.terminate()
            process.wait()
        shutil.rmtree(root, ignore_errors=True)
    return total, [(phase, changed[phase], *times[phase]) for phase in PHASES]


def report(args, total, results):
    lines = [
        f"# Several hubs benchmark ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores)",
        "",
        f"Two rsync daemons on 127.0.0.1, each serving {args.students} students x "
        f"{args.notebooks} notebooks ({total / 1e6:.0f} MB in all). On {args.copies} "
        "destination pairs, one running `rsync_notebooks.py --remote` each, against both "
        "hosts' bare rsync run at the same time with the same flags: the full copy, then "
        f"{args.rounds} cycles after 5% of the notebooks changed and as many with no change.",
        "",
        *cycle_tables(results),
    ]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__)
    parser.add_argument("--students", type=int, default=100, help="Students on each hub.")
    parser.add_argument("--notebooks", type=int, default=10, help="Notebooks per student.")
    parser.add_argument(
        "--copies", type=int, default=3, help="Destination pairs, each with its own loop."
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="5%% cycles, and no-change ones, per loop."
    )
    parser.add_argument("--tmp", default=None, help="Where to build the hubs.")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "remote.md"))
    args = parser.parse_args(argv)
    text = report(args, *run(args))
    write_results(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
