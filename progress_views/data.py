"""The data layer every view of the viewer reads through: one `Data` per app.

    data.catalog()              every notebook version (numpy arrays), updated after a commit
    data.people()               users.csv (re-read when it changes)
    data.assignments()          {assignment: [source index]} of the current catalog
    data.history(assignment)    model.History of one assignment (LRU-cached)
    data.saves()                model.Saves: every student's saves of any file
    data.class_at(moment, minutes, students)   model.class_at over every assignment
    data.names_shown(password)  the names password, checked by access.PasswordGate
    data.student_labels(uids, shown)   uid -> `uid [USER_ATTRS]`, or `student N` hidden
    data.student_order(shown)   a sort key of uids (pseudonym order without the password)
    data.source_label(source, owner, shown)   an activity row's label (no student path hidden)
    data.searchable_paths(shown)       what the path regexp searches (no student path hidden)
    data.filter_columns(shown), data.allowed_uids(column, value, shown), data.team_of(shown)
    data.version_filename(rowid), data.version_owner(rowid), data.file_url(filename)
    data.handle(rowid), data.handles_of(rowids), data.rowid(handle)   what the browser
                                gets instead of a rowid
    data.memo(key, compute)     a per-catalog LRU cache for what a view derives from it
    data.memo_sources(key, compute)   one kept while the catalog's sources stay the same
    Data.errors                 what a view catches when the database cannot be read

Every cache is bounded (LRU); what memo keeps goes with the catalog, what memo_sources
keeps with a change of the database's notebooks (or file) or of users.csv. The
database is read only here, in callbacks, never at import: the sync loop keeps writing it.
"""

import ctypes
import json
import logging
import os
import sqlite3
import threading
import time
import urllib.parse
from collections import OrderedDict
from contextlib import closing, suppress
from dataclasses import dataclass, field, fields

import numpy as np

import make_database
from progress_views import handles, model

LOG = logging.getLogger("progress_viewer")
MASK = "*"
OWN_FILE = "(a file only this student has)"  # an unshared path, without the password
CACHE_ENTRIES = 32  # derived results kept per catalog (masks, histories, labels)


class DatabaseMissing(Exception):
    """The database is not there (yet)."""


class LRU:
    """A small thread-safe least-recently-used cache."""

    def __init__(self, size=CACHE_ENTRIES):
        self.size = size
        self.items = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key, compute):
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        value = compute()
        with self.lock:
            self.items[key] = value
            self.items.move_to_end(key)
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        return value

    def __len__(self):
        return len(self.items)


# ---------------------------------------------------------------------------- users.csv


@dataclass
class People:
    by_uid: dict  # uid -> make_database.User, in users.csv order
    prefixes: dict  # uid -> notebooks folder relative to the destination
    problem: str = ""  # why users.csv could not be read, if it could not
    key: tuple = ()  # the file's state it was read from


def load_people(path, key=()):
    """users.csv as People; an empty one (with the reason) when it cannot be read."""
    try:
        users = make_database.read_users_csv(path, warn=lambda message: None)
    except make_database.UsersCsvError as error:
        return People({}, {}, str(error), key)
    by_uid = {}
    for user in users:
        by_uid.setdefault(user.uid, user)
    prefixes = {uid: make_database.dest_relative(user.notebooks) for uid, user in by_uid.items()}
    return People(by_uid, prefixes, "", key)


class PeopleCache:
    """users.csv as it is now, read again only when the file changes."""

    def __init__(self):
        self.current = None

    def get(self, path):
        key = make_database.file_key(path)
        if self.current is None or self.current.key != key:
            self.current = load_people(path, key)
        return self.current


# ---------------------------------------------------------------------------- the database


def database_key(db):
    """Changes whenever a commit lands in the database (its file or its WAL). An empty or
    missing WAL count the same: a reader opening the database may create an empty one."""
    try:
        info = os.stat(db)
    except FileNotFoundError:
        raise DatabaseMissing(f"no database at {db}: has rsync_notebooks.py run yet?") from None
    try:
        wal = os.stat(db + "-wal")
        wal_key = (wal.st_ino, wal.st_size, wal.st_mtime_ns) if wal.st_size else None
    except FileNotFoundError:
        wal_key = None
    return (info.st_ino, info.st_size, info.st_mtime_ns), wal_key


def connect_readonly(db):
    """A read-only connection; a wrong path never creates an empty database."""
    uri = "file:" + urllib.parse.quote(os.path.abspath(db)) + "?mode=ro"
    return sqlite3.connect(uri, uri=True, timeout=10)


# ---------------------------------------------------------------------------- the catalog
#
# Read once in full, then only what changed: make_database's commits add rows (each new
# version, and a replaced one under its backup name, gets a rowid above every other) and
# replace rows (INSERT OR REPLACE deletes the row under the current name); a trigger of
# make_database's SCHEMA notes the rowid of every row replaced, deleted or updated in
# summary_changes. So after a commit the catalog reads the rows above the last rowid it
# saw, drops the rowids noted since the last change it saw (reading back the updated ones
# still there), and merges. At 1M rows that is ~50 ms instead of a 5 s full read. A full
# read again when the database is another file (inode), has no summary_changes yet, or a
# counter went back (a VACUUM renumbers rowids).


def details_columns(conn):
    """The columns of version_details this database has (it came with make_database 0.3)."""
    return {row[1] for row in conn.execute("PRAGMA table_info(version_details)")}


def has_changes_log(conn):
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'summary_changes'"
    )
    return found.fetchone() is not None


def rows_query(columns, where):
    """Every summary row matching `where` (a constant of this module): rowid, whether it
    is a notebook, the file it is a version of (version_details.source when set, else
    the `.bak_T` rule, computed by SQLite), t, owner, version_details.epoch, counts."""
    by_name = (
        "CASE WHEN s.filename GLOB ?"
        " THEN substr(s.filename, 1, length(s.filename) - ?) || '.ipynb' ELSE s.filename END"
    )
    source = f"coalesce(d.source, {by_name})" if "source" in columns else by_name
    epoch = "d.epoch" if "epoch" in columns else "NULL"
    joined = " LEFT JOIN version_details d ON d.filename = s.filename" if columns else ""
    counts = ", ".join("s." + c for c in make_database.COUNT_COLUMNS)
    return (
        f"SELECT s.rowid, s.filename LIKE '%.ipynb', {source}, {SECONDS}, s.owner, {epoch},"  # noqa: S608
        f" {counts} FROM summary s{joined} WHERE {where}"
    )


# t as seconds (of local time, as numpy reads the text), NOT_A_TIME when it is no time
SECONDS = f"coalesce(CAST(strftime('%s', s.t) AS INTEGER), {model.NOT_A_TIME})"


ALL_ROWS = "1"
ROWS_AFTER = "s.rowid > ?"
ROWS_NAMED = "s.rowid IN (SELECT value FROM json_each(?))"
SOURCE_PARAMS = (make_database.BACKUP_GLOB, make_database.BACKUP_MARK_LENGTH + len(".ipynb"))


@dataclass
class Mark:
    """Where a read of the database stopped: its file, the highest summary rowid and the
    last summary_changes entry (None: the database has no summary_changes); and what a
    database that continues this one still has: the rowid that entry names (-1: none),
    and the row of the highest rowid (filename, t), unless the journal says it went."""

    inode: int
    rowid: int
    change: object
    columns: frozenset  # version_details' columns
    tail: int = -1
    last: tuple = ()


def read_mark(conn, inode):
    rowid = conn.execute("SELECT coalesce(max(rowid), 0) FROM summary").fetchone()[0]
    change, tail = None, -1
    if has_changes_log(conn):
        change = conn.execute("SELECT coalesce(max(id), 0) FROM summary_changes").fetchone()[0]
        tail = journal_entry(conn, change)
    return Mark(inode, rowid, change, frozenset(details_columns(conn)), tail, last_row(conn, rowid))


def last_row(conn, rowid):
    """(filename, t) of summary row `rowid`, () when there is none."""
    row = conn.execute("SELECT filename, t FROM summary WHERE rowid = ?", (rowid,)).fetchone()
    return tuple(row) if row else ()


def journal_entry(conn, change):
    """The rowid summary_changes entry `change` names (-1: no such entry)."""
    found = conn.execute("SELECT summary_rowid FROM summary_changes WHERE id = ?", (change,))
    row = found.fetchone()
    return -1 if row is None or row[0] is None else row[0]


@dataclass
class Numbering:
    """The numbers the catalog gives sources and owners, kept from read to read."""

    index: dict = field(default_factory=dict)  # source name -> number
    sources: list = field(default_factory=list)
    source_owner: list = field(default_factory=list)  # uid of each source
    number: dict = field(default_factory=dict)  # uid -> number
    owners: list = field(default_factory=list)

    def copy(self):
        return Numbering(
            dict(self.index),
            list(self.sources),
            list(self.source_owner),
            dict(self.number),
            list(self.owners),
        )

    def source_numbers(self, notebook, names, owners):
        """The number of each row's source (-1 for a file that is not a notebook); a new
        source's owner is the owner of its first row read."""
        numbers = []
        for is_notebook, name, owner in zip(notebook, names, owners):
            if not is_notebook:
                numbers.append(-1)
                continue
            found = self.index.get(name)
            if found is None:
                found = self.index[name] = len(self.sources)
                self.sources.append(name)
                self.source_owner.append(owner)
            numbers.append(found)
        return np.array(numbers, dtype=np.int32)

    def owner_numbers(self, owners):
        numbers = []
        for owner in owners:
            found = self.number.get(owner)
            if found is None:
                found = self.number[owner] = len(self.owners)
                self.owners.append(owner)
            numbers.append(found)
        return np.array(numbers, dtype=np.int32)


@dataclass
class Rows:
    """Summary rows as arrays (any file), in the order read: a million of them as Python
    objects would take ~1 GB while read."""

    rowid: np.ndarray  # int64
    src: np.ndarray  # int32: the source's number, -1 for a file that is not a notebook
    t: np.ndarray  # datetime64[s], local time
    owner: np.ndarray  # int32: the owner's number
    epoch: np.ndarray  # float64, NaN when version_details does not say
    counts: np.ndarray  # (n, 5) float32 in COUNT_COLUMNS order, NaN for unknown

    @property
    def notebook(self):
        return self.src >= 0


def read_rows(conn, columns, where, numbering, params=()):
    """Rows of the summary rows `where` selects, numbered by `numbering` (which learns
    the new sources and owners)."""
    parts = []
    cursor = conn.execute(rows_query(columns, where), (*SOURCE_PARAMS, *params))
    while chunk := cursor.fetchmany(16384):
        rowid, notebook, source, seconds, owner, epoch, *counts = zip(*chunk)
        parts.append(
            Rows(
                np.array(rowid, dtype=np.int64),
                numbering.source_numbers(notebook, source, owner),
                np.array(seconds, dtype=np.int64).view("datetime64[s]"),
                numbering.owner_numbers(owner),
                np.array(epoch, dtype=np.float64),
                np.array(counts, dtype=np.float32).T.reshape(len(chunk), -1),
            )
        )
    return joined_rows(parts)


def joined_rows(parts):
    if not parts:
        empty = np.empty(0)
        n_counts = len(make_database.COUNT_COLUMNS)
        return Rows(
            empty.astype(np.int64),
            empty.astype(np.int32),
            empty.astype("datetime64[s]"),
            empty.astype(np.int32),
            empty,
            np.empty((0, n_counts), np.float32),
        )
    return Rows(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Rows)))


def save_order(t, epoch):
    """The key versions are ordered by: version_details.epoch when known (local times
    repeat in the hour summer time ends), else t read as this machine's local time (rows
    from before make_database kept epochs); NaT first."""
    local = t.astype(np.int64)
    key = np.where(np.isnan(epoch), 0, epoch).astype(np.int64)
    missing = np.flatnonzero(np.isnan(epoch) & ~np.isnat(t))
    if len(missing):
        hours, inverse = np.unique(local[missing] // 3600, return_inverse=True)
        offsets = np.array([utc_offset(hour * 3600) for hour in hours.tolist()], dtype=np.int64)
        key[missing] = local[missing] + offsets[inverse]
    key[np.isnan(epoch) & np.isnat(t)] = model.NOT_A_TIME
    return key


def utc_offset(local_seconds):
    """UTC seconds minus local seconds at this local time (0 when it cannot be told)."""
    try:
        fields = time.gmtime(local_seconds)[:8] + (-1,)
        return int(time.mktime(fields)) - local_seconds
    except (OverflowError, ValueError):
        return 0


@dataclass
class Catalog:
    """Every notebook version, as arrays sorted by (source, save order, rowid)."""

    key: tuple
    sources: list  # source file names
    source_owner: list  # uid of each source
    src: np.ndarray  # int32: source index of each version
    t: np.ndarray  # datetime64[s], local time
    rowid: np.ndarray  # int64
    counts: np.ndarray  # (n, 5) float32 in COUNT_COLUMNS order, NaN for unreadable
    order: np.ndarray  # int64: save_order
    numbering: Numbering  # of sources (sources, source_owner are its lists) and owners
    mark: Mark
    saved: "Saved"  # every file's saves (model.Saves' arrays)
    lineage: int = 0  # the same for catalogs read incrementally from one full read
    cache: LRU = field(default_factory=LRU)

    def starts(self):
        """Where each source's versions start in the arrays (and where the last ends)."""
        return self.cache.get(
            "starts", lambda: np.searchsorted(self.src, np.arange(len(self.sources) + 1))
        )


@dataclass
class Saved:
    """Every save of a known owner (any file, readable time), as arrays sorted by (the
    owner's number, t, rowid); `times` and `rowids` hold each uid's part of them (views),
    as model.Saves takes them. A commit's saves are merged in as the catalog's versions
    are (one sort of every save took 0.17 s at 1M, one merge per student 45 ms)."""

    owner: np.ndarray  # int32: the owner's number (Numbering)
    t: np.ndarray  # int64 seconds
    rowid: np.ndarray  # int64
    times: dict  # uid -> int64 seconds
    rowids: dict  # uid -> int64


def saves_among(rows, numbering):
    """(owner number, t seconds, rowid) of the rows that are saves, sorted: a readable
    time and an owner users.csv knows."""
    unknown = numbering.number.get(make_database.UNKNOWN_OWNER, -1)
    kept = ~np.isnat(rows.t) & (rows.owner != unknown)
    owner, t, rowid = rows.owner[kept], rows.t[kept].astype(np.int64), rows.rowid[kept]
    order = np.lexsort((rowid, t, owner))
    return owner[order], t[order], rowid[order]


def saved_of(owner, t, rowid, numbering):
    """The Saved of these sorted arrays."""
    bounds = np.searchsorted(owner, np.arange(len(numbering.owners) + 1)).tolist()
    times, rowids = {}, {}
    for n, (start, end) in enumerate(zip(bounds, bounds[1:])):
        if end > start:
            uid = numbering.owners[n]
            times[uid], rowids[uid] = t[start:end], rowid[start:end]
    return Saved(owner, t, rowid, times, rowids)


def updated_saved(saved, rows, removed, numbering):
    """Saved after the rows `removed` went and `rows` came."""
    gone = rows_among(saved.rowid, removed)
    new = saves_among(rows, numbering)
    before = insertion_places(saved.owner, saved.t, saved.rowid, *new)
    cuts = merge_cuts(gone.tolist(), before.tolist())
    arrays = (saved.owner, saved.t, saved.rowid)
    return saved_of(*(merged_array(old, added, cuts) for old, added in zip(arrays, new)), numbering)


def full_catalog(rows, numbering, key, mark, lineage):
    """The Catalog of every row read."""
    notebooks = rows.notebook
    src, t, rowid = rows.src[notebooks], rows.t[notebooks], rows.rowid[notebooks]
    order = save_order(t, rows.epoch[notebooks])
    sort = np.lexsort((rowid, order, src))
    return Catalog(
        key,
        numbering.sources,
        numbering.source_owner,
        src[sort],
        t[sort],
        rowid[sort],
        rows.counts[notebooks][sort],
        order[sort],
        numbering,
        mark,
        saved_of(*saves_among(rows, numbering), numbering),
        lineage,
    )


def updated_catalog(catalog, rows, removed, numbering, key, mark):
    """The Catalog after the rows `removed` went and `rows` came, merged into the sorted
    arrays (no sort of the whole)."""
    arrays = (catalog.src, catalog.t, catalog.rowid, catalog.counts, catalog.order)
    gone = rows_among(catalog.rowid, removed)
    notebooks = rows.notebook
    src, t, rowid = rows.src[notebooks], rows.t[notebooks], rows.rowid[notebooks]
    order = save_order(t, rows.epoch[notebooks])
    sort = np.lexsort((rowid, order, src))
    new = (src[sort], t[sort], rowid[sort], rows.counts[notebooks][sort], order[sort])
    # each new row goes before the first old row with a greater key, gone or not
    before = insertion_places(*(arrays[i] for i in (0, 4, 2)), new[0], new[4], new[2])
    cuts = merge_cuts(gone.tolist(), before.tolist())
    merged = [merged_array(old, added, cuts) for old, added in zip(arrays, new)]
    saved = updated_saved(catalog.saved, rows, removed, numbering)
    return Catalog(
        key,
        numbering.sources,
        numbering.source_owner,
        *merged,
        numbering,
        mark,
        saved,
        catalog.lineage,
    )


def rows_among(rowids, removed):
    """The places in `rowids` of those in `removed`: through a table of the removed
    rowids' range when it is about as small as the rowids (model.dense), else by sorting
    (rowids far apart take no memory)."""
    if not len(removed) or not len(rowids):
        return np.empty(0, dtype=np.int64)
    span = int(removed.max()) - int(removed.min())
    kind = "table" if model.dense(span, len(rowids)) else "sort"
    return np.flatnonzero(np.isin(rowids, removed, kind=kind))


def merge_cuts(gone, before):
    """How to make the merged arrays: [(start, end, added)], the old rows start:end then
    the new row `added` (None: none), for old rows `gone` dropped and new row i put
    before old row before[i] (both ascending)."""
    cuts, start, i, gone = [], 0, 0, set(gone)
    for position in sorted(gone | set(before)):
        while i < len(before) and before[i] == position:
            cuts.append((start, position, i))
            start, i = position, i + 1
        if position in gone:
            cuts.append((start, position, None))
            start = position + 1
    cuts.append((start, None, None))
    return cuts


def merged_array(old, added, cuts):
    """The old array cut and joined with the added rows as merge_cuts says, in one copy
    (np.delete then np.insert copied 1M rows several times: 0.3 s a commit)."""
    pieces = []
    for start, end, new in cuts:
        pieces.append(old[start:end])
        if new is not None:
            pieces.append(added[new : new + 1])
    return np.concatenate(pieces)


def insertion_places(src, order, rowid, new_src, new_order, new_rowid):
    """Where each new version goes in arrays sorted by (src, order, rowid): before the
    first row whose key is not smaller. One binary search for all of them at once, in
    each new version's block of its src."""
    lows = np.searchsorted(src, new_src, "left")
    highs = np.searchsorted(src, new_src, "right")
    while (searching := lows < highs).any():
        middle = (lows + highs) // 2
        row = np.where(searching, middle, 0)  # a row that is there (src has some then)
        smaller = (order[row] < new_order) | (order[row] == new_order) & (rowid[row] < new_rowid)
        lows = np.where(searching & smaller, middle + 1, lows)
        highs = np.where(searching & ~smaller, middle, highs)
    return lows


def source_rows(starts, sources):
    """(the catalog's rows of `sources`, in their order; for each row, the place of its
    source in `sources`): source s's rows are starts[s] to starts[s + 1]."""
    lengths = starts[sources + 1] - starts[sources]
    index = model.row_ranges(starts[sources], lengths)
    return index, np.repeat(np.arange(len(sources), dtype=np.int32), lengths)


def changed_rowids(conn, since):
    """The rowids summary_changes noted after entry `since`."""
    found = conn.execute("SELECT summary_rowid FROM summary_changes WHERE id > ?", (since,))
    return np.unique(np.array([row[0] for row in found], dtype=np.int64))


def continues(conn, previous, mark):
    """True when the database read now (at `mark`, through `conn`) continues the one a
    read stopped at `previous` (a Mark, or None) in: the same file, counters not gone back,
    the journal entry that read ended at the same, and its last row still there or noted
    gone in the journal since (not another database that took the file's inode)."""
    return (
        previous is not None
        and previous.inode == mark.inode
        and previous.change is not None
        and mark.change is not None
        and mark.rowid >= previous.rowid
        and mark.change >= previous.change
        and mark.columns == previous.columns
        and journal_entry(conn, previous.change) == previous.tail
        and last_row_kept(conn, previous)
    )


def last_row_kept(conn, previous):
    """True when the row of `previous`'s highest rowid is as it was, or the journal notes
    it replaced, deleted or updated since."""
    if not previous.last:
        return True
    now = last_row(conn, previous.rowid)
    if now == tuple(previous.last):
        return True
    noted = conn.execute(
        "SELECT 1 FROM summary_changes WHERE id > ? AND summary_rowid = ?",
        (previous.change, previous.rowid),
    )
    return noted.fetchone() is not None


def read_catalog(db, key, previous=None, lineage=0):
    """The Catalog of the database now: `previous` updated with what changed when it can
    be, else read in full (lineage: the number a full read gets)."""
    conn = connect_readonly(db)
    try:
        conn.execute("BEGIN")  # one snapshot for every query below
        mark = read_mark(conn, key[0][0])
        if not continues(conn, previous and previous.mark, mark):
            numbering = Numbering()
            rows = read_rows(conn, mark.columns, ALL_ROWS, numbering)
            return full_catalog(rows, numbering, key, mark, lineage)
        numbering = previous.numbering.copy()
        removed = changed_rowids(conn, previous.mark.change)
        rows = [read_rows(conn, mark.columns, ROWS_AFTER, numbering, (previous.mark.rowid,))]
        again = removed[removed <= previous.mark.rowid]  # updated rows still there
        if len(again):
            named = (json.dumps(again.tolist()),)
            rows.append(read_rows(conn, mark.columns, ROWS_NAMED, numbering, named))
        return updated_catalog(previous, joined_rows(rows), removed, numbering, key, mark)
    finally:
        conn.close()


def release_freed_memory():
    """Give the memory a full read freed back to the system (glibc keeps it otherwise:
    at 1M rows the worker's RSS stayed 90 MB higher); nothing where there is no glibc."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class CatalogCache:
    """The catalog of the database as it is now, updated after each commit; with a
    `store` (snapshot.Store), the first one is the catalog saved by an earlier viewer,
    followed from there, and catalogs are saved for the next start."""

    def __init__(self, store=None):
        self.current = None
        self.lineages = 0  # numbers given to catalogs read in full (or loaded from store)
        self.full_reads = 0
        self.lock = threading.Lock()
        self.store = store

    def get(self, db):
        with self.lock:
            key = database_key(db)  # under the lock: the file a read is of, not an older one
            if self.current is None and self.store is not None:
                self.current = self.store.load(self.lineages + 1)
                self.lineages += self.current is not None
            if self.current is None or self.current.key != key:
                catalog = read_catalog(db, key, self.current, self.lineages + 1)
                full = catalog.lineage == self.lineages + 1
                self.lineages += full
                self.full_reads += full
                self.current = catalog
                if self.store is not None:
                    self.store.keep(catalog, full)
                release_freed_memory()  # the arrays the previous catalog had
            return self.current


# ---------------------------------------------------------------------------- labels


def folder_of_owner(sources, owners, owner):
    """Where an owner's notebooks are, guessed from the paths of their files: their common
    folder (used when users.csv does not say, so that no label shows a student's path)."""
    paths = [s for s, o in zip(sources, owners) if o == owner]
    folders = [os.path.dirname(p) for p in paths]
    return os.path.commonpath(folders) if folders and all(folders) else ""


def shown_path(source, prefix):
    """A notebook's path under its owner's folder, or its bare file name when the folder
    is unknown (the path above it would name the student)."""
    if prefix and source.startswith(prefix + "/"):
        return source[len(prefix) + 1 :]
    return os.path.basename(source)


def version_url(template, filename):
    return template.replace("{filename}", urllib.parse.quote(filename, safe="/"))


class Earlier(dict):
    """{assignment: History} last read, and the catalog lineage they were read in: a
    History is reused only for the database read incrementally since (not for a database
    replaced, or renumbered by a VACUUM); whole when its rows are the same. The follower's
    thread and the requests' use it: `lock` keeps a lineage and its Histories together."""

    lineage = None

    def __init__(self):
        super().__init__()
        self.lock = threading.Lock()
        self.places = model.RowPlaces()  # of the Histories it holds

    def start(self, lineage, histories):
        """Hold `histories` (saved ones, or none) for a new lineage."""
        self.clear()
        self.lineage = lineage
        self.places = model.RowPlaces()
        self.keep(histories)

    def keep(self, histories):
        """Hold {assignment: History} as the last read of each."""
        self.update(histories)
        for history in histories.values():
            self.places.note(history)


class FileNames:
    """rowid -> file name for the Histories and Saves of one Data: one at a time, or
    many in one query; kept per catalog."""

    def __init__(self, data):
        self.data = data

    def __call__(self, rowid):
        return self.many([rowid])[rowid]

    def many(self, rowids):
        """{rowid: file name} of `rowids` (None for one no longer recorded)."""
        names = self.data.memo("file names", dict)
        missing = [rowid for rowid in rowids if rowid not in names]
        if missing:
            found = dict.fromkeys(missing)
            conn = self.data.reader_connection()
            found.update(conn.execute(FILE_NAMES_QUERY, (json.dumps(missing),)))
            names.update(found)
        return {rowid: names[rowid] for rowid in rowids}


FILE_NAMES_QUERY = (
    "SELECT rowid, filename FROM summary WHERE rowid IN (SELECT value FROM json_each(?))"
)


class Reader(threading.local):
    """A read-only connection per thread, and the database file (inode) it is open on."""

    conn = None
    inode = None


# ---------------------------------------------------------------------------- following


FOLLOW_SECONDS = 1.0  # how often the follower looks for a commit
IDLE_SECONDS = 600  # it stops this long after the last request (no page open)


class Follower:
    """Reads what each commit of the loop changed as soon as it lands, in a thread of its
    own, so that a page's update after a commit does not wait for it: the catalog, every
    assignment's History and every student's saves (what the first screen needs; at 1M
    rows 0.2-0.4 s a commit). It runs while pages ask (touch(), each request): started at
    the first one in each process (a server's forked workers each get theirs), it stops
    IDLE_SECONDS after the last one."""

    def __init__(self, data, seconds=FOLLOW_SECONDS, idle=IDLE_SECONDS):
        self.data, self.seconds, self.idle = data, seconds, idle
        self.lock = threading.Lock()
        self.thread = None
        self.pid = None
        self.touched = 0.0
        self.problem = ""  # the last unexpected error, logged once

    def touch(self):
        """A page asked: follow (again) from now on."""
        self.touched = time.monotonic()
        with self.lock:
            if self.thread is not None and self.thread.is_alive() and self.pid == os.getpid():
                return
            self.pid = os.getpid()
            self.thread = threading.Thread(target=self.run, name="follower", daemon=True)
            self.thread.start()

    def run(self):
        try:
            while self.wanted():
                self.follow()
                time.sleep(self.seconds)
        except SystemExit:  # asked to end (a test server stops every thread it did not start)
            self.done()

    def wanted(self):
        """True while a page asked lately; else the thread is done (under the lock, so
        that a touch() now starts another)."""
        with self.lock:
            if time.monotonic() - self.touched < self.idle:
                return True
            self.forget_this_thread()
            return False

    def done(self):
        """This thread ends: the next touch() starts another."""
        with self.lock:
            self.forget_this_thread()

    def forget_this_thread(self):
        if self.thread is threading.current_thread():
            self.thread = None

    def follow(self):
        """Read what changed, if anything (what cannot be read now is the pages' to say;
        anything else is logged once, and the pages read it themselves)."""
        try:
            self.data.histories()
            self.data.saves()
            self.problem = ""
        except self.data.errors:
            pass
        except Exception as error:  # never the end of following
            if repr(error) != self.problem:
                LOG.exception("following the database: %r", error)
            self.problem = repr(error)


# ---------------------------------------------------------------------------- the interface


class Data:
    """What every view reads: the catalog, users.csv, histories and labels, through one
    password check. Views get this, never the settings' files or a connection of their
    own."""

    errors = (DatabaseMissing, sqlite3.Error)

    def __init__(self, settings, gate, client_address=lambda: "?", store=None):
        self.settings = settings
        self.attrs = list(settings["USER_ATTRS"])
        self.public_attrs = list(settings.get("PUBLIC_ATTRS", []))
        self.gate = gate
        self.client_address = client_address
        self.store = store  # a snapshot.Store, or None
        self.catalogs = CatalogCache(store)
        self.users = PeopleCache()
        self.earlier = Earlier()  # the last History read of each assignment
        self.follower = Follower(self)
        self.by_sources = LRU()  # memo_sources
        self.reader = Reader()
        self.file_names = FileNames(self)

    # -- the names password

    def names_shown(self, password):
        """True when `password` is the names password; wrong ones are counted, limited
        and logged by the gate (access.PasswordGate), whichever callback sent them."""
        return self.gate.check(password, self.client_address())

    def names_password_set(self):
        """False when PASSWD is empty: no password shows the names."""
        return self.gate.is_set()

    def names_locked_out(self):
        """True while this client may not try the names password (too many wrong ones)."""
        return self.gate.locked_out(self.client_address())

    # -- sources

    def catalog(self):
        return self.catalogs.get(self.settings["SYNC_SQLITE"])

    def people(self):
        return self.users.get(self.settings["USERS_CSV"])

    def connect(self):
        return connect_readonly(self.settings["SYNC_SQLITE"])

    def memo(self, key, compute):
        """compute() once per catalog and users.csv state, kept in the catalog's LRU."""
        return self.catalog().cache.get((key, self.people().key), compute)

    def memo_sources(self, key, compute):
        """compute() of what depends only on the catalog's sources and owners (paths,
        labels, masks, assignments) and users.csv: kept across the commits that add no
        source (a catalog read incrementally only ever appends sources to its lists)."""
        catalog = self.catalog()
        sources = (catalog.lineage, len(catalog.sources))
        return self.by_sources.get((key, sources, self.people().key), compute)

    def assignments(self):
        """{assignment: [source index]} over the notebooks with an owner in users.csv."""
        catalog, people = self.catalog(), self.people()
        return self.memo_sources(
            "assignments",
            lambda: model.assignments(catalog.sources, catalog.source_owner, people.prefixes),
        )

    def history(self, assignment):
        """Every version of one assignment, per student (model.History); KeyError for an
        assignment the catalog does not have (the cache holds real ones only)."""
        if assignment not in self.assignments():
            raise KeyError(assignment)
        histories = self.memo("histories", dict)
        if assignment not in histories:
            histories[assignment] = self.load_history(assignment)
        return histories[assignment]

    def histories(self, tries=3):
        """{assignment: History} of every assignment, all of one catalog (read again when
        another thread read a commit meanwhile); saved for the next start with that
        catalog's mark, when there is a store and what it holds is not recent."""
        catalog = self.catalog()
        read_before = self.memo("histories", dict).keys() >= set(self.assignments())
        histories = {}
        for assignment in self.assignments():
            with suppress(KeyError):  # gone with what another thread read meanwhile
                histories[assignment] = self.history(assignment)
        if not read_before:  # (not every second the follower asks: it walks the heap)
            release_freed_memory()  # what reading them, or the Histories they replace, took
        if self.catalog() is not catalog:  # catalogs only move on: some are of a newer one
            return self.histories(tries - 1) if tries > 1 else histories
        if self.store is not None:
            self.store.keep_histories(catalog.mark, histories)
        return histories

    def saves(self):
        """model.Saves: when each student saved anything at all (any file)."""
        saved = self.catalog().saved
        return self.memo("saves", lambda: model.Saves(saved.times, saved.rowids, self.file_names))

    def class_at(self, moment, minutes, students=None):
        """model.class_at over every assignment, kept per catalog: the status line, the
        stuck list and the heatmap's order ask for the same one on each update."""
        key = ("class at", moment, minutes, None if students is None else frozenset(students))
        return self.memo(
            key, lambda: model.class_at(self.histories(), self.saves(), moment, minutes, students)
        )

    def load_history(self, assignment):
        """The assignment's History from the catalog's rows of its sources: the last
        History read of it when its rows are the same, else one that reuses its versions
        (only new versions' problems are read)."""
        catalog = self.catalog()
        owner_of = catalog.source_owner
        sources = sorted(self.assignments().get(assignment, []), key=owner_of.__getitem__)
        index, owner = source_rows(catalog.starts(), np.array(sources, dtype=np.int64))
        rowid, t = catalog.rowid[index], catalog.t[index].astype(np.int64)
        with self.earlier.lock:
            if self.earlier.lineage != catalog.lineage:
                self.earlier.start(catalog.lineage, self.saved_histories(catalog.mark))
            previous, places = self.earlier.get(assignment), self.earlier.places
        if previous is not None and model.same_rows(previous, rowid, t):
            return previous
        history = model.read_history(
            self.reader_connection(),
            assignment,
            [owner_of[s] for s in sources],
            owner,
            t,
            rowid,
            previous,
            self.file_names,
            places,
        )
        with self.earlier.lock:
            if self.earlier.lineage == catalog.lineage:
                self.earlier.keep({assignment: history})
        return history

    def saved_histories(self, mark):
        """{assignment: History} the store saved from this database (at or
        before `mark`), or none."""
        if self.store is None:
            return {}
        with closing(self.connect()) as conn:
            saved = self.store.load_histories(self.file_names, lambda m: continues(conn, m, mark))
        return saved or {}

    # -- names

    def pseudonyms(self):
        """uid -> `student N`: users.csv order first, then the owners it does not list."""
        catalog, people = self.catalog(), self.people()

        def number():
            others = set(catalog.source_owner) - set(people.by_uid) - {make_database.UNKNOWN_OWNER}
            return model.pseudonyms([*people.by_uid, *sorted(others)])

        return self.memo_sources("pseudonyms", number)

    def student_order(self, shown):
        """A sort key of uids for every list the page shows: the uid with the names
        password, else the pseudonym's number (uid order would tell who `student N` is)."""
        if shown:
            return lambda uid: (0, uid)
        names = self.pseudonyms()
        rank = self.memo_sources("pseudonym ranks", lambda: {uid: n for n, uid in enumerate(names)})
        return lambda uid: (rank.get(uid, len(rank)), "")

    def student_labels(self, uids, shown):
        """uid -> `uid [USER_ATTRS]` with the names password, else `student N`
        (`[PUBLIC_ATTRS]` after it either way)."""
        names = self.pseudonyms()
        labels = {}
        for uid in uids:
            values = self.attr_values(uid, shown)
            name = uid if shown else names.get(uid, MASK)
            labels[uid] = f"{name} [{' '.join(values)}]" if values else name
        return labels

    def attr_values(self, uid, shown):
        """The users.csv values a label shows: USER_ATTRS and PUBLIC_ATTRS with the names
        password, PUBLIC_ATTRS only without it."""
        user = self.people().by_uid.get(uid)
        if user is None:
            return []
        public = [a for a in self.public_attrs if a not in self.attrs]
        return [
            user.attrs.get(a, "") for a in (self.attrs + public if shown else self.public_attrs)
        ]

    def owner_folder(self, owner):
        """The owner's notebooks folder under the destination ('' when unknown)."""
        prefix = self.people().prefixes.get(owner)
        if prefix is not None:
            return prefix
        catalog = self.catalog()
        return self.memo_sources(
            ("folder", owner),
            lambda: folder_of_owner(catalog.sources, catalog.source_owner, owner),
        )

    def searchable_paths(self, shown):
        """What the path regexp and the suggested groups search, one per catalog source:
        the path under the destination with the names password, else the path under the
        owner's folder (a regexp over the rest, `/u001/`, would tell who a row is), and ''
        for a path only one student has."""
        catalog = self.catalog()
        if shown:
            return catalog.sources
        relative, shared = self.relative_paths(), self.shared_paths()
        return self.memo_sources(
            "searchable paths", lambda: [p if p in shared else "" for p in relative]
        )

    def relative_paths(self):
        """Each catalog source's path under its owner's folder."""
        catalog = self.catalog()

        def relative():
            return [
                shown_path(source, self.owner_folder(owner))
                for source, owner in zip(catalog.sources, catalog.source_owner)
            ]

        return self.memo_sources("relative paths", relative)

    def shared_paths(self):
        """The paths under the owners' folders that two students or more have: without
        the names password no other one is shown or searched (a file only one student has
        may be named after them)."""
        catalog, relative = self.catalog(), self.relative_paths()

        def shared():
            owners = {}
            for path, owner in zip(relative, catalog.source_owner):
                owners.setdefault(path, set()).add(owner)
            return {path for path, found in owners.items() if len(found) > 1}

        return self.memo_sources("shared paths", shared)

    def source_label(self, source, owner, shown):
        """An activity row: `file [attrs] uid` with the password, else `file student N`
        (DESIGN's order); the file is its path under the owner's folder, and never a
        student's path without the password."""
        if owner == make_database.UNKNOWN_OWNER:
            return f"{source if shown else os.path.basename(source)} {owner}"
        path = shown_path(source, self.owner_folder(owner))
        if not shown and path not in self.shared_paths():
            path = OWN_FILE
        name = owner if shown else self.pseudonyms().get(owner, MASK)
        values = self.attr_values(owner, shown)
        return f"{path} [{' '.join(values)}] {name}" if values else f"{path} {name}"

    # -- filters

    def filter_columns(self, shown):
        """users.csv columns a filter may use: every one with the password, else
        PUBLIC_ATTRS only (any other column's values would name students)."""
        columns = {name for user in self.people().by_uid.values() for name in user.attrs}
        allowed = columns if shown else set(self.public_attrs)
        return sorted(columns & allowed)

    def filter_values(self, column, shown):
        if column not in self.filter_columns(shown):
            return []
        return sorted({u.attrs.get(column, "") for u in self.people().by_uid.values()})

    def allowed_uids(self, column, value, shown):
        """The uids the filter keeps, or None for no filter."""
        if not column or value is None or column not in self.filter_columns(shown):
            return None
        return {
            uid for uid, user in self.people().by_uid.items() if user.attrs.get(column) == value
        }

    def team_of(self, shown):
        """uid -> team (empty when hidden: `team` is not public, and no password)."""
        hidden = not shown and "team" not in self.public_attrs
        people = self.people()

        def team(uid):
            user = people.by_uid.get(uid)
            return "" if hidden or user is None else user.attrs.get("team", "")

        return team

    # -- versions

    def handle(self, rowid):
        """What the browser gets for a recorded version instead of its rowid (an opaque
        handle, progress_views.handles): rowids are numbered in path order, so they rank
        the students."""
        return handles.encode(self.handle_key(), int(rowid))

    def handles_of(self, rowids):
        """The handles of many rowids at once (a figure's markers), in order."""
        return handles.encode_many(self.handle_key(), rowids)

    def rowid(self, handle):
        """The rowid a handle from the browser stands for; None for anything forged."""
        return handles.decode(self.handle_key(), handle)

    def handle_key(self):
        """The deployment's key (ACCESS_DB's, the same in every worker)."""
        return self.gate.attempts.key().encode()

    def version_filename(self, rowid):
        """The file name of one recorded version (any file), or None when it is gone."""
        return self.file_names(rowid)

    def version_owner(self, rowid):
        """The owner of one recorded version (any file), or None when it is gone."""
        return self.one_value("SELECT owner FROM summary WHERE rowid = ?", rowid)

    def one_value(self, query, rowid):
        """The one value `query` reads of summary row `rowid`, through this thread's
        connection (opening one per look-up cost ~0.2 ms), or None."""
        row = self.reader_connection().execute(query, (rowid,)).fetchone()
        return row[0] if row else None

    def reader_connection(self):
        """This thread's read-only connection to the database file read now."""
        inode = self.catalog().mark.inode
        if self.reader.inode != inode:
            if self.reader.conn is not None:
                self.reader.conn.close()
            self.reader.conn, self.reader.inode = self.connect(), inode
        return self.reader.conn

    def file_url(self, filename):
        """Where a recorded version opens in Jupyter."""
        return version_url(self.settings["URL_TEMPLATE"], filename)
