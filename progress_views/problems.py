"""The first screen: who is stuck, on what, since when, across the whole class.

At the moment M (moment.py): `class_status` counts the students stuck, idle, working and
finished across every assignment (per assignment in its tooltip); `stuck_table` lists the
stuck and idle ones, longest first (model.class_at has the rules); then the heatmap of one
assignment (a row per student, a column per problem, its state at M) and its progress over
time. Clicking a row or a cell opens that version in the version view. Without the names
password students are `student N`, the same N in every view.
"""

import time
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
from dash import Input, Output, State, ctx, dash_table, dcc, html, no_update

from progress_views import model, notebook
from progress_views import moment as moments
from progress_views.model import plotly_text
from progress_views.widgets import (
    ERROR_STYLE,
    PageIds,
    choice,
    index,
    number_box,
    optional_text,
    text,
    whole_number,
)


class Ids:
    status = "class_status"
    stuck = "stuck_table"
    message = "first_screen_message"
    assignment = "assignment"
    minutes = "stuck_minutes"
    sort = "heatmap_sort"
    heatmap = "problems_heatmap"
    heatmap_message = "heatmap_message"
    download_button = "heatmap_download_button"
    download = "heatmap_download"
    stuck_download_button = "stuck_download_button"
    stuck_download = "stuck_download"
    progress = "progress_graph"
    selected_version = "selected_version"  # a dcc.Store: {assignment, rowid, problem, click}


HEATMAP_SORTS = {
    "stuck": "stuck longest",
    "progress": "progress",
    "errors": "errors",
    "name": "name",
    "team": "team",
}
# The heatmap's five states (model.CLASSES, coloured by model.CLASS_COLORS, a palette
# told apart with any colour vision), as the legend names them.
STATE_NAMES = {
    "none": "no version",
    "empty": "empty",
    "non-empty": "written, not run",
    "answered": "answered",
    "error": "error",
}
STEPS = 60  # points of the progress graph
MINUTES_DEFAULT = 10
TABLE_ROWS = 8  # stuck_table rows per page: the first screen shows them all
COLUMNS = ("student", "assignment", "problem", "kind", "since", "minutes")
OWN_NOTEBOOK = "(a notebook of their own)"


# ---------------------------------------------------------------------------- the controls


@dataclass
class Controls:
    """What the first screen's controls ask for, checked (whatever the browser sent)."""

    password: str = ""
    column: object = None
    value: object = None
    moment: str = moments.LIVE
    minutes: object = MINUTES_DEFAULT  # as typed; checked by window()
    assignment: object = None
    sort: str = "stuck"

    @classmethod
    def read(cls, values):
        raw = dict(zip((f.name for f in fields(cls)), values))
        return cls(
            password=text(raw.get("password")),
            column=optional_text(raw.get("column")),
            value=optional_text(raw.get("value")),
            moment=moments.read(raw.get("moment")),
            minutes=raw.get("minutes"),
            assignment=optional_text(raw.get("assignment")),
            sort=choice(raw.get("sort"), HEATMAP_SORTS, "stuck"),
        )

    def window(self):
        """N, the minutes of the stuck and idle rules (ValueError naming the box)."""
        return whole_number(self.minutes, "stuck after (minutes)", MINUTES_DEFAULT, 1, 24 * 60)


# The component property behind each Controls field, in field order.
INPUTS = [
    (PageIds.password, "value"),
    (PageIds.filter_column, "value"),
    (PageIds.filter_value, "value"),
    (PageIds.moment, "data"),
    (Ids.minutes, "value"),
    (Ids.assignment, "value"),
    (Ids.sort, "value"),
]
CLASS_INPUTS = INPUTS[:5]  # what the status line and the table depend on


class Shown:
    """The controls applied to the data: names or not, the students the filter keeps,
    their labels, M."""

    def __init__(self, data, controls, now=None):
        self.data = data
        self.names = data.names_shown(controls.password)
        self.allowed = data.allowed_uids(controls.column, controls.value, self.names)
        self.moment = moments.resolve(controls.moment, now or moments.now_seconds())

    def students(self, uids):
        """The uids the page's filter keeps."""
        return [u for u in uids if self.allowed is None or u in self.allowed]

    def labels(self, uids):
        return self.data.student_labels(uids, self.names)

    def rank(self):
        """The students' sort key (pseudonym order without the names password)."""
        return self.data.student_order(self.names)

    def class_at(self, minutes):
        return self.data.class_at(self.moment, minutes, self.allowed)

    def shared_assignments(self):
        """Assignments more than one student has: without the names password, the name
        of a notebook only one student has is not shown (it may be theirs)."""
        found = self.data.assignments()
        return {a for a, sources in found.items() if self.names or len(sources) > 1}


# ---------------------------------------------------------------------------- pure parts

clock = moments.clock


def status_text(at, moment, minutes):
    """`2 stuck, 1 idle, 30 working, 5 finished at 2021-03-15 12:00:00 (N = 10 min)`."""
    return f"{model.status_text(at.status)} at {clock(moment)} (N = {minutes} min)"


def status_by_assignment(at, shared):
    """The tooltip of class_status: one line per assignment."""
    lines = [
        f"{assignment}: {model.status_text(counts)}"
        for assignment, counts in sorted(at.by_assignment.items())
        if assignment in shared and any(counts.values())
    ]
    return "\n".join(lines) or "no assignment started yet"


def assignment_shown(assignment, shared):
    """A row's assignment: '' for none (a student who saved only other files), and
    OWN_NOTEBOOK for a notebook only they have, whose name could be theirs."""
    if not assignment or assignment in shared:
        return assignment
    return OWN_NOTEBOOK


def table_rows(rows, labels, shared, handles_of):
    """stuck_table's rows from class_at rows (a version's handle for a click, never a
    uid; `handles_of(rowids)` makes them)."""
    handles = handles_of([r["rowid"] for r in rows])
    return [
        {
            "student": labels[r["student"]],
            "assignment": assignment_shown(r["assignment"], shared),
            "problem": r["problem"] if r["assignment"] in shared else "",
            "kind": r["kind"],
            "since": clock(r["since"]),
            "minutes": r["minutes"],
            "rowid": handle,
            "open": r["assignment"] if r["assignment"] in shared else "",
        }
        for r, handle in zip(rows, handles)
    ]


def table_frame(rows, moment):
    """stuck_table as a DataFrame for the CSV download; M in its own column."""
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame.insert(0, "moment", clock(moment))
    return frame


def problem_counts(cells, n_problems):
    """Per problem: {state: students}."""
    counts = [dict.fromkeys(model.CLASSES, 0) for _ in range(n_problems)]
    for row in cells:
        for column, state in enumerate(row):
            counts[column][state] += 1
    return counts


def column_label(problem, counts):
    """`p1_3` over `5 ans 2 err`: the per-problem counts under each column's name."""
    return f"{plotly_text(problem)}<br>{counts['answered']} ans {counts['error']} err"


def order_students(history, moment, students, sort, team_of, stuck_rows, rank):
    """Row order: `stuck` puts the students stuck on this assignment first, longest stuck
    first, then the others by progress; else model.sort_students (ties by `rank`)."""
    if sort != "stuck":
        return model.sort_students(history, moment, students, sort, team_of, rank)
    since = {}
    for row in stuck_rows:
        if row["kind"] == "stuck" and row["assignment"] == history.assignment:
            since[row["student"]] = min(since.get(row["student"], row["since"]), row["since"])
    rest = model.sort_students(history, moment, students, "progress", team_of, rank)
    return sorted((u for u in students if u in since), key=lambda u: (since[u], rank(u))) + [
        u for u in rest if u not in since
    ]


def heatmap_figure(history, moment, students, labels, handles_of):
    """Rows = students, columns = problems, coloured by state at `moment`; each cell's
    customdata the handle of the version shown ('' for none; `handles_of(rowids)`)."""
    states = model.CLASSES
    cells = model.heatmap(history, moment, students)
    codes = [[states.index(c) for c in row] for row in cells]
    versions = [history.state_at(uid, moment) for uid in students]
    hover = [
        [
            f"{plotly_text(labels[uid])}<br>{plotly_text(p)}: {STATE_NAMES[c]}"
            f"<br>saved {clock(v.t) if v else '-'}"
            for p, c in zip(history.problems, row)
        ]
        for uid, row, v in zip(students, cells, versions)
    ]
    shown = iter(handles_of([v.rowid for v in versions if v]))
    custom = [
        [next(shown)] * len(history.problems) if v else [""] * len(history.problems)
        for v in versions
    ]
    colorscale = [
        [edge, model.CLASS_COLORS[name]]
        for code, name in enumerate(states)
        for edge in (code / len(states), (code + 1) / len(states))
    ]
    counts = problem_counts(cells, len(history.problems))
    trace = {
        "type": "heatmap",
        "z": codes,
        "x": list(range(len(history.problems))),
        "y": [plotly_text(labels[uid]) for uid in students],
        "zmin": -0.5,
        "zmax": len(states) - 0.5,
        "colorscale": colorscale,
        "showscale": False,
        "text": hover,
        "customdata": custom,
        "hovertemplate": "%{text}<extra></extra>",
        "xgap": 1,
        "ygap": 1,
    }
    layout = {
        "height": max(250, 150 + 20 * len(students)),
        "margin": {"l": 10, "r": 10, "t": 90, "b": 20},
        "yaxis": {"autorange": "reversed", "automargin": True, "type": "category"},
        "xaxis": {
            "side": "top",
            "tickvals": list(range(len(history.problems))),
            "ticktext": [column_label(p, c) for p, c in zip(history.problems, counts)],
        },
        "title": {
            "text": f"{plotly_text(history.assignment)} at {clock(moment)}",
            "font": {"size": 13},
            "y": 0.99,
            "yanchor": "top",
        },
    }
    return {"data": [trace], "layout": layout}


def empty_figure(text_shown=""):
    return {
        "data": [],
        "layout": {
            "height": 120,
            "xaxis": {"visible": False},
            "yaxis": {"visible": False},
            "annotations": [
                {"text": plotly_text(text_shown), "showarrow": False, "font": {"size": 14}}
            ]
            if text_shown
            else [],
        },
    }


def heatmap_frame(history, moment, students, labels):
    """The heatmap as a DataFrame for the CSV download; M in its own column."""
    rows = []
    for uid, cells in zip(students, model.heatmap(history, moment, students)):
        version = history.state_at(uid, moment)
        rows.append([labels[uid], clock(version.t) if version else "", *cells])
    frame = pd.DataFrame(rows, columns=["student", "version saved", *history.problems])
    frame.insert(0, "moment", clock(moment))
    return frame


def csv_name(kind, moment, assignment=""):
    """`heatmap_pl01_pl01.ipynb_at_2021-03-15T12-00-00.csv`: what and which M."""
    what = "_".join(part for part in (kind, assignment.replace("/", "_")) if part)
    return f"{what}_at_{moments.stamp_of(moment).replace(':', '-')}.csv"


def progress_figure(history, start, moment, students):
    """Two panels sharing the time axis, lines ending at M: students with each problem
    answered (legend in problem order) above, answered problems per student below."""
    end = max(start, moment)
    times = np.unique(np.linspace(start, end, STEPS).astype(np.int64))
    answered, median, q1, q3 = model.progress_series(history, list(times), students)
    x = times.astype("datetime64[s]").astype("datetime64[ms]").astype(np.int64)
    traces = [
        {
            "type": "scatter",
            "mode": "lines",
            "x": x,
            "y": answered[i],
            "name": plotly_text(problem),
            "legendrank": i + 1,
        }
        for i, problem in enumerate(history.problems)
    ]
    band = {"type": "scatter", "mode": "lines", "x": x, "xaxis": "x2", "yaxis": "y2"}
    traces += [
        {**band, "y": q3, "line": {"width": 0}, "showlegend": False, "hoverinfo": "skip"},
        {
            **band,
            "y": q1,
            "line": {"width": 0},
            "fill": "tonexty",
            "fillcolor": "rgba(0,0,0,0.12)",
            "name": "interquartile range",
            "legendrank": 1000,
            "hoverinfo": "skip",
        },
        {
            **band,
            "y": median,
            "line": {"color": "black", "dash": "dot"},
            "name": "median answered",
            "legendrank": 1001,
        },
    ]
    layout = {
        "height": 420,
        "margin": {"l": 10, "r": 10, "t": 30, "b": 30},
        "xaxis": {"type": "date", "anchor": "y", "showticklabels": False},
        "xaxis2": {"type": "date", "anchor": "y2", "matches": "x"},
        "yaxis": {
            "domain": [0.42, 1],
            "title": {"text": "students with it answered"},
            "rangemode": "tozero",
            "automargin": True,
        },
        "yaxis2": {
            "domain": [0, 0.34],
            "title": {"text": "answered per student"},
            "rangemode": "tozero",
            "automargin": True,
        },
        "legend": {"traceorder": "normal"},
        "title": {
            "text": f"class progress on {plotly_text(history.assignment)} until {clock(moment)}",
            "font": {"size": 13},
        },
    }
    return {"data": traces, "layout": layout}


# ---------------------------------------------------------------------------- over the data


def first_screen(data, controls, now=None):
    """(class_status text, its tooltip, stuck_table rows, message)."""
    try:
        minutes = controls.window()
    except ValueError as error:
        return "", "", [], str(error)
    try:
        shown = Shown(data, controls, now)
        at = shown.class_at(minutes)
        shared = shown.shared_assignments()
    except data.errors as error:
        return "", "", [], str(error)
    labels = shown.labels({r["student"] for r in at.rows})
    rows = table_rows(in_order(at.rows, shown.rank()), labels, shared, data.handles_of)
    note = data.people().problem
    return (
        status_text(at, shown.moment, minutes),
        status_by_assignment(at, shared),
        rows,
        note,
    )


def in_order(rows, rank):
    """class_at's rows with equal `since` by `rank` of the student (class_at has them
    by uid), each student's own rows in class_at's order."""
    return sorted(rows, key=lambda r: (r["since"], rank(r["student"])))


def assignment_options(data, names):
    """Assignments most students have first; without the names password only shared ones."""
    found = data.assignments()
    ordered = sorted(found, key=lambda a: (-len(found[a]), a))
    return [
        {"label": f"{a} ({len(found[a])})", "value": a}
        for a in ordered
        if names or len(found[a]) > 1
    ]


def heatmap_view(data, controls, now=None):
    """(heatmap figure, progress figure, message) for the chosen assignment."""
    if not controls.assignment:
        text_shown = "no assignment with a known owner yet"
        return empty_figure(text_shown), empty_figure(), text_shown
    try:
        minutes = controls.window()
    except ValueError:
        minutes = None  # first_screen says what is wrong with the box
    try:
        shown = Shown(data, controls, now)
        if controls.assignment not in shown.shared_assignments():
            raise KeyError(controls.assignment)
        history = data.history(controls.assignment)
        stuck = shown.class_at(minutes).rows if controls.sort == "stuck" and minutes else []
    except KeyError:
        text_shown = "that assignment is not in the database (any more)"
        return empty_figure(text_shown), empty_figure(), text_shown
    except data.errors as error:
        return empty_figure(str(error)), empty_figure(), str(error)
    students = shown.students(history.students)
    started = [u for u in students if history.state_at(u, shown.moment) is not None]
    if not started:
        text_shown = f"no one has saved {controls.assignment} by {clock(shown.moment)}"
        return empty_figure(text_shown), empty_figure(), text_shown
    team_of = data.team_of(shown.names)
    ordered = order_students(
        history, shown.moment, started, controls.sort, team_of, stuck, shown.rank()
    )
    labels = shown.labels(ordered)
    start = history.first_time()
    return (
        heatmap_figure(history, shown.moment, ordered, labels, data.handles_of),
        progress_figure(history, start, shown.moment, started),
        "",
    )


def heatmap_download(data, controls, now=None):
    shown = Shown(data, controls, now)
    if controls.assignment not in shown.shared_assignments():
        return None
    history = data.history(controls.assignment)
    students = [u for u in shown.students(history.students) if history.state_at(u, shown.moment)]
    ordered = model.sort_students(history, shown.moment, students, "name", str, shown.rank())
    frame = heatmap_frame(history, shown.moment, ordered, shown.labels(ordered))
    name = csv_name("heatmap", shown.moment, controls.assignment)
    return dcc.send_data_frame(frame.to_csv, name, index=False)


def stuck_download(data, controls, now=None):
    shown = Shown(data, controls, now)
    at = shown.class_at(controls.window())
    labels = shown.labels({r["student"] for r in at.rows})
    rows = table_rows(
        in_order(at.rows, shown.rank()), labels, shown.shared_assignments(), data.handles_of
    )
    frame = table_frame(rows, shown.moment)
    return dcc.send_data_frame(frame.to_csv, csv_name("stuck", shown.moment), index=False)


def selection(data, assignment, rowid, problem, click):
    """The selected_version store for a click: a version of `assignment` (the student's
    state at that version's time when `rowid` is another file of theirs); None when the
    assignment or the version is not known."""
    try:
        history = data.history(assignment)
        owner = history.owner_of(rowid) or data.version_owner(rowid)
    except (KeyError, OverflowError, *data.errors):
        return None
    versions = history.versions.get(owner)
    if not versions:
        return None
    version = next((v for v in versions if v.rowid == rowid), None)
    if version is None:  # another file of theirs (an idle row's last save)
        saves = data.saves()
        rowids, times = saves.rowids.get(owner, []), saves.times.get(owner, [])
        at = next((int(t) for r, t in zip(rowids, times) if r == rowid), None)
        version = (history.state_at(owner, at) if at is not None else None) or versions[-1]
    if problem not in history.problems:
        problem = None
    anchor = notebook.problem_anchor(problem) if problem else None
    return {
        "assignment": assignment,
        "rowid": data.handle(version.rowid),
        "problem": problem,
        "anchor": anchor,
        "click": click,
    }


def row_selection(data, table, active_cell, click):
    """selection() for a click on a stuck_table row (None for a row that names no shared
    assignment, or anything a browser may forge)."""
    rows = table if isinstance(table, list) else []
    number = index(active_cell.get("row") if isinstance(active_cell, dict) else None, len(rows))
    row = rows[number] if number is not None and isinstance(rows[number], dict) else {}
    assignment, rowid = optional_text(row.get("open")), data.rowid(row.get("rowid"))
    if not assignment or rowid is None:
        return None
    return selection(data, assignment, rowid, optional_text(row.get("problem")), click)


def cell_selection(data, assignment, click, click_id):
    """selection() for a click on a heatmap cell."""
    cell = clicked_cell(click)
    if cell is None or not isinstance(assignment, str) or data.rowid(cell[0]) is None:
        return None
    try:
        problems = data.history(assignment).problems
    except (KeyError, *data.errors):
        return None
    problem = problems[cell[1]] if 0 <= cell[1] < len(problems) else None
    return selection(data, assignment, data.rowid(cell[0]), problem, click_id)


def clicked_cell(click):
    """(version handle, problem index) of a heatmap click (the x values are problem
    indexes), or None."""
    try:
        point = click["points"][0]
        return point["customdata"], int(point["x"])
    except (TypeError, KeyError, IndexError, ValueError, OverflowError):
        return None


# ---------------------------------------------------------------------------- the section


def make_status():
    """class_status, the window N and the table of stuck and idle students."""
    return html.Div(
        [
            html.Div(
                [
                    html.B(id=Ids.status, style={"fontSize": "1.15em", "cursor": "help"}),
                    html.Label(["stuck after ", number_box(Ids.minutes, MINUTES_DEFAULT), " min"]),
                    html.Button("download CSV", id=Ids.stuck_download_button),
                    dcc.Download(id=Ids.stuck_download),
                ],
                style={"display": "flex", "gap": "1.5em", "alignItems": "center"},
            ),
            html.Div(id=Ids.message, style=ERROR_STYLE),
            dash_table.DataTable(
                id=Ids.stuck,
                columns=[{"name": c, "id": c} for c in COLUMNS],
                data=[],
                sort_action="native",
                page_size=TABLE_ROWS,
                style_cell={"textAlign": "left", "fontFamily": "sans-serif", "padding": "2px 8px"},
                style_data_conditional=[
                    {"if": {"filter_query": '{kind} = "stuck"'}, "fontWeight": "bold"},
                ],
                style_table={"marginTop": "0.3em"},
                tooltip_delay=0,
            ),
            dcc.Store(id=Ids.selected_version),
        ]
    )


def make_legend():
    """The heatmap's five states, with their colours."""
    return html.Div(
        [
            html.Span(
                [
                    html.Span(
                        style={
                            "display": "inline-block",
                            "width": "1em",
                            "height": "1em",
                            "background": color,
                            "border": "1px solid #888",
                            "verticalAlign": "middle",
                            "marginRight": "0.3em",
                        }
                    ),
                    STATE_NAMES[state],
                ],
                style={"marginRight": "1.2em"},
            )
            for state, color in model.CLASS_COLORS.items()
        ],
        id="heatmap_legend",
    )


def make_heatmap():
    return html.Div(
        [
            html.Div(
                [
                    html.Label(
                        [
                            "assignment: ",
                            dcc.Dropdown(
                                id=Ids.assignment, clearable=False, style={"width": "22em"}
                            ),
                        ],
                        style={"display": "flex", "alignItems": "center"},
                    ),
                    html.Span("sort:"),
                    dcc.RadioItems(
                        id=Ids.sort,
                        options=[{"label": v, "value": k} for k, v in HEATMAP_SORTS.items()],
                        value="stuck",
                        inline=True,
                        inputStyle={"marginLeft": "0.8em"},
                    ),
                    html.Button("download heatmap CSV", id=Ids.download_button),
                    dcc.Download(id=Ids.download),
                ],
                style={"display": "flex", "gap": "1em", "alignItems": "center", "marginTop": "1em"},
            ),
            make_legend(),
            html.Div(id=Ids.heatmap_message, style=ERROR_STYLE),
            dcc.Graph(id=Ids.heatmap, config={"displaylogo": False}),
            dcc.Graph(id=Ids.progress, config={"displaylogo": False}),
        ]
    )


def make_section():
    return html.Div([make_status(), make_heatmap()])


# ---------------------------------------------------------------------------- callbacks


def register(app, data):
    @app.callback(
        Output(Ids.assignment, "options"),
        Output(Ids.assignment, "value"),
        Input(PageIds.password, "value"),
        Input(PageIds.interval, "n_intervals"),
        State(Ids.assignment, "value"),
    )
    def update_assignments(password, _, current):
        try:
            options = assignment_options(data, data.names_shown(text(password)))
        except data.errors:
            return [], None
        values = [o["value"] for o in options]
        return options, current if current in values else (values[0] if values else None)

    @app.callback(
        Output(Ids.status, "children"),
        Output(Ids.status, "title"),
        Output(Ids.stuck, "data"),
        Output(Ids.message, "children"),
        *[Input(*spec) for spec in CLASS_INPUTS],
        Input(PageIds.interval, "n_intervals"),
    )
    def update_first_screen(*values):
        return first_screen(data, Controls.read(values[: len(CLASS_INPUTS)]))

    @app.callback(
        Output(Ids.heatmap, "figure"),
        Output(Ids.progress, "figure"),
        Output(Ids.heatmap_message, "children"),
        *[Input(*spec) for spec in INPUTS],
        Input(PageIds.interval, "n_intervals"),
    )
    def update_heatmap(*values):
        return heatmap_view(data, Controls.read(values[: len(INPUTS)]))

    @app.callback(
        Output(Ids.download, "data"),
        Input(Ids.download_button, "n_clicks"),
        *[State(*spec) for spec in INPUTS],
        prevent_initial_call=True,
    )
    def download_heatmap(_, *values):
        try:
            return heatmap_download(data, Controls.read(values))
        except (ValueError, KeyError, *data.errors):
            return None

    @app.callback(
        Output(Ids.stuck_download, "data"),
        Input(Ids.stuck_download_button, "n_clicks"),
        *[State(*spec) for spec in CLASS_INPUTS],
        prevent_initial_call=True,
    )
    def download_stuck(_, *values):
        try:
            return stuck_download(data, Controls.read(values))
        except (ValueError, *data.errors):
            return None

    @app.callback(
        Output(Ids.selected_version, "data"),
        Output(Ids.stuck, "active_cell"),
        Output(Ids.stuck, "selected_cells"),
        Output(Ids.assignment, "value", allow_duplicate=True),
        Input(Ids.heatmap, "clickData"),
        Input(Ids.stuck, "active_cell"),
        State(Ids.stuck, "derived_viewport_data"),
        State(Ids.assignment, "value"),
        prevent_initial_call=True,
    )
    def select_version(click, active_cell, table, assignment):
        click_id = time.time()  # a new value per click: the same row twice opens twice
        if ctx.triggered_id == Ids.stuck:
            picked = row_selection(data, table, active_cell, click_id)
            # the table forgets the click, so that the same row can be clicked again
            chosen = picked["assignment"] if picked else no_update
            return picked or no_update, None, [], chosen
        picked = cell_selection(data, assignment, click, click_id)
        return picked or no_update, no_update, no_update, no_update
