"""The catalog kept on disk between starts of the viewer.

A full read of a term's database (1M summary rows) takes the viewer 5-10 s: SQLite hands
every row to Python. So after a full read, and again once the database has moved on by
REWRITE_AFTER rows, the catalog's arrays are saved beside ACCESS_DB (mode 0600: they name
students' files), and a viewer that starts (a restart, each new gunicorn worker) loads
them in a fraction of a second and reads only what changed since, through
summary_changes, as after any commit. The saved catalog is a cache, never the truth: one
of another database, of another format, or unreadable is ignored (the database is read in
full, as without it), and data.read_catalog checks that the database still continues it.

    Store(path)                 what data.CatalogCache loads its first catalog from and
                                saves catalogs to (Store.for_settings: beside ACCESS_DB)
    save(path, catalog)         write one (atomically; errors are the caller's)
    load(path, lineage)         the saved Catalog, or None
"""

import logging
import os
import zipfile

import numpy as np

from progress_views import access, data

FORMAT = 1
REWRITE_AFTER = 100_000  # rows added or replaced since the snapshot before it is written again
NAMES_SEPARATOR = "\0"  # never in a path or a uid read from the database's text
LOG = logging.getLogger("progress_viewer")


class Store:
    """The snapshot file of one deployment, as data.CatalogCache uses it."""

    def __init__(self, path):
        self.path = path
        self.mark = None  # of the catalog last saved or loaded
        self.problem = ""  # why the last save failed

    @classmethod
    def for_settings(cls, settings):
        return cls(access.access_db_path(settings) + "-catalog.npz")

    def load(self, lineage):
        catalog = load(self.path, lineage)
        self.mark = catalog.mark if catalog is not None else None
        return catalog

    def keep(self, catalog, full):
        """Save `catalog` after a full read, or when the snapshot is REWRITE_AFTER rows
        behind it; a failure is logged once and kept in `problem` (the viewer goes on)."""
        if not full and self.mark is not None and behind(self.mark, catalog.mark) < REWRITE_AFTER:
            return
        try:
            save(self.path, catalog)
            self.mark, self.problem = catalog.mark, ""
        except OSError as error:
            problem = (
                f"cannot save the catalog to {self.path} (the next start reads the"
                f" database in full): {error}"
            )
            if problem != self.problem:
                LOG.warning("%s", problem)
            self.problem = problem


def joined(names):
    return np.frombuffer(NAMES_SEPARATOR.join(names).encode("utf-8", "surrogatepass"), np.uint8)


def split(array):
    text = array.tobytes().decode("utf-8", "surrogatepass")
    return text.split(NAMES_SEPARATOR) if text else []


def save(path, catalog):
    """Write `catalog` to `path`: a private temporary file renamed over it."""
    numbering, mark, saved = catalog.numbering, catalog.mark, catalog.saved
    uids = list(saved.times)
    empty = np.empty(0, dtype=np.int64)
    arrays = {
        "format": np.array([FORMAT]),
        "src": catalog.src,
        "t": catalog.t.astype(np.int64),
        "rowid": catalog.rowid,
        "counts": catalog.counts,
        "order": catalog.order,
        "sources": joined(numbering.sources),
        "source_owner": joined(numbering.source_owner),
        "owners": joined(numbering.owners),
        "columns": joined(sorted(mark.columns)),
        "mark": np.array(
            [mark.inode, mark.rowid, -1 if mark.change is None else mark.change, mark.tail],
            dtype=np.int64,
        ),
        "saved_uids": joined(uids),
        "saved_lengths": np.array([len(saved.times[u]) for u in uids], dtype=np.int64),
        "saved_times": np.concatenate([saved.times[u] for u in uids]) if uids else empty,
        "saved_rowids": np.concatenate([saved.rowids[u] for u in uids]) if uids else empty,
        "by_rowid": saved.by_rowid,
        "owner_of": saved.owner_of,
    }
    temporary = f"{path}.{os.getpid()}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(descriptor, 0o600)  # a file left by a crash keeps its mode otherwise
        with os.fdopen(descriptor, "wb") as stream:
            np.savez(stream, **arrays)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def load(path, lineage):
    """The Catalog saved at `path` (its key unknown: it is to be followed, never served
    as it is), or None when there is none that this viewer can read."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            if stored["format"].tolist() != [FORMAT]:
                return None
            return catalog_of(dict(stored.items()), lineage)
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile):
        return None


def catalog_of(stored, lineage):
    numbering = data.Numbering(
        {name: n for n, name in enumerate(split(stored["sources"]))},
        split(stored["sources"]),
        split(stored["source_owner"]),
        {uid: n for n, uid in enumerate(split(stored["owners"]))},
        split(stored["owners"]),
    )
    inode, rowid, change, tail = stored["mark"].tolist()
    columns = frozenset(split(stored["columns"]))
    mark = data.Mark(inode, rowid, None if change < 0 else change, columns, tail)
    uids, ends = split(stored["saved_uids"]), np.cumsum(stored["saved_lengths"]).tolist()
    starts = [0, *ends[:-1]]
    times = {u: stored["saved_times"][s:e] for u, s, e in zip(uids, starts, ends)}
    rowids = {u: stored["saved_rowids"][s:e] for u, s, e in zip(uids, starts, ends)}
    saved = data.Saved(times, rowids, stored["by_rowid"], stored["owner_of"])
    n = len(stored["rowid"])
    lengths = {len(stored[name]) for name in ("src", "t", "order", "counts")}
    if lengths != {n} or len(numbering.source_owner) != len(numbering.sources):
        raise ValueError("a snapshot whose arrays do not match")
    return data.Catalog(
        None,
        numbering.sources,
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


def behind(snapshot_mark, mark):
    """How many rows the database has moved on since the snapshot (roughly)."""
    return (mark.rowid - snapshot_mark.rowid) + ((mark.change or 0) - (snapshot_mark.change or 0))
