"""A simulated nbgrader course: students working through a lab session.

Used by the demo (tools/demo.py), the tests and the benchmarks. Everything is generated
from a seed, so the same arguments always give the same notebooks.

A course has students (users.csv rows), assignments (one notebook each, the same path in
every student's `notebooks` folder) and a lab session of `minutes` minutes. Every student
works through each assignment's problems: a graded answer cell is first empty, then written
(`non-empty`), often run into an error, and finally answered (execute_result, stream or
display_data, as the assignment's kernel prints it). `write_course_at(root, course, minute)`
writes every notebook as it is at that minute of the session, with the file's mtime set to
that moment, touching only the files that changed since the previous call.
"""

import base64
import csv
import json
import os
import random
import struct
import zlib
from dataclasses import dataclass, field

C_ANSWER = '#include <stdio.h>\nint main() { printf("%d\\n", N); }'
# One kernel style per assignment: how an answer prints, and what an error looks like.
KERNELS = {
    "python": {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "answer": lambda i: (f"def f(x):\n    return x * {i}\n\nf(3)", "execute_result"),
        "error": ("NameError", "name 'f' is not defined"),
    },
    "bash": {
        "kernelspec": {"name": "bash", "display_name": "Bash", "language": "bash"},
        "answer": lambda i: (f"for i in $(seq {i}); do echo $i; done", "stream"),
        "error": ("", "bash: syntax error near unexpected token `done'"),
    },
    "c": {
        "kernelspec": {"name": "c", "display_name": "C", "language": "c"},
        "answer": lambda i: (C_ANSWER.replace("N", str(i)), "stream"),
        "error": ("CompileError", "expected ';' before '}' token"),
    },
    "ocaml": {
        "kernelspec": {"name": "ocaml-jupyter", "display_name": "OCaml", "language": "OCaml"},
        "answer": lambda i: (f"let x = {i} * 3;;", "execute_result"),
        "error": ("Error", "Unbound value y"),
    },
    "plot": {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "answer": lambda i: (f"plt.plot(range({i}))", "display_data"),
        "error": ("TypeError", "'int' object is not iterable"),
    },
}

FIRST_NAMES = "Alice Bob Carol Dave Erin Frank Grace Heidi Ivan Judy Mallory Niaj Olivia Peggy"
LAST_NAMES = "Sato Suzuki Takahashi Tanaka Ito Watanabe Yamamoto Nakamura Kobayashi Kato"


@dataclass
class Assignment:
    path: str  # relative to the student's notebooks folder
    kernel: str
    problems: list  # grade_ids in notebook order
    padding: int = 0  # bytes of extra image output, to make realistic sizes


@dataclass
class Student:
    uid: str
    notebooks: str
    real_name: str
    team: str
    # assignment path -> grade_id -> [(minute, outcome)] in time order
    plan: dict = field(default_factory=dict)


@dataclass
class Course:
    students: list
    assignments: list
    minutes: int
    written: dict = field(default_factory=dict)  # file path -> last written content key


# ---------------------------------------------------------------------------- notebook JSON


def markdown_cell(text, **nbgrader):
    cell = {"cell_type": "markdown", "metadata": {}, "source": text}
    if nbgrader:
        cell["metadata"]["nbgrader"] = nbgrader
    return cell


def code_cell(source, outputs=(), **nbgrader):
    cell = {
        "cell_type": "code",
        "execution_count": 1 if outputs else None,
        "metadata": {},
        "outputs": list(outputs),
        "source": source,
    }
    if nbgrader:
        cell["metadata"]["nbgrader"] = nbgrader
    return cell


def grade_cell(source, grade_id, outputs=(), cell_type="code", points=1):
    """A graded answer cell, as nbgrader's create-assignment makes them."""
    nbgrader = {"grade": True, "grade_id": grade_id, "points": points, "solution": True}
    if cell_type == "markdown":
        return markdown_cell(source, **nbgrader)
    return code_cell(source, outputs, **nbgrader)


def stream_output(text, name="stdout"):
    return {"output_type": "stream", "name": name, "text": text}


def execute_result(text):
    return {
        "output_type": "execute_result",
        "execution_count": 1,
        "data": {"text/plain": text},
        "metadata": {},
    }


def display_png(png_bytes):
    return {
        "output_type": "display_data",
        "data": {"image/png": base64.b64encode(png_bytes).decode(), "text/plain": "<Figure>"},
        "metadata": {},
    }


def error_output(ename, evalue):
    return {
        "output_type": "error",
        "ename": ename,
        "evalue": evalue,
        "traceback": [f"\x1b[0;31m{ename}\x1b[0m: {evalue}"],
    }


def notebook(cells, kernelspec=None):
    return {
        "cells": cells,
        "metadata": {"kernelspec": kernelspec or KERNELS["python"]["kernelspec"]},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def png_image(width, height, seed=0):
    """A real PNG of noise, width x height, about width * height * 3 bytes."""
    rng = random.Random(seed)
    rows = b"".join(b"\0" + rng.randbytes(width * 3) for _ in range(height))

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 1))
        + chunk(b"IEND", b"")
    )


# ---------------------------------------------------------------------------- the course


def make_course(
    n_students=40,
    n_assignments=3,
    problems=6,
    minutes=90,
    seed=1,
    root="class",
    steady=False,
    stuck=(),
    idle=(),
    sequential=False,
):
    """A course of n_students, each doing the same n_assignments in a lab of `minutes`.

    steady: students save every 2-4 minutes and fix every error within 3 minutes, so that
    only the planted ones are stuck or idle. sequential (with steady): each student starts
    an assignment when they have finished the one before, instead of all of them at once.
    stuck: (uid, grade_id, minute) triples: from that minute on the student keeps running
    that problem into errors (and, sequential, never starts a later assignment). idle:
    (uid, minute) pairs: the student saves nothing, in any notebook, after their last
    answer before that minute.
    """
    rng = random.Random(seed)
    kernels = list(KERNELS)
    assignments = [
        Assignment(
            path=f"pl{a + 1:02d}/pl{a + 1:02d}.ipynb",
            kernel=kernels[a % len(kernels)],
            problems=[f"p{a + 1}_{i + 1}" for i in range(problems)],
        )
        for a in range(n_assignments)
    ]
    first, last = FIRST_NAMES.split(), LAST_NAMES.split()
    students = []
    for s in range(n_students):
        uid = f"u{s + 1:03d}"
        student = Student(
            uid=uid,
            notebooks=f"{root}/{uid}/notebooks",
            real_name=f"{first[s % len(first)]} {last[(s // len(first)) % len(last)]}",
            team=f"team{s % 5 + 1}",
        )
        if steady and sequential:
            student.plan = plan_sequence(assignments, minutes, rng)
        else:
            planner = plan_steady if steady else plan_problems
            for assignment in assignments:
                student.plan[assignment.path] = planner(assignment.problems, minutes, rng)
        students.append(student)
    by_uid = {student.uid: student for student in students}
    for uid, grade_id, minute in stuck:
        plans = list(by_uid[uid].plan.values())
        (stuck_on,) = [index for index, plan in enumerate(plans) if grade_id in plan]
        plant_stuck(plans[stuck_on], grade_id, minute, minutes)
        if sequential:
            for plan in plans[stuck_on + 1 :]:
                cut_plan(plan, minute)
    for uid, minute in idle:
        plant_idle(by_uid[uid].plan, minute)
    return Course(students, assignments, minutes)


def plan_steady(grade_ids, minutes, rng, start=0.0, pace=1.0):
    """Like plan_problems, but with short gaps and errors fixed within 3 minutes, from
    `start` on; `pace` scales every gap (0.5: twice as fast)."""
    minute, plan = start + rng.uniform(0, 2) * pace, {}
    for grade_id in grade_ids:
        events = [(minute, "non-empty")]
        minute += rng.uniform(1, 2) * pace
        if rng.random() < 0.4:
            events.append((minute, "error"))
            minute += rng.uniform(1, 2.5) * pace
        events.append((minute, "answered"))
        minute += rng.uniform(1, 2) * pace
        plan[grade_id] = [(m, outcome) for m, outcome in events if m <= minutes]
    return plan


def plan_sequence(assignments, minutes, rng, start=0.0, pace=1.0):
    """Steady plans of `assignments` done one after the other from `start` on: assignment
    path -> plan."""
    plans = {}
    for assignment in assignments:
        plans[assignment.path] = plan_steady(assignment.problems, minutes, rng, start, pace)
        start = plan_end(plans[assignment.path]) or start
    return plans


def plan_end(plan):
    """The minute of a plan's last event (0 for an empty plan)."""
    return max((m for events in plan.values() for m, _ in events), default=0.0)


def cut_plan(plan, minute):
    """Drop every event of `plan` after `minute`."""
    for grade_id, events in plan.items():
        plan[grade_id] = [(m, o) for m, o in events if m <= minute]


def plant_stuck(plan, grade_id, minute, minutes):
    """From `minute` on, `grade_id` fails on every run (a new attempt every 3 minutes)
    and the problems after it are never reached."""
    names = list(plan)
    attempts = [(minute + 3 * k, f"error#{k}") for k in range(int((minutes - minute) / 3) + 1)]
    plan[grade_id] = [(m, o) for m, o in plan[grade_id] if m < minute] + attempts
    for later in names[names.index(grade_id) + 1 :]:
        plan[later] = []


def plant_idle(plans, minute):
    """The student saves nothing after their last answer before `minute`, in any of
    their notebooks: `plans` is their assignment path -> plan."""
    answers = [
        m
        for plan in plans.values()
        for events in plan.values()
        for m, o in events
        if o == "answered" and m < minute
    ]
    stop = max(answers, default=0)
    for plan in plans.values():
        cut_plan(plan, stop)


def plan_problems(grade_ids, minutes, rng):
    """grade_id -> [(minute, outcome)]: when the student wrote, broke and fixed each one."""
    speed = rng.uniform(0.5, 1.6)
    minute, plan = rng.uniform(0, 8), {}
    for grade_id in grade_ids:
        events = [(minute, "non-empty")]
        minute += rng.expovariate(1 / (4 / speed))
        if rng.random() < 0.45:
            events.append((minute, "error"))
            minute += rng.expovariate(1 / (6 / speed))
        events.append((minute, "answered"))
        minute += rng.uniform(0.5, 3)
        plan[grade_id] = [(m, outcome) for m, outcome in events if m <= minutes]
    return plan


def outcome_at(events, minute):
    """The outcome of one problem at `minute` (empty before the student started it);
    `error#k` is the k-th failing attempt of a stuck student."""
    current = "empty"
    for event_minute, outcome in events:
        if event_minute <= minute:
            current = outcome
    return current


def plain_outcome(outcome):
    """`error#3` -> `error`: what the notebook's graded cell shows."""
    return outcome.split("#")[0]


def answer_cell(assignment, index, grade_id, outcome):
    kernel = KERNELS[assignment.kernel]
    source, answered_type = kernel["answer"](index + 1)
    if outcome == "empty":
        return grade_cell("", grade_id)
    if outcome == "non-empty":
        return grade_cell(source, grade_id)
    if outcome.startswith("error"):
        attempt = outcome.partition("#")[2]
        source += f"\n# attempt {attempt}" if attempt else ""
        return grade_cell(source, grade_id, [error_output(*kernel["error"])])
    if answered_type == "display_data":
        return grade_cell(source, grade_id, [display_png(png_image(8, 8, index))])
    if answered_type == "stream":
        return grade_cell(source, grade_id, [stream_output(f"{index + 1}\n")])
    return grade_cell(source, grade_id, [execute_result(str(3 * (index + 1)))])


def assignment_notebook(assignment, outcomes, padding_seed=0):
    """The notebook of one assignment with the given outcome per problem."""
    cells = [markdown_cell(f"# {assignment.path}\nAnswer every problem below.")]
    for index, grade_id in enumerate(assignment.problems):
        cells.append(markdown_cell(f"## Problem {index + 1}\nWrite the code."))
        cells.append(answer_cell(assignment, index, grade_id, outcomes[grade_id]))
    if assignment.padding:
        side = max(8, int((assignment.padding / 3) ** 0.5))
        cells.append(code_cell("show_figure()", [display_png(png_image(side, side, padding_seed))]))
    return notebook(cells, KERNELS[assignment.kernel]["kernelspec"])


def student_outcomes(student, assignment, minute):
    plan = student.plan[assignment.path]
    return {grade_id: outcome_at(plan[grade_id], minute) for grade_id in assignment.problems}


def write_users_csv(path, students):
    with open(path, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["uid", "notebooks", "real_name", "team"])
        for student in students:
            writer.writerow([student.uid, student.notebooks, student.real_name, student.team])


def write_course_at(root, course, minute, start_time):
    """Write every notebook as it is at `minute`; only changed files are touched.

    A student's notebook appears once they have started it. Its mtime is
    start_time + the minute of its latest change. Returns the paths written.
    """
    written = []
    for student in course.students:
        for assignment in course.assignments:
            outcomes = student_outcomes(student, assignment, minute)
            if all(outcome == "empty" for outcome in outcomes.values()):
                continue
            path = os.path.join(root, student.notebooks, assignment.path)
            key = tuple(sorted(outcomes.items()))
            if course.written.get(path) == key:
                continue
            course.written[path] = key
            changed = last_change(student.plan[assignment.path], minute)
            content = assignment_notebook(assignment, outcomes)
            write_notebook(path, content, start_time + changed * 60)
            written.append(path)
    return written


def last_change(plan, minute):
    return max((m for events in plan.values() for m, _ in events if m <= minute), default=0)


def write_notebook(path, content, mtime):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as stream:
        json.dump(content, stream, indent=1)
    os.utime(path, (mtime, mtime))
