#!/usr/bin/env python3
"""Build a demo course, sync it through a simulated lab session, then show it in the viewer.

Writes everything under --dir (default `demo/`, made anew): `users.csv`, the students'
folders under `class/`, and what rsync_notebooks.py makes (`sync_dest/`, `sync_logs/`,
`sync.sqlite`). The lab session's clock runs from --minutes ago to now: at every --step
minutes the students' notebooks are written as they were then and one real sync cycle runs,
so the database holds the whole session's history; a few students are planted stuck on a
problem or idle. Then progress_viewer.py serves it.

Example:
    .venv/bin/python tools/demo.py --students 40 --port 8050
"""

import argparse
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import demo_course  # noqa: E402

DEMO_PASSWORD = "demo"
# Students planted to show in the stuck and idle lists: (uid, problem, from minute of the
# session) and (uid, from minute).
DEMO_STUCK = [("u003", "p1_3", 50), ("u007", "p2_2", 60)]
DEMO_IDLE = [("u012", 55), ("u020", 45)]
CONFIG = """\
# Settings of the demo course's viewer (see progress_viewer_config.py.example).
SYNC_SQLITE = "sync.sqlite"
USERS_CSV = "users.csv"
USER_ATTRS = ["real_name", "team"]
PASSWD = {password!r}
URL_TEMPLATE = "http://127.0.0.1:8888/notebooks/sync_dest/{{filename}}"
SYNC_DEST = "sync_dest"
"""


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__)
    parser.add_argument("--dir", default="demo", help="Folder to build the demo in (made anew).")
    parser.add_argument("--students", type=int, default=40, help="Number of students.")
    parser.add_argument("--assignments", type=int, default=3, help="Number of assignments.")
    parser.add_argument("--minutes", type=int, default=90, help="Length of the lab session.")
    parser.add_argument("--step", type=int, default=10, help="Minutes between sync cycles.")
    parser.add_argument("--port", type=int, default=8050, help="Port of the viewer.")
    parser.add_argument("--host", default="127.0.0.1", help="Address the viewer listens on.")
    parser.add_argument(
        "--no-viewer", action="store_true", help="Build and sync only; do not start the viewer."
    )
    return parser


def build_demo(directory, students, assignments, minutes, step):
    """Make the course and run one sync cycle per `step` minutes of the session."""
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory)
    os.chmod(directory, 0o700)  # real names and the names password: the teacher's alone
    uids = {f"u{n + 1:03d}" for n in range(students)}
    course = demo_course.make_course(
        students,
        assignments,
        problems=8,
        minutes=minutes,
        stuck=[planted for planted in DEMO_STUCK if planted[0] in uids],
        idle=[planted for planted in DEMO_IDLE if planted[0] in uids],
    )
    users = os.path.join(directory, "users.csv")
    config = os.path.join(directory, "progress_viewer_config.py")
    demo_course.write_users_csv(users, course.students)
    with open(config, "w") as stream:
        stream.write(CONFIG.format(password=DEMO_PASSWORD))
    for private in (users, config):
        os.chmod(private, 0o600)
    start = time.time() - minutes * 60
    said = set()  # what the loop said on stderr: each line once, not once a cycle
    for minute in range(0, minutes + 1, step):
        written = demo_course.write_course_at(directory, course, minute, start)
        print(f"--- lab minute {minute}: {len(written)} notebooks saved by students", flush=True)
        command = [sys.executable, os.path.join(ROOT, "rsync_notebooks.py"), "--no-sudo"]
        command += ["--repeat", "1", "--min-sleep", "0"]
        if os.geteuid() == 0:  # the demo's viewer runs as root too
            command += ["--owner", "root"]
        cycle = subprocess.run(
            command, cwd=directory, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        for line in cycle.stderr.splitlines():
            if line not in said:
                said.add(line)
                print(line, file=sys.stderr, flush=True)
        cycle.check_returncode()
    return course


def main(argv=None):
    args = build_parser().parse_args(argv)
    build_demo(args.dir, args.students, args.assignments, args.minutes, args.step)
    directory = os.path.abspath(args.dir)
    print(f"\nDemo course in {directory}: users.csv, sync_dest/, sync_logs/, sync.sqlite")
    query = "'select * from summary limit 5'"
    print(f"  sqlite3 {os.path.join(args.dir, 'sync.sqlite')} {query}")
    viewer = os.path.join(ROOT, "progress_viewer.py")
    if args.no_viewer or not os.path.exists(viewer):
        return 0
    print(f"\nViewer: the URL below, with its token (password for names: {DEMO_PASSWORD})")
    print("Ctrl-C stops it.", flush=True)
    command = [sys.executable, viewer, "--host", args.host, "--port", str(args.port)]
    try:
        return subprocess.run(command, cwd=directory, check=False).returncode
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
