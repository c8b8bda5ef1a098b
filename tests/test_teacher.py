"""The teacher views: state at M, heatmap, progress, stuck and idle, version view; and a
simulated 90-minute lab of 44 students synced by the real rsync_notebooks.py."""

import os
import time

import numpy as np
import pytest
from conftest import ACCESS_TOKEN, private_access_db, sync
from demo_course import (
    error_output,
    execute_result,
    grade_cell,
    make_course,
    notebook,
    outcome_at,
    plain_outcome,
    write_course_at,
    write_users_csv,
)

import progress_viewer as pv
from progress_views import access, model, problems, version
from progress_views import notebook as nbview
from progress_views.data import Data

MINUTE = 60


def history(plans):
    """A History from {uid: [(minute, {grade_id: result})]}."""
    versions = {
        uid: [model.Version(m * MINUTE, hash((uid, m)) % 10**6, f"{uid}/{m}", o) for m, o in vs]
        for uid, vs in plans.items()
    }
    problems_seen = model.problem_order(v.outcomes for vs in versions.values() for v in vs)
    return model.History("pl01.ipynb", problems_seen, versions)


E, A, W = "error", "execute_result", "non-empty"


# ---------------------------------------------------------------------------- pure parts


def test_state_at_is_the_latest_version_at_or_before_m():
    h = history({"a": [(1, {"p": W}), (5, {"p": E}), (9, {"p": A})]})
    assert h.state_at("a", 0) is None
    assert h.outcome_at("a", "p", 0) == "none"
    assert h.outcome_at("a", "p", 5 * MINUTE) == "error"
    assert h.outcome_at("a", "p", 8 * MINUTE) == "error"
    assert h.outcome_at("a", "p", 9 * MINUTE) == "answered"


def test_heatmap_cells_and_problem_order():
    h = history({"a": [(1, {"p1": A, "p2": E, "p3": "empty"})], "b": [(2, {"p1": W})]})
    assert h.problems == ["p1", "p2", "p3"]
    assert model.heatmap(h, 10 * MINUTE, ["a", "b", "c"]) == [
        ["answered", "error", "empty"],
        ["non-empty", "none", "none"],
        ["none", "none", "none"],
    ]


def test_sort_by_progress_and_errors():
    h = history(
        {
            "a": [(1, {"p1": A, "p2": E})],
            "b": [(1, {"p1": A, "p2": A})],
            "c": [(1, {"p1": E, "p2": E})],
        }
    )
    assert model.sort_students(h, MINUTE, ["a", "b", "c"], "progress", str) == ["b", "a", "c"]
    assert model.sort_students(h, MINUTE, ["a", "b", "c"], "errors", str) == ["c", "a", "b"]


def flagged(h, moment, minutes):
    """class_at's rows of one assignment, every version of it being a save."""
    saves = model.saves_of(
        (uid, v.t, v.rowid, v.filename) for uid, vs in h.versions.items() for v in vs
    )
    rows = model.class_at({h.assignment: h}, saves, moment, minutes).rows
    return [(r["student"], r["kind"], r["problem"], r["since"]) for r in rows]


def test_stuck_needs_the_error_at_m_minus_n_and_in_every_later_version():
    h = history(
        {
            "stuck": [(0, {"p": W}), (5, {"p": E}), (15, {"p": E}), (25, {"p": E})],
            "fixed": [(0, {"p": W}), (5, {"p": E}), (22, {"p": A}), (26, {"p": W})],
            "late": [(0, {"p": W}), (21, {"p": E}), (27, {"p": W})],
        }
    )
    assert flagged(h, 30 * MINUTE, 10) == [("stuck", "stuck", "p", 5 * MINUTE)]


def test_idle_when_most_of_the_class_saved_but_they_did_not():
    busy = {f"s{i}": [(0, {"p": W}), (25, {"p": W})] for i in range(3)}
    h = history({**busy, "quiet": [(0, {"p": W})], "done": [(0, {"p": A})]})
    assert flagged(h, 30 * MINUTE, 10) == [("quiet", "idle", "p", 0)]
    # when most of the class is quiet too, nobody is idle
    h = history(
        {"s0": [(0, {"p": W}), (25, {"p": W})], "quiet": [(0, {"p": W})], "q2": [(0, {"p": W})]}
    )
    assert flagged(h, 30 * MINUTE, 10) == []


def test_progress_series_counts_answered_per_problem_and_quartiles():
    h = history({"a": [(0, {"p1": A, "p2": W})], "b": [(5, {"p1": A, "p2": A})]})
    answered, median, q1, q3 = model.progress_series(h, [0, 10 * MINUTE], ["a", "b"])
    assert answered.tolist() == [[1, 2], [0, 1]]
    assert median.tolist() == [0.5, 1.5] and q1.tolist() == [0.25, 1.25]


def test_assignment_is_the_path_under_the_owners_folder():
    prefixes = {"a": "hoge/a/notebooks"}
    assert (
        model.assignment_of("hoge/a/notebooks/pl01/pl01.ipynb", "a", prefixes) == "pl01/pl01.ipynb"
    )
    assert model.assignment_of("hoge/a/notebooks/x.ipynb", "unknown", prefixes) is None


# ---------------------------------------------------------------------------- the version view


def test_paths_outside_the_destination_are_refused(tmp_path):
    dest = tmp_path / "dest"
    (dest / "a").mkdir(parents=True)
    (tmp_path / "secret.ipynb").write_text("{}")
    os.symlink(tmp_path / "secret.ipynb", dest / "a" / "link.ipynb")
    for name in ("../secret.ipynb", "a/link.ipynb", "/etc/passwd", "a/../../secret.ipynb"):
        with pytest.raises(nbview.OutsideDestination):
            nbview.confined_path(str(dest), name)
    assert nbview.confined_path(str(dest), "a/x.ipynb") == str(dest / "a" / "x.ipynb")


def test_render_shows_code_outputs_tracebacks_without_ansi_and_grades(tmp_path):
    from plotly.io.json import to_json_plotly

    nb = notebook(
        [
            grade_cell("1/0", "q1", [error_output("ZeroDivisionError", "division by zero")]),
            grade_cell("1", "q2", [execute_result("1")]),
        ]
    )
    shown = nbview.Notebook(nb["cells"], len(nb["cells"]))
    rendered = to_json_plotly(nbview.render_notebook(shown, {"q1": "error", "q2": A}))
    assert "q1: error" in rendered and "q2: answered" in rendered
    assert "ZeroDivisionError" in rendered and "\\u001b[" not in rendered


def test_cell_diff_lists_changed_cells():
    before = notebook([grade_cell("x = 1", "q1"), grade_cell("", "q2")])["cells"]
    after = notebook([grade_cell("x = 2", "q1", [execute_result("2")]), grade_cell("", "q2")])[
        "cells"
    ]
    diff = nbview.cell_diff(nbview.Notebook(before, 2), nbview.Notebook(after, 2))
    assert [(change.label, change.status) for change in diff.changes] == [("q1", "changed")]
    assert "-x = 1" in diff.changes[0].lines and "+x = 2" in diff.changes[0].lines


# ---------------------------------------------------------------------------- a simulated lab

STUCK = {("u003", "p1_5", 30), ("u017", "p1_9", 40)}
IDLE = {("u010", 35), ("u025", 50)}
M_MINUTE, N = 70, 10


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """44 students, 24 problems, 90 minutes, a real sync cycle every 5 minutes."""
    root = tmp_path_factory.mktemp("lab")
    course = make_course(44, 1, problems=24, minutes=90, steady=True, stuck=STUCK, idle=IDLE)
    write_users_csv(root / "users.csv", course.students)
    start = time.time() - 90 * MINUTE
    for minute in range(0, 91, 5):
        write_course_at(str(root), course, minute, start)
        sync(root)
    settings = {
        **pv.DEFAULTS,
        "SYNC_SQLITE": str(root / "sync.sqlite"),
        "USERS_CSV": str(root / "users.csv"),
        "SYNC_DEST": str(root / "sync_dest"),
        "USER_ATTRS": ["real_name", "team"],
        "PASSWD": "pw",
        "ACCESS_TOKEN": ACCESS_TOKEN,
        "ACCESS_DB": private_access_db(),
    }
    data = Data(settings, access.PasswordGate(settings))
    h = data.history("pl01/pl01.ipynb")
    local = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(start + M_MINUTE * MINUTE))
    moment = int(np.datetime64(local, "s").astype(np.int64))
    return course, h, moment, data


def test_lab_stuck_and_idle_lists_name_exactly_the_planted_students(lab):
    course, h, moment, data = lab
    rows = model.class_at(data.histories(), data.saves(), moment, N).rows
    stuck = {(r["student"], r["problem"]) for r in rows if r["kind"] == "stuck"}
    idle = {r["student"] for r in rows if r["kind"] == "idle"}
    assert stuck == {(uid, problem) for uid, problem, _ in STUCK}
    assert idle == {uid for uid, _ in IDLE}
    for r in rows:
        if r["kind"] == "stuck":
            planted = next(m for uid, _, m in STUCK if uid == r["student"])
            assert moment - (M_MINUTE - planted + 5) * MINUTE <= r["since"]
            assert r["since"] <= moment - (M_MINUTE - planted) * MINUTE + 1


def test_lab_each_row_names_the_version_its_since_is_the_time_of(lab):
    """A click on a row opens that version: the rowid and file name are the student's
    version saved at `since` (the first error of the run, or the last save)."""
    course, h, moment, data = lab
    rows = model.class_at(data.histories(), data.saves(), moment, N).rows
    assert {r["kind"] for r in rows} == {"stuck", "idle"}
    for r in rows:
        (version,) = [v for v in h.versions[r["student"]] if v.rowid == r["rowid"]]
        assert (version.t, version.filename) == (r["since"], r["filename"])
        assert r["minutes"] == (moment - r["since"]) // MINUTE


def test_lab_heatmap_at_a_chosen_minute_matches_the_plan_cell_for_cell(lab):
    course, h, moment, _ = lab
    assignment = course.assignments[0]
    expected, got = [], model.heatmap(h, moment, [s.uid for s in course.students])
    for student in course.students:
        plan = student.plan[assignment.path]
        outcomes = [plain_outcome(outcome_at(plan[g], M_MINUTE)) for g in assignment.problems]
        if all(o == "empty" for o in outcomes):
            outcomes = ["none"] * len(outcomes)
        expected.append(outcomes)
    assert h.problems == assignment.problems
    assert got == expected
    assert {"error", "answered", "non-empty"} <= {c for row in got for c in row}


def test_lab_heatmap_masks_names_with_users_csv_numbers_and_exports_csv(lab):
    course, h, moment, data = lab
    labels = data.student_labels(h.students, False)
    assert labels["u003"] == "student 3" and labels["u044"] == "student 44"
    figure = problems.heatmap_figure(
        h, moment, h.students, labels, lambda rowids: [str(r) for r in rowids]
    )
    assert figure["data"][0]["y"][0] == "student 1"
    assert "u003" not in str(figure) and "Sato" not in str(figure)
    text = problems.heatmap_frame(h, moment, h.students, labels).to_csv(index=False)
    assert text.splitlines()[0].startswith("moment,student,version saved,p1_1,p1_2")
    assert len(text.splitlines()) == 45
    named = data.student_labels(h.students, True)
    assert named["u003"].startswith("u003 [")


def test_lab_version_view_renders_a_version_and_its_diff(lab):
    from plotly.io.json import to_json_plotly

    course, h, moment, data = lab
    versions = h.versions["u003"]
    shown = to_json_plotly(
        version.render_version(data.settings["SYNC_DEST"], h, "u003", versions[-1].rowid, None)
    )
    assert "p1_5: error" in shown and "changes since" in shown
    assert "attempt" in shown


def test_version_view_of_a_student_number_or_database_gone_is_empty_not_an_error(lab, tmp_path):
    """The browser's student number is from an earlier update: the list may have changed,
    or the database may be gone; the version view then shows nothing instead of failing."""
    _, h, _, data = lab
    assert version.current_history(data, "pl01/pl01.ipynb", 0).students == h.students
    assert version.current_history(data, "pl01/pl01.ipynb", len(h.students)) is None
    settings = {**data.settings, "SYNC_SQLITE": str(tmp_path / "gone.sqlite")}
    gone = Data(settings, access.PasswordGate(settings))
    assert version.current_history(gone, "pl01/pl01.ipynb", 0) is None
