"""progress_viewer.py: its pure parts, its callbacks, and its HTTP behaviour (in-process)."""

import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from datetime import datetime

import numpy as np
import pytest
from conftest import ACCESS_TOKEN, ROOT, private_access_db, sync, token_client, write_json
from demo_course import error_output, execute_result, grade_cell, notebook
from plotly.io.json import to_json_plotly

import progress_viewer as pv

NOW = datetime(2021, 3, 15, 12, 0, 0)


# ---------------------------------------------------------------------------- a course to show


@pytest.fixture(scope="session")
def course(tmp_path_factory):
    """A demo course of 12 students and 2 assignments, synced in 4 real cycles."""
    import demo

    root = tmp_path_factory.mktemp("course")
    demo.build_demo(str(root / "demo"), students=12, assignments=2, minutes=60, step=20)
    return root / "demo"


def settings_for(course, **extra):
    return {
        **pv.DEFAULTS,
        "SYNC_SQLITE": str(course / "sync.sqlite"),
        "USERS_CSV": str(course / "users.csv"),
        "SYNC_DEST": str(course / "sync_dest"),
        "USER_ATTRS": ["real_name", "team"],
        "PASSWD": "s3cret",
        "ACCESS_TOKEN": ACCESS_TOKEN,
        "ACCESS_DB": private_access_db(),
        **extra,
    }


def figure_labels(figure):
    return list(figure["layout"]["yaxis"]["ticktext"])


def sent(*values):
    """What the server would send for these callback outputs, as text."""
    return to_json_plotly(list(values))


# ---------------------------------------------------------------------------- pure parts


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", None),
        ("2021-03-15", datetime(2021, 3, 15)),
        ("2021-03-15T09:23:00", datetime(2021, 3, 15, 9, 23)),
        ("2021-03-15 09:23", datetime(2021, 3, 15, 9, 23)),
        ("-1 days", datetime(2021, 3, 14, 12)),
        ("-2 hours", datetime(2021, 3, 15, 10)),
        ("-30 mins", datetime(2021, 3, 15, 11, 30)),
        ("30 minutes", datetime(2021, 3, 15, 11, 30)),
        ("+1 hour", datetime(2021, 3, 15, 13)),
    ],
)
def test_parse_time_absolute_and_relative(text, expected):
    assert pv.parse_time(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "-2 fortnights", "2021-13-01"])
def test_parse_time_rejects_nonsense_with_a_message(text):
    with pytest.raises(ValueError, match="cannot read the time"):
        pv.parse_time(text, NOW)


def test_bad_regexp_is_a_message():
    with pytest.raises(ValueError, match="bad path regexp"):
        pv.compile_regexp("pl01/(")


def test_regexps_run_on_a_linear_time_engine():
    """A backreference, which only a backtracking engine (one that (a+)+b can hang) knows,
    is refused; (a+)+b over long names answers (pytest's timeout would end a hang)."""
    with pytest.raises(ValueError, match="bad path regexp"):
        pv.compile_regexp(r"(a)\1")
    regexp = pv.compile_regexp("(a+)+b")
    assert not any(regexp.search("a" * 10000 + "c") for _ in range(200))


@pytest.mark.parametrize(
    "counts, color, size",
    [
        ((1, 0, 0, 1, 0), "red", 10.0),
        ((1, 1, 1, 0, 0), "green", 15.0),
        ((1, 0, 0, 0, 1), "blue", 10.0),
        ((0, 0, 0, 0, 0), "blue", 5.0),
        ((None,) * 5, "gray", 5.0),
    ],
)
def test_marker_color_and_size(counts, color, size):
    array = np.array([[np.nan if v is None else v for v in counts]])
    assert pv.marker_colors(array).tolist() == [color]
    assert pv.marker_sizes(array).tolist() == [size]


def test_path_groups_replace_one_component():
    sources = [f"hoge/{u}/notebooks/pl01.ipynb" for u in "abc"] + ["hoge/a/notebooks/pl02.ipynb"]
    groups = pv.path_groups(sources)
    assert len(groups[r"^hoge/[^/]+/notebooks/pl01\.ipynb$"]) == 3
    assert len(groups[r"^hoge/a/notebooks/[^/]+$"]) == 2


def test_row_label_masks_uid_and_attributes_without_password(tmp_path):
    (tmp_path / "users.csv").write_text(
        "uid,notebooks,real_name,team\nalice,home/alice/nb,Alice A,t1\n"
    )
    people = pv.load_people(str(tmp_path / "users.csv"))
    assert people.problem == ""
    source = "home/alice/nb/pl01/pl01.ipynb"
    attrs = ["real_name", "team"]
    assert (
        pv.row_label(source, "alice", people, attrs, True) == "pl01/pl01.ipynb [Alice A t1] alice"
    )
    assert pv.row_label(source, "alice", people, attrs, False) == "pl01/pl01.ipynb [* *] *"
    assert pv.row_label("other/x.ipynb", "unknown", people, [], False) == "other/x.ipynb unknown"


def test_version_url_percent_encodes_the_name():
    url = pv.version_url("http://hub/notebooks/{filename}", 'a/<b> "c"#%.ipynb')
    assert url == "http://hub/notebooks/a/%3Cb%3E%20%22c%22%23%25.ipynb"


# ---------------------------------------------------------------------------- the catalog and views


def make_db(path, rows):
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE summary(filename unique, t, owner, code_ok, code_display, code_stream, "
        "code_error, code_empty)"
    )
    conn.execute("CREATE TABLE problems(filename, grade_id, result)")
    conn.executemany("INSERT INTO summary VALUES (?,?,?,?,?,?,?,?)", rows)
    conn.commit()
    conn.close()


SEED_ROWS = [
    ("h/a/nb/x.bak_2021-03-15T09:00:00.ipynb", "2021-03-15T08:59:00", "a", 0, 0, 0, 1, 1),
    ("h/a/nb/x.ipynb", "2021-03-15T09:10:00", "a", 2, 0, 0, 0, 0),
    ("h/b/nb/x.ipynb", "2021-03-15T09:05:00", "b", 0, 0, 0, 0, 2),
    ("h/b/nb/y.ipynb", "2021-03-15T09:20:00", "b", None, None, None, None, None),
    ("h/b/nb/hello.txt", "2021-03-15T09:20:00", "b", 0, 0, 0, 0, 0),
]


def seed_view(tmp_path, **filters):
    """A view over a database with only the seed's two tables."""
    if not (tmp_path / "s.sqlite").exists():
        make_db(tmp_path / "s.sqlite", SEED_ROWS)
    (tmp_path / "users.csv").write_text("uid,notebooks,team\na,h/a/nb,t2\nb,h/b/nb,t1\n")
    people = pv.load_people(str(tmp_path / "users.csv"))
    catalog = pv.CatalogCache().get(str(tmp_path / "s.sqlite"))
    args = {
        "patterns": [],
        "after": None,
        "before": None,
        "only_latest": False,
        "criteria": "latest",
        "max_lines": 100,
        **filters,
    }
    mask = pv.source_mask(catalog, args.pop("patterns"))
    team_of = pv.ActivityView(pv.DEFAULTS).team_of(people, authorized=True)
    view = pv.select_view(catalog, mask, team_of=team_of, **args)
    return catalog, view


def shown(catalog, view):
    return [catalog.sources[s] for s in view.sources]


def test_catalog_groups_backups_with_their_source_and_skips_other_files(tmp_path):
    catalog, view = seed_view(tmp_path)
    assert sorted(catalog.sources) == ["h/a/nb/x.ipynb", "h/b/nb/x.ipynb", "h/b/nb/y.ipynb"]
    assert len(view.versions) == 4


@pytest.mark.parametrize(
    "criteria, expected",
    [
        ("latest", ["h/b/nb/y.ipynb", "h/a/nb/x.ipynb", "h/b/nb/x.ipynb"]),
        ("most_ok", ["h/a/nb/x.ipynb", "h/b/nb/y.ipynb", "h/b/nb/x.ipynb"]),
        ("user", ["h/a/nb/x.ipynb", "h/b/nb/x.ipynb", "h/b/nb/y.ipynb"]),
        ("team", ["h/b/nb/x.ipynb", "h/b/nb/y.ipynb", "h/a/nb/x.ipynb"]),
    ],
)
def test_sort_orders(tmp_path, criteria, expected):
    catalog, view = seed_view(tmp_path, criteria=criteria)
    assert shown(catalog, view) == expected


def test_most_error_uses_the_latest_version(tmp_path):
    catalog, view = seed_view(tmp_path, criteria="most_error", before=datetime(2021, 3, 15, 9, 1))
    assert shown(catalog, view) == ["h/a/nb/x.ipynb"]  # only its backup is in the window


def test_filters_regexp_window_latest_and_max(tmp_path):
    catalog, view = seed_view(tmp_path, patterns=["/a/"])
    assert shown(catalog, view) == ["h/a/nb/x.ipynb"] and len(view.versions) == 2
    catalog, view = seed_view(tmp_path, only_latest=True)
    assert len(view.versions) == 3
    catalog, view = seed_view(tmp_path, max_lines=1)
    assert shown(catalog, view) == ["h/b/nb/y.ipynb"]
    catalog, view = seed_view(tmp_path, after=datetime(2021, 3, 15, 9, 6))
    assert shown(catalog, view) == ["h/b/nb/y.ipynb", "h/a/nb/x.ipynb"]


def test_figure_has_one_row_per_file_and_colored_markers(tmp_path):
    catalog, view = seed_view(tmp_path, criteria="user")
    figure = pv.make_figure(catalog, view, ["A", "B", "C"])
    assert figure_labels(figure) == ["A", "B", "C"]
    markers = {
        (trace["marker"]["color"], int(y), float(size))
        for trace in figure["data"]
        for y, size in zip(trace["y"], trace["marker"]["size"])
    }
    assert markers == {("red", 0, 5.0), ("green", 0, 15.0), ("blue", 1, 5.0), ("gray", 2, 5.0)}


# ---------------------------------------------------------------------------- callbacks


def test_graph_callback_hides_names_without_the_password(course):
    view = pv.ActivityView(settings_for(course))
    with pv_request():
        figure, n_rows, message = view.graph(None, "", [], "", "", "latest", [], 100)
    text = sent(figure, n_rows, message)
    assert n_rows == "24 rows" and message == ""
    assert all(label.endswith("[* *] *") for label in figure_labels(figure))
    users = (course / "users.csv").read_text().splitlines()[1:]
    for line in users:
        uid, _, name, _ = line.split(",")
        assert not re.search(rf"\b({uid}|{name.split()[0]})\b", text), line


def test_graph_callback_shows_names_with_the_password(course):
    view = pv.ActivityView(settings_for(course))
    with pv_request():
        figure, n_rows, _ = view.graph("s3cret", "", [], "", "", "user", [], 100)
    labels = figure_labels(figure)
    assert labels[0].startswith("pl0") and labels[0].endswith("] u001")
    assert "Alice" in labels[0]


def test_wrong_password_is_said_and_reveals_nothing(course):
    view = pv.ActivityView(settings_for(course))
    with pv_request():
        figure, _, message = view.graph("guess", "", [], "", "", "user", [], 100, True)
    assert message == "wrong password"
    assert not re.search(r"\bu001\b", sent(figure))


def test_bad_inputs_are_messages_not_errors(course):
    view = pv.ActivityView(settings_for(course))
    with pv_request():
        for args, expected in [
            (("(", [], "", ""), "bad path regexp"),
            (("", [], "yesterday", ""), "cannot read the time"),
        ]:
            _, n_rows, message = view.graph(None, *args, "latest", [], 100)
            assert expected in message and n_rows == "0 rows"
        _, _, message = view.graph(None, "", [], "", "", "latest", [], "lots")
        assert "max entries" in message


def test_suggestions_offer_groups_and_hide_single_student_ones(course):
    view = pv.ActivityView(settings_for(course))
    with pv_request():
        anonymous = view.suggestions(10, None)
        revealed = view.suggestions(1, "s3cret")
        hidden = view.suggestions(1, None)
    assert {
        "label": r"^class/[^/]+/notebooks/pl01/pl01\.ipynb$ (12)",
        "value": r"^class/[^/]+/notebooks/pl01/pl01\.ipynb$",
    } in anonymous
    assert "u00" not in json.dumps(anonymous) + json.dumps(hidden)
    assert any("u001" in option["value"] for option in revealed)


def test_choosing_a_group_filters(course):
    view = pv.ActivityView(settings_for(course))
    with pv_request():
        figure, n_rows, _ = view.graph(
            None, "", [r"^class/[^/]+/notebooks/pl02/pl02\.ipynb$"], "", "", "latest", [], 100
        )
    assert n_rows == "12 rows"
    assert all(label.startswith("pl02/pl02.ipynb") for label in figure_labels(figure))


def test_click_link_needs_the_password_and_is_encoded(course):
    view = pv.ActivityView(settings_for(course, URL_TEMPLATE="http://hub/n/{filename}?x=1"))
    with pv_request():
        figure, _, _ = view.graph("s3cret", "", [], "", "", "user", [], 100)
        point = {"points": [{"customdata": int(figure["data"][0]["customdata"][0])}]}
        assert "password" in view.link(point, None)
        link = view.link(point, "s3cret")
    assert link.href.startswith("http://hub/n/class/u0") and link.href.endswith(".ipynb?x=1")


def test_new_versions_appear_without_restart(tmp_path):
    (tmp_path / "users.csv").write_text("uid,notebooks\na,hoge/a\n")
    write_json(tmp_path / "hoge/a/one.ipynb", notebook([grade_cell("", "q")]))
    sync(tmp_path)
    view = pv.ActivityView(
        {
            **pv.DEFAULTS,
            "SYNC_SQLITE": str(tmp_path / "sync.sqlite"),
            "USERS_CSV": str(tmp_path / "users.csv"),
        }
    )
    with pv_request():
        assert view.graph(None, "", [], "", "", "latest", [], 100)[1] == "1 rows"
        write_json(
            tmp_path / "hoge/a/two.ipynb",
            notebook([grade_cell("1/0", "q", [error_output("E", "e")])]),
        )
        answered = notebook([grade_cell("1", "q", [execute_result("1")])])
        write_json(tmp_path / "hoge/a/one.ipynb", answered, mtime=time.time() + 2)
        sync(tmp_path)
        figure, n_rows, _ = view.graph(None, "", [], "", "", "latest", [], 100)
    assert n_rows == "2 rows"
    assert sum(len(trace["x"]) for trace in figure["data"]) == 3


def test_missing_database_is_a_message_and_creates_nothing(tmp_path):
    view = pv.ActivityView({**pv.DEFAULTS, "SYNC_SQLITE": str(tmp_path / "none.sqlite")})
    with pv_request():
        _, n_rows, message = view.graph(None, "", [], "", "", "latest", [], 100)
    assert "no database at" in message and n_rows == "0 rows"
    assert not os.path.exists(tmp_path / "none.sqlite")


def pv_request():
    settings = {**pv.DEFAULTS, "ACCESS_DB": private_access_db()}
    return pv.create_app(settings).server.test_request_context("/")


# ---------------------------------------------------------------------------- HTTP


def test_application_for_wsgi_servers_and_startup_messages(tmp_path):
    """`progress_viewer:application` is a Flask app; a missing database is said at start."""
    server = subprocess.Popen(
        [
            sys.executable,
            os.path.join(ROOT, "progress_viewer.py"),
            "--port",
            str(free_port()),
            "--db",
            str(tmp_path / "none.sqlite"),
        ],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first_line = server.stderr.readline()
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert "no database at" in first_line and str(tmp_path / "none.sqlite") in first_line
    assert not (tmp_path / "none.sqlite").exists()
    assert callable(pv.application) and pv.application.name == "progress_viewer"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_config_file_in_working_dir_is_used(tmp_path, monkeypatch):
    (tmp_path / "progress_viewer_config.py").write_text('SYNC_SQLITE = "x.sqlite"\nPASSWD = "p"\n')
    monkeypatch.chdir(tmp_path)
    settings = pv.load_settings()
    assert settings["SYNC_SQLITE"] == str(tmp_path / "x.sqlite") and settings["PASSWD"] == "p"
    assert pv.load_settings(overrides={"SYNC_SQLITE": "y"})["SYNC_SQLITE"] == "y"


def test_reading_the_database_does_not_look_like_a_change(tmp_path):
    """A reader creating an empty WAL must not make the catalog reload on every update."""
    make_db(tmp_path / "s.sqlite", SEED_ROWS)
    conn = sqlite3.connect(tmp_path / "s.sqlite")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    cache = pv.CatalogCache()
    first = cache.get(str(tmp_path / "s.sqlite"))
    assert cache.get(str(tmp_path / "s.sqlite")) is first
    conn = sqlite3.connect(tmp_path / "s.sqlite")
    conn.execute(
        "INSERT INTO summary VALUES ('h/c/z.ipynb', '2021-03-15T10:00:00', 'c', 1, 0, 0, 0, 0)"
    )
    conn.commit()
    assert len(cache.get(str(tmp_path / "s.sqlite")).sources) == len(first.sources) + 1
    conn.close()


def test_filter_by_a_users_csv_column_and_attrs_only_after_the_password(course):
    """`team` is in USER_ATTRS: offered only with the password; then it filters the view."""
    view = pv.ActivityView(settings_for(course, USER_ATTRS=["real_name"]))
    people = view.catalog_and_people()[1]
    assert view.filter_columns(people, authorized=False) == ["team"]
    assert view.filter_columns(people, authorized=True) == ["real_name", "team"]
    assert view.allowed_uids(people, "real_name", "Alice Sato", authorized=False) is None
    team1 = view.allowed_uids(people, "team", "team1", authorized=False)
    assert team1 == {"u001", "u006", "u011"}
    with pv_request():
        figure, n_rows, _ = view.graph(
            None, "", [], "", "", "latest", [], 100, False, "team", "team1"
        )
    assert n_rows == "6 rows"  # 3 students x 2 assignments


def test_url_prefix_serves_the_page_under_it(course):
    app = pv.create_app(settings_for(course, URL_PREFIX="/progress/"))
    client = token_client(app)
    assert client.get("/progress/").status_code == 200
    assert client.get("/").status_code == 404
    assert b"/progress/_dash" in client.get("/progress/").data


def test_gunicorn_serves_the_application(course, tmp_path):
    """`gunicorn progress_viewer:application`, the config found in the working directory."""
    db, users = str(course / "sync.sqlite"), str(course / "users.csv")
    (tmp_path / "progress_viewer_config.py").write_text(
        f"SYNC_SQLITE = {db!r}\nUSERS_CSV = {users!r}\nACCESS_TOKEN = {ACCESS_TOKEN!r}\n"
        f"ACCESS_DB = {private_access_db()!r}\n"
    )
    port = free_port()
    gunicorn = os.path.join(os.path.dirname(sys.executable), "gunicorn")
    server = subprocess.Popen(
        [
            gunicorn,
            "-b",
            f"127.0.0.1:{port}",
            "--chdir",
            str(tmp_path),
            "--pythonpath",
            ROOT,
            "progress_viewer:application",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        body = b""
        for _ in range(100):
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/_dash-layout",
                    headers={"Authorization": f"token {ACCESS_TOKEN}"},
                )
                with urllib.request.urlopen(request) as response:
                    body = response.read()
                break
            except OSError:
                time.sleep(0.2)
        assert b"activity_graph" in body and b"problems_heatmap" in body
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_users_csv_is_read_again_when_it_changes(tmp_path):
    """users.csv is cached, but an edit (a new student, a new team) shows on the next update."""
    users = tmp_path / "users.csv"
    users.write_text("uid,notebooks,team\na,h/a,t1\n")
    view = pv.ActivityView({**pv.DEFAULTS, "USERS_CSV": str(users)})
    first = view.people()
    assert view.people() is first
    users.write_text("uid,notebooks,team\na,h/a,t2\nb,h/b,t1\n")
    os.utime(users, (time.time() + 5, time.time() + 5))
    assert {u: p.attrs["team"] for u, p in view.people().by_uid.items()} == {"a": "t2", "b": "t1"}
