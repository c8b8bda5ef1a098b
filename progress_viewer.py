#!/usr/bin/env python3
"""A Dash web page showing the class's progress, from the database rsync_notebooks.py keeps.

The activity view draws one row per notebook (older versions and the current one on the
same row) and one marker per version at the time it was saved: red when a graded cell
failed, green when every graded code cell printed something, blue otherwise, gray for a
file that is not a readable notebook; bigger when more problems are answered. Filters: a
path regexp or suggested path groups, a time window, a sort order, only the latest
versions, at most N files. Clicking a marker gives a link that opens that version in
Jupyter (URL_TEMPLATE).

Students' names stay hidden: without the password (PASSWD) every uid and users.csv
attribute is `*` in everything the server sends.

Settings come from progress_viewer_config.py, looked up in the working directory, then
beside this script (or --config PATH); see progress_viewer_config.py.example. Run it in
the directory holding users.csv and sync.sqlite:

    ./progress_viewer.py                 # http://127.0.0.1:8050/
    gunicorn progress_viewer:application # behind a WSGI server

Exit codes: 0 stopped normally; 1 the address cannot be listened on (the port is in
use); 2 bad arguments or a config file that cannot be loaded.
"""

import argparse
import logging
import os
import re
import runpy
import socket
import sqlite3
import sys
import threading
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import dash
import numpy as np
import re2
from dash import Input, Output, State, dcc, html

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_database  # noqa: E402  (schema facts and users.csv reading)
from progress_views import access, problems, version  # noqa: E402
from progress_views.model import plotly_text  # noqa: E402
from progress_views.widgets import labelled, number_box, text_box  # noqa: E402

LOG = logging.getLogger("progress_viewer")

# ---------------------------------------------------------------------------- constants

CONFIG_NAME = "progress_viewer_config.py"
DEFAULTS = {
    "SYNC_SQLITE": "sync.sqlite",
    "USERS_CSV": "users.csv",
    "USER_ATTRS": [],  # users.csv columns shown (after the password) in each row's label
    "PASSWD": "",  # reveals uids and USER_ATTRS; empty: they are never shown
    "URL_TEMPLATE": "http://localhost:8888/notebooks/sync_dest/{filename}",
    "BASIC_AUTH_USER_PASSWORD_PAIRS": {},  # {user: password or hash}; empty: no HTTP auth
    "URL_PREFIX": "/",  # where the page is served, e.g. "/progress/" behind a proxy
    "REFRESH_SECONDS": 60,  # how often the page re-reads the database
    "SYNC_DEST": "sync_dest",
    # Access (progress_views/access.py): the token every route needs without basic auth
    # (None: made at start; False: no token, anyone reaching the port uses the page).
    "ACCESS_TOKEN": None,
    "ALLOWED_HOSTS": None,  # Host names accepted; None: any (main: its --host and localhost)
    "TRUSTED_PROXIES": 0,  # proxies in front that set X-Forwarded-For (nginx: 1)
    "ACCESS_DB": None,  # wrong guesses and the cookie key; None: beside SYNC_SQLITE
}
MASK = "*"
MAX_REGEXP_LENGTH = 1000

# ---------------------------------------------------------------------------- ids


class Ids:
    passwd = "activity_graph_passwd"
    path_re = "activity_graph_path_re"
    path_re_options = "activity_graph_path_re_options"
    threshold = "activity_graph_threshold"
    time_after = "activity_graph_time_after"
    time_before = "activity_graph_time_before"
    sort_criteria = "activity_graph_sort_criteria"
    show_only_latest = "activity_graph_show_only_latest"
    max_lines = "activity_graph_max_lines"
    n_rows = "n_rows"
    graph = "activity_graph"
    message = "activity_graph_message"
    link = "activity_graph_link"
    interval = "activity_graph_interval"
    pause = "refresh_pause"
    filter_column = "filter_column"
    filter_value = "filter_value"


SORT_CRITERIA = {
    "latest": "latest version first",
    "most_ok": "most answered first",
    "most_error": "most errors first",
    "user": "by user",
    "team": "by team",
}
COLORS = {"red": "error", "green": "all answered", "blue": "in progress", "gray": "unreadable"}
COUNT_NAMES = ("ok", "display", "stream", "error", "empty")

# ---------------------------------------------------------------------------- settings


def find_config(explicit=None):
    """The config file to use: --config, else one in the working dir, else beside us."""
    if explicit:
        return explicit
    for folder in (os.getcwd(), HERE):
        path = os.path.join(folder, CONFIG_NAME)
        if os.path.isfile(path):
            return path
    return None


def load_settings(config_path=None, overrides=None):
    """DEFAULTS, updated by the config file's upper-case names, then by `overrides`."""
    settings = dict(DEFAULTS)
    path = find_config(config_path)
    if path:
        values = runpy.run_path(path)
        for unknown in sorted(k for k in values if k.isupper() and k not in DEFAULTS):
            LOG.warning("%s: unknown setting %s is ignored", path, unknown)
        settings.update({k: v for k, v in values.items() if k.isupper() and k in DEFAULTS})
        base = os.path.dirname(os.path.abspath(path))
        for key in ("SYNC_SQLITE", "USERS_CSV", "SYNC_DEST"):
            if key in values:
                settings[key] = os.path.join(base, settings[key])
    settings.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return settings


# ---------------------------------------------------------------------------- users.csv


@dataclass
class People:
    by_uid: dict  # uid -> User
    prefixes: dict  # uid -> notebooks folder relative to the destination
    problem: str = ""  # why users.csv could not be read, if it could not
    key: tuple = ()  # the file's state it was read from


def load_people(path, key=()):
    """users.csv as People; an empty one (with the reason) when it cannot be read."""
    try:
        users = make_database.read_users_csv(path, warn=lambda message: None)
    except make_database.UsersCsvError as error:
        return People({}, {}, str(error), key)
    by_uid = {user.uid: user for user in users}
    prefixes = {user.uid: make_database.dest_relative(user.notebooks) for user in users}
    return People(by_uid, prefixes, "", key)


class PeopleCache:
    """users.csv as it is now, read again only when the file changes."""

    def __init__(self):
        self.current = None

    def get(self, path):
        key = make_database.file_key(path)
        if self.current is None or self.current.key != key:
            self.current = load_people(path, key)
        return self.current


def display_path(source, owner, people):
    """A notebook's path as shown: relative to its owner's notebooks folder when known."""
    prefix = people.prefixes.get(owner)
    if prefix and source.startswith(prefix + "/"):
        return source[len(prefix) + 1 :]
    return source


def row_label(source, owner, people, attrs, authorized):
    """`file [attr ...] uid`, with every uid and attribute `*` without the password."""
    shown = display_path(source, owner, people)
    user = people.by_uid.get(owner)
    values = [(user.attrs.get(a, "") if user else "") for a in attrs]
    if owner != make_database.UNKNOWN_OWNER and not authorized:
        values, owner = [MASK] * len(values), MASK
    return f"{shown} [{' '.join(values)}] {owner}" if attrs else f"{shown} {owner}"


# ---------------------------------------------------------------------------- the database


class DatabaseMissing(Exception):
    """The database is not there (yet)."""


def database_key(db):
    """Changes whenever a commit lands in the database (its file or its WAL). An empty or
    missing WAL count the same: a reader opening the database may create an empty one."""
    try:
        info = os.stat(db)
    except FileNotFoundError:
        raise DatabaseMissing(f"no database at {db}: has rsync_notebooks.py run yet?") from None
    try:
        wal = os.stat(db + "-wal")
        wal_key = (wal.st_ino, wal.st_size, wal.st_mtime_ns) if wal.st_size else None
    except FileNotFoundError:
        wal_key = None
    return (info.st_ino, info.st_size, info.st_mtime_ns), wal_key


def connect_readonly(db):
    """A read-only connection; a wrong path never creates an empty database."""
    uri = "file:" + urllib.parse.quote(os.path.abspath(db)) + "?mode=ro"
    return sqlite3.connect(uri, uri=True, timeout=10)


# Source name and version of a notebook row, computed by SQLite itself:
# `d/nb.bak_2021-10-17T18:26:14.ipynb` -> source `d/nb.ipynb`.
BACKUP_GLOB = (
    "*.bak_[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].ipynb"
)
CATALOG_QUERY = """
SELECT rowid,
       CASE WHEN filename GLOB ?
            THEN substr(filename, 1, length(filename) - 30) || '.ipynb'
            ELSE filename END,
       t, owner, code_ok, code_display, code_stream, code_error, code_empty
FROM summary WHERE filename LIKE '%.ipynb'
"""


@dataclass
class Catalog:
    """Every notebook version, as arrays sorted by (source, time)."""

    key: tuple
    sources: list  # source file names
    source_owner: list  # uid of each source
    src: np.ndarray  # source index of each version
    t: np.ndarray  # datetime64[s], local time
    rowid: np.ndarray
    counts: np.ndarray  # (n, 5) float32, NaN for an unreadable notebook
    cache: dict = field(default_factory=dict)


def to_float(value):
    return np.nan if value is None else value


def load_catalog(db, key):
    """Read every notebook row once; O(rows) memory as numpy arrays, not Python objects."""
    index, sources, owners = {}, [], []
    parts = {"src": [], "t": [], "rowid": [], "counts": []}
    conn = connect_readonly(db)
    try:
        cursor = conn.execute(CATALOG_QUERY, (BACKUP_GLOB,))
        while chunk := cursor.fetchmany(65536):
            rowids, names, times, row_owners, *counts = zip(*chunk)
            src = np.empty(len(chunk), dtype=np.int32)
            for i, (name, owner) in enumerate(zip(names, row_owners)):
                j = index.get(name)
                if j is None:
                    j = index[name] = len(sources)
                    sources.append(name)
                    owners.append(owner)
                src[i] = j
            parts["src"].append(src)
            parts["t"].append(parse_times(times))
            parts["rowid"].append(np.array(rowids, dtype=np.int64))
            columns = [np.array([to_float(v) for v in c], dtype=np.float32) for c in counts]
            parts["counts"].append(np.column_stack(columns))
    finally:
        conn.close()
    if not sources:
        empty = np.empty(0)
        return Catalog(
            key,
            [],
            [],
            empty.astype(np.int32),
            empty.astype("datetime64[s]"),
            empty.astype(np.int64),
            np.empty((0, 5), np.float32),
        )
    src, t = np.concatenate(parts["src"]), np.concatenate(parts["t"])
    order = np.lexsort((t, src))
    return Catalog(
        key,
        sources,
        owners,
        src[order],
        t[order],
        np.concatenate(parts["rowid"])[order],
        np.concatenate(parts["counts"])[order],
    )


def parse_times(values):
    """`2021-10-17T18:26:14` strings to datetime64[s]; anything else becomes NaT."""
    out = np.empty(len(values), dtype="datetime64[s]")
    try:
        out[:] = np.array(values, dtype="datetime64[s]")
    except (ValueError, TypeError):
        for i, value in enumerate(values):
            try:
                out[i] = np.datetime64(value, "s")
            except (ValueError, TypeError):
                out[i] = np.datetime64("NaT")
    return out


class CatalogCache:
    """The catalog of the database as it is now, re-read only after a commit."""

    def __init__(self):
        self.current = None
        self.lock = threading.Lock()

    def get(self, db):
        key = database_key(db)
        with self.lock:
            if self.current is None or self.current.key != key:
                self.current = load_catalog(db, key)
            return self.current


# ---------------------------------------------------------------------------- pure helpers

RELATIVE_RE = re.compile(
    r"^\s*([-+]?)\s*(\d+(?:\.\d+)?)\s*(s|secs?|seconds?|m|mins?|minutes?|h|hours?|d|days?|w|weeks?)\s*$",
    re.IGNORECASE,
)
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(text, now):
    """A time-window end: '' (none), `2021-03-15`, `2021-03-15T09:23:00`, or relative
    to `now` like `-1 days`, `-2 hours`, `-30 mins` (no sign also means ago)."""
    text = (text or "").strip()
    if not text:
        return None
    match = RELATIVE_RE.match(text)
    if match:
        sign, amount, unit = match.groups()
        seconds = float(amount) * UNIT_SECONDS[unit[0].lower()]
        return now + timedelta(seconds=seconds if sign == "+" else -seconds)
    try:
        return datetime.fromisoformat(text.replace("/", "-"))
    except ValueError:
        raise ValueError(
            f"cannot read the time {text!r}: use 2021-03-15, 2021-03-15T09:23:00 or -2 hours"
        ) from None


def compile_regexp(pattern):
    """A linear-time (RE2) regexp; ValueError with a readable message when it is bad."""
    if len(pattern) > MAX_REGEXP_LENGTH:
        raise ValueError(f"the path regexp is longer than {MAX_REGEXP_LENGTH} characters")
    try:
        return re2.compile(pattern)
    except re2.error as error:
        reason = error.args[0] if error.args else error
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise ValueError(f"bad path regexp {pattern!r}: {reason}") from None


def parse_positive_int(value, name, default):
    if value in (None, ""):
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a whole number, not {value!r}") from None
    if number < 1:
        raise ValueError(f"{name} must be at least 1")
    return number


def path_groups(sources):
    """{regexp: number of files} made by replacing one component of a path with [^/]+."""
    counts = {}
    for source in sources:
        parts = source.split("/")
        for i in range(len(parts)):
            pattern = (
                "^"
                + "/".join("[^/]+" if j == i else re.escape(part) for j, part in enumerate(parts))
                + "$"
            )
            counts.setdefault(pattern, set()).add(source)
    return counts


def suggest_groups(catalog, threshold, authorized):
    """[(regexp, count)] with at least `threshold` files, most first. Without the password,
    a group whose files all belong to one student is left out (it would name them)."""
    groups = catalog.cache.get("groups")
    if groups is None:
        owner_of = dict(zip(catalog.sources, catalog.source_owner))
        groups = [
            (pattern, len(files), len({owner_of[f] for f in files}))
            for pattern, files in path_groups(catalog.sources).items()
        ]
        groups.sort(key=lambda g: (-g[1], g[0]))
        catalog.cache["groups"] = groups
    return [
        (pattern, count)
        for pattern, count, n_owners in groups
        if count >= threshold and (authorized or n_owners > 1)
    ][:50]


def source_mask(catalog, patterns):
    """Which sources any of the regexps finds (all of them for no regexp)."""
    if not patterns:
        return np.ones(len(catalog.sources), dtype=bool)
    key = ("mask", tuple(patterns))
    if key not in catalog.cache:
        compiled = [compile_regexp(p) for p in patterns]
        catalog.cache[key] = np.fromiter(
            (any(r.search(s) for r in compiled) for s in catalog.sources),
            dtype=bool,
            count=len(catalog.sources),
        )
    return catalog.cache[key]


@dataclass
class View:
    """What the graph shows: the sources in row order and the versions to draw."""

    sources: list  # source indexes, top row first
    versions: np.ndarray  # indexes into the catalog's arrays


def sort_keys(catalog, latest, criteria, team_of):
    """Sort key per shown source (ascending), from each one's latest version."""
    times = catalog.t[latest].astype(np.int64).tolist()
    counts = np.nan_to_num(catalog.counts[latest]).tolist()
    sources = catalog.src[latest].tolist()
    if criteria == "most_ok":
        return [(-(c[0] + c[1] + c[2]), -t) for c, t in zip(counts, times)]
    if criteria == "most_error":
        return [(-c[3], -t) for c, t in zip(counts, times)]
    if criteria == "user":
        return [(catalog.source_owner[s], catalog.sources[s]) for s in sources]
    if criteria == "team":
        owners = [catalog.source_owner[s] for s in sources]
        return [(team_of(o), o, catalog.sources[s]) for o, s in zip(owners, sources)]
    return [(-t,) for t in times]


def select_view(catalog, mask, after, before, only_latest, criteria, max_lines, team_of):
    """The View for the given filters (pure: the catalog is not changed)."""
    chosen = mask[catalog.src]
    if after is not None:
        chosen &= catalog.t >= np.datetime64(after, "s")
    if before is not None:
        chosen &= catalog.t <= np.datetime64(before, "s")
    picked = np.flatnonzero(chosen)
    if len(picked) == 0:
        return View([], picked)
    src = catalog.src[picked]
    last_of_source = np.append(src[1:] != src[:-1], True)  # sorted by (src, t)
    latest = picked[last_of_source]
    keys = sort_keys(catalog, latest, criteria, team_of)
    order = sorted(range(len(latest)), key=keys.__getitem__)[:max_lines]
    shown = [int(catalog.src[latest[i]]) for i in order]
    if only_latest:
        versions = latest[np.isin(catalog.src[latest], shown)]
    else:
        versions = picked[np.isin(src, shown)]
    return View(shown, versions)


def make_figure(catalog, view, labels):
    """One row per source, one marker per version, as a plain figure dict (no per-point
    validation): one trace per color, numbers as typed arrays, counts as short strings."""
    versions = view.versions
    counts = catalog.counts[versions]
    colors, sizes = marker_colors(counts), marker_sizes(counts).round(1)
    x = catalog.t[versions].astype("datetime64[ms]").astype(np.int64)
    row_of = np.full(len(catalog.sources), -1, dtype=np.int32)
    row_of[view.sources] = np.arange(len(view.sources), dtype=np.int32)
    y = row_of[catalog.src[versions]]
    trace_type = "scattergl" if len(versions) > 2000 else "scatter"
    traces = []
    for color, meaning in COLORS.items():
        selected = np.flatnonzero(colors == color)
        if not len(selected):
            continue
        readable = color != "gray"
        traces.append(
            {
                "type": trace_type,
                "mode": "markers",
                "name": meaning,
                "x": x[selected],
                "y": y[selected],
                "customdata": catalog.rowid[versions[selected]],
                "text": count_texts(counts[selected]) if readable else None,
                "marker": {"color": color, "size": sizes[selected], "line": {"width": 0}},
                "hovertemplate": HOVER if readable else HOVER_UNREADABLE,
            }
        )
    layout = {
        "height": max(300, 120 + 22 * len(labels)),
        "margin": {"l": 10, "r": 10, "t": 30, "b": 40},
        "xaxis": {"type": "date", "title": {"text": "time saved"}},
        "yaxis": {
            "tickvals": list(range(len(labels))),
            "ticktext": [plotly_text(label) for label in labels],
            "autorange": "reversed",
            "automargin": True,
        },
        "legend": {"orientation": "h", "y": 1.02, "yanchor": "bottom"},
        "hovermode": "closest",
        "uirevision": "activity",
    }
    return {"data": traces, "layout": layout}


HOVER = (
    "%{x|%Y-%m-%d %H:%M:%S}<br>" + "/".join(COUNT_NAMES) + ": %{text}"
    "<br>click for a link to this version<extra></extra>"
)
HOVER_UNREADABLE = "%{x|%Y-%m-%d %H:%M:%S}<br>not a readable notebook<extra></extra>"


def count_texts(counts):
    """`ok/display/stream/error/empty` of each version as `1/0/2/0/1`."""
    return ["/".join(map(str, row)) for row in counts.astype(np.int64).tolist()]


def marker_colors(counts):
    """red: an error; green: answers and nothing empty; blue: otherwise; gray: unreadable
    (rows of an (n, 5) array, NaN for unknown counts)."""
    answered = counts[:, 0] + counts[:, 1] + counts[:, 2]
    colors = np.where(
        counts[:, 3] > 0, "red", np.where((answered > 0) & (counts[:, 4] == 0), "green", "blue")
    )
    colors[np.isnan(counts).any(axis=1)] = "gray"
    return colors


def marker_sizes(counts):
    """5 + 10 * (ok + display + stream) / all five counts, 5 when all are 0 or unknown
    (rows of an (n, 5) array, NaN for unknown counts)."""
    answered = counts[:, 0] + counts[:, 1] + counts[:, 2]
    total = counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        sizes = 5.0 + 10.0 * answered / total
    return np.where(np.isfinite(sizes), sizes, 5.0)


# ---------------------------------------------------------------------------- the page


def make_controls():
    return html.Div(
        [
            labelled("path regexp:", text_box(Ids.path_re, "pl01/", size=30)),
            labelled("after:", text_box(Ids.time_after, "-2 hours")),
            labelled("before:", text_box(Ids.time_before, "2021-03-15T12:00")),
            labelled("max entries:", number_box(Ids.max_lines, 100, width="6em")),
            labelled("group threshold:", number_box(Ids.threshold, 10)),
        ],
        style={"display": "flex", "flexWrap": "wrap", "gap": "0.5em"},
    )


def make_shared_bar():
    """The password, the filter by a users.csv column, and the refresh switch."""
    return html.Div(
        [
            html.Label(["passwd: ", text_box(Ids.passwd, size=12, kind="password")]),
            html.Label(
                [
                    "only students whose ",
                    dcc.Dropdown(
                        id=Ids.filter_column,
                        placeholder="column",
                        style={"width": "10em", "display": "inline-block"},
                    ),
                    " is ",
                    dcc.Dropdown(
                        id=Ids.filter_value,
                        placeholder="any",
                        style={"width": "12em", "display": "inline-block"},
                    ),
                ]
            ),
            dcc.Checklist(
                id=Ids.pause,
                options=[{"label": "pause refresh", "value": "pause"}],
                value=[],
                inline=True,
            ),
        ],
        style={"display": "flex", "gap": "2em", "alignItems": "center", "flexWrap": "wrap"},
    )


def make_activity_section():
    return html.Div(
        [
            html.H4("Activity"),
            make_controls(),
            html.Div(
                [
                    dcc.RadioItems(
                        id=Ids.sort_criteria,
                        options=[{"label": v, "value": k} for k, v in SORT_CRITERIA.items()],
                        value="latest",
                        inline=True,
                    ),
                    dcc.Checklist(
                        id=Ids.show_only_latest,
                        options=[{"label": "show only latest", "value": "latest"}],
                        value=[],
                        inline=True,
                    ),
                ],
                style={"display": "flex", "gap": "2em", "margin": "0.5em 0"},
            ),
            html.Details(
                [
                    html.Summary("suggested path groups"),
                    dcc.Checklist(id=Ids.path_re_options, options=[], value=[]),
                ]
            ),
            html.Div(id=Ids.message, style={"color": "#b00", "whiteSpace": "pre-wrap"}),
            html.Div(id=Ids.n_rows),
            html.Div(id=Ids.link),
            dcc.Graph(id=Ids.graph, config={"displaylogo": False}),
        ]
    )


def make_layout(settings):
    """The page; a function, so every load starts fresh."""
    refresh_ms = max(5, int(settings["REFRESH_SECONDS"])) * 1000
    return html.Div(
        [
            html.H3("Class progress"),
            make_shared_bar(),
            make_activity_section(),
            problems.make_section(),
            version.make_section(),
            dcc.Interval(id=Ids.interval, interval=refresh_ms),
        ],
        style={"fontFamily": "sans-serif", "margin": "1em"},
    )


class ActivityView:
    """The callbacks' logic, over the settings, the password gate and the catalog cache;
    also the context the teacher views (progress_views) work in."""

    ids = Ids
    data_errors = (DatabaseMissing, sqlite3.Error)

    def __init__(self, settings):
        self.settings = settings
        self.attrs = list(settings["USER_ATTRS"])
        self.gate = access.PasswordGate(settings)
        self.catalogs = CatalogCache()
        self.users = PeopleCache()

    def authorized(self, passwd):
        return self.gate.check(passwd, access.client_address())

    def people(self):
        return self.users.get(self.settings["USERS_CSV"])

    def catalog_and_people(self):
        return self.catalogs.get(self.settings["SYNC_SQLITE"]), self.people()

    def connect(self):
        return connect_readonly(self.settings["SYNC_SQLITE"])

    def filter_columns(self, people, authorized):
        """users.csv columns a filter may use: USER_ATTRS ones only with the password."""
        columns = sorted({name for user in people.by_uid.values() for name in user.attrs})
        return [c for c in columns if authorized or c not in self.attrs]

    def allowed_uids(self, people, column, value, authorized):
        """The uids the filter keeps, or None for no filter."""
        if not column or value is None or column not in self.filter_columns(people, authorized):
            return None
        return {uid for uid, user in people.by_uid.items() if user.attrs.get(column) == value}

    def team_of(self, people, authorized):
        hidden = "team" in self.attrs and not authorized

        def team(uid):
            user = people.by_uid.get(uid)
            return "" if hidden or user is None else user.attrs.get("team", "")

        return team

    def version_filename(self, rowid):
        """The file name of one recorded version, or None when it is gone."""
        conn = self.connect()
        try:
            row = conn.execute("SELECT filename FROM summary WHERE rowid = ?", (rowid,)).fetchone()
        finally:
            conn.close()
        return row[0] if row else None

    def file_url(self, filename):
        """Where a recorded version opens in Jupyter."""
        return version_url(self.settings["URL_TEMPLATE"], filename)

    def version_url_of(self, rowid):
        filename = self.version_filename(rowid)
        return self.file_url(filename) if filename else None

    def graph(
        self,
        passwd,
        path_re,
        groups,
        after,
        before,
        criteria,
        only_latest,
        max_lines,
        count_failure=False,
        filter_column=None,
        filter_value=None,
    ):
        """(figure, 'N rows', message) for the given controls."""
        settings = self.settings
        authorized = self.authorized(passwd)
        people = self.people()
        try:
            now = datetime.now()
            window = parse_time(after, now), parse_time(before, now)
            limit = parse_positive_int(max_lines, "max entries", 100)
            patterns = [path_re] if path_re else list(groups or [])
            catalog = self.catalogs.get(settings["SYNC_SQLITE"])
            mask = source_mask(catalog, patterns)
        except (ValueError, *self.data_errors) as error:
            return empty_figure(), "0 rows", str(error)
        allowed = self.allowed_uids(people, filter_column, filter_value, authorized)
        if allowed is not None:
            owners = np.array([owner in allowed for owner in catalog.source_owner], dtype=bool)
            mask = mask & owners
        team_of = self.team_of(people, authorized)
        view = select_view(catalog, mask, *window, bool(only_latest), criteria, limit, team_of)
        labels = [
            row_label(catalog.sources[s], catalog.source_owner[s], people, self.attrs, authorized)
            for s in view.sources
        ]
        message = people.problem
        if passwd and not authorized and count_failure:
            message = "wrong password"
        return make_figure(catalog, view, labels), f"{len(view.sources)} rows", message

    def suggestions(self, threshold, passwd):
        try:
            limit = parse_positive_int(threshold, "threshold", 10)
            catalog = self.catalogs.get(self.settings["SYNC_SQLITE"])
        except (ValueError, *self.data_errors):
            return []
        groups = suggest_groups(catalog, limit, self.authorized(passwd))
        return [{"label": f"{pattern} ({count})", "value": pattern} for pattern, count in groups]

    def link(self, click, passwd):
        """A link to the clicked version (only with the password: it names the student)."""
        try:
            rowid = int(click["points"][0]["customdata"])
        except (TypeError, KeyError, IndexError, ValueError):
            return ""
        if not self.authorized(passwd):
            return "Enter the password to open this version in Jupyter."
        try:
            filename = self.version_filename(rowid)
        except sqlite3.Error as error:
            return str(error)
        if filename is None:
            return "That version is no longer in the database."
        url = self.file_url(filename)
        return html.A(f"open {filename}", href=url, target="_blank", rel="noopener")


def version_url(template, filename):
    return template.replace("{filename}", urllib.parse.quote(filename, safe="/"))


def empty_figure():
    return {
        "data": [],
        "layout": {"height": 300, "xaxis": {"visible": False}, "yaxis": {"visible": False}},
    }


def register_callbacks(app, view):
    @app.callback(
        Output(Ids.graph, "figure"),
        Output(Ids.n_rows, "children"),
        Output(Ids.message, "children"),
        Input(Ids.passwd, "value"),
        Input(Ids.path_re, "value"),
        Input(Ids.path_re_options, "value"),
        Input(Ids.time_after, "value"),
        Input(Ids.time_before, "value"),
        Input(Ids.sort_criteria, "value"),
        Input(Ids.show_only_latest, "value"),
        Input(Ids.max_lines, "value"),
        Input(Ids.filter_column, "value"),
        Input(Ids.filter_value, "value"),
        Input(Ids.interval, "n_intervals"),
    )
    def update_graph(
        passwd, path_re, groups, after, before, criteria, latest, max_lines, column, value, _
    ):
        typed_now = dash.ctx.triggered_id == Ids.passwd
        return view.graph(
            passwd,
            path_re,
            groups,
            after,
            before,
            criteria,
            latest,
            max_lines,
            typed_now,
            column,
            value,
        )

    @app.callback(Output(Ids.interval, "disabled"), Input(Ids.pause, "value"))
    def pause_refresh(pause):
        return bool(pause)

    @app.callback(
        Output(Ids.filter_column, "options"),
        Output(Ids.filter_value, "options"),
        Input(Ids.passwd, "value"),
        Input(Ids.filter_column, "value"),
    )
    def update_filter_options(passwd, column):
        people = view.people()
        columns = view.filter_columns(people, view.authorized(passwd))
        values = sorted({u.attrs.get(column, "") for u in people.by_uid.values()})
        return columns, values if column in columns else []

    filters = [(Ids.filter_column, "value"), (Ids.filter_value, "value")]
    problems.register(app, view, filters)
    version.register(app, view)

    @app.callback(
        Output(Ids.path_re_options, "options"),
        Input(Ids.threshold, "value"),
        Input(Ids.passwd, "value"),
        Input(Ids.interval, "n_intervals"),
    )
    def update_suggestions(threshold, passwd, _):
        return view.suggestions(threshold, passwd)

    @app.callback(
        Output(Ids.link, "children"),
        Input(Ids.graph, "clickData"),
        State(Ids.passwd, "value"),
    )
    def update_link(click, passwd):
        return view.link(click, passwd)


def create_app(settings):
    """The Dash app for these settings (nothing is read from the database here)."""
    app = dash.Dash(
        __name__,
        title="Class progress",
        url_base_pathname=settings["URL_PREFIX"],
        update_title=None,
    )
    view = ActivityView(settings)
    app.layout = lambda: make_layout(settings)
    register_callbacks(app, view)
    access.install(app, settings)
    return app


def startup_problems(settings):
    """Warnings worth printing at start-up (the page shows them too)."""
    problems = []
    if not os.path.exists(settings["SYNC_SQLITE"]):
        problems.append(
            f"no database at {settings['SYNC_SQLITE']} yet: has rsync_notebooks.py run?"
        )
    if not os.path.exists(settings["USERS_CSV"]):
        problems.append(f"no users file at {settings['USERS_CSV']}: names cannot be shown")
    if not os.path.isdir(settings["SYNC_DEST"]):
        problems.append(
            f"no destination folder at {settings['SYNC_DEST']}: the version view has no files "
            "(give --dest or SYNC_DEST)"
        )
    if not settings["PASSWD"]:
        problems.append("PASSWD is not set: names stay hidden")
    return problems


_default_app = None


def __getattr__(name):
    """`application`, the Flask server for gunicorn or mod_wsgi, and `app`, the Dash app:
    built on first use with the settings found as the command line finds them (or named
    by the environment variable PROGRESS_VIEWER_CONFIG)."""
    global _default_app
    if name in ("application", "app"):
        if _default_app is None:
            configure_logging()
            _default_app = create_app(load_settings(os.environ.get("PROGRESS_VIEWER_CONFIG")))
        return _default_app.server if name == "application" else _default_app
    raise AttributeError(name)


# ---------------------------------------------------------------------------- command line


def configure_logging():
    """Timestamped log lines on stderr, from main or under gunicorn (which leaves the
    root logger alone); nothing changes when the host program configured logging."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")


def listen_problem(host, port):
    """Why nothing can listen on host:port (another program holds it, say), or None."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        socket.create_server((host, port), family=family).close()
    except OSError as error:
        return (error.strerror or str(error)).lower()
    return None


def build_parser():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n", 1)[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        help=f"Settings file to use (default: {CONFIG_NAME} in the working directory, "
        "then beside this script, else built-in defaults).",
    )
    parser.add_argument("--db", help="The database to show (default: SYNC_SQLITE, sync.sqlite).")
    parser.add_argument(
        "--users-csv", help="The users file given to rsync_notebooks.py (default: USERS_CSV)."
    )
    parser.add_argument(
        "--dest", help="The folder rsync_notebooks.py copies into (default: SYNC_DEST, sync_dest)."
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="Address to listen on (default: %(default)s)."
    )
    parser.add_argument(
        "--port", type=int, default=8050, help="Port to listen on (default: %(default)s)."
    )
    parser.add_argument(
        "--debug", action="store_true", help="Run Dash in debug mode (never on a shared server)."
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {make_database.__version__}"
    )
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    configure_logging()
    overrides = {"SYNC_SQLITE": args.db, "USERS_CSV": args.users_csv, "SYNC_DEST": args.dest}
    try:
        settings = load_settings(args.config, overrides)
    except Exception as error:  # a config file is Python: any error in it lands here
        print(f"Error: cannot load the config file: {error}", file=sys.stderr)
        return 2
    for problem in startup_problems(settings):
        print(f"warning: {problem}", file=sys.stderr)
    problem = listen_problem(args.host, args.port)
    if problem:
        print(f"Error: cannot listen on {args.host}:{args.port}: {problem}", file=sys.stderr)
        return 1
    settings = access.settings_to_serve(settings, args.host)
    try:
        app = create_app(settings)
    except access.AccessDbError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 2
    url = access.ready_url(settings, args.host, args.port)
    print(f"serving {settings['SYNC_SQLITE']} at {url}", flush=True)
    app.run(host=args.host, port=args.port, debug=args.debug)
    return 0


if __name__ == "__main__":
    sys.exit(main())
