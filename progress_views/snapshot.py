"""The catalog and the histories kept on disk between starts of the viewer.

A full read of a term's database (1M summary rows) takes the viewer 5-10 s: SQLite hands
every row to Python; reading every assignment's History (6M problems rows) 15-20 s more.
So after a full read, and again once the database has moved on by 5 % (rewrite_after), the
catalog's arrays and the histories' tables are saved beside ACCESS_DB (mode 0600: they
name students' files), and a viewer that starts (a restart, each new gunicorn worker)
loads them in a fraction of a second and reads only what changed since, through
summary_changes, as after any commit. What is saved is a cache, never the truth: one of
another database, of another format, or unreadable is ignored (the database is read as
without it), and the data layer checks that the database still continues the one it was
saved from (data.continues).

    Store(stem)                 the files `<stem>catalog.npz` and `<stem>histories.npz`
                                (Store.for_settings: beside ACCESS_DB)
    store.load(lineage), store.keep(catalog, full)          the catalog
    store.load_histories(file_names, accept), store.keep_histories(mark, entries)   the histories
"""

import dataclasses
import json
import logging
import os
import stat
import tempfile
import time
import zipfile
from contextlib import suppress

import numpy as np

from progress_views import access, data, model

FORMAT = 6
# what reading a file that is not one this viewer wrote can raise: it is then not used
UNREADABLE = (OSError, EOFError, ValueError, KeyError, IndexError, TypeError, zipfile.BadZipFile)
STALE_SECONDS = 3600  # a temporary file of a save this old was left by a killed one
REWRITE_AFTER = 100_000  # rows added or replaced, at most, before a file is saved again
LOG = logging.getLogger("progress_viewer")


class Store:
    """The saved catalog and histories of one deployment's database."""

    def __init__(self, stem):
        self.catalog_path = stem + "catalog.npz"
        self.histories_path = stem + "histories.npz"
        self.marks = {}  # file -> the Mark of what it holds now (when known)
        self.problem = ""  # why the last save failed

    @classmethod
    def for_settings(cls, settings):
        return cls(access.access_db_path(settings) + "-")

    def load(self, lineage):
        """The saved Catalog (its key unknown: to be followed, never served as it is), or
        None when there is none this viewer can read."""
        catalog = None
        with suppress(*UNREADABLE):
            catalog = catalog_of(read(self.catalog_path), lineage)
        self.marks[self.catalog_path] = None if catalog is None else catalog.mark
        return catalog

    def keep(self, catalog, full):
        """Save `catalog` after a full read, or when the saved one is rewrite_after() rows
        behind it."""
        if self.due(self.catalog_path, catalog.mark, full):
            self.save(self.catalog_path, catalog.mark, catalog_arrays(catalog))

    def load_histories(self, file_names, accept):
        """{assignment: History} saved, when `accept`(their Mark) says they are of this
        database, else None. Only accepted ones count as saved: others are replaced at
        the next keep_histories, and no History of them is made."""
        with suppress(*UNREADABLE):
            stored = read(self.histories_path)
            mark = mark_of(stored["mark"])
            if not accept(mark):
                return None
            count = int(stored["histories"][0])
            entries = dict(history_of(stored, f"h{n}_", file_names) for n in range(count))
            self.marks[self.histories_path] = mark
            return entries
        return None

    def keep_histories(self, mark, entries):
        """Save {assignment: History} read at `mark` when none is saved yet or the saved
        ones are rewrite_after() rows behind."""
        if not self.due(self.histories_path, mark, False):
            return
        arrays = {"mark": mark_array(mark)}
        arrays["histories"] = np.array([len(entries)])
        for n, history in enumerate(entries.values()):
            arrays.update(history_arrays(f"h{n}_", history))
        self.save(self.histories_path, mark, arrays)

    def due(self, path, mark, full):
        """True when `path` is to be saved: after a full read, when it holds nothing
        known, or what it holds is rewrite_after() rows behind `mark`."""
        saved = self.marks.get(path)
        return full or saved is None or behind(saved, mark) >= rewrite_after(mark)

    def save(self, path, mark, arrays):
        """write(); a failure is logged once and kept in `problem` (the viewer goes on
        without)."""
        try:
            write(path, arrays)
            self.marks[path], self.problem = mark, ""
        except (OSError, TypeError, ValueError) as error:  # TypeError: a value JSON refuses
            problem = f"cannot save {path} (the next start reads the database instead): {error}"
            if problem != self.problem:
                LOG.warning("%s", problem)
            self.problem = problem


def write(path, arrays):
    """Write `arrays` (and the FORMAT) to `path`: a private temporary file of a name no one
    can guess (made with O_EXCL: a link planted there is never followed), renamed over it.
    The temporary files of a save that was killed go first (remove_stale)."""
    folder, name = os.path.split(os.path.abspath(path))
    remove_stale(folder, name)
    descriptor, temporary = tempfile.mkstemp(prefix=name + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(descriptor, "wb") as stream:
            np.savez(stream, format=np.array([FORMAT]), **arrays)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def remove_stale(folder, name):
    """Remove this account's own temporary files of `name` in `folder` older than
    STALE_SECONDS: a save killed midway left them (a save still writing is younger), and
    at 1M rows each is about 100 MB. Only regular files are removed (a link planted under
    such a name is left, never followed)."""
    now = time.time()
    with suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            if not (entry.name.startswith(name + ".") and entry.name.endswith(".tmp")):
                continue
            with suppress(OSError):
                info = entry.stat(follow_symlinks=False)
                own = stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid()
                if own and now - info.st_mtime > STALE_SECONDS:
                    os.unlink(entry.path)


def read(path):
    """{name: array} saved at `path` by write(); UNREADABLE errors for none, a link, a FIFO
    or anything not a file, a file of another account's or that others may write (not
    this viewer's own), another FORMAT or a damaged file."""
    # O_NONBLOCK: opening a FIFO planted there must not wait for a writer
    with open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK), "rb") as stream:
        info = os.fstat(stream.fileno())
        own = stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid()
        if not own or info.st_mode & 0o022:
            raise ValueError(f"{path} is not this viewer's own file")
        with np.load(stream, allow_pickle=False) as stored:
            if stored["format"].tolist() != [FORMAT]:
                raise ValueError(f"{path} is not of format {FORMAT}")
            return dict(stored.items())


def as_array(value):
    """A list (of strings, numbers, None, lists) as a numpy array npz can keep without
    pickling: its JSON."""
    return np.frombuffer(json.dumps(value).encode(), np.uint8)


def from_array(array):
    return json.loads(array.tobytes().decode())


def mark_array(mark):
    return as_array({**dataclasses.asdict(mark), "columns": sorted(mark.columns)})


def mark_of(array):
    found = from_array(array)
    return data.Mark(
        **{**found, "columns": frozenset(found["columns"]), "last": tuple(found["last"])}
    )


def rewrite_after(mark):
    """How far the database may move on before what is saved is saved again: 5 % of its
    rows (catching up is then cheap at a start), at least 1,000 and at most
    REWRITE_AFTER (a save takes ~0.5 s at 1M rows)."""
    return min(REWRITE_AFTER, max(1_000, mark.rowid // 20))


def behind(saved, mark):
    """How many rows the database has moved on since `saved` (roughly)."""
    return (mark.rowid - saved.rowid) + ((mark.change or 0) - (saved.change or 0))


# ---------------------------------------------------------------------------- the catalog


def catalog_arrays(catalog):
    numbering, saved = catalog.numbering, catalog.saved
    return {
        "src": catalog.src,
        "t": catalog.t.astype(np.int64),
        "rowid": catalog.rowid,
        "counts": catalog.counts,
        "order": catalog.order,
        "sources": as_array(numbering.sources),
        "source_owner": as_array(numbering.source_owner),
        "owners": as_array(numbering.owners),
        "mark": mark_array(catalog.mark),
        "saved_owner": saved.owner,
        "saved_t": saved.t,
        "saved_rowid": saved.rowid,
    }


def catalog_of(stored, lineage):
    """The Catalog of catalog_arrays() (ValueError when they do not fit together)."""
    sources, owners = from_array(stored["sources"]), from_array(stored["owners"])
    numbering = data.Numbering(
        {name: n for n, name in enumerate(sources)},
        sources,
        from_array(stored["source_owner"]),
        {uid: n for n, uid in enumerate(owners)},
        owners,
    )
    mark = mark_of(stored["mark"])
    n, saves = len(stored["rowid"]), len(stored["saved_rowid"])
    lengths = {len(stored[name]) for name in ("src", "t", "order", "counts")}
    if (
        lengths != {n}
        or len(numbering.source_owner) != len(sources)
        or {len(stored["saved_owner"]), len(stored["saved_t"])} != {saves}
    ):
        raise ValueError("a saved catalog whose arrays do not fit together")
    saved = data.saved_of(
        stored["saved_owner"], stored["saved_t"], stored["saved_rowid"], numbering
    )
    return data.Catalog(
        None,
        sources,
        numbering.source_owner,
        stored["src"],
        stored["t"].view("datetime64[s]"),
        stored["rowid"],
        stored["counts"],
        stored["order"],
        numbering,
        mark,
        saved,
        lineage,
    )


# ---------------------------------------------------------------------------- the histories

TABLE_ARRAYS = ("owner", "t", "rowid", "layout", "results")


def history_arrays(prefix, history):
    """The arrays of one History."""
    table = history.table
    meta = {
        "assignment": history.assignment,
        "problems": history.problems,
        "uids": table.uids,
        "columns": table.columns,
        "layouts": table.layouts,
        "vocab": table.vocab,
    }
    arrays = {prefix + name: getattr(table, name) for name in TABLE_ARRAYS}
    arrays[prefix + "meta"] = as_array(meta)
    return arrays


def history_of(stored, prefix, file_names):
    """(assignment, History) of history_arrays()."""
    meta = from_array(stored[prefix + "meta"])
    table = model.Table(
        meta["uids"],
        *(stored[prefix + name] for name in TABLE_ARRAYS),
        meta["columns"],
        [tuple(layout) for layout in meta["layouts"]],
        meta["vocab"],
    )
    history = model.History(meta["assignment"], meta["problems"], table=table, lookup=file_names)
    return meta["assignment"], history
