"""The first screen's rules (progress_views.model.class_at), across every assignment: who is
stuck, idle, working or finished at M, and since when."""

import os
import random
import sqlite3
import time

import demo
import demo_course
import pytest
from conftest import private_access_db, sync

import make_database
import progress_viewer as pv
from progress_views import access, model
from progress_views.data import Data

MINUTE = 60
E, A, W = "error", "execute_result", "non-empty"
M, N = 60 * MINUTE, 10


def course(plans, other_files=()):
    """(histories, saves) from {assignment: {uid: [(minute, {grade_id: result})]}} and
    [(uid, minute, filename)] saves of files that are not notebooks."""
    histories, rows, rowid = {}, [], 0
    for assignment, by_uid in plans.items():
        versions = {}
        for uid, plan in by_uid.items():
            for minute, outcomes in plan:
                rowid += 1
                name = f"{uid}/{assignment}@{minute}"
                versions.setdefault(uid, []).append(
                    model.Version(minute * MINUTE, rowid, name, outcomes)
                )
                rows.append((uid, minute * MINUTE, rowid, name))
        order = model.problem_order(v.outcomes for vs in versions.values() for v in vs)
        histories[assignment] = model.History(assignment, order, versions)
    for uid, minute, filename in other_files:
        rowid += 1
        rows.append((uid, minute * MINUTE, rowid, filename))
    return histories, model.saves_of(rows)


def flags(histories, saves, moment=M, minutes=N, students=None):
    at = model.class_at(histories, saves, moment, minutes, students)
    return [(r["student"], r["assignment"], r["problem"], r["kind"], r["since"]) for r in at.rows]


def busy(uids, assignment="pl02", start=0):
    """Students saving `assignment` every 5 minutes up to M, never finishing it."""
    return {uid: [(m, {"q": W}) for m in range(start, 61, 5)] for uid in uids}


def test_stuck_on_a_problem_of_any_assignment_since_the_first_error_of_the_run():
    plans = {
        "pl01": {"s": [(10, {"p1": A, "p2": W}), (30, {"p1": A, "p2": E})]},
        "pl02": {
            "s": [(5, {"q": W}), (40, {"q": E}), (45, {"q": A}), (48, {"q": E}), (55, {"q": E})],
            "fixed": [(40, {"q": E}), (55, {"q": A})],
            "late": [(52, {"q": E}), (58, {"q": E})],  # no state at M - N: not stuck yet
        },
    }
    histories, saves = course(plans)
    assert flags(histories, saves) == [
        ("s", "pl01", "p2", "stuck", 30 * MINUTE),
        ("s", "pl02", "q", "stuck", 48 * MINUTE),
    ]
    at = model.class_at(histories, saves, M, N)
    assert [r["minutes"] for r in at.rows] == [30, 12]
    assert at.rows[0]["filename"] == "s/pl01@30" and at.rows[1]["filename"] == "s/pl02@48"


def test_a_student_who_stops_saving_anything_is_idle_though_the_class_saves_other_notebooks():
    """Issue 10, found 1: idle was judged per notebook; u020 stopped saving and was never
    listed, because fewer than half of the class had saved *that* notebook recently."""
    plans = {
        "pl01": {"quiet": [(5, {"p": W}), (20, {"p": W})], "b1": [(5, {"p": A})]},
        "pl02": busy(["b1", "b2", "b3"]),
    }
    histories, saves = course(plans)
    assert flags(histories, saves) == [("quiet", "pl01", "p", "idle", 20 * MINUTE)]


def test_a_student_saving_another_assignment_is_not_idle_on_the_first():
    """Issue 10, found 1: u004 was idle on pl01 while it saved pl03."""
    plans = {
        "pl01": {"mover": [(5, {"p": W})], "b1": [(5, {"p": W})]},
        "pl02": {**busy(["b1", "b2"]), "mover": [(55, {"q": W})]},
    }
    histories, saves = course(plans)
    assert flags(histories, saves) == []
    assert model.class_at(histories, saves, M, N).kind_of["mover"] == "working"


def test_any_file_saved_counts_and_idle_since_is_the_last_save_of_any_file():
    plans = {"pl01": {"a": [(5, {"p": W})], "b": [(5, {"p": W})], **busy(["c", "d"], "pl01")}}
    others = [("a", 55, "a/notes.txt"), ("b", 30, "b/notes.txt")]
    histories, saves = course(plans, others)
    at = model.class_at(histories, saves, M, N)
    assert [(r["student"], r["kind"], r["since"], r["filename"]) for r in at.rows] == [
        ("b", "idle", 30 * MINUTE, "b/notes.txt")
    ]


def test_a_stuck_student_is_not_also_idle():
    """Issue 10, found 2: u004, u010 and u017 were listed both stuck and idle."""
    plans = {"pl01": {"stuck": [(5, {"p": W}), (20, {"p": E})], **busy(["b1", "b2"], "pl01")}}
    histories, saves = course(plans)
    assert flags(histories, saves) == [("stuck", "pl01", "p", "stuck", 20 * MINUTE)]
    assert model.class_at(histories, saves, M, N).status == {
        "stuck": 1,
        "idle": 0,
        "working": 2,
        "finished": 0,
    }


def test_finished_students_are_not_idle_and_finished_means_every_started_assignment():
    plans = {
        "pl01": {"done": [(5, {"p": A})], "half": [(5, {"p": A})]},
        "pl02": {"done": [(10, {"q": A})], "half": [(10, {"q": W})], **busy(["b1", "b2"])},
    }
    histories, saves = course(plans)
    at = model.class_at(histories, saves, M, N)
    assert flags(histories, saves) == [("half", "pl02", "q", "idle", 10 * MINUTE)]
    assert at.kind_of == {"done": "finished", "half": "idle", "b1": "working", "b2": "working"}
    assert at.by_assignment == {
        "pl01": {"stuck": 0, "idle": 0, "working": 0, "finished": 2},
        "pl02": {"stuck": 0, "idle": 1, "working": 2, "finished": 1},
    }


def test_nobody_is_idle_while_fewer_than_half_the_class_saves():
    plans = {"pl01": {"q1": [(5, {"p": W})], "q2": [(5, {"p": W})], **busy(["b1"], "pl01")}}
    histories, saves = course(plans)
    assert flags(histories, saves) == []
    # exactly half is enough
    plans["pl01"].update(busy(["b2"], "pl01"))
    histories, saves = course(plans)
    assert {r[0] for r in flags(histories, saves)} == {"q1", "q2"}


def test_students_without_a_save_by_m_are_not_counted_and_the_filter_only_restricts():
    plans = {"pl01": {"q": [(5, {"p": W})], "later": [(70, {"p": W})], **busy(["b1"], "pl01")}}
    histories, saves = course(plans)
    at = model.class_at(histories, saves, M, N)
    assert at.kind_of == {"q": "idle", "b1": "working"}
    assert model.status_text(at.status) == "0 stuck, 1 idle, 1 working, 0 finished"
    only_q = model.class_at(histories, saves, M, N, students=["q"])
    assert only_q.kind_of == {"q": "idle"} and len(only_q.rows) == 1


def test_rows_go_longest_first_and_a_student_stuck_on_two_problems_in_notebook_order():
    plans = {
        "pl01": {
            "two": [(5, {"p10": W, "p9": W}), (30, {"p10": E, "p9": E})],
            "one": [(5, {"p10": W}), (25, {"p10": E})],
        },
        "pl02": busy(["b1", "b2"]),
    }
    histories, saves = course(plans)
    assert [(r[0], r[2]) for r in flags(histories, saves)] == [
        ("one", "p10"),
        ("two", "p10"),
        ("two", "p9"),
    ]


def test_a_result_make_database_never_writes_counts_as_written_not_a_crash():
    plans = {"pl01": {"odd": [(5, {"p": "unheard-of"}), (55, {"p": "unheard-of"})]}}
    histories, saves = course(plans)
    assert model.outcome_class("unheard-of") == "non-empty"
    assert model.class_at(histories, saves, M, N).kind_of == {"odd": "working"}


def test_pseudonyms_follow_users_csv_order():
    assert model.pseudonyms(["u010", "u002", "u007"]) == {
        "u010": "student 1",
        "u002": "student 2",
        "u007": "student 3",
    }


# ---------------------------------------------------------------------------- from the real scripts


def load_class(root):
    """(histories of every assignment, saves) of the sync in `root`, read through the
    viewer's data layer as the page reads them."""
    settings = {
        **pv.DEFAULTS,
        "SYNC_SQLITE": str(root / "sync.sqlite"),
        "USERS_CSV": str(root / "users.csv"),
        "SYNC_DEST": str(root / "sync_dest"),
        "ACCESS_DB": private_access_db(),
    }
    data = Data(settings, access.PasswordGate(settings))
    return data.histories(), data.saves()


def seconds_at(start, minute):
    """The recorded time (local seconds) of a file whose mtime is `minute` into the lab."""
    return model.to_seconds(make_database.local_time(start + minute * MINUTE))


# ---------------------------------------------------------------------------- the demo course
# Issue 10, found 1 and 2, on the course `tools/demo.py` builds (40 students, three
# notebooks worked on side by side, a real sync every 10 minutes, u012 and u020 planted idle).


@pytest.fixture(scope="module")
def demo_class(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "demo"
    demo.build_demo(str(root), 40, 3, 90, 10)
    histories, saves = load_class(root)
    first = min(times[0] for times in saves.times.values())
    moments = range(first + 10 * MINUTE, first + 100 * MINUTE, 5 * MINUTE)
    return histories, saves, moments


def listed(histories, saves, moment):
    return model.class_at(histories, saves, moment, N).rows


@pytest.mark.parametrize("uid", ["u012", "u020"])
def test_demo_a_student_who_stops_saving_is_idle_once_since_their_last_save_of_any_file(
    demo_class, uid
):
    """u020 stopped saving and was never listed idle after it (idle was judged per
    notebook, and since was the last save of that notebook)."""
    histories, saves, _ = demo_class
    last = saves.times[uid][-1]
    for moment in (last + 15 * MINUTE, last + 25 * MINUTE):
        rows = [r for r in listed(histories, saves, moment) if r["student"] == uid]
        assert [(r["kind"], r["since"]) for r in rows] == [("idle", last)]


def test_demo_nobody_who_saved_any_file_in_the_window_is_idle(demo_class):
    """u004 was idle on pl01 while it saved pl03; u012 was idle before it stopped."""
    histories, saves, moments = demo_class
    for moment in moments:
        for r in listed(histories, saves, moment):
            if r["kind"] == "idle":
                assert saves.count(r["student"], moment - N * MINUTE, moment) == 0
                assert r["since"] == saves.last(r["student"], moment)[0]


def test_demo_nobody_is_listed_both_stuck_and_idle(demo_class):
    """At minute 55 u004, u010 and u017 were both stuck and idle on the same problem."""
    histories, saves, moments = demo_class
    for moment in moments:
        kinds = {}
        for r in listed(histories, saves, moment):
            kinds.setdefault(r["student"], set()).add(r["kind"])
        assert not [uid for uid, found in kinds.items() if len(found) > 1]


# ---------------------------------------------------------------------------- a two-assignment lab
# 30 students do pl01, then pl02 (10 problems each), for 90 minutes, with a real sync every 5
# minutes. Planted: u003 stuck on pl01 from minute 15, u011 stuck on pl02 from minute 60;
# u007 stops saving anything at minute 30 (in pl01), u015 at minute 65 (in pl02); u020
# finishes both by minute ~35; u030 skips pl01 and works on pl02 from minute 55 to 85.

LAB_STUCK = [("u003", "p1_4", 15), ("u011", "p2_3", 60)]
LAB_IDLE = [("u007", 30), ("u015", 65)]
FINISHER, LATECOMER = "u020", "u030"
SYNC_MINUTES = range(0, 91, 5)


@pytest.fixture(scope="module")
def two_assignments(tmp_path_factory):
    root = tmp_path_factory.mktemp("two_assignments")
    course = demo_course.make_course(
        30, 2, problems=10, minutes=90, steady=True, sequential=True, stuck=LAB_STUCK, idle=LAB_IDLE
    )
    by_uid = {student.uid: student for student in course.students}
    rng = random.Random(7)
    by_uid[FINISHER].plan = demo_course.plan_sequence(course.assignments, 90, rng, pace=0.35)
    late = demo_course.plan_sequence(course.assignments[1:], 90, rng, start=55)
    demo_course.cut_plan(late[course.assignments[1].path], 85)
    skipped = {grade_id: [] for grade_id in course.assignments[0].problems}
    by_uid[LATECOMER].plan = {course.assignments[0].path: skipped, **late}
    demo_course.write_users_csv(root / "users.csv", course.students)
    start = int(time.time()) - 90 * MINUTE
    for minute in SYNC_MINUTES:
        demo_course.write_course_at(str(root), course, minute, start)
        sync(root)
    histories, saves = load_class(root)
    return by_uid, start, histories, saves


def stuck_since(plan, grade_id, minute, start):
    """The recorded time of the first synced version of the run of errors on `grade_id`
    that lasts until `minute`."""
    run = None
    for synced in (m for m in SYNC_MINUTES if m <= minute):
        failing = demo_course.outcome_at(plan[grade_id], synced).startswith("error")
        run = (run if run is not None else synced) if failing else None
    return seconds_at(start, demo_course.last_change(plan, run))


def class_is_saving(by_uid, minute):
    """At least half of the students who saved by `minute` saved in the last N minutes
    (every change of the plan is saved, and synced at the next multiple of 5 minutes)."""
    last_saves = [
        max(
            (
                m
                for plan in s.plan.values()
                for events in plan.values()
                for m, _ in events
                if m <= minute
            ),
            default=None,
        )
        for s in by_uid.values()
    ]
    saved = [m for m in last_saves if m is not None]
    return 2 * sum(1 for m in saved if m > minute - N) >= len(saved)


def planted_at(by_uid, start, minute):
    """{(student, assignment, problem, kind, since)} the plan says are stuck or idle."""
    expected = set()
    for uid, grade_id, from_minute in LAB_STUCK:
        if minute - N >= from_minute:
            (path,) = [p for p, plan in by_uid[uid].plan.items() if grade_id in plan]
            since = stuck_since(by_uid[uid].plan[path], grade_id, minute, start)
            expected.add((uid, path, grade_id, "stuck", since))
    for uid, _ in LAB_IDLE:
        plans = by_uid[uid].plan
        stop = max(demo_course.plan_end(plan) for plan in plans.values())
        if minute - N >= stop and class_is_saving(by_uid, minute):
            (path,) = [p for p, plan in plans.items() if demo_course.plan_end(plan) == stop]
            unanswered = [
                g for g, events in plans[path].items() if not events or events[-1][1] != "answered"
            ]
            expected.add((uid, path, unanswered[0], "idle", seconds_at(start, stop)))
    return expected


@pytest.mark.parametrize("minute", [25, 45, 70, 80, 90])
def test_two_assignments_list_exactly_the_planted_stuck_and_idle_students(two_assignments, minute):
    by_uid, start, histories, saves = two_assignments
    moment = seconds_at(start, minute)
    at = model.class_at(histories, saves, moment, N)
    listed_now = {
        (r["student"], r["assignment"], r["problem"], r["kind"], r["since"]) for r in at.rows
    }
    assert listed_now == planted_at(by_uid, start, minute)
    assert [r["minutes"] for r in at.rows] == [(moment - r["since"]) // 60 for r in at.rows]
    assert [r["since"] for r in at.rows] == sorted(r["since"] for r in at.rows)


def test_two_assignments_planted_moments_cover_every_kind(two_assignments):
    """The moments above are not empty: by minute 80 both stuck and both idle students
    are listed; the early finisher is finished, the latecomer working, not idle."""
    by_uid, start, histories, saves = two_assignments
    at = model.class_at(histories, saves, seconds_at(start, 80), N)
    assert {r["student"] for r in at.rows} == {"u003", "u011", "u007", "u015"}
    assert at.kind_of[FINISHER] == "finished" and at.kind_of[LATECOMER] == "working"
    assert at.status["stuck"] == 2 and at.status["idle"] == 2
    assert at.by_assignment["pl01/pl01.ipynb"]["stuck"] == 1
    assert at.by_assignment["pl02/pl02.ipynb"]["stuck"] == 1
    early = model.class_at(histories, saves, seconds_at(start, 25), N)
    assert LATECOMER not in early.kind_of
    # at minute 90 most of the class has finished and stopped saving: nobody is idle
    assert not class_is_saving(by_uid, 90)
    assert model.class_at(histories, saves, seconds_at(start, 90), N).status["idle"] == 0


def test_a_history_read_again_after_a_sync_cycle_reusing_the_previous_equals_a_fresh_read(
    tmp_path,
):
    """After a cycle only the new versions are read; the History is the same as one read
    from scratch (a replaced notebook's row gets a new rowid, its backup a new name)."""
    course_ = demo_course.make_course(6, 1, problems=5, minutes=40, steady=True)
    demo_course.write_users_csv(tmp_path / "users.csv", course_.students)
    start = int(time.time()) - 40 * MINUTE

    def cycles(minutes):
        for minute in minutes:
            demo_course.write_course_at(str(tmp_path), course_, minute, start)
            sync(tmp_path)
        return load_class(tmp_path)[0]["pl01/pl01.ipynb"]

    before = cycles(range(0, 21, 5))
    fresh = cycles(range(25, 41, 5))
    rows = [(uid, v.t, v.rowid) for uid, vs in fresh.versions.items() for v in vs]
    conn = sqlite3.connect(tmp_path / "sync.sqlite")
    try:
        reused = model.load_history(conn, "pl01/pl01.ipynb", rows, previous=before)
    finally:
        conn.close()
    assert reused.problems == fresh.problems
    assert reused.versions == fresh.versions
    assert sum(len(vs) for vs in fresh.versions.values()) > sum(
        len(vs) for vs in before.versions.values()
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="the loop says where its files stay only as root")
def test_the_demo_says_each_thing_once(tmp_path, capfd):
    """The demo runs the loop once per simulated cycle: what the loop says on stderr (run
    as root, where the files stay) is said once, not once a cycle, and no warning that a
    viewer of another account could not read them (the demo's viewer is the same account)."""
    demo.build_demo(str(tmp_path / "demo"), 4, 2, 30, 10)
    said = capfd.readouterr().err.splitlines()
    assert len(said) == len(set(said))
    assert not [line for line in said if line.startswith("warning")]
