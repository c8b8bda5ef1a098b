"""Who is where on which problem: the pure computations behind the teacher views.

An assignment is a notebook's path relative to its owner's `notebooks` folder, so the same
assignment can be compared across students. A student's state at moment M is their latest
version of it saved at or before M. Times are whole seconds of local time (ints), as
the activity view's catalog keeps them. The first screen's rules (stuck, idle, working,
finished across every assignment) are class_at's.
"""

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

import make_database

ANSWERED = make_database.ANSWERED
# Outcome classes, in the order of their codes in the heatmap.
CLASSES = ("none", "empty", "non-empty", "answered", "error")
CODES = {name: code for code, name in enumerate(CLASSES)}
# Their colours wherever one is shown (heatmap, version view): Okabe-Ito, so error and
# answered differ without red and green.
CLASS_COLORS = {
    "none": "#ffffff",
    "empty": "#c8c8c8",
    "non-empty": "#f0e442",
    "answered": "#0072b2",
    "error": "#d55e00",
}


def plotly_text(text):
    """`text` as plotly shows it literally: its labels and titles read <b>, <br>, <a> and
    entities as markup, so a file named `a<b>.ipynb` needs escaping."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def outcome_class(result):
    """`answered` for execute_result / display_data / stream, else the result itself;
    `none` when there is no version (or the problem is not in it), `non-empty` for a
    result make_database does not write (a database from elsewhere)."""
    if result is None:
        return "none"
    if result in ANSWERED:
        return "answered"
    return result if result in CLASSES else "non-empty"


class Version:
    """One recorded version of an assignment: its time (seconds, local time), rowid, file
    name and {grade_id: result} in its own order. A History makes these when asked for,
    and looks a file name up by rowid only when it is read: it keeps no names."""

    __slots__ = ("t", "rowid", "outcomes", "known_filename", "lookup")

    def __init__(self, t, rowid, filename, outcomes, lookup=None):
        self.t, self.rowid, self.outcomes = t, rowid, outcomes
        self.known_filename, self.lookup = filename, lookup

    @property
    def filename(self):
        if self.known_filename is None and self.lookup is not None:
            self.known_filename = self.lookup(self.rowid)
        return self.known_filename

    def __eq__(self, other):
        mine = (self.t, self.rowid, self.filename, self.outcomes)
        return isinstance(other, Version) and mine == (
            other.t,
            other.rowid,
            other.filename,
            other.outcomes,
        )

    def __repr__(self):
        return f"Version({self.t}, {self.rowid}, {self.filename!r}, {self.outcomes!r})"


class Versions(Sequence):
    """One student's versions in a History, in time order, each made when indexed."""

    def __init__(self, history, start, end):
        self.history, self.start, self.end = history, start, end

    def __len__(self):
        return self.end - self.start

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self.history.version(self.start + index)

    def __eq__(self, other):
        return list(self) == list(other)


@dataclass(eq=False)
class Table:
    """The arrays behind a History, one entry per version, sorted by (student, t, rowid)."""

    uids: list  # the students, sorted
    owner: np.ndarray  # int32: index into uids
    t: np.ndarray  # int64: seconds, local time
    rowid: np.ndarray  # int64
    layout: np.ndarray  # int32: index into layouts
    results: np.ndarray  # uint8 (versions, columns): index into vocab, 0 = not in it
    columns: list  # the grade_id of each column of results: the problems first
    layouts: list  # tuples of grade_ids: the problems of a version, in its order
    vocab: list  # the results seen; vocab[0] is None (no such problem)


class History:
    """Every recorded version of one assignment, per student, as arrays (Table): about 30
    bytes and one byte per problem a version, where Python objects took ~1.1 KB, so a
    term of 1M versions fits one viewer worker. `versions[uid]` makes Version objects on
    demand; `bounds[uid]` are the student's rows of the table.

    History(assignment, problems, {uid: [Version]}) makes one from Versions (tests, the
    version view's own); load_history reads one from the database.
    """

    def __init__(
        self, assignment, problems, versions=None, table=None, lookup=None, names=None, classes=None
    ):
        self.assignment = assignment
        self.problems = list(problems)
        self.lookup = lookup  # rowid -> file name, when the names are not kept
        self.names = {} if names is None else names  # rowid -> file name, given or looked up
        if table is None:
            table = table_of_versions(self.problems, versions or {}, self.names)
        self.table = table
        self.column_of = {grade_id: i for i, grade_id in enumerate(table.columns)}
        if classes is None:  # read_history gives them when it could carry them over
            classes = np.take(class_codes(table.vocab), table.results[:, : len(self.problems)])
        self.classes = classes  # the outcome class code of each version's problem
        counts = np.bincount(table.owner, minlength=len(table.uids)).tolist()
        ends = np.cumsum(counts, dtype=np.int64).tolist()
        self.bounds = {u: (e - c, e) for u, c, e in zip(table.uids, counts, ends) if c}
        readable = table.t[table.t != NOT_A_TIME]
        self.base = int(readable.min()) - 1 if len(readable) else 0
        self.keys = None  # search_keys of every version, made when spans is first asked
        numbers = [n for n, c in enumerate(counts) if c]  # of the students in bounds
        self.firsts = (
            np.array([s for s, _ in self.bounds.values()], dtype=np.int64),
            np.array(numbers, dtype=np.int64),
        )

    @property
    def students(self):
        return sorted(self.bounds)

    @functools.cached_property
    def versions(self):
        """{uid: Versions}: made when first asked (the first screen never does)."""
        return {u: Versions(self, s, e) for u, (s, e) in self.bounds.items()}

    def filename(self, rowid):
        """The file name of one of its versions (looked up once, then kept)."""
        if rowid not in self.names and self.lookup is not None:
            self.names[rowid] = self.lookup(rowid)
        return self.names.get(rowid)

    def filenames(self, rowids):
        """{rowid: file name} of some of its versions, in one look-up when the lookup
        has `many` (the data layer's reads them in one query)."""
        missing = [rowid for rowid in rowids if rowid not in self.names]
        if missing and hasattr(self.lookup, "many"):
            self.names.update(self.lookup.many(missing))
        return {rowid: self.filename(rowid) for rowid in rowids}

    def version(self, row):
        """The Version in row `row` of the table."""
        table = self.table
        results = table.results[row].tolist()
        outcomes = {
            grade_id: table.vocab[results[self.column_of[grade_id]]]
            for grade_id in table.layouts[table.layout[row]]
        }
        rowid = int(table.rowid[row])
        return Version(int(table.t[row]), rowid, self.names.get(rowid), outcomes, self.filename)

    def row_at(self, uid, moment):
        """The table row of the student's latest version at or before `moment`, or None."""
        start, end = self.bounds.get(uid, (0, 0))
        index = int(np.searchsorted(self.table.t[start:end], moment, side="right"))
        return start + index - 1 if index else None

    def state_at(self, uid, moment):
        """The student's latest version saved at or before `moment`, or None."""
        row = self.row_at(uid, moment)
        return None if row is None else self.version(row)

    def outcome_at(self, uid, problem, moment):
        row = self.row_at(uid, moment)
        if row is None or problem not in self.column_of:
            return "none"
        return outcome_class(self.table.vocab[self.table.results[row, self.column_of[problem]]])

    def spans(self, moment, window_start):
        """(uids, first, start, end) of every student who saved a version by `moment`: the
        table row of their first version, and how many of their versions were saved by
        `window_start` and by `moment` (arrays), in one search over every student."""
        if self.keys is None:
            self.keys = self.search_keys(self.table.t)
        first, numbers = self.firsts
        end = np.searchsorted(self.keys, self.search_keys(moment, numbers), "right") - first
        start = np.searchsorted(self.keys, self.search_keys(window_start, numbers), "right")
        started = np.flatnonzero(end)
        uids = list(self.bounds)
        return (
            [uids[n] for n in started.tolist()],
            first[started],
            start[started] - first[started],
            end[started],
        )

    def search_keys(self, t, owner=None):
        """(student, time) as one sortable int64: the student's number times SPAN, plus
        the time since the earliest (0 for an unreadable time, which sorts first)."""
        owner = self.table.owner if owner is None else owner
        since = np.minimum(np.maximum(t, self.base) - self.base, SPAN - 1)
        return owner.astype(np.int64) * SPAN + since

    def owner_of(self, rowid):
        """The student whose version `rowid` is, or None."""
        rows = np.flatnonzero(self.table.rowid == rowid)
        return self.table.uids[self.table.owner[rows[0]]] if len(rows) else None

    def first_time(self):
        return int(self.table.t.min()) if len(self.table.t) else None


def class_codes(vocab):
    """The CODES of the outcome class of each result in `vocab`."""
    return np.array([CODES[outcome_class(r)] for r in vocab], dtype=np.uint8)


def table_of_versions(problems, versions, names):
    """The Table of {uid: [Version]} (each student's in time order); their file names go
    into `names`."""
    uids = sorted(versions)
    rows = [(n, v) for n, uid in enumerate(uids) for v in versions[uid]]
    layouts, vocab = {}, {None: 0}
    columns = list(problems)
    for _, version in rows:
        names[version.rowid] = version.filename
        layouts.setdefault(tuple(version.outcomes), len(layouts))
        columns += [g for g in version.outcomes if g not in columns]
        for result in version.outcomes.values():
            vocab.setdefault(result, len(vocab))
    column_of = {grade_id: i for i, grade_id in enumerate(columns)}
    results = np.zeros((len(rows), len(columns)), dtype=result_type(vocab))
    for i, (_, version) in enumerate(rows):
        for grade_id, result in version.outcomes.items():
            results[i, column_of[grade_id]] = vocab[result]
    return Table(
        uids,
        np.array([n for n, _ in rows], dtype=np.int32),
        np.array([v.t for _, v in rows], dtype=np.int64),
        np.array([v.rowid for _, v in rows], dtype=np.int64),
        np.array([layouts[tuple(v.outcomes)] for _, v in rows], dtype=np.int32),
        results,
        columns,
        list(layouts),
        list(vocab),
    )


SPAN = 1 << 36  # seconds: more than two thousand years of versions per student


def result_type(vocab):
    """The smallest unsigned type that holds an index into `vocab`."""
    return np.uint8 if len(vocab) <= 256 else np.uint16


# ---------------------------------------------------------------------------- assignments


def assignment_of(source, owner, prefixes):
    """`hoge/a/notebooks/pl01/pl01.ipynb` -> `pl01/pl01.ipynb` (None for unknown owners)."""
    prefix = prefixes.get(owner)
    if prefix is None or not source.startswith(prefix + "/"):
        return None
    return source[len(prefix) + 1 :]


def assignments(sources, owners, prefixes):
    """{assignment: [source index]} over the catalog's notebooks with a known owner."""
    found = {}
    for index, (source, owner) in enumerate(zip(sources, owners)):
        name = assignment_of(source, owner, prefixes)
        if name is not None:
            found.setdefault(name, []).append(index)
    return found


def problem_order(version_outcomes):
    """grade_ids in notebook order: those of the version with the most problems, then any
    others in the order first seen."""
    ordered = []
    for outcomes in sorted(version_outcomes, key=len, reverse=True):
        ordered += [grade_id for grade_id in outcomes if grade_id not in ordered]
    return ordered


# rowids go in as one JSON array parameter: nothing is formatted into the SQL.
VERSIONS_QUERY = """
SELECT s.rowid, s.filename, p.grade_id, p.result
FROM summary s LEFT JOIN problems p ON p.filename = s.filename
WHERE s.rowid IN (SELECT value FROM json_each(?))
ORDER BY s.rowid, p.rowid
"""


def load_history(conn, assignment, rows, previous=None, lookup=None):
    """The History of one assignment from [(uid, t, rowid)] and the problems table (see
    read_history)."""
    rows = list(rows)
    owners = sorted({uid for uid, _, _ in rows})
    number = {uid: n for n, uid in enumerate(owners)}
    return read_history(
        conn,
        assignment,
        owners,
        np.array([number[uid] for uid, _, _ in rows], dtype=np.int32),
        np.array([t for _, t, _ in rows], dtype=np.int64),
        np.array([rowid for _, _, rowid in rows], dtype=np.int64),
        previous,
        lookup,
    )


def read_history(
    conn, assignment, owners, owner, t, rowid, previous=None, lookup=None, places=None
):
    """The History of one assignment whose versions are (owners[owner[i]], t[i], rowid[i]).

    previous: this assignment's History read from the same database file before, or None.
    Its versions whose rowid is still there are reused (make_database gives a changed row
    a new rowid), so after a sync cycle only the new versions' problems are read. A
    database replaced by another file needs previous=None. lookup: rowid -> file name,
    when the History is not to keep every version's name (the data layer's). places: a
    RowPlaces that has noted `previous`, or None.
    """
    present = np.flatnonzero(np.bincount(owner, minlength=len(owners))).tolist()
    uids = sorted({owners[n] for n in present})
    place = {uid: n for n, uid in enumerate(uids)}
    rank = np.array([place.get(uid, -1) for uid in owners], dtype=np.int32)
    owner, t, rowid = rank[owner], np.asarray(t), np.asarray(rowid)
    if not in_order(owner, t, rowid):
        order = np.lexsort((rowid, t, owner))
        owner, t, rowid = owner[order], t[order], rowid[order]
    old = reused_rows(previous, rowid, places)
    new, kept, reused = np.flatnonzero(old < 0), np.flatnonzero(old >= 0), np.maximum(old, 0)
    layouts = {layout: n for n, layout in enumerate(previous.table.layouts if previous else [])}
    vocab = {r: n for n, r in enumerate(previous.table.vocab if previous else [None])}
    layout = np.zeros(len(rowid), dtype=np.int32)  # the new versions' come below
    if len(kept):
        layout = previous.table.layout.take(reused)
    names = {}
    if lookup is None:  # the History keeps every version's name
        if previous is not None:
            names = {r: previous.filename(r) for r in rowid[kept].tolist()}
        names.update(dict.fromkeys(rowid[new].tolist(), ""))
    number, states = read_states(conn, rowid[new], names if lookup is None else None)
    state_layout = [layouts.setdefault(grade_ids, len(layouts)) for grade_ids, _ in states]
    for _, found in states:
        for result in found:
            vocab.setdefault(result, len(vocab))
    layout[new] = np.array(state_layout, dtype=np.int32)[number]
    all_layouts = list(layouts)
    problems = problem_order(all_layouts[i] for i in first_appearances(layout).tolist())
    column_of = {grade_id: i for i, grade_id in enumerate(problems)}
    results = np.zeros((len(rowid), len(problems)), dtype=result_type(vocab))
    classes = None  # carried over with the results when their columns are the same
    if len(kept):
        carried = [
            (i, column_of[g]) for i, g in enumerate(previous.table.columns) if g in column_of
        ]
        source, target = zip(*carried) if carried else ((), ())
        if source == target == tuple(range(len(source))):  # the usual case: all, in place
            rows = previous.table.results.take(reused, axis=0)  # one gather
            results[:, : len(source)] = rows[:, : len(source)]  # the new ones' come below
            if len(source) == len(problems):
                classes = previous.classes.take(reused, axis=0)
        elif carried:
            results[np.ix_(kept, target)] = previous.table.results[old[kept]][:, source]
    state_results = np.zeros((len(states), len(problems)), dtype=results.dtype)
    for state, (grade_ids, found) in enumerate(states):
        for grade_id, result in zip(grade_ids, found):
            state_results[state, column_of[grade_id]] = vocab[result]
    results[new] = state_results[number]
    vocab = list(vocab)
    if classes is not None:
        classes[new] = np.take(class_codes(vocab), results[new])
    table = Table(uids, owner, t, rowid, layout, results, problems, all_layouts, vocab)
    return History(assignment, problems, table=table, lookup=lookup, names=names, classes=classes)


def first_appearances(values):
    """The distinct values of an int array in the order they first appear, looked for
    where a run of equal values starts only (a student's versions share a layout in runs)."""
    if not len(values):
        return values
    starts = np.flatnonzero(np.concatenate(([True], values[1:] != values[:-1])))
    distinct, first = np.unique(values[starts], return_index=True)
    return distinct[np.argsort(first)]


def same_rows(history, rowid, t):
    """True when the versions (rowid, t), in the catalog's order, are the History's own:
    its table keeps them in that order unless read_history had to sort them."""
    return np.array_equal(history.table.rowid, rowid) and np.array_equal(history.table.t, t)


def in_order(owner, t, rowid):
    """True when (owner, t, rowid) increase already (the catalog gives each student's
    versions in order, so a sort is needed only where local times repeat)."""
    if len(owner) < 2:
        return True
    same_owner, same_t = owner[1:] == owner[:-1], t[1:] == t[:-1]
    later_t = (t[1:] > t[:-1]) | same_t & (rowid[1:] > rowid[:-1])
    later = (owner[1:] > owner[:-1]) | same_owner & later_t
    return bool(later.all())


def reused_rows(previous, rowid, places=None):
    """For each of `rowid`, its row in the previous History's table, or -1.

    places: rowid -> row of the History that holds it, for many Histories at once (see
    RowPlaces), or None; a place is used only where the previous table's rowid there is
    the same, so one that is stale or of another History costs a read, never a wrong row.
    """
    old = np.full(len(rowid), -1, dtype=np.int64)
    previous_rowid = previous.table.rowid if previous is not None else ()
    if not len(previous_rowid) or not len(rowid):
        return old
    if places is None or places.partial:
        sorter = np.argsort(previous_rowid, kind="stable")  # timsort: nearly in order
        found_at = np.searchsorted(previous_rowid, rowid, sorter=sorter)
        candidates = sorter[np.minimum(found_at, len(sorter) - 1)]
    else:
        candidates = places.rows(rowid)
    candidates = np.where(candidates < len(previous_rowid), candidates, -1)
    found = (candidates >= 0) & (previous_rowid[np.maximum(candidates, 0)] == rowid)
    old[found] = candidates[found]
    return old


def dense(span, count):
    """True when an array as long as `span` (a range of rowids) is about as small as one of
    `count` versions (make_database's rowids are about as many as its rows), not more."""
    return span <= 4 * count + (1 << 20)


def row_ranges(starts, lengths):
    """The rows starts[i] to starts[i] + lengths[i] - 1 of every i, one range after the
    other, as one index array."""
    before = np.cumsum(lengths) - lengths  # the rows of the ranges before each
    return np.repeat(starts - before, lengths) + np.arange(lengths.sum())


class RowPlaces:
    """rowid -> the row that holds it in its assignment's History (-1: none noted), for
    every History a viewer keeps: each version is in one assignment only, so one array
    serves them all, and finding the versions a new History can take from the previous
    one is a gather, not a sort. Places are only hints (see reused_rows). The array is
    as long as the highest rowid: make_database's are about as many as the versions, and
    for rowids far above (a database renumbered by hand) it notes nothing more and is
    `partial`: reused_rows searches the previous History itself then."""

    def __init__(self):
        self.places = np.empty(0, dtype=np.int32)
        self.sizes = {}  # assignment -> versions of its History noted
        self.partial = False

    def rows(self, rowid):
        """The noted row of each of `rowid` (-1 where none is)."""
        places = self.places  # one array throughout, whatever note() does meanwhile
        if not len(places):
            return np.full(len(rowid), -1, dtype=np.int32)
        rows = places.take(rowid, mode="clip")
        if len(rowid) and (rowid.min() < 0 or rowid.max() >= len(places)):
            rows[(rowid < 0) | (rowid >= len(places))] = -1
        return rows

    def note(self, history):
        """Note the rows of `history`'s versions (or become partial)."""
        rowid = history.table.rowid
        self.sizes[history.assignment] = len(rowid)
        if not len(rowid) or self.partial:
            return
        top = int(rowid.max()) + 1
        if rowid.min() < 0 or not dense(top, sum(self.sizes.values())):
            self.partial = True
            return
        if top > len(self.places):
            grown = np.full(top + top // 4, -1, dtype=np.int32)  # room for the next commits
            grown[: len(self.places)] = self.places
            self.places = grown
        self.places[rowid] = np.arange(len(rowid), dtype=np.int32)


def read_states(conn, rowids, names=None):
    """(for each of `rowids`, the number of its state; the states): a state is (grade_ids,
    results) of a version's problems in the order it has them, ((), ()) for a row no
    longer recorded. Versions share a few states, so a term's million versions are read
    without a Python object kept for each. `names`, a dict or None, gets each one's file
    name."""
    rowids = np.asarray(rowids, dtype=np.int64)
    order = np.argsort(rowids, kind="stable")
    wanted = rowids[order].tolist()  # the query gives the rows in this order
    numbers = np.zeros(len(rowids), dtype=np.int32)
    states = {((), ()): 0}
    place = 0

    def note(rowid, outcomes):
        nonlocal place
        while wanted[place] != rowid:  # rows gone since the catalog was read: no state
            place += 1
        state = (tuple(outcomes), tuple(outcomes.values()))
        numbers[order[place]] = states.setdefault(state, len(states))
        place += 1

    for start in range(0, len(wanted), 50000):
        chunk = json.dumps(wanted[start : start + 50000])
        current, outcomes = None, {}
        for rowid, filename, grade_id, result in conn.execute(VERSIONS_QUERY, (chunk,)):
            if rowid != current:
                if current is not None:
                    note(current, outcomes)
                current, outcomes = rowid, {}
                if names is not None:
                    names[rowid] = filename
            if grade_id is not None:
                outcomes[grade_id] = result
        if current is not None:
            note(current, outcomes)
    return numbers, list(states)


# ---------------------------------------------------------------------------- heatmap


def heatmap(history, moment, students):
    """[[outcome class]] with a row per student and a column per problem, at `moment`."""
    nothing = ["none"] * len(history.problems)
    cells = []
    for uid in students:
        row = history.row_at(uid, moment)
        cells.append(nothing if row is None else [CLASSES[c] for c in history.classes[row]])
    return cells


def sort_students(history, moment, students, criteria, team_of, rank=None):
    """Rows order: progress (most answered first), errors (most first), name, team; ties
    and `name` by `rank(uid)` (default: the uid; Data.student_order without the names
    password)."""
    rank = rank or (lambda uid: uid)
    cells = dict(zip(students, heatmap(history, moment, students)))

    def count(uid, kind):
        return sum(1 for c in cells[uid] if c == kind)

    keys = {
        "progress": lambda uid: (-count(uid, "answered"), rank(uid)),
        "errors": lambda uid: (-count(uid, "error"), rank(uid)),
        "team": lambda uid: (team_of(uid), rank(uid)),
    }
    return sorted(students, key=keys.get(criteria, rank))


# ---------------------------------------------------------------------------- progress over time


def progress_series(history, times, students):
    """At each of `times`: students with each problem answered (problems x times), and
    the median, 25th and 75th percentile of answered problems per student."""
    answered = np.zeros((len(history.problems), len(times)), dtype=np.int32)
    per_student = np.zeros((len(students), len(times)), dtype=np.int32)
    for row, uid in enumerate(students):
        start, end = history.bounds.get(uid, (0, 0))
        ends = np.searchsorted(history.table.t[start:end], times, side="right")
        columns = np.flatnonzero(ends)
        if not len(columns):
            continue
        done = history.classes[start + ends[columns] - 1] == CODES["answered"]
        answered[:, columns] += done.T
        per_student[row, columns] = done.sum(axis=1)
    if not len(students):
        zeros = np.zeros(len(times))
        return answered, zeros, zeros, zeros
    q1, median, q3 = np.percentile(per_student, [25, 50, 75], axis=0)
    return answered, median, q1, q3


# ---------------------------------------------------------------------------- the class at M
#
# The first screen's rules (DESIGN.md, "The first screen"), across every assignment:
# - stuck on problem p of assignment A: p is `error` in the student's state of A at M - N
#   and in every version of A they saved in (M - N, M]; since = the first version of that
#   unbroken run of errors.
# - idle: saved something (any file) at or before M - N, nothing at all in (M - N, M],
#   while at least half of the students who saved anything by M saved something in
#   (M - N, M]; and not finished. since = their last save of any file. Stuck wins.
# - finished: at least one assignment started by M, and every problem of every assignment
#   started by M is answered at M.
# - working: everyone else who saved anything by M. Students with no save by M are not
#   counted.

KINDS = ("stuck", "idle", "working", "finished")  # class_status order; a student has one
ERROR_CODE, ANSWERED_CODE = CODES["error"], CODES["answered"]


@dataclass
class Saves:
    """Every recorded version of any file (notebook or not) per student, by time: when
    each student saved anything, whatever the assignment. File names are looked up by
    rowid when asked for (a term has a million of them)."""

    times: dict  # uid -> int64 array of t, sorted (seconds, local time)
    rowids: dict  # uid -> int64 array of rowids, in the order of times
    lookup: object  # rowid -> file name

    def count(self, uid, after, until):
        """How many saves of `uid` fall in (after, until]."""
        times = self.times.get(uid)
        if times is None:
            return 0
        return int(np.searchsorted(times, until, "right") - np.searchsorted(times, after, "right"))

    def last(self, uid, moment):
        """(t, rowid, filename) of the student's last save at or before `moment`, or None."""
        times = self.times.get(uid)
        index = 0 if times is None else int(np.searchsorted(times, moment, "right"))
        if not index:
            return None
        rowid = int(self.rowids[uid][index - 1])
        return int(times[index - 1]), rowid, self.lookup(rowid)


def saves_of(rows):
    """Saves from [(uid, t, rowid, filename)] in any order (t in seconds)."""
    rows = list(rows)
    if not rows:
        return Saves({}, {}, {}.get)
    uids, times, rowids, filenames = zip(*rows)
    names = dict(zip(rowids, filenames))
    return grouped_saves(uids, np.asarray(times, np.int64), np.asarray(rowids, np.int64), names.get)


def grouped_saves(uids, times, rowids, lookup):
    """Saves from parallel sequences, one sort for all students (numpy, not per row)."""
    names, owner = np.unique(np.asarray(uids, dtype=str), return_inverse=True)
    order = np.lexsort((rowids, times, owner))
    bounds = np.searchsorted(owner[order], np.arange(len(names) + 1)).tolist()
    times, rowids = times[order], rowids[order]
    saves = Saves({}, {}, lookup)
    for number, uid in enumerate(names.tolist()):
        start, end = bounds[number], bounds[number + 1]
        saves.times[uid] = times[start:end]
        saves.rowids[uid] = rowids[start:end]
    return saves


# Every version of every file whose owner users.csv knows; `unknown` is make_database's
# owner of the others.
SAVES_QUERY = "SELECT owner, t, rowid, filename FROM summary WHERE owner != ?"


def load_saves(conn, unknown_owner="unknown"):
    """The Saves recorded in the database (names kept: for small databases and tests); a
    row whose time cannot be read is left out."""
    rows = conn.execute(SAVES_QUERY, (unknown_owner,)).fetchall()
    if not rows:
        return Saves({}, {}, {}.get)
    owners, texts, rowids, filenames = zip(*rows)
    seconds = seconds_of(texts)
    readable = np.flatnonzero(seconds != NOT_A_TIME)
    return grouped_saves(
        [owners[i] for i in readable],
        seconds[readable],
        np.asarray(rowids, np.int64)[readable],
        dict(zip(rowids, filenames)).get,
    )


NOT_A_TIME = np.iinfo(np.int64).min  # also what numpy makes of NaT


def to_seconds(text):
    """`2021-10-17T18:26:14` -> seconds of local time; NOT_A_TIME when it is not one."""
    try:
        return int(np.datetime64(text, "s").astype(np.int64))
    except (ValueError, TypeError):
        return NOT_A_TIME


def seconds_of(texts):
    """to_seconds of many, in one numpy pass unless one of them is not a time."""
    try:
        return np.array(texts, dtype="datetime64[s]").astype(np.int64)
    except (ValueError, TypeError):
        return np.array([to_seconds(text) for text in texts], dtype=np.int64)


def pseudonyms(uids):
    """{uid: `student N`}, N the uid's place (1-based) in `uids`, users.csv's order: the
    one name of a masked student in every view."""
    return {uid: f"student {number}" for number, uid in enumerate(uids, start=1)}


@dataclass
class ClassAt:
    """The class at moment M: the stuck and idle rows and how many students are in each
    kind, overall and per assignment."""

    rows: list  # row dicts (see flag_row), longest first
    status: dict  # kind -> students, every kind of KINDS
    by_assignment: dict  # assignment -> kind -> students who started it by M
    kind_of: dict  # uid -> kind, for every counted student


def class_at(histories, saves, moment, minutes, students=None):
    """The ClassAt at `moment` (seconds) with a window of N = `minutes`.

    histories: {assignment: History}, every assignment; saves: Saves of every student.
    students: the uids to list and count (the page's filter), None for all; whether the
    class saved recently enough for anyone to be idle is judged on every student, so a
    filter never changes who is idle.
    """
    window_start = moment - minutes * 60
    students = None if students is None else set(students)
    saved = [uid for uid in saves.times if saves.count(uid, NOT_A_TIME, moment)]
    recent = sum(1 for uid in saved if saves.count(uid, window_start, moment))
    class_is_saving = 2 * recent >= len(saved)
    rows, kind_of, by_assignment = [], {}, {a: dict.fromkeys(KINDS, 0) for a in histories}
    states_of = [assignment_states(h, moment, window_start) for h in histories.values()]
    for uid in saved:
        if students is not None and uid not in students:
            continue
        states = [found[uid] for found in states_of if uid in found]
        stuck = [r for state in states for r in state.stuck_rows]
        finished = bool(states) and all(state.finished for state in states)
        idle = (
            not stuck
            and not finished
            and class_is_saving
            and saves.count(uid, NOT_A_TIME, window_start) > 0
            and saves.count(uid, window_start, moment) == 0
        )
        if stuck:
            rows += stuck
            kind_of[uid] = "stuck"
        elif idle:
            rows.append(idle_row(uid, states, saves.last(uid, moment)))
            kind_of[uid] = "idle"
        else:
            kind_of[uid] = "finished" if finished else "working"
        for state in states:
            by_assignment[state.assignment][state.kind(kind_of[uid])] += 1
    for row in rows:
        row["minutes"] = (moment - row["since"]) // 60
    name_stuck_rows(histories, rows)
    rows.sort(key=lambda r: (r["since"], r["student"], *problem_place(histories, r)))
    status = dict.fromkeys(KINDS, 0)
    for kind in kind_of.values():
        status[kind] += 1
    return ClassAt(rows, status, by_assignment, kind_of)


@dataclass
class AssignmentState:
    """One student's state of one assignment they started by M."""

    assignment: str
    problems: list  # the assignment's grade_ids in notebook order
    latest_t: int  # when their state at M was saved
    codes: bytes  # its outcome codes, one per problem
    stuck_rows: list  # a row per problem they are stuck on

    @property
    def finished(self):
        return self.codes.count(ANSWERED_CODE) == len(self.codes)

    def kind(self, student_kind):
        """The student's kind on this assignment: stuck only on the one they are stuck
        on, idle on the ones they left unfinished, else finished or working on it."""
        if self.stuck_rows:
            return "stuck"
        if self.finished:
            return "finished"
        return "idle" if student_kind == "idle" else "working"


def assignment_states(history, moment, window_start):
    """{uid: AssignmentState} at M of the students who started the assignment by then, in
    a few array operations for all of them. A student is stuck on the problems that are
    errors in every one of their versions from their state at M - N (they must have one)
    to their state at M, since the first error of that unbroken run."""
    uids, first, start, end = history.spans(moment, window_start)
    latest = first + end - 1
    codes = history.classes[latest]
    stuck = np.zeros(codes.shape, dtype=bool)
    maybe = np.flatnonzero((start > 0) & (codes == ERROR_CODE).any(axis=1))
    if len(maybe):
        lows = first[maybe] + start[maybe] - 1  # the state at M - N
        lengths = latest[maybe] - lows + 1
        errors = history.classes[row_ranges(lows, lengths)] == ERROR_CODE
        stuck[maybe] = np.logical_and.reduceat(errors, np.cumsum(lengths) - lengths, axis=0)
    stuck_rows = {}
    students, orders = np.nonzero(stuck)
    runs = error_run_starts(history, orders, first[students], first[students] + start[students] - 1)
    since, rowids = history.table.t[runs].tolist(), history.table.rowid[runs].tolist()
    for n, order, t, rowid in zip(students.tolist(), orders.tolist(), since, rowids):
        row = flag_row(
            uids[n], history.assignment, history.problems[order], "stuck", t, rowid, None
        )
        stuck_rows.setdefault(n, []).append(row)
    latest_t, width, every_code = history.table.t[latest].tolist(), codes.shape[1], codes.tobytes()
    return {
        uid: AssignmentState(
            history.assignment,
            history.problems,
            latest_t[n],
            every_code[n * width : (n + 1) * width],
            stuck_rows.get(n, []),
        )
        for n, uid in enumerate(uids)
    }


def error_run_starts(history, orders, firsts, rows):
    """For each (problem orders[i], table row rows[i]), an error: the row where the
    unbroken run of errors on that problem that holds the row starts, no earlier than
    firsts[i] (the student's first version). All of them a version back at a time."""
    rows = rows.copy()
    while True:
        earlier = np.maximum(rows - 1, 0)
        back = (rows > firsts) & (history.classes[earlier, orders] == ERROR_CODE)
        if not back.any():
            return rows
        rows[back] -= 1


def name_stuck_rows(histories, rows):
    """Fill in the stuck rows' file names, one look-up per assignment."""
    stuck = {}
    for row in rows:
        if row["kind"] == "stuck":
            stuck.setdefault(row["assignment"], []).append(row)
    for assignment, found in stuck.items():
        names = histories[assignment].filenames({r["rowid"] for r in found})
        for row in found:
            row["filename"] = names[row["rowid"]]


def idle_row(uid, states, last_save):
    """The idle row of `uid`: the first unanswered problem of the unfinished assignment
    they saved last (none when they started no assignment), since their last save of any
    file, whose version the row links."""
    unfinished = [state for state in states if not state.finished]
    assignment, problem = "", ""
    if unfinished:
        state = max(unfinished, key=lambda s: (s.latest_t, s.assignment))
        order = next(i for i, code in enumerate(state.codes) if code != ANSWERED_CODE)
        assignment, problem = state.assignment, state.problems[order]
    t, rowid, filename = last_save
    return flag_row(uid, assignment, problem, "idle", t, rowid, filename)


def problem_place(histories, row):
    """(assignment, the problem's place in it): rows of one student and time go in
    notebook order."""
    history = histories.get(row["assignment"])
    problems = history.problems if history else []
    return row["assignment"], problems.index(row["problem"]) if row["problem"] in problems else 0


def flag_row(uid, assignment, problem, kind, since, rowid, filename):
    """One row of the stuck and idle list (`minutes` is added by class_at)."""
    return {
        "student": uid,
        "assignment": assignment,
        "problem": problem,
        "kind": kind,
        "since": since,
        "rowid": rowid,
        "filename": filename,
    }


def status_text(status):
    """`2 stuck, 1 idle, 30 working, 5 finished`."""
    return ", ".join(f"{status[kind]} {kind}" for kind in KINDS)
