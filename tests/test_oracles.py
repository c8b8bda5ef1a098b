"""Nothing tells which `student N` is which uid without the names password: no list in uid
order, no rowid (they are numbered in path order, so they rank the uids), no file only one
student has (issue 8, a reviewer's second round: findings F1, F2, F5, F6).

The course is the demo's, with users.csv shuffled (student 1 = u002, student 2 = u012, ...)
so that pseudonym order and uid order differ, every rowid moved above 10**9 so that one
cannot be mistaken for a row number, and a notebook only u005 has, named after them, made
after the course was built (one more real sync cycle).
"""

import base64
import csv
import json
import re
import sqlite3

import numpy as np
import pytest
import test_leaks
from conftest import private_access_db, rows, sync, write_json
from demo_course import grade_cell, notebook

import progress_viewer as pv
from progress_views import access, activity, handles, model, problems, widgets
from progress_views.data import OWN_FILE, Data

ORDER = ["u002", "u012", "u003", "u005", "u006", "u007", "u009", "u008", "u011", "u010", "u004"]
ORDER += ["u001"]  # users.csv's rows: student N is ORDER[N - 1]
ROWID_SHIFT = 10**9
PASSWORD = test_leaks.PASSWORD
PSEUDONYM = re.compile(r"\bstudent (\d+)\b")


@pytest.fixture(scope="module")
def shuffled_course(tmp_path_factory):
    """(course root, users in users.csv order, the private notebook's file name)."""
    import demo

    root = tmp_path_factory.mktemp("oracles") / "demo"
    demo.build_demo(str(root), students=12, assignments=2, minutes=60, step=20)
    with open(root / "users.csv", newline="") as stream:
        by_uid = {user["uid"]: user for user in csv.DictReader(stream)}
    users = [by_uid[uid] for uid in ORDER]
    with open(root / "users.csv", "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(users[0]))
        writer.writeheader()
        writer.writerows(users)
    conn = sqlite3.connect(root / "sync.sqlite")
    with conn:
        conn.execute("UPDATE summary SET rowid = rowid + ?", (ROWID_SHIFT,))
    conn.close()
    owner = by_uid["u005"]
    private = owner["real_name"].replace(" ", "_") + "_private.ipynb"
    write_json(root / owner["notebooks"] / private, notebook([grade_cell("print(1)", "q1")]))
    sync(root)
    return root, users, private


def settings_for(root, **extra):
    return test_leaks.settings_for(root, root / "users.csv", ACCESS_DB=private_access_db(), **extra)


def data_for(root, client="10.0.0.9", **extra):
    settings = settings_for(root, **extra)
    return Data(settings, access.PasswordGate(settings), lambda: client)


def all_rowids(root):
    return {r for (r,) in rows(root / "sync.sqlite", "SELECT rowid FROM summary")}


def page_request(root):
    return pv.create_app(settings_for(root)).server.test_request_context("/")


def controls(**values):
    page = {"password": None, "column": None, "value": None, "moment": "live", "minutes": 10}
    page |= {"assignment": "pl01/pl01.ipynb", "sort": "stuck", **values}
    return problems.Controls.read([page[name] for name in problems.Controls.__dataclass_fields__])


def numbers(label):
    """The pseudonym numbers in a label, in order."""
    return [int(n) for n in PSEUDONYM.findall(label)]


# ---------------------------------------------------------------------------- the responses


def explicit_requests(client):
    """Each callback as a teacher uses it, without the password: each heatmap sort and
    activity order of a real assignment, each student of the version view, the downloads."""
    layout = client.get("/_dash-layout", headers=test_leaks.AUTH).get_json()
    defaults = test_leaks.layout_values(layout)
    callbacks = client.get("/_dash-dependencies", headers=test_leaks.AUTH).get_json()
    walker = test_leaks.Walker(client, None)
    page = {
        "assignment.value": "pl01/pl01.ipynb",
        "heatmap_download_button.n_clicks": 1,
        "stuck_download_button.n_clicks": 1,
        "activity_graph_interval.n_intervals": 1,
    }
    variants = [{"heatmap_sort.value": sort} for sort in problems.HEATMAP_SORTS]
    variants += [{"activity_graph_sort_criteria.value": c} for c in activity.SORT_CRITERIA]
    variants += [{"version_student.value": n} for n in range(12)]
    for callback in callbacks:
        if callback.get("clientside_function"):
            continue
        for variant in variants:
            chosen = {**page, **variant}
            values = {}
            for kind, n, spec in test_leaks.slots(callback):
                name = f"{spec['id']}.{spec['property']}"
                values[(kind, n)] = chosen.get(name, defaults.get((spec["id"], spec["property"])))
            walker.post(callback, values)
    return walker.responses


def decoded(node):
    """A response's JSON with plotly's typed arrays (`bdata`) read back into lists."""
    if isinstance(node, dict):
        if "bdata" in node and "dtype" in node:
            raw = base64.b64decode(node["bdata"])
            return np.frombuffer(raw, dtype=np.dtype(node["dtype"])).tolist()
        return {k: decoded(v) for k, v in node.items()}
    if isinstance(node, list):
        return [decoded(v) for v in node]
    return node


def nodes_in(node):
    """Every dict, list and scalar of a JSON tree."""
    stack = [node]
    while stack:
        item = stack.pop()
        yield item
        if isinstance(item, dict):
            stack += item.values()
        elif isinstance(item, list):
            stack += item


def values_in(node):
    """Every scalar of a JSON tree."""
    return (item for item in nodes_in(node) if not isinstance(item, (dict, list)))


def lists_in(node):
    """Every list of a JSON tree, and every multi-line string's lines (a CSV)."""
    for item in nodes_in(node):
        if isinstance(item, list):
            yield item
        elif isinstance(item, str) and "\n" in item:
            yield item.splitlines()


def student_sequence(items):
    """The pseudonym number of each item that has one (its first), repeats of the one
    before dropped."""
    sequence = []
    for item in items:
        found = numbers(item if isinstance(item, str) else json.dumps(item))
        if found and (not sequence or sequence[-1] != found[0]):
            sequence.append(found[0])
    return sequence


def in_uid_order(sequence):
    """True for a list of 3 students or more in uid order that is not pseudonym order."""
    if len(set(sequence)) < 3 or len(set(sequence)) != len(sequence):
        return False
    uids = [ORDER[n - 1] for n in sequence]
    return uids == sorted(uids) and sequence != sorted(sequence)


def rowids_in(tree, rowids):
    """The rowids of the database found in a response, as numbers or in its strings."""
    found = set()
    for value in values_in(tree):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            found |= {int(value)} & rowids if value == int(value) else set()
        elif isinstance(value, str):
            found |= {int(n) for n in re.findall(r"\d{10,}", value)} & rowids
    return found


def student_options_out_of_order(tree):
    """version_student's options whose values are not places in pseudonym order."""
    response = tree.get("response", {}) if isinstance(tree, dict) else {}
    options = response.get("version_student", {}).get("options") or []
    labelled = sorted((numbers(o["label"])[0], o["value"]) for o in options)
    values = [value for _, value in labelled]
    return values != sorted(values)


def test_no_response_orders_students_by_uid_or_carries_a_rowid(shuffled_course):
    """F1: without the password no list (heatmap rows, its CSV, activity rows, options,
    table rows) is in uid order, the version view's student values are places in
    pseudonym order, and no rowid reaches the browser (handles instead)."""
    root, users, _ = shuffled_course
    app = pv.create_app(settings_for(root))
    client = app.server.test_client()
    rowids = all_rowids(root)
    assert min(rowids) > ROWID_SHIFT
    assignments = ["pl01/pl01.ipynb", "pl02/pl02.ipynb"]
    some = sorted(rowids)[:: max(1, len(rowids) // 20)]
    _, walked = test_leaks.walk_callbacks(
        client, None, some, assignments, list(users[0]), guided_limit=200
    )
    responses = explicit_requests(client) + walked
    failures = set()
    for body, status, text in responses:
        output = json.loads(body)["output"] if body != "GET" else "GET"
        assert status < 500, body[:300]
        try:
            tree = decoded(json.loads(text))
        except ValueError:
            continue
        echoed = {r for r in rowids if str(r) in body}
        if rowids_in(tree, rowids) - echoed:
            failures.add((output, "a rowid"))
        if any(in_uid_order(student_sequence(items)) for items in lists_in(tree)):
            failures.add((output, "uid order"))
        if student_options_out_of_order(tree):
            failures.add((output, "student values in uid order"))
    assert not failures, sorted(failures)
    downloads = [text for body, _, text in responses if "heatmap_download.data" in body]
    assert any("student 12" in text for text in downloads)  # the walk reached the CSV


def test_ties_and_hidden_teams_go_by_pseudonym_without_the_password(shuffled_course):
    """F1: the heatmap's sorts break ties (equal progress, errors, hidden team) by the
    pseudonym, the stuck table its equal times too; with the password by uid."""
    root, _, _ = shuffled_course
    data = data_for(root)
    with page_request(root):
        for sort in ("name", "team", "progress", "errors"):
            figure, _, _ = problems.heatmap_view(data, controls(sort=sort))
            trace = figure["data"][0]
            order = [numbers(label)[0] for label in trace["y"]]
            code = {"progress": "answered", "errors": "error"}.get(sort)
            counts = [row.count(model.CLASSES.index(code)) if code else 0 for row in trace["z"]]
            groups = {}
            for count, number in zip(counts, order):
                groups.setdefault(count, []).append(number)
            assert all(g == sorted(g) for g in groups.values()), (sort, groups)
            assert max(len(g) for g in groups.values()) > 1
            named, _, _ = problems.heatmap_view(data, controls(sort=sort, password=PASSWORD))
            uids = [label.split()[0] for label in named["data"][0]["y"]]
            if sort == "name":
                assert uids == sorted(uids)
        table = problems.first_screen(data, controls())[2]
    by_time = {}
    for row in table:
        by_time.setdefault(row["since"], []).append(numbers(row["student"])[0])
    assert all(n == sorted(n) for n in by_time.values())


def test_activity_orders_by_user_and_team_by_pseudonym_without_the_password(shuffled_course):
    """F1: the activity view's `by user` and `by team` orders were uid orders."""
    root, _, _ = shuffled_course
    data = data_for(root)
    for criteria in ("user", "team"):
        shown = activity.graph(data, activity_filters(criteria=criteria))[0]
        order = student_sequence(shown["layout"]["yaxis"]["ticktext"])
        assert order == sorted(order) and len(order) == 12
        named = activity.graph(data, activity_filters(criteria=criteria, password=PASSWORD))[0]
        uids = [label.split()[-1] for label in named["layout"]["yaxis"]["ticktext"]]
        if criteria == "user":
            assert uids == sorted(uids)


def activity_filters(**values):
    page = {"password": None, "path_re": None, "groups": [], "after": None, "before": None}
    page |= {"criteria": "latest", "only_latest": [], "max_lines": 100, "column": None}
    page |= {"value": None, "moment": "live", **values}
    return activity.Filters.read([page[name] for name in activity.Filters.__dataclass_fields__])


def test_handles_decode_in_every_worker_and_refuse_forgeries(shuffled_course):
    """F1: a handle made by one worker (one Data on the same ACCESS_DB) is read by
    another; handles of consecutive rowids are not in their order; forged ones are None."""
    root, _, _ = shuffled_course
    settings = settings_for(root)
    one, other = (Data(settings, access.PasswordGate(settings)) for _ in "12")
    ordered = sorted(all_rowids(root))[:20]
    handles = [one.handle(r) for r in ordered]
    assert [other.rowid(h) for h in handles] == ordered
    assert handles != sorted(handles) and all(re.fullmatch(r"[0-9a-f]{16}", h) for h in handles)
    for forged in (ordered[0], str(ordered[0]), "f" * 16, "x" * 16, [handles[0]], None, ""):
        assert other.rowid(forged) not in all_rowids(root)
    foreign = data_for(root)  # another deployment: another key
    assert foreign.rowid(handles[0]) != ordered[0]


def test_handles_are_siphash_feistel_and_a_figure_batch_equals_one_at_a_time():
    """The round function is SipHash-2-4 (the reference vectors of its paper); a figure's
    handles made at once (numpy) equal those made one at a time, and all decode back."""
    key = (int.from_bytes(bytes(range(8)), "little"), int.from_bytes(bytes(range(8, 16)), "little"))
    assert handles.siphash(key, []) == 0x726FDB47DD0E0E31
    assert handles.siphash(key, [int.from_bytes(bytes(range(8)), "little")]) == 0x93F5F5799A932462
    rowids = [1, 2, 3, 1000, 2**40 + 7, 2**63 - 1]
    batch = handles.encode_many(b"k", np.array(rowids))
    assert batch == [handles.encode(b"k", r) for r in rowids]
    assert [handles.decode(b"k", h) for h in batch] == rowids
    assert len(set(handles.encode_many(b"k", np.arange(1, 50_001)))) == 50_000


# ---------------------------------------------------------------------------- F2


def test_a_file_only_one_student_has_is_neither_shown_nor_searchable(shuffled_course):
    """F2: `Erin_Sato_private.ipynb`, only u005's, was labelled with its name beside
    `student 4` and found by the path regexp `Erin`."""
    root, _, private = shuffled_course
    data = data_for(root)
    first = private.split("_")[0]
    figure = activity.graph(data, activity_filters(criteria="user"))[0]
    labels = figure["layout"]["yaxis"]["ticktext"]
    assert f"{OWN_FILE} student 4" in labels
    assert not [label for label in labels if first in label]
    for pattern in (first, "private", r"_private\.ipynb$"):
        found, n_rows, _ = activity.graph(data, activity_filters(path_re=pattern))
        assert n_rows == "0 rows" and first not in json.dumps(found["layout"])
    options, _ = activity.suggestions(data, 1, None)
    assert options and not [o for o in options if first in o["label"] or "private" in o["label"]]
    named = activity.graph(data, activity_filters(path_re=first, password=PASSWORD))
    assert named[1] == "1 rows" and private in named[0]["layout"]["yaxis"]["ticktext"][0]


# ---------------------------------------------------------------------------- F5, F6


def test_a_locked_out_password_says_so(shuffled_course):
    """F5: while the names password is refused for too many wrong guesses, the page said
    `wrong password`, even for the right one."""
    root, _, _ = shuffled_course
    data = data_for(root, client="10.0.0.66")
    with page_request(root):
        assert "wrong password" in str(pv.password_message(data, "guess 0"))
        for n in range(1, access.FAILURES_PER_CLIENT + 1):
            data.names_shown(f"guess {n}")
        for typed in ("guess 9", PASSWORD):
            assert widgets.PASSWORD_LOCKED in str(pv.password_message(data, typed))
        _, _, note = activity.graph(data, activity_filters(password=PASSWORD))
    assert note.splitlines() == [widgets.PASSWORD_LOCKED]
    assert "names shown" in str(pv.password_message(data_for(root), PASSWORD))


def post(client, callback, values, changed):
    """One callback request: each input and state from `values` by `id.property`."""
    outputs, multi = test_leaks.parse_outputs(callback["output"])

    def slot(spec):
        name = f"{spec['id']}.{spec['property']}"
        return {"id": spec["id"], "property": spec["property"], "value": values.get(name)}

    body = {
        "output": callback["output"],
        "outputs": outputs if multi else outputs[0],
        "inputs": [slot(spec) for spec in callback["inputs"]],
        "state": [slot(spec) for spec in callback["state"]],
        "changedPropIds": [changed],
    }
    return client.post("/_dash-update-component", json=body, headers=test_leaks.AUTH)


@pytest.mark.parametrize(
    "component, value",
    [
        ("moment_slider.value", -(2**64)),
        ("moment_slider.value", float("nan")),
        ("moment_slider.value", -1e308),
        ("version_student.value", [1]),
        ("version_student.value", {"a": 1}),
    ],
)
def test_forged_slider_and_student_values_get_no_server_error(shuffled_course, component, value):
    """F6: a slider position of -2**64 or NaN, a student [1] or {"a": 1} (with a real
    assignment chosen) gave 500."""
    root, _, _ = shuffled_course
    client = pv.create_app(settings_for(root)).server.test_client()
    callbacks = client.get("/_dash-dependencies", headers=test_leaks.AUTH).get_json()
    page = {"assignment.value": "pl01/pl01.ipynb", "moment.data": "live", component: value}
    statuses = {}
    for callback in callbacks:
        specs = callback["inputs"] + callback["state"]
        if callback.get("clientside_function"):
            continue
        if component in {f"{spec['id']}.{spec['property']}" for spec in specs}:
            response = post(client, callback, page, component)
            statuses[callback["output"]] = response.status_code
    assert statuses and all(status < 500 for status in statuses.values()), statuses
