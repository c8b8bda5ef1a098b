#!/usr/bin/env python3
"""Copy every student's notebooks every few minutes, keeping every older version.

Each cycle:
1. picks a timestamp T (local time, never the same as an earlier cycle's);
2. runs one rsync over the `notebooks` folders listed in users.csv (as arguments, or on
   its input when they are many, so their number has no limit) into the destination,
   keeping each replaced file as `<name>.bak_T`, and writes rsync's itemized output to
   `<log-dir>/sync_T.log` (first line `suffix=.bak_T`); files whose names are too long
   for that suffix are copied by a second rsync, their replaced versions kept under
   `<dest>/.long_name_versions/T/` until make_database.py moves them beside them under a
   shortened name;
3. runs make_database.py (the one beside this script) on that log to record every new
   version in the SQLite database, handing it the notebooks parsed while rsync copied
   (without sudo: then it runs in a fork of this process);
4. prints one line (copied, recorded, warnings, time taken) and sleeps
   max(--min-sleep, time taken / --overhead) seconds.
A cycle whose log cannot be written (a full disk) copies nothing and says so; after a
cycle whose rsync failed, the next one copies folder by folder.

With --remote, rows may name folders on other machines, `[user@]host:/path` (rsync over
ssh) or `rsync://host[:port]/module/path` (an rsync daemon): each cycle also runs one rsync
per host (--remote-jobs at a time, beside the local one) into `<dest>/<host>/`, with a log
of its own, `sync_T@<host>.log`; the logs are applied one after the other, the local one
first. A host that cannot be reached is one warning, and is tried again next cycle.

rsync runs through `sudo -n` (students' folders are often readable only by root) unless
--no-sudo is given or this is already root; a sudo that asks for a password stops it at
start. No shell ever sees a path: every command is an argument list. Only one instance
runs per destination (a lock file `<dest>.lock`, beside its real path). The destination,
the logs and the database are private to their owner: --owner, else the account that ran
sudo, else the one running this script.

Example:
    ./rsync_notebooks.py --no-sudo --users-csv users.csv --dest sync_dest --db sync.sqlite

Exit codes: 0 every cycle completed; 1 a cycle failed or another instance holds the lock;
2 bad arguments, an unknown --owner, a sudo that asks for a password or an unusable
users.csv (then nothing is created).
"""

import argparse
import concurrent.futures
import contextlib
import errno
import fcntl
import functools
import gc
import glob
import os
import pwd
import re
import shlex
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from typing import NamedTuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_database  # noqa: E402  (the one beside this script, whatever the working dir)

MAKE_DATABASE = os.path.join(HERE, "make_database.py")
TIME_FORMAT = make_database.TIME_FORMAT
# Folders of the loop's own inside the destination (no student's copy lands there).
RSYNC_TEMP_DIR = ".rsync_tmp"  # rsync's temporary files, never left in a student's folder
LONG_NAME_VERSIONS = make_database.LONG_NAME_VERSIONS  # previous versions of long names
# A file name longer than this cannot get its backup name (`.bak_T` added) on a file
# system whose names hold at most 255 bytes, and rsync would abort for everyone.
NAME_MAX = make_database.NAME_MAX
LONGEST_NAME = NAME_MAX - len(".bak_" + time.strftime(TIME_FORMAT, time.gmtime(0)))
# rsync's wildmatch `?` matches one byte: this pattern matches names of LONGEST_NAME + 1
# bytes or more.
LONG_NAME_PATTERN = "?" * (LONGEST_NAME + 1) + "*"
MAX_SIZE = "10m"  # rsync leaves out bigger files (make_database records that they changed)
JUPYTER_TEMP_PATTERN = ".~*"  # Jupyter's atomic-save files: `.~nb.ipynb`
COPY_OPTIONS = [
    "--itemize-changes",
    "--out-format=%i|%n|",
    "--relative",
    "--recursive",
    "--perms",
    "--owner",
    "--group",
    "--times",
    # no --update: a file dated in the future, or an older copy restored with `cp -p`,
    # is a new version too; mtimes are compared to the nanosecond, so that a same-size
    # edit within the same second is copied
    "--modify-window=-1",
    "--links",
    "--safe-links",
    "--super",
    "--one-file-system",
    "--backup",
    f"--max-size={MAX_SIZE}",
    "--info=skip1",  # names each file left out for that in the log: `NAME is over max-size`
    # What the seed did with `chmod -R +rX dest` afterwards, without a second walk of the
    # tree: the instructor's (unprivileged) viewer can read every copy. The destination
    # folder itself is 0700, so no other account can.
    "--chmod=a+rX",
    # relative to the destination; a killed transfer leaves its file there, not in a copy
    f"--temp-dir={RSYNC_TEMP_DIR}",
]
# The filters that leave long names out of the one rsync (a second one copies them), and
# the debug output that names them in its log.
LONG_NAME_OPTIONS = [
    "--debug=filter1",
    f"--filter=+ {LONG_NAME_PATTERN}/",  # a folder's name is never given a suffix
    f"--filter=- {LONG_NAME_PATTERN}",
]
# The one rsync over every student: it also names in its log the files its filters leave
# out, as `[sender] hiding file NAME because of pattern PATTERN`.
RSYNC_OPTIONS = [*COPY_OPTIONS, *LONG_NAME_OPTIONS, f"--filter=- {JUPYTER_TEMP_PATTERN}"]
# rsync reads the paths to copy, relative to `/`, from its input (see files_from), when
# they are more than ARGUMENT_BYTES in all (far below the system's 2 MB, environment
# included), else it gets them as arguments (group_rsync).
FILES_FROM = ["--files-from=-", "--from0", "--", "/"]
ARGUMENT_BYTES = 128 * 1024
# What --debug=filter1 prints for a file a filter leaves out.
HIDING_FILE = "[sender] hiding file "
BECAUSE_OF_PATTERN = " because of pattern "
# make_database.py's last line: `sync_logs/sync_T.log: recorded 3 versions in sync.sqlite`
RECORDED_RE = re.compile(r": recorded (\d+) versions in ")
LOG_RESERVE_MIN = 1024 * 1024  # disk set aside for a log, at the least
PROGRESS_EVERY = 30  # seconds: a cycle's rsync that runs longer says how far it got
EARLY_POLL = 0.005  # seconds the early parser waits when rsync brought nothing new
EARLY_NICE = 19  # the early parser's nice value
# Rows on other machines (--remote): ssh never asks for a password nobody would type, and
# gives up on a host that does not answer; a daemon likewise; a transfer that stalls ends.
SSH_OPTIONS = "-o BatchMode=yes -o ConnectTimeout=10"
REMOTE_OPTIONS = ["--contimeout=10", "--timeout=600"]
# rsync exit codes that mean a host could not be reached or refused us: the host is
# reported and tried again at the next cycle, while the other hosts' copies go on.
HOST_DOWN = {
    5: "the daemon refused the connection or the module",
    10: "no connection (nothing listens, or the host is down)",
    12: "the connection failed or broke",
    30: "the host stopped answering",
    35: "the daemon did not answer in time",
    255: "ssh could not connect or log in",
}
# rsync exit codes that still mean the cycle did its job.
RSYNC_OK = {
    0: "success",
    23: "some files were not transferred (unreadable or special files)",
    24: "some source files vanished while being copied (a student saved or deleted them)",
}


class StopRequested(Exception):
    """Ctrl-C or SIGTERM arrived; the loop stops between steps."""


class AlreadyRunning(Exception):
    """Another rsync_notebooks.py holds the destination's lock."""


class CannotStart(Exception):
    """The arguments, the accounts or sudo do not let the loop start (exit 2)."""


# ---------------------------------------------------------------------------- pure helpers


def sudo_prefix(sudo):
    # -n: sudo fails at once instead of waiting at a password prompt nobody sees
    return ["sudo", "-n", "--"] if sudo else []


def rsync_command(sources, dest, suffix, sudo):
    """One cycle's rsync argument list with `sources` as arguments (no shell ever sees
    it), as the loop runs it for a class whose folders fit (group_rsync)."""
    return [
        *sudo_prefix(sudo),
        "rsync",
        *RSYNC_OPTIONS,
        f"--suffix={suffix}",
        "--",
        *sources,
        dest + "/",
    ]


def listed_rsync_command(dest, suffix, sudo):
    """One cycle's rsync argument list, the folders read from rsync's input (files_from):
    their number has no limit, where a long enough list of arguments fails with E2BIG."""
    return [
        *sudo_prefix(sudo),
        "rsync",
        *RSYNC_OPTIONS,
        f"--suffix={suffix}",
        *FILES_FROM,
        dest + "/",
    ]


def group_rsync(paths, dest, suffix, sudo):
    """(argument list, the paths to give on its input or None) of the rsync that copies
    the folders `paths`: as arguments while they fit well within what the system accepts
    (ARGUMENT_BYTES), since rsync copies them faster so (given on its input, rsync 3.4+
    opens every folder on the way to each file again: 0.1 s a cycle for 300 students
    here), else on its input, where their number has no limit."""
    if sum(len(os.fsencode(path)) + 1 for path in paths) <= ARGUMENT_BYTES:
        return rsync_command(paths, dest, suffix, sudo), None
    return listed_rsync_command(dest, suffix, sudo), paths


def files_from(paths, cwd):
    """rsync's input for FILES_FROM: each path NUL-terminated (any byte but NUL may be in a
    name), a relative one as `cwd/./path`, so that --relative copies it to the same place
    under the destination as when it is given as an argument."""
    return nul_terminated(path if os.path.isabs(path) else f"{cwd}/./{path}" for path in paths)


def nul_terminated(entries):
    """rsync's `--files-from=- --from0` input: each entry followed by a NUL byte."""
    return b"".join(os.fsencode(entry) + b"\0" for entry in entries)


def remote_hosts(users):
    """{folder under the destination: (RemoteFolder, [its rows' folders])} of the remote
    rows, one entry (one rsync) per host (per module of a daemon), in a fixed order."""
    hosts = {}
    for user in users:
        remote = make_database.remote_folder(user.notebooks)
        if remote:
            paths = hosts.setdefault(remote.root, (remote, []))[1]
            if remote.path not in paths:
                paths.append(remote.path)
    return dict(sorted(hosts.items()))


def remote_command(remote, dest, sudo, ssh, options):
    """An rsync argument list that copies folders of one host (read from its input,
    relative to the host's source) into `dest/<its folder>/`. `options` are the copy's
    own; rsync's temporary files still go to `dest/.rsync_tmp` (given whole: rsync
    refuses a temporary folder named with `..`)."""
    temp_dir = f"--temp-dir={os.path.abspath(dest)}/{RSYNC_TEMP_DIR}"
    options = [temp_dir if option.startswith("--temp-dir=") else option for option in options]
    if remote.source.startswith("rsync://"):
        transport = REMOTE_OPTIONS
    else:
        transport = [f"--rsh={ssh} {SSH_OPTIONS}", REMOTE_OPTIONS[1]]
    return [
        *sudo_prefix(sudo),
        "rsync",
        *options,
        *transport,
        "--files-from=-",
        "--from0",
        "--",
        remote.source,
        f"{dest}/{remote.root}",
    ]


def host_rsync_command(remote, dest, suffix, sudo, ssh):
    """One cycle's rsync of one host's folders, with the local one's options but that
    every version it replaces is kept in `dest/.long_name_versions/T/<its folder>/`
    (--backup-dir, so a name never grows; make_database.py moves each beside its file as
    `nb.bak_T.ipynb`). So no name is too long for a backup, and no filter needs to name
    what it leaves out (a daemon keeps its sender's report of that to itself)."""
    kept = make_database.long_name_versions(suffix.removeprefix(".bak_"))
    options = [option for option in RSYNC_OPTIONS if option not in LONG_NAME_OPTIONS]
    kept_apart = [f"--backup-dir={os.path.abspath(dest)}/{kept}/{remote.root}", "--suffix="]
    return remote_command(remote, dest, sudo, ssh, [*options, *kept_apart])


def shown_command(args, folders, sudo):
    """The rsync command of every cycle as printed once at start: the `folders` (given as
    group_rsync gives them) and the pattern of long names abridged."""
    command, listed = group_rsync(folders, args.dest, ".bak_<T>", sudo)
    folders_of = f"the {len(folders)} folders of {args.users_csv}"
    if listed is None:
        shown = f"{shlex.join(command[: -len(folders) - 1])} <{folders_of}> {command[-1]}"
    else:
        shown = f"{shlex.join(command)} < ({folders_of})"
    return shown.replace(LONG_NAME_PATTERN[:-1], f"<{LONGEST_NAME + 1} x ?>")


def shown_host_command(args, remote, count, sudo):
    """A host's rsync command of every cycle as printed once at start (shown_command)."""
    command = shlex.join(host_rsync_command(remote, args.dest, ".bak_<T>", sudo, args.ssh))
    return f"{command} < (its {count} folders)"


def long_names_command(dest, t, sudo):
    """The rsync argument list that copies files whose names are too long to get a backup
    suffix, read from its input: the version each replaces keeps its name, under
    `<dest>/.long_name_versions/T/` (make_database.py moves it out)."""
    versions = f"--backup-dir={make_database.long_name_versions(format_t(t))}"
    return [
        *sudo_prefix(sudo),
        "rsync",
        *COPY_OPTIONS,
        versions,
        "--suffix=",
        *FILES_FROM,
        dest + "/",
    ]


def rsync_groups(sources, suspects):
    """The groups of folders to copy with one rsync each this cycle: every folder that was
    in no failed group last cycle together, and each group in `suspects` (those whose
    rsync failed) in two halves. So a folder whose rsync keeps failing ends up alone
    within a few cycles, costing only its student, while the others copy as one."""
    present, suspect = set(sources), {source for group in suspects for source in group}
    groups = [[source for source in sources if source not in suspect]]
    for group in suspects:
        group = [source for source in group if source in present]
        middle = (len(group) + 1) // 2
        groups += [group[:middle], group[middle:]]
    return [group for group in groups if group]


def long_name_files(names, sources):
    """{path of the file: its folder of `sources`} for each file rsync named (relative to
    the destination, as `%n`) that lies under one of those folders."""
    folders = {make_database.dest_relative(source): source for source in sources}
    files = {}
    for name in names:
        folder = name
        while folder:
            folder = folder.rpartition("/")[0]
            if folder in folders:
                files[folders[folder] + name[len(folder) :]] = folders[folder]
                break
    return files


def received_notebook(line):
    """The notebook (its name under the destination) that a line of the cycle's log says
    rsync received, `>f+++++++++|hoge/a/notebooks/nb.ipynb|`, else '': the notebooks
    make_database.apply_log parses, as make_database.parse_log names them."""
    match = make_database.ITEMIZE_RE.match(line)
    if not match or not match.group(1).startswith(">f"):
        return ""
    name = make_database.log_name(match.group(2))
    return name if make_database.is_parsed_notebook(name) else ""


def long_names_left_out(lines):
    """The files whose names are too long that the cycle's rsync left out, as it names
    them in the log (decoded from its `\\#ooo` escapes), e.g.
        [sender] hiding file hoge/a/<240 bytes>.ipynb because of pattern ????...*
    """
    end = BECAUSE_OF_PATTERN + LONG_NAME_PATTERN
    return [
        make_database.decode_rsync_name(line[len(HIDING_FILE) : -len(end)])
        for line in (line.rstrip("\n") for line in lines)
        if line.startswith(HIDING_FILE) and line.endswith(end)
    ]


def make_database_flags(args, log):
    return ["--users-csv", args.users_csv, "--log", log, "--dest", args.dest, "--db", args.db]


def make_database_command(args, log, sudo):
    return [*sudo_prefix(sudo), sys.executable, MAKE_DATABASE, *make_database_flags(args, log)]


def next_timestamp(now, previous, log_dir):
    """T for a new cycle: now, but later than the previous cycle's T and with no log yet
    (neither the local one nor a host's)."""
    t = int(now)
    if previous is not None:
        t = max(t, previous + 1)
    while os.path.lexists(log_path(log_dir, t)) or glob.glob(host_logs_pattern(log_dir, t)):
        t += 1
    return t


def format_t(seconds):
    return time.strftime(TIME_FORMAT, time.localtime(seconds))


def log_path(log_dir, t, host_folder=""):
    """The log of cycle T: `sync_T.log` for the local folders, `sync_T@<host>.log` for
    the host copied into `host_folder` (`node1/` -> `sync_T@node1.log`, a daemon's module
    `h+873/m/` -> `sync_T@h+873+m.log`): in name order, a cycle's logs come after the
    earlier cycles', its local one first."""
    host = "@" + host_folder.rstrip("/").replace("/", "+") if host_folder else ""
    return os.path.join(log_dir, f"sync_{format_t(t)}{host}.log")


def host_logs_pattern(log_dir, t):
    """A glob pattern of the hosts' logs of cycle T (log_path)."""
    return glob.escape(log_path(log_dir, t))[: -len(".log")] + "@*.log"


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
        if stat.S_ISLNK(info.st_mode) and info.st_uid != 0:
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


def within(path, folder):
    """True when `path` is `folder` or lies inside it (both real, absolute paths)."""
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def monitor_paths(args):
    """[(name, real path)] of what the loop itself writes: no row may copy them."""
    paths = [(args.dest, args.dest), (args.log_dir, args.log_dir), (args.db, args.db)]
    return [(name, os.path.realpath(path)) for name, path in paths]


def monitor_overlap(source, monitor):
    """Why copying folder `source` would copy the monitor into itself, or ''."""
    if make_database.dest_relative(source).split("/")[0] in (RSYNC_TEMP_DIR, LONG_NAME_VERSIONS):
        return f"its copy would land in the destination's own folder {source.split('/')[0]}"
    real = os.path.realpath(source)
    for name, path in monitor:
        if within(path, real):
            return f"folder {source} holds {name}"
        if within(real, path):
            return f"folder {source} lies inside {name}"
    return ""


class UsersFile:
    """users.csv as the loop sees it, read again whenever the file changes (a student added
    during term is copied from the next cycle on). A file that became unusable is reported
    and the last good list stays. A row whose folder holds the destination, the logs or the
    database, or lies inside them, is refused with a warning naming its line."""

    def __init__(self, path, monitor, remote=False):
        self.path, self.key, self.monitor = path, make_database.file_key(path), monitor
        self.remote = remote  # --remote: rows on other machines are copied
        self.users = self.read()  # UsersCsvError: unusable from the start

    def read(self):
        users, rows = [], make_database.read_users_csv(self.path)
        host_folders = {
            make_database.dest_relative(user.notebooks).split("/")[0]
            for user in rows
            if make_database.is_remote(user.notebooks)
        }
        for user in rows:
            problem = self.refusal(user, host_folders)
            if problem:
                print(f"warning: {self.path}:{user.line}: refused ({problem})", file=sys.stderr)
            else:
                users.append(user)
        return users

    def refusal(self, user, host_folders):
        """Why the loop does not copy this row, or ''. `host_folders` are the folders under
        the destination that remote rows' hosts are copied into."""
        if make_database.is_remote(user.notebooks):
            if not self.remote:
                return f"{user.notebooks} is on another machine: start with --remote to copy it"
            return ""
        first = make_database.dest_relative(user.notebooks).split("/")[0]
        if self.remote and first in host_folders:
            return f"its copy would land in {first}/, the folder of a host's copies"
        return monitor_overlap(make_database.rsync_source(user.notebooks), self.monitor)

    def current(self):
        key = make_database.file_key(self.path)
        if key != self.key:
            self.key = key
            try:
                self.users = self.read()
                print(f"{self.path} changed: {len(self.users)} users from now on")
            except make_database.UsersCsvError as error:
                print(f"warning: {error}; copying the {len(self.users)} users it had before")
        return self.users


def usable_sources(users, say, warn):
    """The rsync sources for this cycle, with a note for each folder skipped."""
    sources, missing = {}, []  # a dict keeps users.csv's order and finds repeats at once
    for user in users:
        if make_database.is_remote(user.notebooks):
            continue  # copied by its host's rsync (remote_hosts)
        source = make_database.rsync_source(user.notebooks)
        link = student_symlink(source)
        if link:
            warn(f"refused {source} (uid {user.uid}): {link} is a symlink owned by a user")
        elif folder_missing(source):
            missing.append(source)
        else:
            sources[source] = None
    if missing:
        say(f"skipped {len(missing)} missing folder(s): {' '.join(map(shlex.quote, missing))}")
    return list(sources)


class Tally:
    """What a cycle (or a replay) did, for its one-line summary."""

    def __init__(self):
        self.copied = self.recorded = self.warnings = 0

    def warn(self, message):
        print(f"warning: {message}", file=sys.stderr)
        self.warnings += 1

    def recorded_summary(self):
        return f"recorded {self.recorded} versions, {self.warnings} warnings"

    def summary(self):
        return f"copied {self.copied} files, {self.recorded_summary()}"


# ---------------------------------------------------------------------------- I/O


def owner_account(requested):
    """(name, uid, gid) of the account that is to own the destination, the logs and the
    database: `requested` (--owner), else the one that ran sudo, else this process's."""
    if requested:
        try:
            entry = pwd.getpwnam(requested)
        except KeyError:
            raise CannotStart(f"--owner {requested}: no such account") from None
        if os.geteuid() != 0 and entry.pw_uid != os.geteuid():
            raise CannotStart(f"--owner {requested}: only root can give files to another account")
        return entry.pw_name, entry.pw_uid, entry.pw_gid
    if os.geteuid() == 0 and os.environ.get("SUDO_UID") and os.environ.get("SUDO_GID"):
        uid, gid = int(os.environ["SUDO_UID"]), int(os.environ["SUDO_GID"])
        return os.environ.get("SUDO_USER") or str(uid), uid, gid
    try:
        name = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:  # an account without a name (a container's arbitrary uid)
        name = str(os.geteuid())
    return name, os.geteuid(), os.getegid()


def owner_note(owner, requested):
    """Who gets the loop's files, said once at start; a warning when root keeps them."""
    if owner[1] == 0 and not requested:
        return (
            "warning: started as root without sudo or --owner: the destination, the logs and"
            " the database belong to root, and a viewer run by your own account cannot read"
            " them; give --owner YOUR_ACCOUNT to make them yours"
        )
    return f"the destination, the logs and the database belong to {owner[0]}"


def give_to(owner):
    """Make `owner` the account instructor_ids() and make_database.py give files to: both
    read SUDO_UID and SUDO_GID (what sudo sets), for this process and its children."""
    if os.geteuid() == 0:
        os.environ["SUDO_UID"], os.environ["SUDO_GID"] = str(owner[1]), str(owner[2])


def check_sudo():
    """CannotStart unless `sudo -n` runs rsync without asking for a password."""
    command = [*sudo_prefix(True), "rsync", "--version"]
    if run(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL) != 0:
        raise CannotStart("sudo needs a password: run as root or with --no-sudo")


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


def clear_temp_dir(dest):
    """Make the destination's folder for rsync's temporary files, or remove what a killed
    rsync left in it."""
    folder = os.path.join(dest, RSYNC_TEMP_DIR)
    if not os.path.isdir(folder):
        os.makedirs(folder)
        make_private(folder)
    for entry in os.scandir(folder):
        if entry.is_file(follow_symlinks=False):
            print(f"removed {entry.path}, left by an interrupted rsync")
            os.unlink(entry.path)


def take_lock(dest):
    """An exclusive lock on `<dest>.lock` (dest's real path: a symlink to the same
    destination finds the same lock), held while this process lives."""
    path = os.path.realpath(dest) + ".lock"
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


def run_forked(function, argv, stdout, stderr):
    """function(argv) in a child process made by fork: the same code as running the script,
    without starting an interpreter and importing it again; its output into the files
    `stdout` and `stderr`. The child ignores Ctrl-C and SIGTERM (the loop stops once it is
    done). Its exit code, as `run` gives it."""

    def child():
        # the loop's objects are never traversed by this process's garbage collections,
        # which would copy every page that holds one (pages shared until written): in a
        # 5 % cycle of 300 x 20 notebooks, make_database's GC time 2.3-3.0 -> 0.4 ms
        gc.freeze()
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, signal.SIG_IGN)
        os.dup2(stdout.fileno(), 1)
        os.dup2(stderr.fileno(), 2)
        try:
            return function(argv)
        except SystemExit as error:  # argparse
            return error.code if isinstance(error.code, int) else 2

    _, status = os.waitpid(fork(child), 0)
    return os.waitstatus_to_exitcode(status)


def start_log(log, suffix, reserve=0, folder=""):
    """A new private log whose first line is `suffix=...` (and, for a host's copies, whose
    second line is `folder=<its folder under the destination>`), with `reserve` bytes of
    disk set aside for rsync's output (so that a disk filling up during the cycle cannot
    cut it short); an existing log is never overwritten (mode "x"). OSError when it cannot
    be written (a full disk): then no log is left behind."""
    stream = open(log, "xb", buffering=0)
    try:
        make_private(log)
        stream.write(f"suffix={suffix}\n".encode())
        if folder:
            stream.write(f"{make_database.FOLDER_LINE}{folder}\n".encode())
        if reserve:
            reserve_space(stream, reserve)
    except OSError:
        stream.close()
        os.unlink(log)
        raise
    return stream


def reserve_space(stream, size):
    """Set `size` bytes of disk aside after the end of `stream`; OSError when the disk is
    full (a file system that cannot set space aside writes as it goes)."""
    try:
        os.posix_fallocate(stream.fileno(), stream.tell(), size)
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise


def end_log(stream):
    """Give back the disk set aside for the log but not used."""
    os.ftruncate(stream.fileno(), stream.tell())


def log_reserve(log_dir, previous_t):
    """Disk to set aside for a cycle's log: twice the previous cycle's log."""
    try:
        previous = os.path.getsize(log_path(log_dir, previous_t)) if previous_t else 0
    except OSError:
        previous = 0
    return max(LOG_RESERVE_MIN, 2 * previous)


def written_lines(stream):
    """The lines written so far into the log `stream`, as make_database reads them."""
    with open(stream.name, "rb") as reader:
        data = reader.read(stream.tell())
    return data.decode("utf-8", "surrogateescape").splitlines()


def run_rsync(command, paths, stream, what):
    """Run one rsync, its output into the log `stream`, that reads `paths` from its input
    (None: its input is empty); True when it did its job."""
    listed = b"" if paths is None else files_from(paths, os.getcwd())
    code = run(command, input=listed, stdout=stream)
    if code in RSYNC_OK:
        if code:
            print(f"rsync exit {code} copying {what}: {RSYNC_OK[code]}; carrying on")
        return True
    message = f"error: rsync failed with exit code {code} copying {what}; see {stream.name}"
    print(message + sudo_hint(command, code), file=sys.stderr)
    return False


def sudo_hint(command, code):
    """What to add to the report of a failed command that ran through `sudo -n`: exit 1
    is also what sudo says when it would now ask for a password (its ticket expired)."""
    if command[0] == "sudo" and code == 1:
        return " (if sudo now asks for a password: run as root or with --no-sudo)"
    return ""


class WhileCopying:
    """A thread that runs while the cycle's rsyncs copy (a `with` block around them): its
    run() is started on entering, told to stop (`stopped`) and joined on leaving."""

    def __init__(self):
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        self.thread.join()


class CopyProgress(WhileCopying):
    """While a cycle's rsync runs long (the first copy of a whole class), says every
    `every` seconds how far it got: `... folder 120 of 300, 2400 files so far`, from the
    lines rsync has written into the log (it copies the folders in their order)."""

    def __init__(self, log, sources, every=PROGRESS_EVERY):
        super().__init__()
        self.log, self.every, self.offset, self.files = log, every, 0, 0
        self.folders = {make_database.dest_relative(s): i for i, s in enumerate(sources, 1)}
        self.count, self.folder = len(sources), 0

    def run(self):
        while not self.stopped.wait(self.every):
            self.read_more()
            print(
                f"... folder {self.folder} of {self.count}, {self.files} files so far", flush=True
            )

    def read_more(self):
        """Count the files rsync listed since the last look; note the folder of the last."""
        with open(self.log, "rb") as stream:
            stream.seek(self.offset)
            data = stream.read()
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        for line in complete.decode("utf-8", "surrogateescape").splitlines():
            match = make_database.ITEMIZE_RE.match(line)
            if match and match.group(1)[1] == "f":
                self.files += 1
                self.folder = self.folder_of(make_database.decode_rsync_name(match.group(2)))

    def folder_of(self, name):
        """The number of the folder (in users.csv's order) that holds `name`, else the last."""
        folder = name.lstrip("/")
        while folder:
            folder = folder.rpartition("/")[0]
            if folder in self.folders:
                return self.folders[folder]
        return self.folder


class EarlyParser(WhileCopying):
    """While the cycle's local rsyncs copy, a thread of the loop that parses the notebooks
    they have put in place (one core is mostly idle then), for make_database.py to use.

    It tails the cycle's log `stream` as rsync writes it (up to the offset rsync's output
    shares with `stream`, as written_lines reads it; complete lines only) and keeps each
    notebook rsync names (received_notebook) pending until its copy is in place
    (copy_in_place: rsync names a file before it renames it there), trying the pending
    ones in order on each pass; then it parses it once with make_database.parse_copy.
    A notebook whose source changed again is never in place, and is left to
    make_database.py, as are those still pending when the copy ends: the thread stops
    then (make_database's workers on every core parse the rest faster). `results` is
    {name: (file identity, result)}; make_database uses one only for the very file it
    was read from, so what is parsed when cannot change what is recorded. Whatever goes
    wrong in the thread costs its results only.
    """

    def __init__(self, stream, dest, folders):
        super().__init__()
        self.stream, self.dest, self.folders = stream, dest, folders
        self.results, self.offset = {}, 0
        self.pending = {}  # name -> the student's file it is a copy of, in rsync's order

    def __exit__(self, *exc):
        # the loop waits for the notebook it may still be parsing: at the loop's own
        # priority (which only root may give back; others wait at its low one)
        if self.thread.is_alive():
            with contextlib.suppress(OSError):
                loop_nice = os.getpriority(os.PRIO_PROCESS, 0)
                os.setpriority(os.PRIO_PROCESS, self.thread.native_id, loop_nice)
        super().__exit__(*exc)

    def run(self):
        # the CPU rsync leaves idle, never what it needs: the lowest priority, for this
        # thread alone (on Linux a thread's nice value is its own)
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), EARLY_NICE)
        try:
            with open(self.stream.name, "rb", buffering=0) as reader:
                while not self.stopped.is_set():
                    listed = self.read_more(reader)
                    if not self.parse_in_place() and not listed:
                        self.stopped.wait(EARLY_POLL)
        except Exception:  # never the cycle's trouble: make_database.py parses them all
            self.results = {}

    def read_more(self, reader):
        """Add the notebooks named by the lines rsync completed since the last look (read
        through `reader`, the log opened for reading) to the pending ones; True when there
        were such lines. The log's disk is set aside beyond what rsync wrote (start_log):
        only what lies before `stream`'s offset is read."""
        written = os.lseek(self.stream.fileno(), 0, os.SEEK_CUR)
        data = os.pread(reader.fileno(), max(written - self.offset, 0), self.offset)
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        for line in complete.split(b"\n")[:-1]:
            name = received_notebook(line.decode("utf-8", "surrogateescape"))
            source = make_database.source_path(name, self.folders) if name else None
            if source is not None:  # a name no row holds is never in place: not kept
                self.pending[name] = source
        return bool(complete)

    def parse_in_place(self):
        """Parse each pending notebook whose copy is in place now, in their order, until
        stopped; True when one was."""
        progressed = False
        for name, source in list(self.pending.items()):
            if self.stopped.is_set():
                break
            copy = os.path.join(self.dest, name)
            if copy_in_place(copy, source):
                del self.pending[name]
                parsed = make_database.parse_copy(copy)
                if parsed is not None:
                    self.results[name] = parsed
                progressed = True
        return progressed


def copy_in_place(copy, source):
    """True when the file `copy` has the size and mtime of the student's file `source` (to
    the nanosecond, as rsync --times leaves it): most likely rsync has put it in place."""
    try:
        copied, original = os.lstat(copy), os.lstat(source)
    except OSError:
        return False
    return (copied.st_size, copied.st_mtime_ns) == (original.st_size, original.st_mtime_ns)


def copy(sources, args, t, stream, sudo, suspects, tally):
    """Run this cycle's rsyncs (rsync_groups: one, unless some failed last cycle); then
    copy the files whose names are too long for a backup suffix. The groups of folders
    whose rsync failed (empty when all did their job). What rsync left out for being over
    --max-size is make_database.py's to record and name, once each time it changes."""
    suffix = f".bak_{format_t(t)}"
    groups = rsync_groups(sources, suspects)
    if len(groups) > 1:
        print(f"copying the folders in {len(groups)} groups: some failed last cycle", flush=True)
    failed = []
    with CopyProgress(stream.name, sources):
        for group in groups:
            what = group[0] if len(group) == 1 else f"{len(group)} folders"
            command, listed = group_rsync(group, args.dest, suffix, sudo)
            if not run_rsync(command, listed, stream, what):
                failed.append(group)
    lines = written_lines(stream)
    long_names = long_names_left_out(lines)
    if long_names:
        command, files = (
            long_names_command(args.dest, t, sudo),
            long_name_files(long_names, sources),
        )
        if not run_rsync(command, list(files), stream, f"{len(files)} long-named file(s)"):
            failed.append(sorted(set(files.values())))
        lines = written_lines(stream)
    tally.copied += len(make_database.parse_log(lines).files)
    return failed


class HostCopy:
    """One host's copy in a cycle (run in a thread beside the others): its log, and what
    it has to say, said by the loop once every copy is done (copy_hosts)."""

    def __init__(self, remote, paths, args, t, sudo):
        self.remote, self.paths, self.args, self.t, self.sudo = remote, paths, args, t, sudo
        self.log = log_path(args.log_dir, t, remote.root)
        self.messages = []  # (what it is: "note", "rsync" (what rsync said) or "warning", text)
        self.copied, self.ok = 0, True

    def say(self, text, kind="note"):
        self.messages.append((kind, text))

    def fail(self, text):
        self.ok = False
        self.say(text, "warning")

    def run(self):
        """Copy the host's folders into the host's log; never raises for a host's trouble."""
        suffix = f".bak_{format_t(self.t)}"
        try:
            stream = start_log(self.log, suffix, LOG_RESERVE_MIN, folder=self.remote.root)
        except OSError as error:
            self.log = None
            self.fail(f"cannot write its log ({error.strerror}): nothing copied this cycle")
            return self
        with stream:
            self.make_folders()
            command = host_rsync_command(
                self.remote, self.args.dest, suffix, self.sudo, self.args.ssh
            )
            self.rsync(command, stream)
            end_log(stream)
            self.copied = len(make_database.parse_log(written_lines(stream)).files)
        return self

    def make_folders(self):
        """The host's folders under the destination, private like the destination."""
        folder = self.args.dest
        for part in self.remote.root.rstrip("/").split("/"):
            folder = os.path.join(folder, part)
            if not os.path.isdir(folder):
                os.mkdir(folder)
                make_private(folder)

    def rsync(self, command, stream):
        """Run the host's rsync over its folders. What rsync says is passed on, but a host
        that cannot be reached is one warning naming it and rsync's reason."""
        with tempfile.TemporaryFile() as errors:
            code = run(command, input=nul_terminated(self.paths), stdout=stream, stderr=errors)
            errors.seek(0)
            said = errors.read().decode("utf-8", "replace").splitlines()
        if code in RSYNC_OK:
            for line in said:
                self.say(line, "rsync")
            if code:
                self.say(f"rsync exit {code}: {RSYNC_OK[code]}; carrying on")
            return
        reason = next((line for line in said if line.strip()), "")
        if code in HOST_DOWN:
            self.fail(
                f"not copied this cycle, tried again next cycle: {HOST_DOWN[code]}"
                f" (rsync exit {code}: {reason})"
            )
        else:
            for line in said:
                self.say(line, "rsync")
            self.fail(f"rsync failed with exit code {code}; see {stream.name}")

    def tell(self, tally):
        """Print what the copy had to say, each line naming the host."""
        for kind, text in self.messages:
            if kind == "warning":
                tally.warn(f"host {self.remote.host}: {text}")
            else:
                print(
                    f"host {self.remote.host}: {text}",
                    file=sys.stderr if kind == "rsync" else sys.stdout,
                )
        tally.copied += self.copied


def copy_hosts(hosts, args, t, sudo, pool):
    """Start one HostCopy per host in `pool` (at most --remote-jobs at a time); their
    futures, in the order of `hosts`."""
    return [pool.submit(HostCopy(remote, paths, args, t, sudo).run) for remote, paths in hosts]


def log_lists_files(log):
    """True when the log lists a file to record: one rsync copied, or one it left out for
    being over --max-size (make_database.py records that it changed)."""
    try:
        return make_database.read_log(log, make_database.lists_files)
    except make_database.LogError as error:
        print(f"error: {error}", file=sys.stderr)
        return False


def apply(args, log, sudo, tally, parsed=None):
    """Run make_database.py on one log; True when it succeeded (or had nothing to do).
    What it says is passed on, but for the number of versions it recorded, which goes to
    `tally` with the number of its warnings.

    Without sudo it runs in a fork of this process, which has already imported it, and
    is handed `parsed`, the notebooks of the log the EarlyParser parsed."""
    if not log_lists_files(log):
        return True
    command = make_database_command(args, log, sudo)
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        if sudo:
            code = run(command, stdout=stdout, stderr=stderr)
        else:
            flags = make_database_flags(args, log)
            main = functools.partial(make_database.main, parsed=parsed)
            code = run_forked(main, flags, stdout, stderr)
        pass_on(stdout, stderr, tally)
    if code != 0:
        message = f"error: make_database.py failed with exit code {code} on {log}"
        print(message + sudo_hint(command, code), file=sys.stderr)
    return code == 0


def pass_on(stdout, stderr, tally):
    """Print what make_database.py wrote into the files `stdout` and `stderr`, counting
    its warnings and the versions it recorded (that line is left to the summary)."""
    for stream, target in ((stdout, sys.stdout), (stderr, sys.stderr)):
        stream.seek(0)
        for line in stream.read().decode("utf-8", "replace").splitlines():
            recorded = RECORDED_RE.search(line) if target is sys.stdout else None
            if recorded:
                tally.recorded += int(recorded.group(1))
                continue
            tally.warnings += line.startswith("warning")
            print(line, file=target)
    sys.stdout.flush()


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


class Cycle(NamedTuple):
    """What one cycle's copy left: its T, its logs to apply (the local one first, then
    one per host, in a fixed order), the groups of local folders whose rsync failed,
    whether every copy did its job, and what was parsed while rsync copied ({log:
    EarlyParser results})."""

    t: int
    logs: list
    suspects: list
    complete: bool
    parsed: dict


def one_cycle(args, users, previous_t, sudo, suspects, tally):
    """Run one cycle's rsyncs: the local folders' (in this thread) and one per host of
    remote rows (in parallel, --remote-jobs at a time); a Cycle. When the local log cannot
    be written nothing is copied: no logs, `suspects` kept."""
    t = next_timestamp(time.time(), previous_t, args.log_dir)
    print(f"======== {format_t(t)} ========", flush=True)
    sources = usable_sources(users, print, tally.warn)
    hosts = list(remote_hosts(users).values())
    log, suffix = log_path(args.log_dir, t), f".bak_{format_t(t)}"
    try:
        stream = start_log(log, suffix, log_reserve(args.log_dir, previous_t) if sources else 0)
    except OSError as error:
        print(
            f"error: cannot write {log} ({error.strerror}): nothing copied this cycle;"
            " trying again next cycle",
            file=sys.stderr,
        )
        return Cycle(t, [], suspects, False, {})
    with stream:
        if not sources and not hosts:
            print("no folder to copy")
            return Cycle(t, [log], [], True, {})
        clear_temp_dir(args.dest)
        with concurrent.futures.ThreadPoolExecutor(args.remote_jobs) as pool:
            copies = copy_hosts(hosts, args, t, sudo, pool)
            # under sudo make_database.py is a command of its own: it cannot be handed
            # what this process parsed
            early = None
            if sources and not sudo:
                early = EarlyParser(stream, args.dest, make_database.user_folders(users))
            with early or contextlib.nullcontext():
                failed = copy(sources, args, t, stream, sudo, suspects, tally) if sources else []
        end_log(stream)
    host_copies = [future.result() for future in copies]
    for host_copy in host_copies:
        host_copy.tell(tally)
    logs = [log, *(host_copy.log for host_copy in host_copies if host_copy.log)]
    parsed = {log: early.results} if early else {}
    return Cycle(t, logs, failed, all(host_copy.ok for host_copy in host_copies), parsed)


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


def apply_logs(args, unapplied, logs, sudo, tally, parsed):
    """Apply the logs earlier cycles left unapplied, oldest first, then this cycle's `logs`
    in their order, one make_database.py at a time, each handed what `parsed` ({log:
    EarlyParser results}) holds for it; the logs still unapplied. Once an earlier one
    fails, the rest wait for the next cycle (they would most likely fail the same way),
    so a lasting failure costs one more run a cycle, not one per log."""
    failed = []
    for i, earlier in enumerate(unapplied):
        print(f"{earlier} is not applied yet: applying it now ({i + 1} of {len(unapplied)})")
        if not apply(args, earlier, sudo, tally):
            failed = unapplied[i:]
            break
    for log in logs:
        if not apply(args, log, sudo, tally, parsed.get(log)):
            failed.append(log)
    return failed


def sync_loop(args, users_file, sudo, stopper, keeper, unapplied):
    """The cycles of a normal run; True when every one completed.

    Logs left unapplied are applied in the first cycle, and a log whose make_database.py
    fails (users.csv saved half-edited, a full disk) is tried again every cycle: what was
    copied and kept is recorded once it can be, in any order, as a replay would."""
    all_ok, previous_t, cycle, suspects = True, None, 0, []
    local = [u for u in users_file.current() if not make_database.is_remote(u.notebooks)]
    folders = [make_database.rsync_source(user.notebooks) for user in local]
    print(f"each cycle runs: {shown_command(args, folders, sudo)}")
    for remote, paths in remote_hosts(users_file.current()).values():
        print(f"and for {remote.host}: {shown_host_command(args, remote, len(paths), sudo)}")
    try:
        while args.repeat < 0 or cycle < args.repeat:
            started, tally = time.monotonic(), Tally()
            users = users_file.current()
            done = one_cycle(args, users, previous_t, sudo, suspects, tally)
            previous_t, suspects = done.t, done.suspects
            # even after a failed or interrupted rsync the logs are applied: what was copied
            # and what was kept as a backup is recorded
            unapplied = apply_logs(args, unapplied, done.logs, sudo, tally, done.parsed)
            keeper.hold()
            applied = not set(done.logs) & set(unapplied)
            all_ok = all_ok and done.complete and not suspects and applied
            cycle += 1
            took = time.monotonic() - started
            summary = f"{tally.summary()}, took {took:.2f} sec"
            if args.repeat >= 0 and cycle >= args.repeat:
                print(summary)
                break
            stopper.check()
            pause = sleep_seconds(took, args.overhead, args.min_sleep)
            print(f"{summary}, sleep {pause:.3g} sec until the next cycle", flush=True)
            stopper.sleep(pause)
    except StopRequested:
        print("stopped")
    return all_ok


def replay_logs(args, sudo, stopper, keeper):
    """Apply every log in the log folder, oldest first, without rsync; one line a log
    (`i of N`) and a total."""
    logs = sorted(glob.glob(os.path.join(glob.escape(args.log_dir), "sync_*.log")))
    started, tally, done, failed = time.monotonic(), Tally(), 0, 0
    for log in logs:
        before = tally.recorded
        failed += not apply(args, log, sudo, tally)
        done += 1
        print(f"{done} of {len(logs)}: {log}: recorded {tally.recorded - before} versions")
        keeper.hold()
        if stopper.event.is_set():
            print("stopped")
            break
    took = time.monotonic() - started
    print(f"replayed {done} of {len(logs)} logs in {args.log_dir}, {failed} failed: ", end="")
    print(f"{tally.recorded_summary()}, took {took:.2f} sec")
    return failed == 0


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
        "--owner",
        metavar="USER",
        help="Account that owns the destination, the logs and the database (default: the "
        "one that ran sudo, else the one running this script).",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {make_database.__version__}"
    )
    parser.add_argument(
        "--no-sudo",
        action="store_true",
        help="Run rsync and make_database.py without sudo, when this account can read "
        "every folder (default: use sudo unless already root).",
    )
    remote = parser.add_argument_group("rows on other machines")
    remote.add_argument(
        "--remote",
        action="store_true",
        help="Copy rows whose notebooks are on another machine, [user@]host:/path (rsync "
        "over ssh) or rsync://host[:port]/module/path (an rsync daemon), each host into "
        "DEST/<host>/ with one rsync a cycle (default: such rows are refused).",
    )
    remote.add_argument(
        "--remote-jobs",
        type=int,
        default=4,
        metavar="N",
        help="How many hosts are copied at the same time (default: %(default)s).",
    )
    remote.add_argument(
        "--ssh",
        default="ssh",
        metavar="COMMAND",
        help="The remote shell for host:/path rows, as rsync's --rsh takes it (split at "
        f"spaces, no shell); the loop adds `{SSH_OPTIONS}` (default: %(default)s).",
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
    if args.remote_jobs < 1:
        return "--remote-jobs must be 1 or more"
    return ""


def settle(args):
    """(users file, whether to use sudo) once the arguments, the owner and sudo are found
    to work; CannotStart or UsersCsvError else. The owner is said once."""
    problem = check_args(args)
    if problem:
        raise CannotStart(problem)
    owner = owner_account(args.owner)
    users_file = UsersFile(args.users_csv, monitor_paths(args), args.remote)
    sudo = not args.no_sudo and os.geteuid() != 0
    if sudo:
        check_sudo()
    give_to(owner)
    print(owner_note(owner, args.owner), file=sys.stderr if owner[1] == 0 else sys.stdout)
    return users_file, sudo


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        users_file, sudo = settle(args)
    except (CannotStart, make_database.UsersCsvError) as error:
        print(f"Error: {error}", file=sys.stderr)
        return 2
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
