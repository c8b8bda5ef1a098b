"""The data layer every view of the viewer reads through: one `Data` per app.

    data.catalog()              every notebook version (numpy arrays), re-read after a commit
    data.people()               users.csv (re-read when it changes)
    data.assignments()          {assignment: [source index]} of the current catalog
    data.history(assignment)    model.History of one assignment (LRU-cached)
    data.names_shown(password)  the names password, checked by access.PasswordGate
    data.student_labels(uids, shown)   uid -> `uid [USER_ATTRS]`, or `student N` hidden
    data.source_label(source, owner, shown)   an activity row's label (no student path hidden)
    data.searchable_paths(shown)       what the path regexp searches (no student path hidden)
    data.filter_columns(shown), data.allowed_uids(column, value, shown), data.team_of(shown)
    data.version_filename(rowid), data.version_owner(rowid), data.file_url(filename)
    data.memo(key, compute)     a per-catalog LRU cache for what a view derives from it
    Data.errors                 what a view catches when the database cannot be read

Every cache is bounded (LRU) and dropped when the database or users.csv changes. The
database is read only here, in callbacks, never at import: the sync loop keeps writing it.
"""

import os
import sqlite3
import threading
import urllib.parse
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

import make_database
from progress_views import model

MASK = "*"
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


# Source name and version of a notebook row, computed by SQLite itself:
# `d/nb.bak_2021-10-17T18:26:14.ipynb` -> source `d/nb.ipynb`. Only
# make_database's constant column names are joined in.
CATALOG_QUERY = (
    "SELECT rowid, CASE WHEN filename GLOB ?"  # noqa: S608
    " THEN substr(filename, 1, length(filename) - ?) || '.ipynb' ELSE filename END,"
    " t, owner, " + ", ".join(make_database.COUNT_COLUMNS) + " FROM summary"
    " WHERE filename LIKE '%.ipynb'"
)


@dataclass
class Catalog:
    """Every notebook version, as arrays sorted by (source, time)."""

    key: tuple
    sources: list  # source file names
    source_owner: list  # uid of each source
    src: np.ndarray  # source index of each version
    t: np.ndarray  # datetime64[s], local time
    rowid: np.ndarray
    counts: np.ndarray  # (n, 5) float32 in COUNT_COLUMNS order, NaN for unreadable
    cache: LRU = field(default_factory=LRU)


def to_float(value):
    return np.nan if value is None else value


def empty_catalog(key):
    empty = np.empty(0)
    n_counts = len(make_database.COUNT_COLUMNS)
    return Catalog(
        key,
        [],
        [],
        empty.astype(np.int32),
        empty.astype("datetime64[s]"),
        empty.astype(np.int64),
        np.empty((0, n_counts), np.float32),
    )


def load_catalog(db, key):
    """Read every notebook row once; O(rows) memory as numpy arrays, not Python objects."""
    index, sources, owners = {}, [], []
    parts = {"src": [], "t": [], "rowid": [], "counts": []}
    conn = connect_readonly(db)
    try:
        params = (make_database.BACKUP_GLOB, make_database.BACKUP_MARK_LENGTH + len(".ipynb"))
        cursor = conn.execute(CATALOG_QUERY, params)
        while chunk := cursor.fetchmany(65536):
            rowids, names, times, row_owners, *counts = zip(*chunk)
            src = np.empty(len(chunk), dtype=np.int32)
            for i, (name, owner) in enumerate(zip(names, row_owners)):
                j = index.get(name)
                if j is None:
                    j = index[name] = len(sources)
                    sources.append(name)
                    owners.append(owner)
                src[i] = j
            parts["src"].append(src)
            parts["t"].append(parse_times(times))
            parts["rowid"].append(np.array(rowids, dtype=np.int64))
            columns = [np.array([to_float(v) for v in c], dtype=np.float32) for c in counts]
            parts["counts"].append(np.column_stack(columns))
    finally:
        conn.close()
    if not sources:
        return empty_catalog(key)
    src, t = np.concatenate(parts["src"]), np.concatenate(parts["t"])
    order = np.lexsort((t, src))
    return Catalog(
        key,
        sources,
        owners,
        src[order],
        t[order],
        np.concatenate(parts["rowid"])[order],
        np.concatenate(parts["counts"])[order],
    )


def parse_times(values):
    """`2021-10-17T18:26:14` strings to datetime64[s]; anything else becomes NaT."""
    out = np.empty(len(values), dtype="datetime64[s]")
    try:
        out[:] = np.array(values, dtype="datetime64[s]")
    except (ValueError, TypeError):
        for i, value in enumerate(values):
            try:
                out[i] = np.datetime64(value, "s")
            except (ValueError, TypeError):
                out[i] = np.datetime64("NaT")
    return out


class CatalogCache:
    """The catalog of the database as it is now, re-read only after a commit."""

    def __init__(self):
        self.current = None
        self.lock = threading.Lock()

    def get(self, db):
        key = database_key(db)
        with self.lock:
            if self.current is None or self.current.key != key:
                self.current = load_catalog(db, key)
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
    """{assignment: History} last read, and the database file (inode) they were read
    from: a History is reused only for the same file (not for a database replaced)."""

    file = None


# ---------------------------------------------------------------------------- the interface


class Data:
    """What every view reads: the catalog, users.csv, histories and labels, through one
    password check. Views get this, never the settings' files or a connection of their
    own."""

    errors = (DatabaseMissing, sqlite3.Error)

    def __init__(self, settings, gate, client_address=lambda: "?"):
        self.settings = settings
        self.attrs = list(settings["USER_ATTRS"])
        self.public_attrs = list(settings.get("PUBLIC_ATTRS", []))
        self.gate = gate
        self.client_address = client_address
        self.catalogs = CatalogCache()
        self.users = PeopleCache()
        self.earlier = Earlier()  # the last History read of each assignment

    # -- the names password

    def names_shown(self, password):
        """True when `password` is the names password; wrong ones are counted, limited
        and logged by the gate (access.PasswordGate), whichever callback sent them."""
        return self.gate.check(password, self.client_address())

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

    def assignments(self):
        """{assignment: [source index]} over the notebooks with an owner in users.csv."""
        catalog, people = self.catalog(), self.people()
        return self.memo(
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
            self.earlier[assignment] = histories[assignment]
        return histories[assignment]

    def histories(self):
        """{assignment: History} of every assignment."""
        return {assignment: self.history(assignment) for assignment in self.assignments()}

    def saves(self):
        """model.Saves: when each student saved anything at all (any file)."""

        def load():
            conn = self.connect()
            try:
                return model.load_saves(conn, make_database.UNKNOWN_OWNER)
            finally:
                conn.close()

        return self.memo("saves", load)

    def load_history(self, assignment):
        catalog = self.catalog()
        sources = self.assignments().get(assignment, [])
        index = np.flatnonzero(np.isin(catalog.src, sources))
        rows = [
            (catalog.source_owner[s], t, rowid)
            for s, t, rowid in zip(
                catalog.src[index].tolist(),
                catalog.t[index].astype(np.int64).tolist(),
                catalog.rowid[index].tolist(),
            )
        ]
        # The versions read before the last sync cycle are reused, only new ones are read:
        # at 100k rows, 10 assignments, every history after one more commit takes 0.95 s
        # instead of 2.3 s (bench_viewer.py's database, 2 cores).
        if self.earlier.file != catalog.key[0][0]:  # another database file (its inode)
            self.earlier.clear()
            self.earlier.file = catalog.key[0][0]
        previous = self.earlier.get(assignment)
        conn = self.connect()
        try:
            return model.load_history(conn, assignment, rows, previous)
        finally:
            conn.close()

    # -- names

    def pseudonyms(self):
        """uid -> `student N`: users.csv order first, then the owners it does not list."""
        catalog, people = self.catalog(), self.people()

        def number():
            others = set(catalog.source_owner) - set(people.by_uid) - {make_database.UNKNOWN_OWNER}
            return model.pseudonyms([*people.by_uid, *sorted(others)])

        return self.memo("pseudonyms", number)

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
        return self.memo(
            ("folder", owner),
            lambda: folder_of_owner(catalog.sources, catalog.source_owner, owner),
        )

    def searchable_paths(self, shown):
        """What the path regexp and the suggested groups search, one per catalog source:
        the path under the destination with the names password, else the path under the
        owner's folder (a regexp over the rest, `/u001/`, would tell who a row is)."""
        catalog = self.catalog()
        if shown:
            return catalog.sources

        def relative():
            return [
                shown_path(source, self.owner_folder(owner))
                for source, owner in zip(catalog.sources, catalog.source_owner)
            ]

        return self.memo("relative paths", relative)

    def source_label(self, source, owner, shown):
        """An activity row: `file [attrs] uid` with the password, else `file student N`
        (DESIGN's order); the file is its path under the owner's folder, and never a
        student's path without the password."""
        if owner == make_database.UNKNOWN_OWNER:
            return f"{source if shown else os.path.basename(source)} {owner}"
        path = shown_path(source, self.owner_folder(owner))
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

    def version_filename(self, rowid):
        """The file name of one recorded version, or None when it is gone."""
        conn = self.connect()
        try:
            row = conn.execute("SELECT filename FROM summary WHERE rowid = ?", (rowid,)).fetchone()
        finally:
            conn.close()
        return row[0] if row else None

    def version_owner(self, rowid):
        """The owner of one recorded version (any file), or None when it is gone."""
        conn = self.connect()
        try:
            row = conn.execute("SELECT owner FROM summary WHERE rowid = ?", (rowid,)).fetchone()
        finally:
            conn.close()
        return row[0] if row else None

    def file_url(self, filename):
        """Where a recorded version opens in Jupyter."""
        return version_url(self.settings["URL_TEMPLATE"], filename)
