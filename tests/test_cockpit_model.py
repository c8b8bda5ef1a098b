"""The first screen's rules (progress_views.model.class_at), across every assignment: who is
stuck, idle, working or finished at M, and since when."""

from progress_views import model

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


def test_pseudonyms_follow_users_csv_order():
    assert model.pseudonyms(["u010", "u002", "u007"]) == {
        "u010": "student 1",
        "u002": "student 2",
        "u007": "student 3",
    }
