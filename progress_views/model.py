"""Who is where on which problem: the pure computations behind the teacher views.

An assignment is a notebook's path relative to its owner's `notebooks` folder, so the same
assignment can be compared across students. A student's state at moment M is their latest
version of it saved at or before M. Times are whole seconds of local time (ints), as
the activity view's catalog keeps them. The first screen's rules (stuck, idle, working,
finished across every assignment) are class_at's.
"""

import bisect
import json
from dataclasses import dataclass, field

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


@dataclass
class Version:
    t: int  # seconds, local time
    rowid: int
    filename: str
    outcomes: dict  # grade_id -> problems.result, in notebook order


@dataclass
class History:
    """Every recorded version of one assignment, per student."""

    assignment: str
    problems: list  # grade_ids in notebook order
    versions: dict  # uid -> [Version] by time
    times: dict = field(default_factory=dict)  # uid -> [t], for bisect
    code_cache: dict = field(default_factory=dict, repr=False)  # (uid, index) -> code

    def __post_init__(self):
        self.times = {uid: [v.t for v in vs] for uid, vs in self.versions.items()}

    @property
    def students(self):
        return sorted(self.versions)

    def state_at(self, uid, moment):
        """The student's latest version saved at or before `moment`, or None."""
        index = bisect.bisect_right(self.times.get(uid, []), moment)
        return self.versions[uid][index - 1] if index else None

    def outcome_at(self, uid, problem, moment):
        version = self.state_at(uid, moment)
        return outcome_class(version.outcomes.get(problem) if version else None)

    def code(self, uid, index):
        """The outcome codes of the student's version `index`: one byte per problem, its
        CLASSES index. Made when first asked for, so a view pays for the versions it
        looks at, not for the whole history."""
        key = (uid, index)
        if key not in self.code_cache:
            outcomes = self.versions[uid][index].outcomes
            self.code_cache[key] = bytes(
                [CODES[outcome_class(outcomes.get(p))] for p in self.problems]
            )
        return self.code_cache[key]

    def first_time(self):
        return min((vs[0].t for vs in self.versions.values() if vs), default=None)


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


def load_history(conn, assignment, rows, previous=None):
    """The History of one assignment from [(uid, t, rowid)] and the problems table.

    previous: this assignment's History read from the same database file before its last
    change, or None. Its versions whose (rowid, t) are still in `rows` are reused, so after
    a sync cycle only the new versions are read (make_database gives a changed row a new
    rowid or time). A database replaced by another file needs previous=None.
    """
    known = {}
    if previous is not None:
        known = {(v.rowid, v.t): v for vs in previous.versions.values() for v in vs}
    rows = sorted((uid, int(t), int(rowid)) for uid, t, rowid in rows)
    read = read_versions(conn, [rowid for _, t, rowid in rows if (rowid, t) not in known])
    versions = {}
    for uid, t, rowid in rows:
        version = known.get((rowid, t))
        if version is None:
            filename, outcomes = read.get(rowid, ("", {}))
            version = Version(t, rowid, filename, outcomes)
        versions.setdefault(uid, []).append(version)
    # the distinct lists of grade_ids, in the order first seen, are enough to order them
    seen = {tuple(v.outcomes): None for vs in versions.values() for v in vs}
    return History(assignment, problem_order(seen), versions)


def read_versions(conn, rowids):
    """{rowid: (filename, {grade_id: result})} of these summary rows."""
    found = {}
    for start in range(0, len(rowids), 50000):
        chunk = json.dumps(rowids[start : start + 50000])
        for rowid, filename, grade_id, result in conn.execute(VERSIONS_QUERY, (chunk,)):
            entry = found.setdefault(rowid, (filename, {}))
            if grade_id is not None:
                entry[1][grade_id] = result
    return found


# ---------------------------------------------------------------------------- heatmap


def heatmap(history, moment, students):
    """[[outcome class]] with a row per student and a column per problem, at `moment`."""
    return [[history.outcome_at(uid, p, moment) for p in history.problems] for uid in students]


def sort_students(history, moment, students, criteria, team_of):
    """Rows order: progress (most answered first), errors (most first), name, team."""
    cells = dict(zip(students, heatmap(history, moment, students)))

    def count(uid, kind):
        return sum(1 for c in cells[uid] if c == kind)

    keys = {
        "progress": lambda uid: (-count(uid, "answered"), uid),
        "errors": lambda uid: (-count(uid, "error"), uid),
        "team": lambda uid: (team_of(uid), uid),
    }
    return sorted(students, key=keys.get(criteria, lambda uid: uid))


# ---------------------------------------------------------------------------- progress over time


def progress_series(history, times, students):
    """At each of `times`: students with each problem answered (problems x times), and
    the median, 25th and 75th percentile of answered problems per student."""
    answered = np.zeros((len(history.problems), len(times)), dtype=np.int32)
    per_student = np.zeros((len(students), len(times)), dtype=np.int32)
    for row, uid in enumerate(students):
        ends = np.searchsorted(history.times.get(uid, []), times, side="right")
        columns = np.flatnonzero(ends)
        if not len(columns):
            continue
        codes = b"".join(history.code(uid, int(end) - 1) for end in ends[columns])
        done = np.frombuffer(codes, np.uint8).reshape(len(columns), -1) == CODES["answered"]
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
    each student saved anything, whatever the assignment."""

    times: dict  # uid -> [t] sorted, seconds, local time
    rowids: dict  # uid -> [rowid], in the order of times
    filenames: dict  # uid -> [filename], in the order of times

    def count(self, uid, after, until):
        """How many saves of `uid` fall in (after, until]."""
        times = self.times.get(uid, [])
        return bisect.bisect_right(times, until) - bisect.bisect_right(times, after)

    def last(self, uid, moment):
        """(t, rowid, filename) of the student's last save at or before `moment`, or None."""
        index = bisect.bisect_right(self.times.get(uid, []), moment)
        if not index:
            return None
        return (
            self.times[uid][index - 1],
            self.rowids[uid][index - 1],
            self.filenames[uid][index - 1],
        )


def saves_of(rows):
    """Saves from [(uid, t, rowid, filename)] in any order (t in seconds)."""
    rows = list(rows)
    if not rows:
        return Saves({}, {}, {})
    uids, times, rowids, filenames = zip(*rows)
    return grouped_saves(uids, np.asarray(times, np.int64), np.asarray(rowids, np.int64), filenames)


def grouped_saves(uids, times, rowids, filenames):
    """Saves from parallel sequences, one sort for all students (numpy, not per row)."""
    names, owner = np.unique(np.asarray(uids, dtype=str), return_inverse=True)
    order = np.lexsort((rowids, times, owner))
    bounds = np.searchsorted(owner[order], np.arange(len(names) + 1)).tolist()
    ordered = (times[order].tolist(), rowids[order].tolist(), [filenames[i] for i in order])
    saves = Saves({}, {}, {})
    for number, uid in enumerate(names.tolist()):
        start, end = bounds[number], bounds[number + 1]
        saves.times[uid] = ordered[0][start:end]
        saves.rowids[uid] = ordered[1][start:end]
        saves.filenames[uid] = ordered[2][start:end]
    return saves


# Every version of every file whose owner users.csv knows; `unknown` is make_database's
# owner of the others.
SAVES_QUERY = "SELECT owner, t, rowid, filename FROM summary WHERE owner != ?"


def load_saves(conn, unknown_owner="unknown"):
    """The Saves recorded in the database; a row whose time cannot be read is left out."""
    rows = conn.execute(SAVES_QUERY, (unknown_owner,)).fetchall()
    if not rows:
        return Saves({}, {}, {})
    owners, texts, rowids, filenames = zip(*rows)
    seconds = seconds_of(texts)
    readable = np.flatnonzero(seconds != NOT_A_TIME)
    return grouped_saves(
        [owners[i] for i in readable],
        seconds[readable],
        np.asarray(rowids, np.int64)[readable],
        [filenames[i] for i in readable],
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
    for uid in saved:
        if students is not None and uid not in students:
            continue
        states = student_states(histories, uid, moment, window_start)
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
    latest: Version  # their state at M
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


def student_states(histories, uid, moment, window_start):
    """The AssignmentStates of `uid` at `moment`, one per assignment started by then."""
    states = []
    for assignment, history in histories.items():
        times = history.times.get(uid, [])
        end = bisect.bisect_right(times, moment)
        if not end:
            continue
        start = bisect.bisect_right(times, window_start)
        stuck = [
            stuck_row(history, uid, order, first_of_error_run(history, uid, order, start - 1))
            for order in stuck_problems(history, uid, start, end)
        ]
        latest = history.versions[uid][end - 1]
        codes = history.code(uid, end - 1)
        states.append(AssignmentState(assignment, history.problems, latest, codes, stuck))
    return states


def stuck_problems(history, uid, start, end):
    """The places of the problems that are errors in version start - 1 (the state at
    M - N) and in every version up to `end` (the state at M); none when start is 0."""
    latest = history.code(uid, end - 1)
    if not start or ERROR_CODE not in latest:
        return []
    window = [history.code(uid, index) for index in range(start - 1, end)]
    return [
        order
        for order, code in enumerate(latest)
        if code == ERROR_CODE and all(codes[order] == ERROR_CODE for codes in window)
    ]


def stuck_row(history, uid, order, first):
    version = history.versions[uid][first]
    problem = history.problems[order]
    return flag_row(
        uid, history.assignment, problem, "stuck", version.t, version.rowid, version.filename
    )


def first_of_error_run(history, uid, order, index):
    """The index of the first version of the unbroken run of errors on problem `order`
    that contains the student's version `index`."""
    while index and history.code(uid, index - 1)[order] == ERROR_CODE:
        index -= 1
    return index


def idle_row(uid, states, last_save):
    """The idle row of `uid`: the first unanswered problem of the unfinished assignment
    they saved last (none when they started no assignment), since their last save of any
    file, whose version the row links."""
    unfinished = [state for state in states if not state.finished]
    assignment, problem = "", ""
    if unfinished:
        state = max(unfinished, key=lambda s: (s.latest.t, s.assignment))
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
