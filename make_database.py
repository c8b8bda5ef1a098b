#!/usr/bin/env python3
"""Record one rsync log's copies in the progress database.

rsync_notebooks.py copies every student's notebooks into a destination folder with
`rsync --itemize-changes --backup --suffix=.bak_T` and writes what rsync printed to a log
whose first line is `suffix=.bak_T`. This script reads one such log and, for every regular
file rsync listed:

1. renames the previous version rsync kept (`nb.ipynb.bak_T`) to `nb.bak_T.ipynb`, so that
   it still opens as a notebook, and records it (a name too long for that suffix had it
   kept in `.long_name_versions/T/` instead: it is moved beside it under a shortened name,
   `<start of the name>~<8 hex>.bak_T.ipynb`, and its source noted in `version_details`);
2. records the current copy.

A record is one row of `summary` (file name relative to the destination, the copy's mtime,
its owner from users.csv, and the counts of graded code cells by outcome) plus one row of
`problems` per graded cell, and one of `version_details` (its time in UTC seconds, the
file's own mtime, why it has no counts). Files under `.ipynb_checkpoints/` and temporary
files are copied but not recorded.

Nothing in one student's folder stops or fools it: a file that cannot be counted is a row
without counts and a warning; an absurd mtime (before 2000, or past the cycle) gives way
to the cycle's time; a file over rsync's --max-size is recorded, without counts, once per
change; a copy owned by another student's account is removed, not recorded.

Each log is applied in one transaction; applying it again, or after a crash, gives the same
database as one clean run.

Example:
    ./make_database.py --users-csv users.csv --log sync_logs/sync_2021-10-17T18:26:14.log \\
        --dest sync_dest --db sync.sqlite
    ./make_database.py --parse-only hoge/a/notebooks/pl01.ipynb

Exit codes: 0 done (unreadable notebooks are warnings, not failures); 1 the log or the
database could not be used; 2 bad arguments or an unusable users.csv.
"""

__version__ = "0.3.0"  # the project's one version string (the other scripts import it)

import argparse
import csv
import datetime
import errno
import hashlib
import itertools
import marshal
import os
import re
import signal
import sqlite3
import stat
import sys
import time
from typing import NamedTuple

try:
    import orjson

    def load_json(data):
        return orjson.loads(data)

    def dump_json(value):
        return orjson.dumps(value).decode()

    JSON_ERRORS = (orjson.JSONDecodeError, RecursionError)
except ImportError:  # the standard library is slower but gives the same answers
    import json

    def load_json(data):
        return json.loads(data)

    def dump_json(value):
        return json.dumps(value)

    JSON_ERRORS = (ValueError, RecursionError)


# ---------------------------------------------------------------------------- constants

# The seed's two tables exactly (the sqlite3 shell's .schema shows them as the seed README
# does), then what is added beside them.
SCHEMA = """\
CREATE TABLE IF NOT EXISTS summary(filename unique, t, owner, code_ok, code_display, code_stream, code_error, code_empty);
CREATE TABLE IF NOT EXISTS problems(filename, grade_id, result);
CREATE INDEX IF NOT EXISTS summary_owner ON summary(owner);
CREATE INDEX IF NOT EXISTS summary_t ON summary(t);
CREATE INDEX IF NOT EXISTS problems_filename ON problems(filename);
CREATE TABLE IF NOT EXISTS applied_logs(log unique, suffix);
CREATE TABLE IF NOT EXISTS version_details(filename unique, epoch, mtime, file_key, reason, source);
CREATE TABLE IF NOT EXISTS oversize_files(source unique, file_key);
CREATE TABLE IF NOT EXISTS summary_changes(id INTEGER PRIMARY KEY, summary_rowid);
CREATE TRIGGER IF NOT EXISTS summary_row_replaced BEFORE INSERT ON summary BEGIN
  INSERT INTO summary_changes(summary_rowid) SELECT rowid FROM summary WHERE filename = new.filename; END;
CREATE TRIGGER IF NOT EXISTS summary_row_deleted AFTER DELETE ON summary BEGIN
  INSERT INTO summary_changes(summary_rowid) VALUES (old.rowid); END;
CREATE TRIGGER IF NOT EXISTS summary_row_updated AFTER UPDATE ON summary BEGIN
  INSERT INTO summary_changes(summary_rowid) VALUES (old.rowid), (new.rowid); END;
"""  # noqa: E501
# version_details, one row per summary row:
#   epoch     t as UTC seconds: orders versions where local times repeat (summer time's end)
#   mtime     the file's own mtime (UTC seconds); t is the cycle's time when it is absurd
#   file_key  `inode:size:mtime_ns` of the copy, which tells whether a previous version
#             rsync kept is the very file recorded under the current name a cycle ago
#   reason    why the counts are NULL (over --max-size, not a readable notebook), or NULL
#   source    the file it is a version of when its name does not say so (source_of): the
#             shortened name of a long name's version; NULL when it does
# oversize_files: the file_key of each file over --max-size when last recorded, so that
# one that did not change is recorded (and warned about) once, not every cycle.
# summary_changes: the rowid of each summary row replaced (INSERT OR REPLACE of its name),
# deleted or updated, noted by the triggers; with the rowids above the last one seen, it
# tells the viewer what changed since it last read (progress_views/data.py).

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"
LOOP_T_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}")  # as TIME_FORMAT
WAL_CHECKPOINT_PAGES = 8192  # 32 MB with 4 KB pages
# rows written at a time, while the next notebooks are parsed (with Parsing.CHUNK: the
# full first cycle of 300 x 20 notebooks, forked as the loop forks it, 1.03 -> 0.73 s)
RECORDS_PER_WRITE = 256
CHECKPOINTS_DIR = ".ipynb_checkpoints"
# Where rsync_notebooks.py has rsync keep the previous version of a file whose name is too
# long to get the suffix (`.long_name_versions/T/<path>`), until it is moved beside it.
LONG_NAME_VERSIONS = ".long_name_versions"
NAME_MAX = 255  # bytes in a file name
NAME_HASH_LENGTH = 8  # hex digits of a long name's hash in its versions' shortened name
LONGEST_EXTENSION = 16  # bytes; a longer `.xyz` is kept as part of the cut stem
UNKNOWN_OWNER = "unknown"
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
# A version's mtime before this (2000-01-01 UTC: a zip's 1980, a clock never set) or more
# than FUTURE_MARGIN seconds after its cycle is absurd: the cycle's time stands in for it.
EARLIEST_MTIME = 946_684_800
FUTURE_MARGIN = 86_400
OVERSIZE_REASON = "over max-size: not copied"

# Outcomes of a graded cell, in the order the first one found among its outputs wins.
OUTPUT_PRIORITY = ("error", "display_data", "stream", "execute_result")
# nbformat v3 names two of them differently.
V3_OUTPUT_TYPES = {"pyout": "execute_result", "pyerr": "error"}
ANSWERED = ("execute_result", "display_data", "stream")

# ---- read by the viewer (progress_views) too: this is their one home.
# summary's count columns, and the outcome of a graded code cell each one counts.
COUNT_COLUMNS = ("code_ok", "code_display", "code_stream", "code_error", "code_empty")
COUNTED_OUTCOMES = ("execute_result", "display_data", "stream", "error", "empty")
# A renamed backup, `nb.bak_2021-10-17T18:26:14.ipynb`, as an SQLite GLOB; its `.bak_T`
# part is BACKUP_MARK_LENGTH characters long.
BACKUP_GLOB = (
    "*.bak_[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].ipynb"
)
BACKUP_MARK_LENGTH = len(".bak_2021-10-17T18:26:14")
# ---- end of the viewer's block

# A backup rsync made in the cycle with suffix `.bak_T`, after our rename.
BACKUP_MARK_RE = re.compile(r"\.bak_\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")

# `>f+++++++++|hoge/a/notebooks/hello.txt|`: 11 characters of %i, then %n between bars.
ITEMIZE_RE = re.compile(r"^([<>ch.*][fdLDS][^|]{9})\|(.*)\|$", re.DOTALL)
# `hoge/a/notebooks/big.ipynb is over max-size`: rsync's --info=skip1 line for a file it
# did not copy because of --max-size (the name as %n, without a leading slash).
OVERSIZE_RE = re.compile(r"^(.*) is over max-size$", re.DOTALL)
# Files that are no version of anything: Jupyter's atomic-save copy `.~nb.ipynb`, and
# rsync's temporary file `.nb.ipynb.XmYmOH` (the name, a dot and six random characters).
TEMPORARY_NAME_RE = re.compile(r"^(\.~.*|\..+\.[A-Za-z0-9]{6})$", re.DOTALL)
OCTAL_ESCAPE_RE = re.compile(rb"\\#([0-7]{3})")
# The second line of a host's log, `folder=node1/`: its names are relative to
# `<dest>/node1/`, where rsync_notebooks.py copied that host's folders.
FOLDER_LINE = "folder="
# Remote `notebooks` folders (rsync_notebooks.py --remote): `[user@]host:/path` (rsync over
# ssh) and `rsync://host[:port]/module/path` (an rsync daemon). No `:` and no `+` in a host
# or a user name, so the folder named after a host can never be read by rsync as a host,
# and a daemon's `host+port` never equals an ssh host's name.
HOST_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?"
SSH_FOLDER_RE = re.compile(rf"^(?:([A-Za-z0-9_][A-Za-z0-9._-]*)@)?({HOST_NAME}):(.*)$", re.DOTALL)
DAEMON_FOLDER_RE = re.compile(
    rf"^rsync://({HOST_NAME})(?::(\d{{1,5}}))?/([A-Za-z0-9_][A-Za-z0-9._-]*)/(.*)$", re.DOTALL
)
DAEMON_PORT = 873


class UsersCsvError(Exception):
    """users.csv cannot be used at all (missing, unreadable, or without a required column)."""


class LogError(Exception):
    """A sync log cannot be used (missing, or without its `suffix=` first line)."""


# ---------------------------------------------------------------------------- users.csv


class RemoteFolder(NamedTuple):
    """A `notebooks` folder on another machine, and where its copy lands."""

    host: str  # as messages name it: `alice@node1`, `node1`, `127.0.0.1:8730`
    source: str  # rsync's source for every folder of that host: `node1:/`, `rsync://h:873/m/`
    root: str  # the folder under the destination for that source: `node1/`, `h+873/m/`
    path: str  # the folder below the source, relative: `home/a/notebooks`


class User(NamedTuple):
    uid: str
    notebooks: str  # as written in users.csv
    line: int
    attrs: dict


def read_users_csv(path, warn=None):
    """Read users.csv: a list of User for the usable rows; bad rows are warned about.

    Spreadsheet files (UTF-8 BOM, CRLF) read the same as plain ones.
    """
    warn = warn or (lambda message: print(message, file=sys.stderr))
    try:
        with open(path, newline="", encoding="utf-8-sig") as stream:
            rows = list(csv.reader(stream))
    except OSError as error:
        raise UsersCsvError(f"{path}: cannot read users file ({error.strerror})") from None
    except UnicodeDecodeError:
        raise UsersCsvError(f"{path}: users file is not UTF-8 text") from None
    if not rows:
        raise UsersCsvError(f"{path}: users file is empty; it needs a header uid,notebooks")
    header = [name.strip() for name in rows[0]]
    missing = [name for name in ("uid", "notebooks") if name not in header]
    if missing:
        raise UsersCsvError(f"{path}: users file has no column {' or '.join(missing)}")
    users = []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        record = dict(zip(header, (cell.strip() for cell in row)))
        uid, notebooks = record.get("uid", ""), record.get("notebooks", "")
        problem = notebooks_problem(notebooks) or ("" if uid else "empty uid")
        if problem:
            warn(f"{path}:{line}: skipped ({problem})")
            continue
        attrs = {k: v for k, v in record.items() if k not in ("uid", "notebooks")}
        users.append(User(uid, notebooks, line, attrs))
    return users


def file_key(path):
    """What changes when the file at `path` is written or replaced; None when it is not
    there."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns


def notebooks_problem(notebooks):
    """Why rsync must not be given this `notebooks` value, or '' when it is fine."""
    if not notebooks:
        return "empty notebooks"
    if notebooks.startswith("-"):
        return f"notebooks {notebooks!r} would be read by rsync as an option"
    if "\0" in notebooks or "\n" in notebooks:
        return "notebooks contains a NUL or newline character"
    try:
        remote_folder(notebooks)
    except ValueError as error:
        return f"notebooks {notebooks!r} {error}"
    return ""


def is_remote(notebooks):
    """True when rsync would read `notebooks` as a remote source: a `:` before the first
    `/` (so `./a:b` and `/x:y` are local paths), or an `rsync://` URL."""
    return notebooks.startswith("rsync://") or ":" in notebooks.split("/", 1)[0]


def remote_path(path, absolute):
    """The folder `path` of a remote row, normalised and relative; ValueError when it is
    not one we copy (`..`, the whole machine, a home-relative ssh path)."""
    if absolute and not path.startswith("/"):
        raise ValueError("names a folder relative to a home directory: give its absolute path")
    path = os.path.normpath(path).strip("/") if path else ""
    if not path or path == "." or ".." in path.split("/"):
        raise ValueError("names no folder below the machine's or the module's root")
    return path


def remote_folder(notebooks):
    """The RemoteFolder of a remote `notebooks` value, None for a local one; ValueError
    saying why when it looks remote but is none of the two forms we copy.

    `alice@node1:/home/a/nb` -> host alice@node1, source `alice@node1:/`, root
    `alice@node1/`, path `home/a/nb`; `rsync://10.0.0.5:8730/home/a/nb` -> host
    10.0.0.5:8730, source `rsync://10.0.0.5:8730/home/`, root `10.0.0.5+8730/home/`, path `a/nb`.
    """
    if not is_remote(notebooks):
        return None
    daemon = DAEMON_FOLDER_RE.match(notebooks)
    if daemon:
        host, port, module, path = daemon.groups()
        port = int(port) if port else DAEMON_PORT
        if not 0 < port < 65536:
            raise ValueError(f"has a port out of range: {port}")
        source = f"rsync://{host}:{port}/{module}/"
        return RemoteFolder(
            f"{host}:{port}", source, f"{host}+{port}/{module}/", remote_path(path, False)
        )
    ssh = SSH_FOLDER_RE.match(notebooks)
    if not ssh or notebooks.startswith("rsync://"):
        raise ValueError(
            "would be read by rsync as a remote source, and is neither [user@]host:/path"
            " nor rsync://host[:port]/module/path"
        )
    user, host, path = ssh.groups()
    host = f"{user}@{host}" if user else host
    return RemoteFolder(host, f"{host}:/", f"{host}/", remote_path(path, True))


def rsync_source(notebooks):
    """The path handed to rsync for a local `notebooks` value (made absolute if it climbs
    out); a remote one's RemoteFolder has its own."""
    path = os.path.normpath(notebooks)
    if path == ".." or path.startswith("../"):
        path = os.path.abspath(path)
    if is_remote(path):  # `./a:b`: still a local folder wherever the path goes next
        path = "./" + path
    return path


def dest_relative(notebooks):
    """Where rsync --relative puts a `notebooks` folder under the destination: a remote
    one under the folder of its host (`node1/home/a/nb`)."""
    remote = remote_folder(notebooks)
    if remote:
        return remote.root + remote.path
    return os.path.normpath(rsync_source(notebooks)).lstrip("/")


def user_folders(users):
    """{folder under the destination: User} for owner lookup (the first row wins a tie)."""
    folders = {}
    for user in users:
        folder = dest_relative(user.notebooks)
        folders.setdefault("" if folder == "." else folder, user)
    return folders


def folder_of(filename, folders):
    """(folder, User) of the row whose notebooks folder holds `filename` (whole path
    components; the deepest folder wins), or None. It looks up each parent folder: no scan
    of all users."""
    folder = filename
    while folder:
        folder = folder.rpartition("/")[0]
        if folder in folders:
            return folder, folders[folder]
    return None


def owner_of(filename, folders):
    """The uid whose notebooks folder holds `filename`, or unknown."""
    found = folder_of(filename, folders)
    return found[1].uid if found else UNKNOWN_OWNER


def source_path(filename, folders):
    """Where rsync read the file it names `filename` (relative to the working directory,
    or absolute), or None when no row holds it."""
    found = folder_of(filename, folders)
    if found is None or is_remote(found[1].notebooks):  # not a path of this machine
        return None
    folder, user = found
    return os.path.join(rsync_source(user.notebooks), filename[len(folder) :].lstrip("/"))


def folder_account(path):
    """The account (a uid number) whose folder `path` is: the owner of the first symlink
    on the way that a non-root account made (a student who swapped a folder of theirs for
    a link to a classmate's), else of the folder itself. None for root, or when the path
    cannot be read: then there is nothing to check a copy's owner against."""
    current = "/" if path.startswith("/") else "."
    for part in path.split("/"):
        if part in ("", "."):
            continue
        current = os.path.join(current, part)
        try:
            info = os.lstat(current)
        except OSError:
            return None
        if stat.S_ISLNK(info.st_mode) and info.st_uid != 0:
            return info.st_uid
    try:
        info = os.stat(current)  # a root's link at the end (or `.`): the folder it names
    except OSError:
        return None
    return info.st_uid or None


# ---------------------------------------------------------------------------- log parsing


def decode_rsync_name(raw):
    """Undo rsync's `\\#ooo` escapes (newline is `\\#012`; non-ASCII under the C locale)."""
    data = OCTAL_ESCAPE_RE.sub(lambda m: bytes([int(m.group(1), 8)]), os.fsencode(raw))
    return os.fsdecode(data)


class SyncLog(NamedTuple):
    """What one sync log says."""

    suffix: str  # `.bak_T`
    files: list  # regular files rsync copied, in log order, no duplicates
    created: set  # those of them rsync created (`>f+++++++++`: no previous version kept)
    oversize: list  # files rsync did not copy because they are over --max-size
    folder: str = ""  # a host's log: the folder under the destination its names lie in


def log_name(raw, folder=""):
    """The path under the destination of a name rsync printed, or '' for none we accept;
    `folder` is the log's `folder=` (a host's logs), where rsync copied into.

    rsync --relative names files of absolute sources with their leading slash; under the
    destination they are relative. `..` never comes from rsync."""
    path = decode_rsync_name(raw).lstrip("/")
    return "" if not path or ".." in path.split("/") else folder + path


def log_folder(line):
    """The folder under the destination a host's log names its files in, from its second
    line `folder=node1/`; '' for any other line (a log of local folders)."""
    line = line.rstrip("\n")
    if not line.startswith(FOLDER_LINE):
        return ""
    folder = line[len(FOLDER_LINE) :]
    parts = folder.split("/")
    if parts[-1] or "" in parts[:-1] or ".." in parts or "." in parts or ":" in folder:
        raise LogError(f"bad folder {folder!r} in the second line")
    return folder


def parse_log(lines):
    """The SyncLog of a sync log's lines.

    First line `suffix=.bak_2021-10-17T18:26:14`; in a host's log a second line
    `folder=node1/` (its names are relative to that folder of the destination); then
    rsync's output, e.g.
        cd+++++++++|hoge/a/notebooks/|
        >f+++++++++|hoge/a/notebooks/hello.txt|
        hoge/a/notebooks/big.ipynb is over max-size
        created directory sync_dest
    Only regular files (`f` in the second character of %i) are copies.
    """
    suffix, folder, lines = log_header(lines)
    files, seen, created, oversize = [], set(), set(), []
    for path, copied, new in log_entries(lines, folder):
        if not copied:
            if path not in oversize:
                oversize.append(path)
        elif path not in seen:
            seen.add(path)
            files.append(path)
            if new:
                created.add(path)
        elif not new:  # listed twice (overlapping folders): trust the file over the flag
            created.discard(path)
    return SyncLog(suffix, files, created, oversize, folder)


def lists_files(lines):
    """True when parse_log(lines) would list a file, copied or over --max-size; it reads
    no further than the first."""
    _, folder, lines = log_header(lines)
    return next(log_entries(lines, folder), None) is not None


def log_header(lines):
    """(suffix, folder, the lines after them) of a sync log's lines: the suffix of its first
    line `suffix=.bak_T`, and a host's log's folder from its second line (log_folder)."""
    lines = iter(lines)
    first = next(lines, "").rstrip("\r\n")
    if not first.startswith("suffix="):
        raise LogError("first line is not suffix=...")
    suffix = first[len("suffix=") :]
    if not suffix or "/" in suffix:
        raise LogError(f"bad suffix {suffix!r} in the first line")
    second = next(lines, "")
    folder = log_folder(second)
    if not folder:
        lines = itertools.chain([second], lines)
    return suffix, folder, lines


def log_entries(lines, folder=""):
    """(path, copied, new) for each of a log's lines (after its header) that names a file
    under the destination: one rsync copied (`new` when it created it: `>f+++++++++`), or
    one it left out for being over --max-size (copied False)."""
    for line in lines:
        line = line.rstrip("\n")
        match = ITEMIZE_RE.match(line)
        if not match:
            skipped = OVERSIZE_RE.match(line)
            path = log_name(skipped.group(1), folder) if skipped else ""
            if path:
                yield path, False, False
        elif match.group(1)[1] == "f":
            path = log_name(match.group(2), folder)
            if path:
                yield path, True, match.group(1)[2:] == "+" * 9


def read_log(path, parse=parse_log):
    """parse_log (or `parse`) of a log file; names are kept as the bytes rsync wrote."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape", newline="\n") as stream:
            return parse(stream)
    except OSError as error:
        raise LogError(f"{path}: cannot read log ({error.strerror})") from None
    except LogError as error:
        raise LogError(f"{path}: {error}") from None


def is_version(path):
    """False for a file that is copied but is no version of a student's file: Jupyter's
    checkpoints, its atomic-save copies, rsync's temporary files, and anything in the
    loop's own folder of long names' versions."""
    parts = path.split("/")
    return (
        CHECKPOINTS_DIR not in parts
        and parts[0] != LONG_NAME_VERSIONS
        and not TEMPORARY_NAME_RE.match(parts[-1])
    )


def is_parsed_notebook(path):
    """True for a file of the log whose notebook apply_log parses: a version of a notebook
    (not a checkpoint, not a backup)."""
    return path.endswith(".ipynb") and is_version(path)


def backup_name(path, suffix):
    """`dir/nb.ipynb` + `.bak_T` -> `dir/nb.bak_T.ipynb` (the renamed previous version)."""
    directory, base = os.path.split(path)
    stem, ext = os.path.splitext(base)
    return os.path.join(directory, stem + suffix + ext)


def long_name_versions(t):
    """The folder (under the destination) where the previous versions of long names that
    cycle T replaced are kept: `.long_name_versions/2021-10-17T18:26:14`."""
    return os.path.join(LONG_NAME_VERSIONS, t)


def too_long_for_suffix(path, suffix):
    """True when `path`'s name with `suffix` added has more than NAME_MAX bytes."""
    return len(os.fsencode(os.path.basename(path) + suffix)) > NAME_MAX


def short_backup_name(path, suffix):
    """`dir/<240 bytes>.ipynb` + `.bak_T` -> `dir/<start>~1a2b3c4d.bak_T.ipynb`: the name of a
    previous version of a file whose name is too long for backup_name. It keeps the
    extension and as many whole characters of the stem as fit NAME_MAX bytes; the 8 hex
    digits, of a hash of the whole name, keep apart two long names that start alike."""
    directory, base = os.path.split(path)
    stem, extension = os.path.splitext(base)
    if len(os.fsencode(extension)) > LONGEST_EXTENSION:
        stem, extension = base, ""
    digest = hashlib.sha256(os.fsencode(base)).hexdigest()[:NAME_HASH_LENGTH]
    mark = f"~{digest}{suffix}{extension}"
    room, kept = NAME_MAX - len(os.fsencode(mark)), []
    for character in stem:  # one undecodable byte is one character here
        room -= len(os.fsencode(character))
        if room < 0:
            break
        kept.append(character)
    return os.path.join(directory, "".join(kept) + mark)


def previous_version_names(path, suffix, kept_apart=False):
    """(where rsync kept the version of `path` that the cycle with `suffix` replaced, the
    name it is renamed to and recorded under), both relative to the destination:
    `nb.ipynb.bak_T` -> `nb.bak_T.ipynb`; for a name too long for the suffix,
    `.long_name_versions/T/<path>` -> short_backup_name. A host's copy (`kept_apart`,
    rsync_notebooks.py gives its rsync that folder as --backup-dir) has every previous
    version kept in `.long_name_versions/T/<path>`."""
    long_name = too_long_for_suffix(path, suffix)
    if long_name or kept_apart:
        kept = os.path.join(long_name_versions(suffix.removeprefix(".bak_")), path)
        return kept, short_backup_name(path, suffix) if long_name else backup_name(path, suffix)
    return path + suffix, backup_name(path, suffix)


def source_of(filename):
    """The file a recorded version belongs to: `dir/nb.bak_T.ipynb` -> `dir/nb.ipynb`."""
    directory, base = os.path.split(filename)
    return os.path.join(directory, BACKUP_MARK_RE.sub("", base, count=1))


def stated_source(filename, source):
    """`source`, the file `filename` is a version of, when source_of(filename) does not
    say it (a long name's shortened version, or a file named like a version); else None."""
    return None if source_of(filename) == source else source


# ---------------------------------------------------------------------------- notebooks


def nbgrader_metadata(cell):
    """A cell's nbgrader metadata dict, or {} for a plain cell or an unknown shape."""
    metadata = cell.get("metadata") if isinstance(cell, dict) else None
    nbgrader = metadata.get("nbgrader") if isinstance(metadata, dict) else None
    return nbgrader if isinstance(nbgrader, dict) else {}


def graded_id(cell):
    """The grade_id of a cell nbgrader grades (it has a grade_id and `grade: true`), else
    None."""
    metadata = nbgrader_metadata(cell)
    grade_id = metadata.get("grade_id")
    return grade_id if isinstance(grade_id, str) and metadata.get("grade") is True else None


def cell_source(cell):
    """The cell's text (v4 `source`, v3 code `input`), a string or a list of strings."""
    source = cell.get("source", cell.get("input", ""))
    if isinstance(source, list):
        return "".join(part for part in source if isinstance(part, str))
    return source if isinstance(source, str) else ""


def cell_outcome(cell):
    """error, display_data, stream, execute_result (first found, in that order), or
    empty / non-empty for a cell without any of those outputs."""
    outputs = cell.get("outputs")
    found = set()
    for output in outputs if isinstance(outputs, list) else ():
        if isinstance(output, dict):
            kind = output.get("output_type")
            found.add(V3_OUTPUT_TYPES.get(kind, kind))
    for kind in OUTPUT_PRIORITY:
        if kind in found:
            return kind
    return "non-empty" if cell_source(cell).strip() else "empty"


def notebook_cells(notebook):
    """The cells of a v4 (`cells`) or v3 (`worksheets[].cells`) notebook, or None."""
    if not isinstance(notebook, dict):
        return None
    if isinstance(notebook.get("cells"), list):
        return notebook["cells"]
    worksheets = notebook.get("worksheets")
    if isinstance(worksheets, list):
        return [
            cell
            for sheet in worksheets
            if isinstance(sheet, dict) and isinstance(sheet.get("cells"), list)
            for cell in sheet["cells"]
        ]
    return None


class NotANotebook(Exception):
    """The file is not a readable notebook."""


def graded_outcomes(notebook):
    """[(grade_id, cell_type, outcome)] in cell order; a repeated grade_id is listed once,
    at the place of its first occurrence, with the type and outcome of its last."""
    cells = notebook_cells(notebook)
    if cells is None:
        raise NotANotebook("no cells (neither nbformat 4 nor 3)")
    outcomes = {}
    for cell in cells:
        grade_id = graded_id(cell)
        if grade_id is not None:
            outcomes[grade_id] = (grade_id, cell.get("cell_type"), cell_outcome(cell))
    return list(outcomes.values())


def count_outcomes(outcomes):
    """(code_ok, code_display, code_stream, code_error, code_empty) over graded code cells."""
    code = [outcome for _, cell_type, outcome in outcomes if cell_type == "code"]
    return tuple(code.count(kind) for kind in COUNTED_OUTCOMES)


def parse_notebook_bytes(data):
    """(counts, [(grade_id, outcome)]) for a notebook's bytes; NotANotebook when unreadable."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        notebook = load_json(data)
    except JSON_ERRORS as error:
        raise NotANotebook(f"not JSON ({str(error).splitlines()[0][:120]})") from None
    outcomes = graded_outcomes(notebook)
    return count_outcomes(outcomes), [(grade_id, outcome) for grade_id, _, outcome in outcomes]


def parse_notebook(path):
    """parse_notebook_bytes of a file (NotANotebook when it cannot be read)."""
    try:
        with open(path, "rb") as stream:
            data = stream.read()
    except OSError as error:
        raise NotANotebook(f"cannot read ({error.strerror})") from None
    return parse_notebook_bytes(data)


def counted(parse, argument):
    """parse(argument)'s (counts, problems), or why it has none: whatever goes wrong while
    one file is read or counted costs that file only."""
    try:
        return parse(argument)
    except NotANotebook as error:
        return str(error)
    except Exception as error:  # a shape no predicate foresaw: reported, never fatal
        return f"{type(error).__name__} while counting ({error})"


def parse_each(paths):
    """For each path, parse_notebook's (counts, problems), or why it has none (counted)."""
    return [counted(parse_notebook, path) for path in paths]


def file_identity(info):
    """(st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns) of a stat: what tells one file's
    bytes from another's. rsync never writes a copy in place (it renames a new file over
    it: another inode), and any write or utime of the same inode moves its ctime."""
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns


def parse_copy(path):
    """(file_identity, parse_each's result) of the file at `path`, read through one open
    file that stayed the same while it was read; None when it is not a regular file (a
    symlink is never followed, a FIFO never waited on), cannot be read, or changed
    meanwhile. rsync_notebooks.py parses copies so while rsync still copies (EarlyParser);
    Parsing takes a result only for the file whose identity it is."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            return None
        with open(fd, "rb", closefd=False) as stream:
            data = stream.read()
        after = os.fstat(fd)
    except OSError:
        return None
    finally:
        os.close(fd)
    if file_identity(before) != file_identity(after):
        return None
    return file_identity(after), counted(parse_notebook_bytes, data)


def parsed_in_place(dest, names, parsed):
    """{name: (file_identity, result)} of the `names` that `parsed` (the same, from
    parse_copy) holds a result for, read from the very file now at `dest/name`."""
    found = {}
    for name in names:
        if name in parsed:
            info = lstat_or_none(os.path.join(dest, name))
            if info is not None and file_identity(info) == parsed[name][0]:
                found[name] = parsed[name]
    return found


class Parsing:
    """Notebooks parsed in forked worker processes, one per core, while this one renames
    backups, reads the database and records what is parsed already; `result(name)` gives
    each notebook's parse_each result, the names asked for in the order they were given.

    Parsing is most of a cycle's work, and the machine's cores are idle once rsync is done.
    The names are cut into chunks of CHUNK, dealt in turn to the workers; a worker sends
    each chunk's results as soon as it has them, so this process records the first
    notebooks (and writes their rows) while the workers parse the next ones. A worker only
    reads notebooks (it never uses the database connection this process may hold, and
    leaves by os._exit); if one fails, the chunks it did not send are parsed here instead.
    Few or small notebooks are parsed here only, when they are asked for. Notebooks
    `parsed` already (parsed_in_place: read from the very file there now, while rsync
    copied) are not parsed again, unless the file asked about is another one by then.
    """

    MIN_BYTES = 2_000_000  # less than this is parsed faster than a fork is made
    CHUNK = 32  # notebooks a worker parses before it sends their results

    def __init__(self, dest, names, cores=None, parsed=None):
        self.dest = dest
        self.early = parsed_in_place(dest, names, parsed or {})
        names = [name for name in names if name not in self.early]
        self.paths = [os.path.join(dest, name) for name in names]
        self.place = {name: i for i, name in enumerate(names)}
        self.results = {}  # place: result, of the chunks received and not yet asked for
        self.received = 0  # the chunks received so far, in order
        self.workers = []  # chunk k is dealt to workers[k % len(workers)], None: parsed here
        cores = cores or min(len(os.sched_getaffinity(0)), 8)
        starts = range(0, len(names), self.CHUNK)
        if cores < 2 or not has_bytes(self.paths, self.MIN_BYTES):
            return
        count = min(cores, len(starts))
        for k in range(count):
            try:
                self.workers.append(ParseWorker(self.paths, starts[k::count]))
            except OSError:  # no fork possible now: its chunks are parsed here
                self.workers.append(None)

    def result(self, name, info=None):
        """parse_each's result for `name`, or None for a name not given; `info` is the
        os.lstat of the file the result is for, which an early result must have been
        read from."""
        if name in self.early:
            identity, result = self.early.pop(name)
            if info is not None and file_identity(info) == identity:
                return result
            return parse_each([os.path.join(self.dest, name)])[0]
        place = self.place.get(name)
        if place is None:
            return None
        while place not in self.results:
            self.receive_chunk()
        return self.results.pop(place)

    def receive_chunk(self):
        """Take in the next chunk's results: from the worker it was dealt to, or parsed here
        when it has none (or it failed)."""
        first = self.received * self.CHUNK
        paths = self.paths[first : first + self.CHUNK]
        worker = self.workers[self.received % len(self.workers)] if self.workers else None
        results = worker.receive(len(paths)) if worker is not None else None
        if results is None:
            results = parse_each(paths)
        self.results.update(zip(range(first, first + len(paths)), results))
        self.received += 1

    def close(self):
        """Stop and reap the workers (any still parsing: after an error)."""
        for worker in filter(None, self.workers):
            worker.stop()


class ParseWorker:
    """A forked process that parses the chunks of `paths` that start at `starts`, in that
    order, and sends each one's parse_each results (marshal'd, after their length) as soon
    as it has them."""

    def __init__(self, paths, starts):
        read_end, write_end = os.pipe()
        try:
            self.pid = os.fork()
        except OSError:
            os.close(read_end)
            os.close(write_end)
            raise
        if self.pid == 0:  # the worker: parse, send, exit without running any cleanup
            code = 1
            try:
                os.close(read_end)
                with open(write_end, "wb") as stream:
                    for start in starts:
                        data = marshal.dumps(parse_each(paths[start : start + Parsing.CHUNK]))
                        stream.write(len(data).to_bytes(8, "little") + data)
                        stream.flush()
                code = 0
            finally:
                os._exit(code)
        os.close(write_end)
        self.stream = open(read_end, "rb")
        self.failed = False

    def receive(self, count):
        """The results of its next chunk, of `count` notebooks; None once it has failed."""
        if self.failed:
            return None
        header = self.stream.read(8)
        data = self.stream.read(int.from_bytes(header, "little")) if len(header) == 8 else b""
        try:
            values = marshal.loads(data)
        except (EOFError, ValueError, TypeError):
            values = None
        if not isinstance(values, list) or len(values) != count:
            self.failed = True
            return None
        return values

    def stop(self):
        """Close its pipe, end it if it is still there, and reap it."""
        self.stream.close()
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(self.pid, 0)


def has_bytes(paths, size):
    """True when the files at `paths` hold `size` bytes or more (a stat for each file
    until they do)."""
    return any(total >= size for total in itertools.accumulate(map(file_size, paths)))


def file_size(path):
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


# ---------------------------------------------------------------------------- applying a log


class Cycle(NamedTuple):
    """When a log's cycle ran: T as its suffix `.bak_T` writes it, and as UTC seconds."""

    t: str
    epoch: float


class Record(NamedTuple):
    filename: str  # relative to dest
    t: str
    owner: str
    counts: tuple  # five ints, or five None when there are none (see reason)
    problems: list  # [(grade_id, outcome)]
    epoch: float  # t as UTC seconds
    mtime: float | None  # the file's own mtime, None when it could not be read
    file_key: str | None  # version_key of the file
    reason: str | None = None  # why counts are None
    stored: bool = False  # the problems rows the database holds under this name are these
    source: str | None = None  # stated_source of the file it is a version of


class Known(NamedTuple):
    """What the database holds for one name."""

    file_key: str | None
    counts: tuple
    problems: list
    reason: str | None


def text_name(filename):
    """A name fit for the database: bytes that are not UTF-8 become `\\xNN` escapes."""
    if filename.isascii():  # the same name, found faster
        return filename
    return os.fsencode(filename).decode("utf-8", "backslashreplace")


def local_time(seconds):
    return time.strftime(TIME_FORMAT, time.localtime(seconds))


def t_seconds(t):
    """T (`2021-10-17T18:26:14`, local time) as UTC seconds, as
    `time.mktime(time.strptime(t, TIME_FORMAT))` gives them (ValueError when T is no such
    time). The first strptime in a process costs 5 ms, in every make_database.py the loop
    forks: a T as the loop writes it is read by datetime instead."""
    if LOOP_T_RE.fullmatch(t):
        try:
            return time.mktime(datetime.datetime.fromisoformat(t).timetuple())
        except ValueError:  # a second 60 or 61, which strptime takes
            pass
    return time.mktime(time.strptime(t, TIME_FORMAT))


def cycle_time(suffix, log):
    """The Cycle of a log: T from its suffix `.bak_T`, else (a suffix chosen by hand) the
    log file's own mtime."""
    t = suffix.removeprefix(".bak_")
    try:
        return Cycle(t, t_seconds(t))
    except (ValueError, OverflowError):
        mtime = os.stat(log).st_mtime
        return Cycle(local_time(mtime), mtime)


def version_time(mtime, cycle):
    """(t, epoch) of a version whose file says `mtime`: its own time, or the cycle's when
    the mtime is absurd (before 2000, or more than FUTURE_MARGIN after the cycle: a zip's
    1980, `touch -d 2031-01-01`, a 64-bit time that local time cannot even show)."""
    if EARLIEST_MTIME <= mtime <= cycle.epoch + FUTURE_MARGIN:
        return local_time(mtime), mtime
    return cycle.t, cycle.epoch


def version_key(info):
    """`inode:size:mtime_ns` of a file: rsync keeps a previous version by renaming the
    copy, so the key stays the same; another file (a save within the same second) has
    another inode."""
    return f"{info.st_ino}:{info.st_size}:{info.st_mtime_ns}"


def lstat_or_none(path):
    """os.lstat, or None when there is no such file (or no file can have that name)."""
    try:
        return os.lstat(path)
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG):
            return None
        raise


def make_record(filename, path, info, owner, cycle, warn, known=None, parsed=None, source=None):
    """The Record of the copy `filename` at `path`, whose os.lstat is `info`, a version of
    `source` (stated_source: None when its name says it).

    `known` is what the database holds under the current name: when it was recorded
    from this very file (a previous version rsync kept), it need not be parsed again.
    `parsed` is parse_each's result for the file when it was parsed already.
    """
    t, epoch = version_time(info.st_mtime, cycle)
    key = version_key(info)
    counts, problems, reason = version_counts(filename, path, key, warn, known, parsed)
    return Record(
        text_name(filename),
        t,
        owner,
        counts,
        problems,
        epoch,
        info.st_mtime,
        key,
        reason,
        source=source,
    )


def version_counts(filename, path, key, warn, known=None, parsed=None):
    """(counts, problems, reason) of the copy `filename` at `path`, whose version_key is
    `key` (make_record's `known` and `parsed`); zero counts for a file that is not a
    notebook, NULL counts and the reason, with a warning, for one that cannot be read."""
    if not filename.endswith(".ipynb"):
        return (0,) * 5, [], None
    if known is not None and known.file_key == key:
        return known.counts, known.problems, known.reason
    if parsed is None:
        parsed = parse_each([path])[0]
    if isinstance(parsed, str):
        reason = f"not a readable notebook: {parsed}"
        warn(f"warning: {text_name(path)}: {reason}; recorded without counts")
        return (None,) * 5, [], reason
    counts, problems = parsed
    return tuple(counts), [tuple(p) for p in problems], None


def rename_backups(dest, files, suffix, created=frozenset(), warn=None, kept_apart=False):
    """Give each previous version rsync kept its readable name (previous_version_names);
    return the versions to record, [(recorded name, source path)], in log order. A file
    rsync `created` had no previous version. A long name's version, moved out of
    `.long_name_versions/T/` (then emptied), is named in a warning."""
    warn = warn or (lambda message: print(message, file=sys.stderr))
    versions, moved = [], False
    for path in files:
        if not is_version(path):
            continue
        if path not in created:
            kept, renamed = previous_version_names(path, suffix, kept_apart)
            moved = moved or kept != path + suffix
            if keep_backup(dest, kept, renamed):
                versions.append((renamed, path))
                if too_long_for_suffix(path, suffix):
                    warn(
                        f"warning: {text_name(path)}: its name is too long for a backup"
                        f" suffix; the version it replaced is recorded as {text_name(renamed)}"
                    )
        versions.append((path, path))
    if moved:
        remove_empty_folders(dest, long_name_versions(suffix.removeprefix(".bak_")))
    return versions


def remove_empty_folders(dest, folder):
    """Remove `dest/folder` and the folders in it when empty (deepest first), then its
    parents up to (not including) `dest` while they are empty."""
    for below, _, _ in os.walk(os.path.join(dest, folder), topdown=False):
        try:
            os.rmdir(below)
        except OSError:  # not empty: something in it is still to be moved out
            pass
    parent = os.path.dirname(folder)
    while parent:
        try:
            os.rmdir(os.path.join(dest, parent))
        except OSError:
            return
        parent = os.path.dirname(parent)


def keep_backup(dest, kept, renamed):
    """Rename rsync's backup `kept` to `renamed` unless an interrupted run did already;
    True when a regular file is there to record. A name too long to get the suffix has no
    backup beside it, but may have one in `.long_name_versions/T/` (previous_version_names)."""
    kept_path, renamed_path = os.path.join(dest, kept), os.path.join(dest, renamed)
    info = lstat_or_none(renamed_path)
    if info is None:
        info = lstat_or_none(kept_path)
        if info is None:
            return False
        os.rename(kept_path, renamed_path)
    return stat.S_ISREG(info.st_mode)


def foreign_copy(info, account):
    """True for a copy owned by another account than its student's (`account`, None when
    unknown) and not by root: what a symlink swapped in during the copy brings in."""
    return account is not None and info.st_uid not in (0, account)


def remove_foreign_copy(path, user, account, info, warn):
    warn(
        f"warning: {text_name(path)}: owned by uid {info.st_uid}, not by {user.uid}'s account"
        f" {account}: not recorded, and removed from the copy"
    )
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def write_summary(conn, records):
    conn.executemany(
        "INSERT OR REPLACE INTO summary(filename, t, owner,"
        " code_ok, code_display, code_stream, code_error, code_empty)"
        " VALUES (?,?,?,?,?,?,?,?)",
        [(r.filename, r.t, r.owner, *r.counts) for r in records],
    )


def write_problems(conn, records):
    records = [r for r in records if not r.stored]
    # many names go in as one JSON array parameter: nothing is formatted into the SQL
    conn.execute(
        "DELETE FROM problems WHERE filename IN (SELECT value FROM json_each(?))",
        (dump_json([r.filename for r in records]),),
    )
    conn.executemany(
        "INSERT INTO problems(filename, grade_id, result) VALUES (?,?,?)",
        [(r.filename, grade_id, result) for r in records for grade_id, result in r.problems],
    )


def write_details(conn, records):
    conn.executemany(
        "INSERT OR REPLACE INTO version_details(filename, epoch, mtime, file_key, reason, source)"
        " VALUES (?,?,?,?,?,?)",
        [(r.filename, r.epoch, r.mtime, r.file_key, r.reason, r.source) for r in records],
    )


def write_oversize_files(conn, keys):
    conn.executemany("INSERT OR REPLACE INTO oversize_files(source, file_key) VALUES (?,?)", keys)


def write_applied_log(conn, log, suffix):
    conn.execute(
        "INSERT OR REPLACE INTO applied_logs(log, suffix) VALUES (?,?)",
        (os.path.basename(log), suffix),
    )


def connect(db):
    """Open (creating if needed) the database in WAL mode with the schema in place."""
    conn = sqlite3.connect(db, timeout=60, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    # a cycle touches pages all over the indexes: keep them in memory until the commit
    conn.execute("PRAGMA cache_size=-65536")
    # while rsync_notebooks.py keeps the database open, commits stay in the WAL until it
    # is this big (a few cycles), then one checkpoint copies them into the database file
    conn.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
    conn.execute(f"PRAGMA journal_size_limit={WAL_CHECKPOINT_PAGES * 4096}")
    conn.executescript(SCHEMA)
    add_source_column(conn)
    return conn


def add_source_column(conn):
    """Give a version_details made before `source` existed (0.3.0) that column."""
    columns = {name for _, name, *_ in conn.execute("PRAGMA table_info(version_details)")}
    if "source" not in columns:
        try:
            conn.execute("ALTER TABLE version_details ADD COLUMN source")
        except sqlite3.OperationalError as error:  # another connection just added it
            if "duplicate column" not in str(error):
                raise


def recorded_versions(conn, filenames):
    """{filename: Known} of what the database holds for these names."""
    names = dump_json([text_name(f) for f in filenames])
    known = {
        filename: Known(file_key, tuple(counts), [], reason)
        for filename, file_key, reason, *counts in conn.execute(
            "SELECT s.filename, d.file_key, d.reason, s.code_ok, s.code_display,"
            " s.code_stream, s.code_error, s.code_empty"
            " FROM summary s LEFT JOIN version_details d ON d.filename = s.filename"
            " WHERE s.filename IN (SELECT value FROM json_each(?))",
            (names,),
        )
    }
    problems = conn.execute(
        "SELECT filename, grade_id, result FROM problems"
        " WHERE filename IN (SELECT value FROM json_each(?)) ORDER BY filename, rowid",
        (names,),
    )
    for filename, grade_id, result in problems:
        known[filename].problems.append((grade_id, result))
    return known


class Accounts:
    """Each row's student account (folder_account of its notebooks source), looked up
    once per log."""

    def __init__(self):
        self.found = {}

    def of(self, user):
        if user.line not in self.found:
            remote = is_remote(user.notebooks)  # another machine's accounts: no check
            self.found[user.line] = None if remote else folder_account(rsync_source(user.notebooks))
        return self.found[user.line]


def build_records(conn, dest, versions, folders, cycle, warn, parsing=None):
    """The Records of the versions to record, one by one in their order; a previous
    version whose row the database still holds under the current name is taken from there
    instead of parsed again, and what `parsing` (a Parsing) has parsed is taken from it.
    A copy owned by a classmate is removed, not recorded."""
    known = recorded_versions(conn, [source for name, source in versions if name != source])
    accounts = Accounts()
    for filename, source in versions:
        path = os.path.join(dest, filename)
        info = lstat_or_none(path)
        if info is None or not stat.S_ISREG(info.st_mode):
            continue
        found = folder_of(source, folders)
        user = found[1] if found else None
        # only a copy this cycle made: a previous version was checked when it was made
        if user and filename == source and foreign_copy(info, accounts.of(user)):
            remove_foreign_copy(path, user, accounts.of(user), info, warn)
            continue
        owner = user.uid if user else UNKNOWN_OWNER
        previous = known.get(text_name(source)) if filename != source else None
        parsed = parsing.result(filename, info) if parsing else None
        source_name = stated_source(text_name(filename), text_name(source))
        record = make_record(
            filename, path, info, owner, cycle, warn, previous, parsed, source_name
        )
        # a new version whose graded cells came out as before (an autosave while typing)
        # leaves its problems rows as they are
        before = known.get(record.filename) if filename == source else None
        if before is not None and before.problems == record.problems:
            record = record._replace(stored=True)
        yield record


def oversize_records(conn, sync_log, folders, cycle, taken, warn):
    """(Records, oversize_files rows) of the files rsync did not copy for being over
    --max-size, one per change of the student's file: each named as a previous version
    kept in this cycle (`big.bak_T.ipynb`, never a name in `taken`), so the viewer shows
    it among the file's versions and no row of a copy is replaced."""
    names = [path for path in sync_log.oversize if is_version(path)]
    last_seen = dict(
        conn.execute(
            "SELECT source, file_key FROM oversize_files"
            " WHERE source IN (SELECT value FROM json_each(?))",
            (dump_json([text_name(path) for path in names]),),
        )
    )
    records, keys = [], []
    for path in names:
        source = source_path(path, folders)
        info = lstat_or_none(source) if source else None
        info = info if info and stat.S_ISREG(info.st_mode) else None
        key = version_key(info) if info else None
        name = text_name(backup_name(path, sync_log.suffix))
        unchanged = text_name(path) in last_seen and last_seen[text_name(path)] == key
        if unchanged or name in taken:
            continue
        t, epoch = version_time(info.st_mtime, cycle) if info else cycle
        warn(
            f"warning: {text_name(path)} is over max-size: not copied;"
            f" recorded without counts as {name}"
        )
        owner = owner_of(path, folders)
        mtime = info.st_mtime if info else None
        records.append(
            Record(name, t, owner, (None,) * 5, [], epoch, mtime, key, OVERSIZE_REASON)._replace(
                source=stated_source(name, text_name(path))
            )
        )
        keys.append((text_name(path), key))
    return records, keys


def apply_log(conn, log, dest, users, warn=None, parsed=None):
    """Apply one sync log: rename backups, then record every version in one transaction.
    `parsed` ({name: (file_identity, result)}) holds notebooks parsed while rsync copied
    (parse_copy); each is used only for the very file it was read from.

    Returns the number of versions recorded.
    """
    warn = warn or (lambda message: print(message, file=sys.stderr))
    sync_log = read_log(log)
    cycle, folders = cycle_time(sync_log.suffix, log), user_folders(users)
    # the copies' parsing starts at once, the renames and the database reads go on meanwhile
    notebooks = [f for f in sync_log.files if is_parsed_notebook(f)]
    parsing = Parsing(dest, notebooks, parsed=parsed)
    try:
        versions = rename_backups(
            dest, sync_log.files, sync_log.suffix, sync_log.created, warn, bool(sync_log.folder)
        )
        records = build_records(conn, dest, versions, folders, cycle, warn, parsing)
        conn.execute("BEGIN IMMEDIATE")
        try:
            taken = set()
            # the rows of the first records are written while the workers parse the next
            for batch in batches(records, RECORDS_PER_WRITE):
                write_records(conn, batch)
                taken.update(record.filename for record in batch)
            oversize, oversize_keys = oversize_records(conn, sync_log, folders, cycle, taken, warn)
            write_records(conn, oversize)
            write_oversize_files(conn, oversize_keys)
            write_applied_log(conn, log, sync_log.suffix)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        parsing.close()
    return len(taken) + len(oversize)


def batches(items, size):
    """Lists of `size` items (the last one shorter) from the iterable `items`."""
    items = iter(items)
    return iter(lambda: list(itertools.islice(items, size)), [])


def write_records(conn, records):
    """The rows of `records` in summary, problems and version_details."""
    write_summary(conn, records)
    write_problems(conn, records)
    write_details(conn, records)


def restrict_to_instructor(db):
    """Make the database and its WAL files private to the instructor: mode 0600, and when
    run through sudo, owned by the account that ran sudo."""
    uid, gid = os.environ.get("SUDO_UID"), os.environ.get("SUDO_GID")
    for path in (db, db + "-wal", db + "-shm"):
        if os.path.exists(path):
            os.chmod(path, 0o600)
            if os.geteuid() == 0 and uid and gid:
                os.chown(path, int(uid), int(gid))


# ---------------------------------------------------------------------------- command line


def build_parser():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n", 1)[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"%(prog)s {__version__}",
        help="Print the version of the monitoring scripts and exit.",
    )
    parser.add_argument(
        "--users-csv",
        default="users.csv",
        help="CSV file with columns uid and notebooks; owners are found from it "
        "(default: %(default)s).",
    )
    parser.add_argument(
        "--log", help="The sync log to apply, as written by rsync_notebooks.py (required)."
    )
    parser.add_argument(
        "--dest",
        default="sync_dest",
        help="The folder rsync copied the notebooks into (default: %(default)s).",
    )
    parser.add_argument(
        "--db", default="sync.sqlite", help="The SQLite database to update (default: %(default)s)."
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="Print what the log would record, renaming nothing and writing nothing.",
    )
    parser.add_argument(
        "--parse-only",
        metavar="FILE.ipynb",
        help="Print one notebook's counts and graded cells, and do nothing else.",
    )
    return parser


def print_parse_only(path):
    try:
        counts, problems = parse_notebook(path)
    except NotANotebook as error:
        print(f"{path}: not a readable notebook: {error}", file=sys.stderr)
        return 1
    names = ("code_ok", "code_display", "code_stream", "code_error", "code_empty")
    print(" ".join(f"{name}={value}" for name, value in zip(names, counts)))
    for grade_id, outcome in problems:
        print(f"{grade_id}\t{outcome}")
    return 0


def print_dry_run(log, dest, users):
    sync_log, folders = read_log(log), user_folders(users)
    for path in filter(is_version, sync_log.files):
        kept, previous = previous_version_names(path, sync_log.suffix, bool(sync_log.folder))
        owner = owner_of(path, folders)
        for name in (previous, kept):
            if os.path.lexists(os.path.join(dest, name)):
                print(f"previous version\t{previous}\t{owner}")
                break
        print(f"current version\t{path}\t{owner}")
    for path in filter(is_version, sync_log.oversize):
        print(f"over max-size\t{backup_name(path, sync_log.suffix)}\t{owner_of(path, folders)}")
    return 0


def main(argv=None, parsed=None):
    """The command line; `parsed` is what rsync_notebooks.py, which runs this in a fork of
    itself, parsed while rsync copied (apply_log)."""
    args = build_parser().parse_args(argv)
    if args.parse_only:
        return print_parse_only(args.parse_only)
    if not args.log:
        print("Error: --log is required (or --parse-only FILE.ipynb).", file=sys.stderr)
        return 2
    try:
        users = read_users_csv(args.users_csv)
        if args.dry_run:
            return print_dry_run(args.log, args.dest, users)
        os.umask(0o077)
        # Ctrl-C or SIGTERM cannot stop us halfway through a log (the driver, which got
        # the same Ctrl-C, stops once we are done).
        previous = {number: signal.signal(number, signal.SIG_IGN) for number in STOP_SIGNALS}
        conn = connect(args.db)
        try:
            recorded = apply_log(conn, args.log, args.dest, users, parsed=parsed)
        finally:
            conn.close()
            restrict_to_instructor(args.db)
            for number, handler in previous.items():
                signal.signal(number, handler)
    except UsersCsvError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 2
    except LogError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1
    except (sqlite3.Error, OSError) as error:
        print(f"Error: {args.db}: {error}", file=sys.stderr)
        return 1
    print(f"{args.log}: recorded {recorded} versions in {args.db}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
