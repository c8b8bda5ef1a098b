"""Who is where on which problem: the pure computations behind the teacher views.

An assignment is a notebook's path relative to its owner's `notebooks` folder, so the same
assignment can be compared across students. A student's state at moment M is their latest
version of it saved at or before M. Times are whole seconds of local time (numpy int64),
as the activity view's catalog keeps them.
"""

import bisect
import json
from dataclasses import dataclass, field

import numpy as np

ANSWERED = ("execute_result", "display_data", "stream")
# Outcome classes, in the order of their codes in the heatmap.
CLASSES = ("none", "empty", "non-empty", "answered", "error")
CLASS_COLORS = {
    "none": "#ffffff",
    "empty": "#d0d0d0",
    "non-empty": "#f2d43d",
    "answered": "#3c9e3c",
    "error": "#d62728",
}


def plotly_text(text):
    """`text` as plotly shows it literally: its labels and titles read <b>, <br>, <a> and
    entities as markup, so a file named `a<b>.ipynb` needs escaping."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def outcome_class(result):
    """`answered` for execute_result / display_data / stream, else the result itself;
    `none` when there is no version (or the problem is not in it)."""
    if result is None:
        return "none"
    return "answered" if result in ANSWERED else result


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


def load_history(conn, assignment, rows):
    """The History of one assignment from [(uid, t, rowid)] and the problems table."""
    by_rowid = {}
    rowids = [int(rowid) for _, _, rowid in rows]
    for start in range(0, len(rowids), 50000):
        chunk = json.dumps(rowids[start : start + 50000])
        for rowid, filename, grade_id, result in conn.execute(VERSIONS_QUERY, (chunk,)):
            entry = by_rowid.setdefault(rowid, (filename, {}))
            if grade_id is not None:
                entry[1][grade_id] = result
    versions = {}
    for uid, t, rowid in sorted(rows, key=lambda row: (row[0], row[1], row[2])):
        filename, outcomes = by_rowid.get(int(rowid), ("", {}))
        versions.setdefault(uid, []).append(Version(int(t), int(rowid), filename, outcomes))
    order = problem_order(v.outcomes for vs in versions.values() for v in vs)
    return History(assignment, order, versions)


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
        for column, moment in enumerate(times):
            version = history.state_at(uid, moment)
            if version is None:
                continue
            for index, problem in enumerate(history.problems):
                if outcome_class(version.outcomes.get(problem)) == "answered":
                    answered[index, column] += 1
                    per_student[row, column] += 1
    if not len(students):
        zeros = np.zeros(len(times))
        return answered, zeros, zeros, zeros
    q1, median, q3 = np.percentile(per_student, [25, 50, 75], axis=0)
    return answered, median, q1, q3


# ---------------------------------------------------------------------------- stuck and idle


def error_run_start(history, uid, problem, moment):
    """The first version of the unbroken run of `error` on `problem` ending at `moment`."""
    index = bisect.bisect_right(history.times[uid], moment)
    start = None
    for version in reversed(history.versions[uid][:index]):
        if outcome_class(version.outcomes.get(problem)) != "error":
            break
        start = version
    return start


def stuck_and_idle(history, moment, minutes, students):
    """Rows {student, kind, problem, since, rowid, filename} at `moment` with a window of
    `minutes`, the version being the one the row's time is that of.

    Stuck on p: p is `error` in the state at M - N and in every version saved in
    (M - N, M]. Idle: unanswered problems remain, no version saved in (M - N, M], while at
    least half of the class (students with a version by M) saved one then.
    """
    window_start = moment - minutes * 60
    rows, class_size, saved_recently = [], 0, set()
    for uid in students:
        times = history.times.get(uid, [])
        if not times or times[0] > moment:
            continue
        class_size += 1
        lo, hi = bisect.bisect_right(times, window_start), bisect.bisect_right(times, moment)
        if hi > lo:
            saved_recently.add(uid)
        before = history.state_at(uid, window_start)
        if before is None:
            continue
        recent = history.versions[uid][lo:hi]
        for problem in history.problems:
            versions = [before, *recent]
            if all(outcome_class(v.outcomes.get(problem)) == "error" for v in versions):
                start = error_run_start(history, uid, problem, moment)
                rows.append(row(uid, "stuck", problem, start))
    for uid in students:
        latest = history.state_at(uid, moment)
        if latest is None or uid in saved_recently or 2 * len(saved_recently) < class_size:
            continue
        unanswered = [
            p for p in history.problems if outcome_class(latest.outcomes.get(p)) != "answered"
        ]
        if unanswered:
            rows.append(row(uid, "idle", unanswered[0], latest))
    return rows


def row(uid, kind, problem, version):
    return {
        "student": uid,
        "kind": kind,
        "problem": problem,
        "since": version.t,
        "rowid": version.rowid,
        "filename": version.filename,
    }
