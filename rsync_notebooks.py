#!/usr/bin/env python3
"""Copy every student's notebooks every few minutes, keeping every older version.

Each cycle:
1. picks a timestamp T (local time, never the same as an earlier cycle's);
2. runs one rsync over the `notebooks` folders listed in users.csv into the destination,
   keeping each replaced file as `<name>.bak_T`, and writes rsync's itemized output to
   `<log-dir>/sync_T.log` (first line `suffix=.bak_T`);
3. runs make_database.py (the one beside this script) on that log to record every new
   version in the SQLite database;
4. sleeps max(--min-sleep, time taken / --overhead) seconds.

rsync runs through sudo (students' folders are often readable only by root) unless
--no-sudo is given or this is already root. No shell ever sees a path: every command is an
argument list. Only one instance runs per destination (a lock file `<dest>.lock`). The
destination, the logs and the database are private to the account that started this
script (the one that ran sudo, when it was started through sudo).

Example:
    ./rsync_notebooks.py --no-sudo --users-csv users.csv --dest sync_dest --db sync.sqlite

Exit codes: 0 every cycle completed; 1 a cycle failed or another instance holds the lock;
2 bad arguments or an unusable users.csv (then nothing is created).
"""

import argparse
import fcntl
import glob
import os
import shlex
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_database  # noqa: E402  (the one beside this script, whatever the working dir)

MAKE_DATABASE = os.path.join(HERE, "make_database.py")
RSYNC_OPTIONS = [
    "--itemize-changes",
    "--out-format=%i|%n|",
    "--relative",
    "--recursive",
    "--update",
    "--perms",
    "--owner",
    "--group",
    "--times",
    "--links",
    "--safe-links",
    "--super",
    "--one-file-system",
    "--backup",
    "--max-size=10m",
    # What the seed did with `chmod -R +rX dest` afterwards, without a second walk of the
    # tree: the instructor's (unprivileged) viewer can read every copy. The destination
    # folder itself is 0700, so no other account can.
    "--chmod=a+rX",
]
# rsync exit codes that still mean the cycle did its job.
RSYNC_OK = {
    0: "success",
    23: "some files were not transferred (unreadable or special files)",
    24: "some source files vanished while being copied (a student saved or deleted them)",
}
TIME_FORMAT = make_database.TIME_FORMAT


class StopRequested(Exception):
    """Ctrl-C or SIGTERM arrived; the loop stops between steps."""


class AlreadyRunning(Exception):
    """Another rsync_notebooks.py holds the destination's lock."""


# ---------------------------------------------------------------------------- pure helpers


def rsync_command(sources, dest, suffix, sudo):
    """The rsync argument list for one cycle (no shell ever sees it)."""
    prefix = ["sudo", "--"] if sudo else []
    return [*prefix, "rsync", *RSYNC_OPTIONS, f"--suffix={suffix}", "--", *sources, dest + "/"]


def make_database_flags(args, log):
    return ["--users-csv", args.users_csv, "--log", log, "--dest", args.dest, "--db", args.db]


def make_database_command(args, log, sudo):
    prefix = ["sudo", "--"] if sudo else []
    return [*prefix, sys.executable, MAKE_DATABASE, *make_database_flags(args, log)]


def next_timestamp(now, previous, log_dir):
    """T for a new cycle: now, but later than the previous cycle's T and with no log yet."""
    t = int(now)
    if previous is not None:
        t = max(t, previous + 1)
    while os.path.lexists(log_path(log_dir, t)):
        t += 1
    return t


def format_t(seconds):
    return time.strftime(TIME_FORMAT, time.localtime(seconds))


def log_path(log_dir, t):
    return os.path.join(log_dir, f"sync_{format_t(t)}.log")


def sleep_seconds(took, overhead, min_sleep):
    return max(min_sleep, took / overhead) if overhead > 0 else min_sleep


def student_symlink(path):
    """The first component of `path` that is a symlink owned by a non-root account, or ''.

    A student could point a listed folder (or a folder on the way to it) at a classmate's
    work; root-owned links such as /home -> /data/home are fine.
    """
    parts = path.split("/")
    for i in range(1, len(parts) + 1):
        prefix = "/".join(parts[:i])
        if not prefix:
            continue
        try:
            info = os.lstat(prefix)
        except OSError:
            return ""
        if os.path.islink(prefix) and info.st_uid != 0:
            return prefix
    return ""


def folder_missing(path):
    """True when `path` is surely not a folder (one we may not stat is left to rsync)."""
    try:
        return not stat.S_ISDIR(os.stat(path).st_mode)
    except PermissionError:
        return False
    except OSError:
        return True


class UsersFile:
    """users.csv as the loop sees it, read again whenever the file changes (a student added
    during term is copied from the next cycle on). A file that became unusable is reported
    and the last good list stays."""

    def __init__(self, path):
        self.path, self.key = path, make_database.file_key(path)
        self.users = make_database.read_users_csv(path)  # UsersCsvError: unusable from the start

    def current(self):
        key = make_database.file_key(self.path)
        if key != self.key:
            self.key = key
            try:
                self.users = make_database.read_users_csv(self.path)
                print(f"{self.path} changed: {len(self.users)} users from now on")
            except make_database.UsersCsvError as error:
                print(f"warning: {error}; copying the {len(self.users)} users it had before")
        return self.users


def usable_sources(users, say):
    """The rsync sources for this cycle, with a note for each folder skipped."""
    sources, missing = [], []
    for user in users:
        source = make_database.rsync_source(user.notebooks)
        link = student_symlink(source)
        if link:
            say(f"refused {source} (uid {user.uid}): {link} is a symlink owned by a user")
        elif folder_missing(source):
            missing.append(source)
        elif source not in sources:
            sources.append(source)
    if missing:
        say(f"skipped {len(missing)} missing folder(s): {' '.join(map(shlex.quote, missing))}")
    return sources


# ---------------------------------------------------------------------------- I/O


def instructor_ids():
    """(uid, gid) of the account that owns what we write: the sudo caller, else ourselves."""
    if os.geteuid() == 0 and os.environ.get("SUDO_UID") and os.environ.get("SUDO_GID"):
        return int(os.environ["SUDO_UID"]), int(os.environ["SUDO_GID"])
    return os.geteuid(), os.getegid()


def make_private(path):
    """Give `path` to the instructor, with no access for any other account."""
    os.chmod(path, 0o700 if os.path.isdir(path) else 0o600)
    uid, gid = instructor_ids()
    if os.geteuid() == 0:
        os.chown(path, uid, gid)


def prepare_folders(args):
    for folder in (args.dest, args.log_dir):
        os.makedirs(folder, exist_ok=True)
        make_private(folder)


def take_lock(dest):
    """An exclusive lock on `<dest>.lock`, held while this process lives."""
    path = os.path.normpath(dest) + ".lock"
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        message = f"{path} is locked: another rsync_notebooks.py copies into {dest}"
        raise AlreadyRunning(message) from None
    make_private(path)
    return handle


def run(command, **kwargs):
    """Run one command (an argument list, never a shell); its exit code, or 127."""
    try:
        return subprocess.run(command, check=False, **kwargs).returncode
    except OSError as error:
        print(f"cannot run {command[0]}: {error}", file=sys.stderr)
        return 127


def fork(child):
    """Fork a process that runs child() and exits with the code it returns (1 if it
    raises); its pid."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            code = child()
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pid


def run_forked(function, argv):
    """function(argv) in a child process made by fork: the same code as running the script,
    without starting an interpreter and importing it again. The child ignores Ctrl-C and
    SIGTERM (the loop stops once it is done). Its exit code, as `run` gives it."""

    def child():
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, signal.SIG_IGN)
        try:
            return function(argv)
        except SystemExit as error:  # argparse
            return error.code if isinstance(error.code, int) else 2

    _, status = os.waitpid(fork(child), 0)
    return os.waitstatus_to_exitcode(status)


def start_log(log, suffix):
    """A new private log whose first line is `suffix=...`; an existing log is never
    overwritten (mode "x")."""
    stream = open(log, "x")
    make_private(log)
    stream.write(f"suffix={suffix}\n")
    stream.flush()
    return stream


def run_rsync(sources, args, suffix, log, sudo):
    """Run rsync for one cycle, its output into `log`; True when the cycle may go on."""
    command = rsync_command(sources, args.dest, suffix, sudo)
    print(f"{shlex.join(command)} > {shlex.quote(log)}", flush=True)
    with start_log(log, suffix) as stream:
        code = run(command, stdout=stream)
    if code in RSYNC_OK:
        if code:
            print(f"rsync exit {code}: {RSYNC_OK[code]}; carrying on")
        return True
    print(f"error: rsync failed with exit code {code}; see {log}", file=sys.stderr)
    return False


def log_lists_files(log):
    try:
        return bool(make_database.read_log(log)[1])
    except make_database.LogError as error:
        print(f"error: {error}", file=sys.stderr)
        return False


def apply(args, log, sudo):
    """Run make_database.py on one log; True when it succeeded (or had nothing to do).

    Without sudo it runs in a fork of this process, which has already imported it."""
    if not log_lists_files(log):
        print(f"{log}: no file changed")
        return True
    command = make_database_command(args, log, sudo)
    print(" " + shlex.join(command), flush=True)
    code = run(command) if sudo else run_forked(make_database.main, make_database_flags(args, log))
    if code != 0:
        print(f"error: make_database.py failed with exit code {code} on {log}", file=sys.stderr)
    return code == 0


class Stopper:
    """Turns Ctrl-C and SIGTERM into a request that the loop honours between steps."""

    def __init__(self):
        self.event = threading.Event()

    def install(self):
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, self.request)

    def request(self, number, frame):
        # os.write, not print: a handler may interrupt a print of the main code
        os.write(1, f"\n{signal.Signals(number).name}: stopping after this step\n".encode())
        self.event.set()

    def check(self):
        if self.event.is_set():
            raise StopRequested

    def sleep(self, seconds):
        if self.event.wait(seconds):
            raise StopRequested


class WalKeeper:
    """A child process that keeps one idle connection to the database open while the loop
    runs.

    SQLite copies the WAL back into the database file (a checkpoint, with two fsyncs)
    whenever the last connection to it closes, which would be at the end of every
    make_database.py. With this connection open, each cycle ends with its commit; SQLite
    checkpoints once the WAL holds make_database.WAL_CHECKPOINT_PAGES pages (every few
    cycles), and when the keeper closes at the end of the loop, or when the loop dies (its
    pipe closes). It is a process of its own because the loop forks make_database.py,
    and a connection must not be carried across a fork.
    """

    def __init__(self, db):
        self.db = db
        self.pid = self.pipe = None

    def start(self):
        read_end, write_end = os.pipe()

        def keeper():
            os.close(write_end)
            keep_open(self.db, read_end)
            return 0

        self.pid = fork(keeper)
        os.close(read_end)
        self.pipe = write_end
        self.hold()

    def hold(self):
        """Have the keeper open the database, if it exists and is not open yet."""
        if self.pipe is not None:
            try:
                os.write(self.pipe, b".")
            except OSError:  # the keeper is gone: cycles only checkpoint as they close
                self.stop()

    def stop(self):
        if self.pipe is not None:
            os.close(self.pipe)
            os.waitpid(self.pid, 0)
            self.pid = self.pipe = None


def create_database(db):
    """Create the database (make_database.py's schema) if it does not exist yet, so the
    keeper holds it from the first cycle on; make_database.py creates it when this cannot."""
    if os.path.exists(db):
        return
    try:
        make_database.connect(db).close()  # closed before any fork
        make_database.restrict_to_instructor(db)
    except (sqlite3.Error, OSError):
        pass


def keep_open(db, requests):
    """The keeper's life: on each byte from `requests`, open `db` if it exists and is not
    open yet; on end of file, close it (SQLite checkpoints) and return."""
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.SIG_IGN)  # the loop stops it by closing the pipe
    # nothing of the loop's but the pipe: not its lock, not its output
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.closerange(3, requests)
    os.closerange(requests + 1, os.sysconf("SC_OPEN_MAX"))
    conn = None
    try:
        while os.read(requests, 1):
            if conn is None and os.path.exists(db):
                try:
                    conn = sqlite3.connect(db, timeout=60)
                    conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
                    make_database.restrict_to_instructor(db)  # a WAL it may have created
                except (sqlite3.Error, OSError):
                    conn = None
    finally:
        if conn is not None:
            conn.close()
            make_database.restrict_to_instructor(db)


def one_cycle(args, users, previous_t, sudo):
    """Run one cycle's rsync; (T, its log, whether rsync did its job)."""
    t = next_timestamp(time.time(), previous_t, args.log_dir)
    print(f"======== {format_t(t)} ========", flush=True)
    sources = usable_sources(users, print)
    log, suffix = log_path(args.log_dir, t), f".bak_{format_t(t)}"
    if sources:
        return t, log, run_rsync(sources, args, suffix, log, sudo)
    print("no folder to copy")
    start_log(log, suffix).close()
    return t, log, True


def logs_left_unapplied(args):
    """The logs that list files but that the database has not applied, oldest first: a
    loop killed between its rsync and make_database.py, or whose make_database.py failed,
    left them, their copies not yet recorded. A new database has none (rebuilding one from
    the logs is --replay-log's job)."""
    if not os.path.exists(args.db):
        return []
    try:
        conn = sqlite3.connect(args.db, timeout=60)
        try:
            applied = {log for (log,) in conn.execute("SELECT log FROM applied_logs")}
        finally:
            conn.close()  # before any fork: no connection may be open then
        make_database.restrict_to_instructor(args.db)
    except (sqlite3.Error, OSError):  # not a database of ours: make_database.py will say so
        return []
    logs = sorted(glob.glob(os.path.join(glob.escape(args.log_dir), "sync_*.log")))
    return [log for log in logs if os.path.basename(log) not in applied and log_lists_files(log)]


def apply_logs(args, unapplied, log, sudo):
    """Apply the logs earlier cycles left unapplied, oldest first, then this cycle's `log`;
    the logs still unapplied. Once an earlier one fails, the rest wait for the next cycle
    (they would most likely fail the same way), so a lasting failure costs one more run a
    cycle, not one per log."""
    failed = []
    for i, earlier in enumerate(unapplied):
        print(f"{earlier} is not applied yet: applying it now")
        if not apply(args, earlier, sudo):
            failed = unapplied[i:]
            break
    if not apply(args, log, sudo):
        failed.append(log)
    return failed


def sync_loop(args, users_file, sudo, stopper, keeper, unapplied):
    """The cycles of a normal run; True when every one completed.

    Logs left unapplied are applied in the first cycle, and a log whose make_database.py
    fails (users.csv saved half-edited, a full disk) is tried again every cycle: what was
    copied and kept is recorded once it can be, in any order, as a replay would."""
    all_ok, previous_t, cycle = True, None, 0
    try:
        while args.repeat < 0 or cycle < args.repeat:
            started = time.monotonic()
            previous_t, log, copied = one_cycle(args, users_file.current(), previous_t, sudo)
            # even after a failed or interrupted rsync the log is applied: what was copied
            # and what was kept as a backup is recorded
            unapplied = apply_logs(args, unapplied, log, sudo)
            keeper.hold()
            all_ok = all_ok and copied and log not in unapplied
            cycle += 1
            took = time.monotonic() - started
            if args.repeat >= 0 and cycle >= args.repeat:
                print(f"took {took:.2f} sec to update")
                break
            stopper.check()
            pause = sleep_seconds(took, args.overhead, args.min_sleep)
            print(f"took {took:.2f} sec to update, sleep {pause:.3g} sec until next update")
            stopper.sleep(pause)
    except StopRequested:
        print("stopped")
    return all_ok


def replay_logs(args, sudo, stopper, keeper):
    """Apply every log in the log folder, oldest first, without rsync."""
    logs = sorted(glob.glob(os.path.join(glob.escape(args.log_dir), "sync_*.log")))
    if not logs:
        print(f"no sync_*.log in {args.log_dir}")
    all_ok = True
    for log in logs:
        all_ok = apply(args, log, sudo) and all_ok
        keeper.hold()
        if stopper.event.is_set():
            print("stopped")
            break
    return all_ok


# ---------------------------------------------------------------------------- command line


def build_parser():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n", 1)[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    files = parser.add_argument_group("files")
    files.add_argument(
        "--users-csv",
        default="users.csv",
        help="CSV file with a header and columns uid and notebooks (the folder to copy) "
        "(default: %(default)s).",
    )
    files.add_argument(
        "--dest",
        default="sync_dest",
        help="Folder the notebooks are copied into, every older version kept beside the "
        "current one (default: %(default)s).",
    )
    files.add_argument(
        "--log-dir",
        default="sync_logs",
        help="Folder for one rsync log per cycle, sync_T.log (default: %(default)s).",
    )
    files.add_argument(
        "--db",
        default="sync.sqlite",
        help="SQLite database that make_database.py keeps up to date (default: %(default)s).",
    )
    timing = parser.add_argument_group("timing")
    timing.add_argument(
        "--repeat",
        type=int,
        default=-1,
        help="How many cycles to run; a negative number runs forever (default: %(default)s).",
    )
    timing.add_argument(
        "--overhead",
        type=float,
        default=0.05,
        help="Largest share of the time spent copying: after a cycle that took S seconds, "
        "sleep at least S / OVERHEAD seconds (default: %(default)s).",
    )
    timing.add_argument(
        "--min-sleep",
        type=float,
        default=300,
        help="Seconds to sleep between cycles at the least (default: %(default)s).",
    )
    parser.add_argument(
        "--no-sudo",
        action="store_true",
        help="Run rsync and make_database.py without sudo, when this account can read "
        "every folder (default: use sudo unless already root).",
    )
    parser.add_argument(
        "--replay-log",
        action="store_true",
        help="Do not copy: apply every log in --log-dir again, oldest first (on a new --db "
        "this rebuilds the database).",
    )
    return parser


def check_args(args):
    """One sentence naming the flag when the arguments cannot work together, else ''."""
    if args.overhead <= 0:
        return "--overhead must be a positive number"
    if args.min_sleep < 0:
        return "--min-sleep must not be negative"
    return ""


def main(argv=None):
    args = build_parser().parse_args(argv)
    problem = check_args(args)
    if problem:
        print(f"Error: {problem}", file=sys.stderr)
        return 2
    try:
        users_file = UsersFile(args.users_csv)
    except make_database.UsersCsvError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 2
    sudo = not args.no_sudo and os.geteuid() != 0
    os.umask(0o077)
    stopper = Stopper()
    stopper.install()
    keeper = WalKeeper(args.db)
    try:
        lock = take_lock(args.dest)  # noqa: F841  (held until exit)
        prepare_folders(args)
        unapplied = [] if args.replay_log else logs_left_unapplied(args)
        create_database(args.db)
        keeper.start()
        if args.replay_log:
            return 0 if replay_logs(args, sudo, stopper, keeper) else 1
        return 0 if sync_loop(args, users_file, sudo, stopper, keeper, unapplied) else 1
    except AlreadyRunning as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1
    finally:
        keeper.stop()


if __name__ == "__main__":
    sys.exit(main())
