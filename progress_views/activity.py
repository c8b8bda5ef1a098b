"""The activity view (the seed's viewer): one row per notebook, one marker per version at
the time it was saved: red when a graded cell failed, green when every graded code cell
printed something, blue otherwise, gray for a file that is not a readable notebook;
bigger when more problems are answered. Filters: a path regexp or suggested path groups,
a time window, a sort order, only the latest versions, at most N files. Versions after
the moment M are not drawn. Clicking a marker gives a link that opens that version in
Jupyter (with the names password only: the link names the student).
"""

import re
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta

import numpy as np
import re2
from dash import Input, Output, State, dcc, html

import make_database
from progress_views import moment as moments
from progress_views.model import plotly_text
from progress_views.widgets import (
    ERROR_STYLE,
    PageIds,
    choice,
    labelled,
    number_box,
    optional_text,
    password_refused,
    text,
    text_box,
    texts,
    whole_number,
)

MAX_REGEXP_LENGTH = 1000
MAX_LINES_DEFAULT = 100
GROUP_THRESHOLD_DEFAULT = 10
SUGGESTIONS_SHOWN = 50


class Ids:
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
    section = "activity_section"
    groups = "activity_graph_groups"  # the suggested groups' html.Details
    groups_message = "activity_graph_groups_message"


SORT_CRITERIA = {
    "latest": "latest version first",
    "most_ok": "most answered first",
    "most_error": "most errors first",
    "user": "by user",
    "team": "by team",
}
COLORS = {"red": "error", "green": "all answered", "blue": "in progress", "gray": "unreadable"}
COUNT_NAMES = tuple(name.removeprefix("code_") for name in make_database.COUNT_COLUMNS)


# ---------------------------------------------------------------------------- the controls


@dataclass
class Filters:
    """What the activity view's controls ask for, checked: every field has the type it
    says whatever the browser sent. The same list of inputs serves the callback."""

    password: str = ""
    path_re: str = ""
    groups: list = field(default_factory=list)
    after: str = ""
    before: str = ""
    criteria: str = "latest"
    only_latest: bool = False
    max_lines: object = MAX_LINES_DEFAULT  # as typed; checked by limit()
    column: object = None
    value: object = None
    moment: str = moments.LIVE

    @classmethod
    def read(cls, values):
        """Filters from the callback's input values, in INPUTS order."""
        raw = dict(zip((f.name for f in fields(cls)), values))
        return cls(
            password=text(raw["password"]),
            path_re=text(raw["path_re"]),
            groups=texts(raw["groups"]),
            after=text(raw["after"]),
            before=text(raw["before"]),
            criteria=choice(raw["criteria"], SORT_CRITERIA, "latest"),
            only_latest=bool(texts(raw["only_latest"])),
            max_lines=raw["max_lines"],
            column=optional_text(raw["column"]),
            value=optional_text(raw["value"]),
            moment=moments.read(raw["moment"]),
        )

    def limit(self):
        return whole_number(self.max_lines, "max entries", MAX_LINES_DEFAULT)

    def patterns(self):
        return [self.path_re] if self.path_re else self.groups


# The component property behind each Filters field, in field order.
INPUTS = [
    (PageIds.password, "value"),
    (Ids.path_re, "value"),
    (Ids.path_re_options, "value"),
    (Ids.time_after, "value"),
    (Ids.time_before, "value"),
    (Ids.sort_criteria, "value"),
    (Ids.show_only_latest, "value"),
    (Ids.max_lines, "value"),
    (PageIds.filter_column, "value"),
    (PageIds.filter_value, "value"),
    (PageIds.moment, "data"),
]


# ---------------------------------------------------------------------------- pure parts

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
    try:
        if match:
            sign, amount, unit = match.groups()
            seconds = float(amount) * UNIT_SECONDS[unit[0].lower()]
            return now + timedelta(seconds=seconds if sign == "+" else -seconds)
        return datetime.fromisoformat(text.replace("/", "-"))
    except (ValueError, OverflowError):
        raise ValueError(
            f"cannot read the time {text[:40]!r}: use 2021-03-15, 2021-03-15T09:23:00 or -2 hours"
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
        raise ValueError(f"bad path regexp {pattern[:60]!r}: {reason}") from None


def path_groups(paths):
    """{regexp: set of indexes into `paths`} made by replacing one component of a path
    with [^/]+."""
    groups = {}
    for index, path in enumerate(paths):
        if not path:  # hidden (data.searchable_paths)
            continue
        parts = path.split("/")
        for i in range(len(parts)):
            pattern = (
                "^"
                + "/".join("[^/]+" if j == i else re.escape(part) for j, part in enumerate(parts))
                + "$"
            )
            groups.setdefault(pattern, set()).add(index)
    return groups


def group_table(paths, owners):
    """[(regexp, files, owners)] of every path group, most files first."""
    groups = [
        (pattern, len(files), len({owners[i] for i in files}))
        for pattern, files in path_groups(paths).items()
    ]
    return sorted(groups, key=lambda g: (-g[1], g[0]))


def suggest_groups(groups, threshold, shown):
    """[(regexp, count)] with at least `threshold` files, most first. Without the names
    password, a group whose files all belong to one student is left out (it would name
    them)."""
    return [
        (pattern, count)
        for pattern, count, n_owners in groups
        if count >= threshold and (shown or n_owners > 1)
    ][:SUGGESTIONS_SHOWN]


def regexp_mask(sources, patterns):
    """Which sources any of the regexps finds (all of them for no regexp)."""
    if not patterns:
        return np.ones(len(sources), dtype=bool)
    compiled = [compile_regexp(p) for p in patterns]
    return np.fromiter(
        (any(r.search(s) for r in compiled) for s in sources), dtype=bool, count=len(sources)
    )


@dataclass
class View:
    """What the graph shows: the sources in row order and the versions to draw."""

    sources: list  # source indexes, top row first
    versions: np.ndarray  # indexes into the catalog's arrays
    total: int = 0  # sources the filters keep before max entries


def sort_keys(catalog, latest, criteria, team_of, rank):
    """Sort key per shown source (ascending), from each one's latest version; students
    by `rank(uid)` (Data.student_order), ties too."""
    times = catalog.t[latest].astype(np.int64).tolist()
    counts = np.nan_to_num(catalog.counts[latest]).tolist()
    sources = catalog.src[latest].tolist()
    owners = [rank(catalog.source_owner[s]) for s in sources]
    names = [catalog.sources[s] for s in sources]  # only ever compared for one owner
    if criteria == "most_ok":
        firsts = [(-(c[0] + c[1] + c[2]), -t) for c, t in zip(counts, times)]
    elif criteria == "most_error":
        firsts = [(-c[3], -t) for c, t in zip(counts, times)]
    elif criteria == "user":
        firsts = [() for _ in sources]
    elif criteria == "team":
        firsts = [(team_of(catalog.source_owner[s]),) for s in sources]
    else:
        firsts = [(-t,) for t in times]
    return [(*first, owner, name) for first, owner, name in zip(firsts, owners, names)]


def select_view(catalog, mask, after, before, only_latest, criteria, max_lines, team_of, rank):
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
    keys = sort_keys(catalog, latest, criteria, team_of, rank)
    order = sorted(range(len(latest)), key=keys.__getitem__)[:max_lines]
    shown = [int(catalog.src[latest[i]]) for i in order]
    if only_latest:
        versions = latest[np.isin(catalog.src[latest], shown)]
    else:
        versions = picked[np.isin(src, shown)]
    return View(shown, versions, len(latest))


def rows_text(view):
    """`24 rows`, or `100 rows (100 of 120 notebooks shown: ...)` when max entries cut."""
    shown = len(view.sources)
    if view.total > shown:
        return f"{shown} rows ({shown} of {view.total} notebooks shown: raise max entries)"
    return f"{shown} rows"


def make_figure(catalog, view, labels, handles_of):
    """One row per source, one marker per version, as a plain figure dict (no per-point
    validation): one trace per color, numbers as typed arrays, counts as short strings,
    each version's handle (`handles_of(rowids)`) for a click."""
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
                "customdata": handles_of(catalog.rowid[versions[selected]]),
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
    (rows of an (n, 5) array in COUNT_COLUMNS order, NaN for unknown counts)."""
    answered = counts[:, 0] + counts[:, 1] + counts[:, 2]
    colors = np.where(
        counts[:, 3] > 0, "red", np.where((answered > 0) & (counts[:, 4] == 0), "green", "blue")
    )
    colors[np.isnan(counts).any(axis=1)] = "gray"
    return colors


def marker_sizes(counts):
    """5 + 10 * (ok + display + stream) / all five counts, 5 when all are 0 or unknown."""
    answered = counts[:, 0] + counts[:, 1] + counts[:, 2]
    total = counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        sizes = 5.0 + 10.0 * answered / total
    return np.where(np.isfinite(sizes), sizes, 5.0)


def empty_figure():
    return {
        "data": [],
        "layout": {"height": 300, "xaxis": {"visible": False}, "yaxis": {"visible": False}},
    }


# ---------------------------------------------------------------------------- over the data


def source_mask(data, patterns, shown):
    """regexp_mask over data.searchable_paths(shown), kept while the catalog's sources
    stay the same (data.memo_sources: a few patterns, not every one typed)."""
    paths = data.searchable_paths(shown)
    return data.memo_sources(("mask", shown, tuple(patterns)), lambda: regexp_mask(paths, patterns))


def graph(data, filters, now=None):
    """(figure, 'N rows', message) for the Filters."""
    shown = data.names_shown(filters.password)
    notes = []
    if filters.password and not shown:
        notes.append(password_refused(data))
    if filters.path_re and filters.groups:
        notes.append("the path regexp is used: the ticked groups are ignored")
    now = now or datetime.now()
    moment = datetime.fromisoformat(filters.moment) if filters.moment != moments.LIVE else None
    try:
        after, before = parse_time(filters.after, now), parse_time(filters.before, now)
        limit = filters.limit()
        catalog = data.catalog()
        mask = source_mask(data, filters.patterns(), shown)
    except (ValueError, *data.errors) as error:
        return empty_figure(), "0 rows", "\n".join([*notes, str(error)])
    if moment is not None:
        before = moment if before is None else min(before, moment)
    allowed = data.allowed_uids(filters.column, filters.value, shown)
    if allowed is not None:
        mask = mask & np.array([o in allowed for o in catalog.source_owner], dtype=bool)
    team_of, rank = data.team_of(shown), data.student_order(shown)
    view = select_view(
        catalog, mask, after, before, filters.only_latest, filters.criteria, limit, team_of, rank
    )
    labels = [
        data.source_label(catalog.sources[s], catalog.source_owner[s], shown) for s in view.sources
    ]
    if data.people().problem:
        notes.append(data.people().problem)
    return make_figure(catalog, view, labels, data.handles_of), rows_text(view), "\n".join(notes)


def suggestions(data, threshold, password):
    """(checklist options, message): the suggested path groups over the paths the regexp
    searches; none, and why, when the threshold is bad or the database unreadable."""
    try:
        limit = whole_number(threshold, "group threshold", GROUP_THRESHOLD_DEFAULT)
        shown = data.names_shown(password)
        paths, owners = data.searchable_paths(shown), data.catalog().source_owner
    except (ValueError, *data.errors) as error:
        return [], str(error)
    groups = data.memo_sources(("groups", shown), lambda: group_table(paths, owners))
    found = suggest_groups(groups, limit, shown)
    options = [{"label": f"{pattern} ({count})", "value": pattern} for pattern, count in found]
    return options, "" if options else f"no group of {limit} files or more"


def link(data, click, password):
    """A link to the clicked version (only with the password: it names the student)."""
    try:
        rowid = data.rowid(click["points"][0]["customdata"])
    except (TypeError, KeyError, IndexError):
        return ""
    if rowid is None:
        return ""
    if not data.names_shown(password):
        return "Type the password to open this version in Jupyter."
    try:
        filename = data.version_filename(rowid)
    except data.errors:
        return "The database cannot be read just now."
    if filename is None:
        return "That version is no longer in the database."
    url = data.file_url(filename)
    return html.A(f"open {filename}", href=url, target="_blank", rel="noopener")


# ---------------------------------------------------------------------------- the section


def make_controls():
    return html.Div(
        [
            labelled("path regexp:", text_box(Ids.path_re, "pl01/", size=30)),
            labelled("after:", text_box(Ids.time_after, "-2 hours")),
            labelled("before:", text_box(Ids.time_before, "2021-03-15T12:00")),
            labelled("max entries:", number_box(Ids.max_lines, MAX_LINES_DEFAULT, width="6em")),
            labelled("group threshold:", number_box(Ids.threshold, GROUP_THRESHOLD_DEFAULT)),
        ],
        style={"display": "flex", "flexWrap": "wrap", "gap": "0.5em"},
    )


def make_section():
    """The activity view, collapsed under the first screen (opened by a click)."""
    return html.Details(
        [
            html.Summary(html.B("Activity: every notebook, every version")),
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
                    html.Div(id=Ids.groups_message, style=ERROR_STYLE),
                    dcc.Checklist(id=Ids.path_re_options, options=[], value=[]),
                ],
                id=Ids.groups,
            ),
            html.Div(id=Ids.message, style=ERROR_STYLE),
            html.Div(id=Ids.n_rows),
            html.Div(id=Ids.link),
            dcc.Graph(id=Ids.graph, config={"displaylogo": False}),
        ],
        id=Ids.section,
        open=True,
    )


def register(app, data):
    @app.callback(
        Output(Ids.graph, "figure"),
        Output(Ids.n_rows, "children"),
        Output(Ids.message, "children"),
        *[Input(*spec) for spec in INPUTS],
        Input(PageIds.interval, "n_intervals"),
    )
    def update_graph(*values):
        return graph(data, Filters.read(values[: len(INPUTS)]))

    @app.callback(
        Output(Ids.path_re_options, "options"),
        Output(Ids.groups_message, "children"),
        Input(Ids.threshold, "value"),
        Input(PageIds.password, "value"),
        Input(PageIds.interval, "n_intervals"),
    )
    def update_suggestions(threshold, password, _):
        return suggestions(data, threshold, text(password))

    @app.callback(
        Output(Ids.link, "children"),
        Input(Ids.graph, "clickData"),
        State(PageIds.password, "value"),
    )
    def update_link(click, password):
        return link(data, click, text(password))
