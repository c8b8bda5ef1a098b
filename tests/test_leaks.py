"""Nothing names a student without the names password: a walk of every callback the page
declares, with the inputs a student with a shell on the hub could forge.

The course is the demo's (real rsync cycles), with a users.csv that has extra columns
(e-mail, student number) and a private sentence in every student's latest notebook. For
each callback the server lists in `/_dash-dependencies`, the walk posts the layout's own
values, then each input replaced in turn by forged values (wrong types, absurd times,
other students' names), then guided combinations (every student number with every version
of the version view). No response may carry a uid, a users.csv value (none is public
here), a path under a student's folder, or notebook content; none may be a server error.
"""

import csv
import itertools
import json
import os
import random
import re
import shutil

import pytest
from conftest import rows, sync
from demo_course import markdown_cell

import progress_viewer as pv
from progress_views import access
from progress_views.data import Data

TOKEN = "leak-walk-token"
PASSWORD = "s3cret"
SENTINEL = "NBCONTENT-9d41"
AUTH = {"Authorization": f"token {TOKEN}"}


# ---------------------------------------------------------------------------- the course


@pytest.fixture(scope="module")
def leaky_course(tmp_path_factory):
    """The demo course with e-mail and student-number columns and a private sentence in
    every student's last version of pl01."""
    import demo

    root = tmp_path_factory.mktemp("leaks") / "demo"
    demo.build_demo(str(root), students=12, assignments=2, minutes=60, step=20)
    with open(root / "users.csv", newline="") as stream:
        users = list(csv.DictReader(stream))
    for number, user in enumerate(users):
        user["email"] = f"{user['real_name'].lower().replace(' ', '.')}.{user['uid']}@uni.example"
        user["student_number"] = f"SN-{482900 + number}"
    with open(root / "users.csv", "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(users[0]))
        writer.writeheader()
        writer.writerows(users)
    for user in users:
        path = root / user["notebooks"] / "pl01" / "pl01.ipynb"
        content = json.loads(path.read_text())
        secret = f"{SENTINEL}: answer of {user['real_name']}"
        content["cells"].append(markdown_cell(secret))
        path.write_text(json.dumps(content))
    sync(root)
    return root, users


def secrets_of(users):
    """What must never reach a browser without the password: every users.csv value."""
    values = set()
    for user in users:
        values.update(v for v in user.values() if v)
    return values


def settings_for(root, users_csv, **extra):
    return {
        **pv.DEFAULTS,
        "SYNC_SQLITE": str(root / "sync.sqlite"),
        "USERS_CSV": str(users_csv),
        "SYNC_DEST": str(root / "sync_dest"),
        "USER_ATTRS": ["real_name", "team"],
        "PASSWD": PASSWORD,
        "ACCESS_TOKEN": TOKEN,
        **extra,
    }


def users_csv_variants(root, users):
    """The full users.csv, one without the first student, and none at all."""
    partial = root / "users_partial.csv"
    with open(partial, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(users[0]))
        writer.writeheader()
        writer.writerows(users[1:])
    return {"full": root / "users.csv", "partial": partial, "missing": root / "no_users.csv"}


# ---------------------------------------------------------------------------- the walk


def layout_values(layout):
    """{(id, prop): value} of every component in the layout JSON."""
    found = {}

    def walk(node):
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            props = node.get("props")
            if isinstance(props, dict):
                component_id = props.get("id")
                if isinstance(component_id, str):
                    for prop, value in props.items():
                        found[(component_id, prop)] = value
                for value in props.values():
                    walk(value)

    walk(layout)
    return found


def parse_outputs(output):
    """`..a.b...c.d..` (or `a.b`) -> [{"id": "a", "property": "b"}, ...]."""
    multi = output.startswith("..")
    parts = output[2:-2].split("...") if multi else [output]
    specs = []
    for part in parts:
        component_id, prop = part.rsplit(".", 1)
        if component_id.startswith("{"):
            component_id = json.loads(component_id)
        specs.append({"id": component_id, "property": prop})
    return specs, multi


FORGED = [
    None,
    "",
    0,
    1,
    5,
    -5,
    10**12,
    "-99999999999 days",
    "2026-01-01T00:00:00",
    "live",
    "x" * 2000,
    ["a", "b"],
    {"a": 1},
    [],
    True,
    "(a+)+b",
    "wrong password",
    -(2**64),
    float("nan"),
    [1],
]


def guesses(component_id, prop, rowids, assignments, columns):
    """Values a forger who knows the page would try for one input, by what it is."""
    name = f"{component_id}.{prop}".lower()
    pool = []
    if "student" in name:
        pool += list(range(13))
    if "select" in name or "version" in name or "rowid" in name:
        pool += rowids
    if "assignment" in name:
        pool += assignments
    if "column" in name:
        pool += columns
    if prop == "clickData":
        pool += [{"points": [{"customdata": r, "x": 0, "y": 0}]} for r in rowids]
        pool += [{"points": [{"customdata": [r], "x": "2021-01-01", "y": 0}]} for r in rowids]
    if prop == "active_cell":
        pool += [{"row": r, "column": 0, "column_id": "student"} for r in range(4)]
    if prop in ("derived_viewport_data", "data"):
        pool += [[{"rowid": r, "student": "x"} for r in rowids]]
    return pool


def is_password(component_id, prop):
    return "passw" in component_id.lower() and prop == "value"


class Walker:
    """Posts callback requests and keeps every response body."""

    def __init__(self, client, password):
        self.client = client
        self.password = password
        self.responses = []  # (request body, status, response text)

    def post(self, callback, values):
        outputs, multi = parse_outputs(callback["output"])

        def slot(spec, value):
            return {"id": spec["id"], "property": spec["property"], "value": value}

        body = {
            "output": callback["output"],
            "outputs": outputs if multi else outputs[0],
            "inputs": [slot(s, values[("i", n)]) for n, s in enumerate(callback["inputs"])],
            "state": [slot(s, values[("s", n)]) for n, s in enumerate(callback["state"])],
            "changedPropIds": [f"{s['id']}.{s['property']}" for s in callback["inputs"][:1]],
        }
        response = self.client.post("/_dash-update-component", json=body, headers=AUTH)
        text = response.get_data(as_text=True)
        self.responses.append((json.dumps(body), response.status_code, text))
        return response.status_code


def key_spec(callback, key):
    kind, n = key
    spec = (callback["inputs"] if kind == "i" else callback["state"])[n]
    return str(spec["id"]), spec["property"]


def slots(callback):
    return [("i", n, s) for n, s in enumerate(callback["inputs"])] + [
        ("s", n, s) for n, s in enumerate(callback["state"])
    ]


def walk_callbacks(client, password, rowids, assignments, columns, guided_limit=2000):
    """Every server callback: defaults, one forged input at a time, guided combinations."""
    layout = client.get("/_dash-layout", headers=AUTH)
    assert layout.status_code == 200
    defaults = layout_values(layout.get_json())
    dependencies = client.get("/_dash-dependencies", headers=AUTH)
    assert dependencies.status_code == 200
    walker = Walker(client, password)
    rng = random.Random(7)
    callbacks = [c for c in dependencies.get_json() if not c.get("clientside_function")]
    for callback in callbacks:
        base, guided = {}, {}
        for kind, n, spec in slots(callback):
            component_id, prop = spec["id"], spec["property"]
            if not isinstance(component_id, str):
                component_id = json.dumps(component_id, sort_keys=True)
            if is_password(component_id, prop):
                base[(kind, n)] = password
                guided[(kind, n)] = []
            else:
                base[(kind, n)] = defaults.get((component_id, prop))
                guided[(kind, n)] = guesses(component_id, prop, rowids, assignments, columns)
        walker.post(callback, base)
        for key, pool in guided.items():
            if not is_password(*key_spec(callback, key)):
                for value in FORGED + pool:
                    walker.post(callback, {**base, key: value})
        keys = list(guided)
        combos = list(
            itertools.islice(itertools.product(*[[base[k], *guided[k]] for k in keys]), 100000)
        )
        if len(combos) > guided_limit:
            combos = rng.sample(combos, guided_limit)
        for combo in combos:
            walker.post(callback, dict(zip(keys, combo)))
    pages = [client.get(path, headers=AUTH) for path in ("/", "/_dash-layout")]
    walker.responses += [("GET", r.status_code, r.get_data(as_text=True)) for r in pages]
    return callbacks, walker.responses


# ---------------------------------------------------------------------------- what a leak is


def visible_strings(text):
    """The strings of a response as a browser would show or use them; plotly's typed
    arrays (`bdata`) and data URLs are binary and skipped."""
    try:
        data = json.loads(text)
    except ValueError:
        yield text
        return
    stack = [data]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack += [v for k, v in node.items() if k != "bdata"]
        elif isinstance(node, list):
            stack += node
        elif isinstance(node, str) and not node.startswith("data:"):
            yield node


def leaks(text, forbidden, sent):
    """The forbidden strings found in a response (those the request itself carried are
    echoes, not leaks)."""
    found = set()
    for string in visible_strings(text):
        for secret, pattern in forbidden.items():
            if secret not in sent and pattern.search(string):
                found.add(secret)
    return found


def forbidden_patterns(users, root):
    secrets = secrets_of(users) | {SENTINEL}
    secrets |= {os.path.join(str(root), user["notebooks"]) for user in users}
    return {s: re.compile(r"(?<![\w.-])" + re.escape(s) + r"(?![\w-])") for s in secrets}


def course_facts(root):
    db = root / "sync.sqlite"
    sentinel_rowids = [
        r for (r,) in rows(db, "SELECT rowid FROM summary WHERE filename LIKE '%pl01.ipynb'")
    ]
    some = [r for (r,) in rows(db, "SELECT rowid FROM summary ORDER BY rowid LIMIT 5")]
    settings = settings_for(root, root / "users.csv")
    data = Data(settings, access.PasswordGate(settings))
    handles = [data.handle(r) for r in sentinel_rowids]  # what the page sends for versions
    return handles + some, ["pl01/pl01.ipynb", "pl02/pl02.ipynb"]


# ---------------------------------------------------------------------------- tests


@pytest.mark.parametrize(
    "variant, password",
    [("full", None), ("full", "wrong password"), ("partial", ""), ("missing", None)],
)
def test_no_response_names_a_student_without_the_password(leaky_course, variant, password):
    """Every callback, forged every way, without the right password: no uid, no users.csv
    value, no student path, no notebook content, no server error."""
    root, users = leaky_course
    users_csv = users_csv_variants(root, users)[variant]
    app = pv.create_app(settings_for(root, users_csv))
    client = app.server.test_client()
    rowids, assignments = course_facts(root)
    columns = list(users[0])
    callbacks, responses = walk_callbacks(client, password, rowids, assignments, columns)
    assert len(callbacks) >= 8  # the page's views are all there
    forbidden = forbidden_patterns(users, root)
    failures = {}  # (callback output, what went wrong) -> how often
    for body, status, text in responses:
        output = json.loads(body)["output"] if body != "GET" else "GET"
        if status >= 500:
            failures.setdefault((output, f"status {status}"), body[:400])
        for secret in leaks(text, forbidden, body):
            failures.setdefault((output, "leaks " + secret), body[:400])
    kinds = "\n".join(sorted(f"{output}: {what}" for output, what in failures))
    examples = "\n".join(list(failures.values())[:3])
    assert not failures, f"{len(failures)} kinds of bad answer:\n{kinds}\ne.g.\n{examples}"
    assert sum(status == 200 for _, status, _ in responses) > len(responses) // 2


def test_the_walk_finds_names_with_the_password(leaky_course):
    """The walk reaches what the password reveals (so its silence without it means
    something): uids and the private notebook sentence."""
    root, users = leaky_course
    app = pv.create_app(settings_for(root, root / "users.csv"))
    client = app.server.test_client()
    rowids, assignments = course_facts(root)
    _, responses = walk_callbacks(client, PASSWORD, rowids, assignments, list(users[0]))
    forbidden = forbidden_patterns(users, root)
    revealed = set()
    for body, _, text in responses:
        revealed |= leaks(text, forbidden, body)
    assert {u["uid"] for u in users} & revealed
    assert SENTINEL in revealed


def test_without_the_token_nothing_is_served(leaky_course):
    """The token is the door: without it the page, its callbacks and its layout answer
    401 or 403 and carry nothing of the course."""
    root, users = leaky_course
    app = pv.create_app(settings_for(root, root / "users.csv"))
    client = app.server.test_client()
    forbidden = forbidden_patterns(users, root)
    for method, path in [
        ("get", "/"),
        ("get", "/_dash-layout"),
        ("get", "/_dash-dependencies"),
        ("post", "/_dash-update-component"),
    ]:
        response = getattr(client, method)(path)
        assert response.status_code in (401, 403), path
        assert not leaks(response.get_data(as_text=True), forbidden, "")


def test_a_missing_users_csv_still_hides_paths(leaky_course, tmp_path):
    """Without users.csv the viewer cannot map folders to students; its labels must still
    not be the students' folders."""
    root, users = leaky_course
    copy = tmp_path / "demo"
    shutil.copytree(root / "sync_dest", copy / "sync_dest", symlinks=True)
    shutil.copy(root / "sync.sqlite", copy / "sync.sqlite")
    app = pv.create_app(settings_for(copy, copy / "users.csv"))
    client = app.server.test_client()
    _, responses = walk_callbacks(client, None, [], [], [], guided_limit=50)
    forbidden = forbidden_patterns(users, root)
    for body, _, text in responses:
        assert not leaks(text, forbidden, body), body[:300]
