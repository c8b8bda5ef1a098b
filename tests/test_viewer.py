"""progress_viewer.py: its pure parts, its callbacks, and its HTTP behaviour (in-process)."""

import dataclasses
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
from progress_views import access, activity, model, moment, problems, version, widgets
from progress_views import notebook as nbview
from progress_views.data import CACHE_ENTRIES, OWN_FILE, CatalogCache, Data, version_url

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


def data_for(settings):
    """The data layer of a page with these settings, as its callbacks use it."""
    return Data(settings, access.PasswordGate(settings), lambda: "10.0.0.9")


def filters(**values):
    """activity.Filters as the page's inputs send them (defaults: the page's own)."""
    page = {
        "password": None,
        "path_re": None,
        "groups": [],
        "after": None,
        "before": None,
        "criteria": "latest",
        "only_latest": [],
        "max_lines": 100,
        "column": None,
        "value": None,
        "moment": "live",
        **values,
    }
    return activity.Filters.read([page[f.name] for f in dataclasses.fields(activity.Filters)])


def controls(**values):
    """problems.Controls as the page's inputs send them."""
    page = {
        "password": None,
        "column": None,
        "value": None,
        "moment": "live",
        "minutes": 10,
        "assignment": None,
        "sort": "stuck",
        **values,
    }
    return problems.Controls.read([page[f.name] for f in dataclasses.fields(problems.Controls)])


def users_of(course):
    """[(uid, real_name, team)] of the course's users.csv."""
    lines = (course / "users.csv").read_text().splitlines()[1:]
    return [(uid, name, team) for uid, _, name, team in (line.split(",") for line in lines)]


def names_in(text, course):
    """The uids and names of the course found in `text`."""
    found = []
    for uid, name, _ in users_of(course):
        found += [v for v in (uid, name, name.split()[0]) if re.search(rf"\b{v}\b", text)]
    return found


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
    assert activity.parse_time(text, NOW) == expected


@pytest.mark.parametrize(
    "text", ["yesterday", "-2 fortnights", "2021-13-01", "-99999999999 days", "9" * 400 + " d"]
)
def test_parse_time_rejects_nonsense_and_absurd_times_with_a_message(text):
    """issue 8 Found 6: `-99999999999 days` was a 500 (an overflow), now a message."""
    with pytest.raises(ValueError, match="cannot read the time"):
        activity.parse_time(text, NOW)


def test_bad_regexp_is_a_message():
    with pytest.raises(ValueError, match="bad path regexp"):
        activity.compile_regexp("pl01/(")


def test_regexps_run_on_a_linear_time_engine():
    """A backreference, which only a backtracking engine (one that (a+)+b can hang) knows,
    is refused; (a+)+b over long names answers (pytest's timeout would end a hang)."""
    with pytest.raises(ValueError, match="bad path regexp"):
        activity.compile_regexp(r"(a)\1")
    regexp = activity.compile_regexp("(a+)+b")
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
    assert activity.marker_colors(array).tolist() == [color]
    assert activity.marker_sizes(array).tolist() == [size]


def test_path_groups_replace_one_component():
    sources = [f"hoge/{u}/notebooks/pl01.ipynb" for u in "abc"] + ["hoge/a/notebooks/pl02.ipynb"]
    groups = activity.path_groups(sources)
    assert groups[r"^hoge/[^/]+/notebooks/pl01\.ipynb$"] == {0, 1, 2}
    assert groups[r"^hoge/a/notebooks/[^/]+$"] == {0, 3}
    table = activity.group_table(["a/p.ipynb", "b/p.ipynb", "a/x.ipynb"], ["a", "b", "a"])
    assert table[:2] == [(r"^[^/]+/p\.ipynb$", 2, 2), (r"^a/[^/]+$", 2, 1)]


def test_version_url_percent_encodes_the_name():
    url = version_url("http://hub/notebooks/{filename}", 'a/<b> "c"#%.ipynb')
    assert url == "http://hub/notebooks/a/%3Cb%3E%20%22c%22%23%25.ipynb"


@pytest.mark.parametrize(
    "value, expected",
    [(None, 7), ("", 7), (3, 3), (3.0, 3), ("12", 12)],
)
def test_whole_number_reads_a_number_box(value, expected):
    assert widgets.whole_number(value, "max entries", 7) == expected


@pytest.mark.parametrize("value", [0, -5, 2.5, "lots", ["1"], {"a": 1}, True, float("nan")])
def test_whole_number_names_the_box_for_a_bad_value(value):
    with pytest.raises(ValueError, match="max entries must be"):
        widgets.whole_number(value, "max entries", 7)


def test_forged_values_read_as_the_types_the_views_expect():
    """issue 8 Found 6: lists where a string is expected, a string slider or student."""
    forged = filters(path_re=["a"], groups="x", after={"a": 1}, criteria=5, only_latest="yes")
    assert (forged.path_re, forged.groups, forged.after, forged.criteria) == ("", [], "", "latest")
    assert forged.only_latest is False
    assert moment.read(["2021"]) == moment.LIVE and moment.read("2021-03-15T12:00:00") != "live"
    assert moment.from_slider("9", 100) == moment.LIVE
    assert widgets.index("0", 5) is None and widgets.index(True, 5) is None
    assert widgets.index(4, 5) == 4 and widgets.index(5, 5) is None


# ---------------------------------------------------------------------------- the moment M


def test_a_replayed_moment_stays_put_while_the_clock_runs():
    """issue 10 Found 3: the slider was `minutes before now`, so a replayed M moved with
    the clock; now M is a time, the same two minutes later."""
    stored = moment.from_slider(moment.seconds_of("2021-03-15T14:26:42"), end=10**12)
    assert stored == "2021-03-15T14:26:42"
    now = moment.seconds_of("2021-03-15T15:00:00")
    assert moment.resolve(stored, now) == moment.resolve(stored, now + 120)
    assert moment.resolve(moment.LIVE, now) == now
    assert moment.from_slider(now, end=now) == moment.LIVE


def test_slider_shows_clock_times():
    start, end = moment.slider_range(moment.seconds_of("2021-03-15T13:30:20"), 1615822800)
    marks = moment.slider_marks(start, end)
    assert all(re.fullmatch(r"\d\d:\d\d", label) for label in marks.values())
    assert moment.clock(start) == "2021-03-15 13:30:00"


# ---------------------------------------------------------------------------- the catalog


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


def seed_data(tmp_path, users="uid,notebooks,team\na,h/a/nb,t2\nb,h/b/nb,t1\n", **extra):
    """The data layer over a database with only the seed's two tables."""
    if not (tmp_path / "s.sqlite").exists():
        make_db(tmp_path / "s.sqlite", SEED_ROWS)
    (tmp_path / "users.csv").write_text(users)
    settings = {
        **pv.DEFAULTS,
        "SYNC_SQLITE": str(tmp_path / "s.sqlite"),
        "USERS_CSV": str(tmp_path / "users.csv"),
        "ACCESS_DB": private_access_db(),
        "PASSWD": "pw",
        **extra,
    }
    return data_for(settings)


def seed_view(tmp_path, **chosen):
    data = seed_data(tmp_path)
    catalog = data.catalog()
    args = {
        "patterns": [],
        "after": None,
        "before": None,
        "only_latest": False,
        "criteria": "latest",
        "max_lines": 100,
        **chosen,
    }
    mask = activity.source_mask(data, args.pop("patterns"), True)
    order = data.student_order(True)
    view = activity.select_view(catalog, mask, team_of=data.team_of(True), rank=order, **args)
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
    assert shown(catalog, view) == ["h/b/nb/y.ipynb"] and view.total == 3
    catalog, view = seed_view(tmp_path, after=datetime(2021, 3, 15, 9, 6))
    assert shown(catalog, view) == ["h/b/nb/y.ipynb", "h/a/nb/x.ipynb"]


def test_figure_has_one_row_per_file_and_colored_markers(tmp_path):
    catalog, view = seed_view(tmp_path, criteria="user")
    figure = activity.make_figure(
        catalog, view, ["A", "B", "C"], lambda rowids: [str(r) for r in rowids]
    )
    assert figure_labels(figure) == ["A", "B", "C"]
    markers = {
        (trace["marker"]["color"], int(y), float(size))
        for trace in figure["data"]
        for y, size in zip(trace["y"], trace["marker"]["size"])
    }
    assert markers == {("red", 0, 5.0), ("green", 0, 15.0), ("blue", 1, 5.0), ("gray", 2, 5.0)}


def test_caches_are_bounded(tmp_path):
    """issue 8 Found 5: a cache entry per regexp typed (or forged) grew without bound."""
    data = seed_data(tmp_path)
    catalog = data.catalog()
    for n in range(500):
        activity.source_mask(data, [f"x{n}"], n % 2 == 0)
    assert len(catalog.cache) <= CACHE_ENTRIES and len(data.by_sources) <= CACHE_ENTRIES
    with pytest.raises(KeyError):
        data.history("not/an/assignment.ipynb")


def test_reading_the_database_does_not_look_like_a_change(tmp_path):
    """A reader creating an empty WAL must not make the catalog reload on every update."""
    make_db(tmp_path / "s.sqlite", SEED_ROWS)
    conn = sqlite3.connect(tmp_path / "s.sqlite")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    cache = CatalogCache()
    first = cache.get(str(tmp_path / "s.sqlite"))
    assert cache.get(str(tmp_path / "s.sqlite")) is first
    conn = sqlite3.connect(tmp_path / "s.sqlite")
    conn.execute(
        "INSERT INTO summary VALUES ('h/c/z.ipynb', '2021-03-15T10:00:00', 'c', 1, 0, 0, 0, 0)"
    )
    conn.commit()
    assert len(cache.get(str(tmp_path / "s.sqlite")).sources) == len(first.sources) + 1
    conn.close()


def test_users_csv_is_read_again_when_it_changes(tmp_path):
    """users.csv is cached, but an edit (a new student, a new team) shows on the next update."""
    users = tmp_path / "users.csv"
    users.write_text("uid,notebooks,team\na,h/a,t1\n")
    data = data_for({**pv.DEFAULTS, "USERS_CSV": str(users), "ACCESS_DB": private_access_db()})
    first = data.people()
    assert data.people() is first
    users.write_text("uid,notebooks,team\na,h/a,t2\nb,h/b,t1\n")
    os.utime(users, (time.time() + 5, time.time() + 5))
    assert {u: p.attrs["team"] for u, p in data.people().by_uid.items()} == {"a": "t2", "b": "t1"}


# ---------------------------------------------------------------------------- names


def test_row_labels_name_students_only_with_the_password(tmp_path):
    data = seed_data(
        tmp_path, "uid,notebooks,real_name,team\nb,h/b/nb,Bob B,t1\na,h/a/nb,Alice A,t2\n"
    )
    data.attrs = ["real_name", "team"]
    assert data.source_label("h/a/nb/x.ipynb", "a", True) == "x.ipynb [Alice A t2] a"
    assert data.source_label("h/a/nb/x.ipynb", "a", False) == "x.ipynb student 2"
    assert data.source_label("h/b/nb/x.ipynb", "b", False) == "x.ipynb student 1"
    assert data.source_label("other/x.ipynb", "unknown", False) == "x.ipynb unknown"


def test_without_users_csv_labels_are_pseudonyms_never_student_paths(tmp_path):
    """issue 8 Found 3: with users.csv missing (or a student removed from it) rows were
    labelled `home/s1/notebooks/...`."""
    data = seed_data(tmp_path, "uid,notebooks\na,h/a/nb\n")
    labels = [data.source_label(s, o, False) for s, o in zip(*seed_sources(data))]
    own = f"{OWN_FILE} student 2"  # y.ipynb: only student 2 has it (issue 8 review F2)
    assert labels == ["x.ipynb student 1", "x.ipynb student 2", own]
    os.remove(tmp_path / "users.csv")
    data = seed_data(tmp_path, "")
    os.remove(tmp_path / "users.csv")
    figure, _, message = activity.graph(data, filters(criteria="user"))
    assert figure_labels(figure) == ["x.ipynb student 1", "x.ipynb student 2", own]
    assert "h/" not in sent(figure) and "users file" in message


def seed_sources(data):
    catalog = data.catalog()
    return catalog.sources, catalog.source_owner


def test_one_pseudonym_per_student_in_every_view(course):
    """issue 10 Found 6: `student N` was a rank among those who had that assignment, and
    activity rows read `[* *] *`; now N is the place in users.csv, the same everywhere."""
    data = data_for(settings_for(course))
    with pv_request():
        expected = {uid: f"student {n}" for n, (uid, _, _) in enumerate(users_of(course), 1)}
        for assignment in ("pl01/pl01.ipynb", "pl02/pl02.ipynb"):
            history = data.history(assignment)
            labels = data.student_labels(history.students, False)
            assert labels == {uid: expected[uid] for uid in history.students}
        figure, _, _ = activity.graph(data, filters(criteria="user"))
    rows = figure_labels(figure)
    assert rows[0] == "pl01/pl01.ipynb student 1" and rows[-1] == "pl02/pl02.ipynb student 12"


def test_filters_offer_only_public_columns_without_the_password(course):
    """issue 8 Found 2: every column not in USER_ATTRS (real_name, email) was offered with
    its values, and choosing real_name = "Bob Sato" showed his rows."""
    data = data_for(settings_for(course, USER_ATTRS=["team"]))
    assert data.filter_columns(False) == []
    assert data.filter_values("real_name", False) == []
    assert data.allowed_uids("real_name", "Bob Sato", False) is None
    assert data.filter_columns(True) == ["real_name", "team"]
    public = data_for(settings_for(course, USER_ATTRS=["real_name"], PUBLIC_ATTRS=["team"]))
    assert public.filter_columns(False) == ["team"]
    assert public.allowed_uids("team", "team1", False) == {"u001", "u006", "u011"}
    with pv_request():
        _, n_rows, _ = activity.graph(public, filters(column="team", value="team1"))
        _, all_rows, _ = activity.graph(public, filters(column="real_name", value="Bob Sato"))
    assert n_rows == "6 rows" and all_rows == "24 rows"  # 3 students x 2; no filter


# ---------------------------------------------------------------------------- the activity view


def test_graph_hides_names_without_the_password(course):
    data = data_for(settings_for(course))
    with pv_request():
        figure, n_rows, message = activity.graph(data, filters())
    assert n_rows == "24 rows" and message == ""
    assert all(re.fullmatch(r"pl0\d/pl0\d\.ipynb student \d+", r) for r in figure_labels(figure))
    assert names_in(sent(figure, n_rows, message), course) == []


def test_graph_shows_names_with_the_password(course):
    data = data_for(settings_for(course))
    with pv_request():
        figure, _, _ = activity.graph(data, filters(password="s3cret", criteria="user"))
    assert figure_labels(figure)[0] == "pl01/pl01.ipynb [Alice Sato team1] u001"


def test_wrong_password_is_said_and_reveals_nothing(course):
    data = data_for(settings_for(course))
    with pv_request():
        figure, _, message = activity.graph(data, filters(password="guess", criteria="user"))
    assert message == "wrong password"
    assert names_in(sent(figure), course) == []


def test_a_password_typed_where_none_is_set_says_so(course):
    """Without PASSWD no password shows the names: typing one says that none is set, not
    that it is wrong, and names stay hidden."""
    data = data_for(settings_for(course, PASSWD=""))
    with pv_request():
        figure, _, message = activity.graph(data, filters(password="s3cret", criteria="user"))
        header = str(pv.password_message(data, "s3cret"))
    assert message == widgets.PASSWORD_UNSET
    assert "PASSWD" in header and "wrong" not in header
    assert names_in(sent(figure), course) == []


def test_bad_inputs_are_messages_not_errors(course):
    data = data_for(settings_for(course))
    with pv_request():
        for chosen, expected in [
            ({"path_re": "("}, "bad path regexp"),
            ({"after": "yesterday"}, "cannot read the time"),
            ({"before": "-99999999999 days"}, "cannot read the time"),
            ({"max_lines": "lots"}, "max entries must be a whole number"),
        ]:
            _, n_rows, message = activity.graph(data, filters(**chosen))
            assert expected in message and n_rows == "0 rows", chosen


def test_silent_fallbacks_are_messages(course):
    """issue 10 Found 5: a regexp with a ticked group ignored the group without a word;
    max entries 0 or -5 showed 100; "100 rows" hid 20 of 120 notebooks."""
    data = data_for(settings_for(course))
    group = r"^class/[^/]+/notebooks/pl01/pl01\.ipynb$"
    with pv_request():
        _, n_rows, message = activity.graph(data, filters(path_re="pl02/", groups=[group]))
        assert n_rows == "12 rows" and "groups are ignored" in message
        for bad in (0, -5):
            _, n_rows, message = activity.graph(data, filters(max_lines=bad))
            assert n_rows == "0 rows" and "max entries must be between 1 and" in message
        _, n_rows, _ = activity.graph(data, filters(max_lines=20))
    assert n_rows == "20 rows (20 of 24 notebooks shown: raise max entries)"
    assert "min" not in widgets.number_box("x", 1).to_plotly_json()["props"]


def test_suggestions_offer_groups_and_hide_single_student_ones(course):
    """With the password the groups are over whole paths; without it over the paths under
    each student's folder (those name no one)."""
    data = data_for(settings_for(course))
    with pv_request():
        anonymous, message = activity.suggestions(data, 10, None)
        revealed, _ = activity.suggestions(data, 1, "s3cret")
        hidden, _ = activity.suggestions(data, 1, None)
        assert activity.suggestions(data, 0, None) == (
            [],
            "group threshold must be between 1 and 1000000, not 0",
        )
        assert activity.suggestions(data, 99, None) == ([], "no group of 99 files or more")
    assert message == ""
    assert {"label": r"^pl01/[^/]+$ (12)", "value": r"^pl01/[^/]+$"} in anonymous
    assert "u00" not in json.dumps(anonymous) + json.dumps(hidden)
    assert {
        "label": r"^class/[^/]+/notebooks/pl01/pl01\.ipynb$ (12)",
        "value": r"^class/[^/]+/notebooks/pl01/pl01\.ipynb$",
    } in revealed
    assert any("u001" in option["value"] for option in revealed)


def test_choosing_a_group_filters(course):
    data = data_for(settings_for(course))
    with pv_request():
        figure, n_rows, _ = activity.graph(data, filters(groups=[r"^pl02/[^/]+$"]))
        named = filters(password="s3cret", groups=[r"^class/[^/]+/notebooks/pl02/pl02\.ipynb$"])
        _, named_rows, _ = activity.graph(data, named)
    assert n_rows == "12 rows" and named_rows == "12 rows"
    assert all(label.startswith("pl02/pl02.ipynb") for label in figure_labels(figure))


def test_a_regexp_without_the_password_cannot_pick_out_a_student(course):
    """A regexp over the whole path, `/u001/`, would show which row is u001's."""
    data = data_for(settings_for(course))
    with pv_request():
        _, hidden, _ = activity.graph(data, filters(path_re="/u001/"))
        _, named, _ = activity.graph(data, filters(path_re="/u001/", password="s3cret"))
    assert hidden == "0 rows" and named == "2 rows"


def test_a_replayed_moment_hides_later_versions(course):
    data = data_for(settings_for(course))
    catalog = data.catalog()
    first = str(catalog.t.min())
    with pv_request():
        figure, n_rows, _ = activity.graph(data, filters(moment=first))
    assert sum(len(trace["x"]) for trace in figure["data"]) == int(
        (catalog.t == catalog.t.min()).sum()
    )


def test_click_link_needs_the_password_and_is_encoded(course):
    data = data_for(settings_for(course, URL_TEMPLATE="http://hub/n/{filename}?x=1"))
    with pv_request():
        figure, _, _ = activity.graph(data, filters(password="s3cret", criteria="user"))
        point = {"points": [{"customdata": figure["data"][0]["customdata"][0]}]}
        assert "password" in activity.link(data, point, None)
        link = activity.link(data, point, "s3cret")
        for forged in (10**30, 7, "7", [point["points"][0]["customdata"]]):
            assert activity.link(data, {"points": [{"customdata": forged}]}, "s3cret") == ""
    assert link.href.startswith("http://hub/n/class/u0") and link.href.endswith(".ipynb?x=1")


def test_new_versions_appear_without_restart(tmp_path):
    (tmp_path / "users.csv").write_text("uid,notebooks\na,hoge/a\n")
    write_json(tmp_path / "hoge/a/one.ipynb", notebook([grade_cell("", "q")]))
    sync(tmp_path)
    data = data_for(
        {
            **pv.DEFAULTS,
            "SYNC_SQLITE": str(tmp_path / "sync.sqlite"),
            "USERS_CSV": str(tmp_path / "users.csv"),
            "ACCESS_DB": private_access_db(),
        }
    )
    with pv_request():
        assert activity.graph(data, filters())[1] == "1 rows"
        write_json(
            tmp_path / "hoge/a/two.ipynb",
            notebook([grade_cell("1/0", "q", [error_output("E", "e")])]),
        )
        answered = notebook([grade_cell("1", "q", [execute_result("1")])])
        write_json(tmp_path / "hoge/a/one.ipynb", answered, mtime=time.time() + 2)
        sync(tmp_path)
        figure, n_rows, _ = activity.graph(data, filters())
    assert n_rows == "2 rows"
    assert sum(len(trace["x"]) for trace in figure["data"]) == 3


def test_missing_database_is_a_message_and_creates_nothing(tmp_path):
    settings = {
        **pv.DEFAULTS,
        "SYNC_SQLITE": str(tmp_path / "none.sqlite"),
        "ACCESS_DB": private_access_db(),
    }
    data = data_for(settings)
    with pv_request():
        _, n_rows, message = activity.graph(data, filters())
        status, _, rows, problem = problems.first_screen(data, controls())
    assert "no database at" in message and n_rows == "0 rows"
    assert "no database at" in problem and rows == []
    assert not os.path.exists(tmp_path / "none.sqlite")


# ---------------------------------------------------------------------------- the first screen


def test_first_screen_counts_and_lists_across_every_assignment(course):
    """The course's stuck u005 is on pl02, which the heatmap does not show first."""
    data = data_for(settings_for(course))
    with pv_request():
        status, tooltip, rows, message = problems.first_screen(data, controls())
        named = problems.first_screen(data, controls(password="s3cret"))[2]
    assert re.match(r"\d+ stuck, \d+ idle, \d+ working, \d+ finished at \d{4}-", status)
    assert "pl01/pl01.ipynb: " in tooltip and "pl02/pl02.ipynb: " in tooltip
    assert message == ""
    assert {r["assignment"] for r in rows} <= {"pl01/pl01.ipynb", "pl02/pl02.ipynb"}
    for row in rows:
        assert set(row) >= set(problems.COLUMNS) and row["kind"] in ("stuck", "idle")
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", row["since"])
    assert [r["since"] for r in rows] == sorted(r["since"] for r in rows)
    stuck = {(r["student"].split()[0], r["assignment"]) for r in named if r["kind"] == "stuck"}
    assert ("u005", "pl02/pl02.ipynb") in stuck
    assert names_in(sent(status, tooltip, rows), course) == []


def test_first_screen_at_a_replayed_moment_is_the_same_later(course):
    """issue 10 Found 3: at a replayed M the table changed as the clock ran (6 to 11 rows
    in two minutes)."""
    data = data_for(settings_for(course))
    catalog = data.catalog()
    replayed = moment.stamp_of(int(catalog.t.max().astype(np.int64)) - 600)
    now = moment.now_seconds()
    with pv_request():
        first = problems.first_screen(data, controls(moment=replayed), now=now)
        later = problems.first_screen(data, controls(moment=replayed), now=now + 120)
    assert first == later and replayed.replace("T", " ") in first[0]


def test_stuck_rows_name_no_private_notebook():
    """A notebook only one student has may carry their name: without the password its row
    says so instead; a student who saved only other files has no assignment."""
    rows = [
        {"student": "a", "assignment": "pl01.ipynb", "problem": "p1", "kind": "stuck"},
        {"student": "b", "assignment": "bob_suzuki.ipynb", "problem": "q", "kind": "stuck"},
        {"student": "c", "assignment": "", "problem": "", "kind": "idle"},
    ]
    rows = [{**r, "since": 0, "minutes": 1, "rowid": 1} for r in rows]
    labels = {"a": "student 1", "b": "student 2", "c": "student 3"}
    shown = problems.table_rows(
        rows, labels, {"pl01.ipynb"}, lambda rowids: [str(r) for r in rowids]
    )
    assert [(r["assignment"], r["problem"], r["open"]) for r in shown] == [
        ("pl01.ipynb", "p1", "pl01.ipynb"),
        (problems.OWN_NOTEBOOK, "", ""),
        ("", "", ""),
    ]
    assert "bob" not in sent(shown)


def test_bad_stuck_minutes_is_a_message(course):
    """issue 10 Found 5: stuck minutes 0 silently became 10."""
    data = data_for(settings_for(course))
    with pv_request():
        for bad in (0, -3, "x"):
            status, _, rows, message = problems.first_screen(data, controls(minutes=bad))
            assert status == "" and rows == [] and "stuck after (minutes) must be" in message


def test_heatmap_csv_names_its_moment(course):
    """issue 10 Found 3: the CSV was named after the download time and did not say M."""
    data = data_for(settings_for(course))
    replayed = "2021-03-15T12:30:00"
    with pv_request():
        sent_file = problems.heatmap_download(
            data, controls(moment=replayed, assignment="pl01/pl01.ipynb")
        )
        stuck_file = problems.stuck_download(data, controls(moment=replayed))
    assert sent_file["filename"] == "heatmap_pl01_pl01.ipynb_at_2021-03-15T12-30-00.csv"
    assert stuck_file["filename"] == "stuck_at_2021-03-15T12-30-00.csv"
    header, *lines = sent_file["content"].splitlines()
    assert header.startswith("moment,student,version saved,p1_1")
    assert all(line.startswith("2021-03-15 12:30:00,") for line in lines)
    assert (
        stuck_file["content"].splitlines()[0]
        == "moment,student,assignment,problem,kind,since,minutes"
    )


def test_heatmap_legend_counts_palette_and_empty_state(course):
    data = data_for(settings_for(course))
    with pv_request():
        figure, progress, message = problems.heatmap_view(
            data, controls(assignment="pl01/pl01.ipynb")
        )
        early, _, early_message = problems.heatmap_view(
            data, controls(assignment="pl01/pl01.ipynb", moment="2001-01-01T00:00:00")
        )
    assert message == "" and "no one has saved pl01/pl01.ipynb" in early_message
    assert figure["layout"]["xaxis"]["ticktext"][0].startswith("p1_1<br>")
    assert re.search(r"\d+ ans \d+ err", figure["layout"]["xaxis"]["ticktext"][0])
    assert model.CLASS_COLORS["error"] != "#d62728" and model.CLASS_COLORS["answered"] != "#3c9e3c"
    legend = sent(problems.make_legend())
    assert all(name in legend for name in problems.STATE_NAMES.values())
    assert "yaxis2" in progress["layout"] and "overlaying" not in progress["layout"]["yaxis2"]
    assert [t["name"] for t in progress["data"][:3]] == ["p1_1", "p1_2", "p1_3"]


def test_heatmap_sort_stuck_longest_puts_the_stuck_first(course):
    data = data_for(settings_for(course))
    with pv_request():
        rows = problems.first_screen(data, controls(password="s3cret"))[2]
        figure, _, _ = problems.heatmap_view(
            data, controls(password="s3cret", assignment="pl02/pl02.ipynb", sort="stuck")
        )
    stuck = [
        r["student"] for r in rows if r["kind"] == "stuck" and r["assignment"] == "pl02/pl02.ipynb"
    ]
    assert stuck and figure["data"][0]["y"][: len(stuck)] == stuck


def test_version_view_needs_the_password_and_follows_the_team_filter(course):
    """issue 8 Found 1: the version view showed notebooks without the password; issue 10
    Found 4: its student list ignored the team filter."""
    data = data_for(settings_for(course, PUBLIC_ATTRS=["team"]))
    history = data.history("pl01/pl01.ipynb")
    rowid = data.handle(history.versions["u001"][-1].rowid)
    with pv_request():
        hidden = version.shown_version(data, rowid, 0, "pl01/pl01.ipynb", "")
        shown_text = sent(version.shown_version(data, rowid, 0, "pl01/pl01.ipynb", "s3cret"))
        for forged in ("0", [0], 99, None, True):
            assert version.shown_version(data, rowid, forged, "pl01/pl01.ipynb", "s3cret") == ""
    assert sent(hidden).count(version.HIDDEN) == 1 and "p1_1" not in sent(hidden)
    assert "p1_1" in shown_text
    team1 = data.allowed_uids("team", "team1", False)
    options = version.student_options(data, history, False, team1)
    assert [o["label"] for o in options] == [f"student {n} [team1]" for n in (1, 6, 11)]


def test_a_click_selects_the_version_and_the_same_row_again_works(course):
    data = data_for(settings_for(course))
    with pv_request():
        rows = problems.first_screen(data, controls())[2]
    row = next(r for r in rows if r["kind"] == "stuck")
    rowid = data.rowid(row["rowid"])
    first = problems.selection(data, row["open"], rowid, row["problem"], 1)
    again = problems.selection(data, row["open"], rowid, row["problem"], 2)
    assert first["rowid"] == again["rowid"] and first != again
    assert first["problem"] == row["problem"] and first["assignment"] == row["assignment"]
    assert first["anchor"] == nbview.problem_anchor(row["problem"])
    assert problems.selection(data, "no/such.ipynb", rowid, None, 3) is None
    history = data.history("pl01/pl01.ipynb")
    uid = history.students[0]
    other = data.history("pl02/pl02.ipynb").versions[uid][-1]  # another file of theirs
    picked = problems.selection(data, "pl01/pl01.ipynb", other.rowid, None, 6)
    assert data.rowid(picked["rowid"]) == history.state_at(uid, other.t).rowid
    table = [{**row, "problem": ["x"]}, {**row, "rowid": "1"}, "x"]
    clicked = problems.row_selection(data, table, {"row": 0}, 4)
    assert clicked["rowid"] == row["rowid"] and clicked["problem"] is None
    for forged in ({"row": 1}, {"row": 2}, {"row": 3}, {"row": "0"}, [0], None):
        assert problems.row_selection(data, table, forged, 5) is None
    assert version.selected_rowid(data, {"rowid": [1]}) is None
    assert version.selected_rowid(data, {"rowid": other.rowid}) is None
    assert problems.clicked_cell({"points": [{"customdata": "x", "x": "a"}]}) is None
    assert problems.clicked_cell({"points": [{"customdata": "7", "x": 2}]}) == ("7", 2)
    assert (
        problems.cell_selection(data, "pl01/pl01.ipynb", {"points": [{"customdata": 7, "x": 0}]}, 7)
        is None
    )


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
