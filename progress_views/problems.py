"""Problems heatmap, class progress over time, and the stuck and idle lists.

All three show one assignment at moment M (a slider over the session, now by default),
for the students the page's filter keeps. Without the password students are `student N`.
"""

import csv
import io
import time
from datetime import datetime

import numpy as np
from dash import Input, Output, State, dash_table, dcc, html

from progress_views import model
from progress_views.widgets import number_box


class Ids:
    assignment = "assignment"
    moment = "moment_slider"
    moment_label = "moment_label"
    minutes = "stuck_minutes"
    sort = "heatmap_sort"
    heatmap = "problems_heatmap"
    download_button = "heatmap_download_button"
    download = "heatmap_download"
    progress = "progress_graph"
    stuck = "stuck_table"
    selected_version = "selected_version"  # a dcc.Store: the rowid clicked


HEATMAP_SORTS = {"progress": "progress", "errors": "errors", "name": "name / uid", "team": "team"}
STEPS = 60  # points of the progress graph


def make_section():
    return html.Div(
        [
            html.H4("Problems"),
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
                    html.Label(["stuck after (minutes): ", number_box(Ids.minutes, 10)]),
                    dcc.RadioItems(
                        id=Ids.sort,
                        options=[{"label": v, "value": k} for k, v in HEATMAP_SORTS.items()],
                        value="progress",
                        inline=True,
                    ),
                ],
                style={"display": "flex", "gap": "2em", "alignItems": "center"},
            ),
            html.Div(id=Ids.moment_label, style={"marginTop": "0.5em"}),
            dcc.Slider(
                id=Ids.moment,
                min=-60,
                max=0,
                step=1,
                value=0,
                marks=None,
                tooltip={"placement": "bottom"},
            ),
            dcc.Graph(id=Ids.heatmap, config={"displaylogo": False}),
            html.Button("download heatmap CSV", id=Ids.download_button),
            dcc.Download(id=Ids.download),
            dcc.Graph(id=Ids.progress, config={"displaylogo": False}),
            html.H4("Stuck and idle students"),
            dash_table.DataTable(
                id=Ids.stuck,
                columns=[
                    {"name": "student", "id": "student"},
                    {"name": "kind", "id": "kind"},
                    {"name": "problem", "id": "problem"},
                    {"name": "since", "id": "since"},
                    {"name": "link", "id": "link", "presentation": "markdown"},
                ],
                data=[],
                sort_action="native",
                export_format="csv",
                style_cell={"textAlign": "left", "fontFamily": "sans-serif"},
            ),
            dcc.Store(id=Ids.selected_version),
        ]
    )


# ---------------------------------------------------------------------------- pure parts


def to_seconds(moment):
    return int(np.datetime64(moment, "s").astype(np.int64))


def clock(seconds):
    return str(np.datetime64(int(seconds), "s")).replace("T", " ")


def student_labels(students, people, attrs, authorized):
    """uid -> label: `uid [attrs]` with the password, else `student N`."""
    labels = {}
    for number, uid in enumerate(sorted(students), start=1):
        if authorized:
            user = people.by_uid.get(uid)
            values = [user.attrs.get(a, "") for a in attrs] if user else []
            labels[uid] = f"{uid} [{' '.join(values)}]" if values else uid
        else:
            labels[uid] = f"student {number}"
    return labels


def heatmap_figure(history, moment, students, labels):
    """Rows = students, columns = problems, colors by outcome class at `moment`."""
    cells = model.heatmap(history, moment, students)
    codes = [[model.CLASSES.index(c) for c in row] for row in cells]
    versions = [history.state_at(uid, moment) for uid in students]
    hover = [
        [
            f"{model.plotly_text(labels[uid])}<br>{model.plotly_text(p)}: {c}"
            f"<br>saved {clock(v.t) if v else '-'}"
            for p, c in zip(history.problems, row)
        ]
        for uid, row, v in zip(students, cells, versions)
    ]
    custom = [[v.rowid if v else -1 for _ in history.problems] for v in versions]
    colorscale = [
        [edge, model.CLASS_COLORS[name]]
        for code, name in enumerate(model.CLASSES)
        for edge in (code / len(model.CLASSES), (code + 1) / len(model.CLASSES))
    ]
    trace = {
        "type": "heatmap",
        "z": codes,
        "x": [model.plotly_text(p) for p in history.problems],
        "y": [model.plotly_text(labels[uid]) for uid in students],
        "zmin": -0.5,
        "zmax": len(model.CLASSES) - 0.5,
        "colorscale": colorscale,
        "showscale": False,
        "text": hover,
        "customdata": custom,
        "hovertemplate": "%{text}<extra></extra>",
        "xgap": 1,
        "ygap": 1,
    }
    layout = {
        "height": max(250, 130 + 20 * len(students)),
        "margin": {"l": 10, "r": 10, "t": 80, "b": 20},
        "yaxis": {"autorange": "reversed", "automargin": True, "type": "category"},
        "xaxis": {"side": "top", "type": "category"},
        "title": {
            "text": f"{model.plotly_text(history.assignment)} at {clock(moment)}",
            "font": {"size": 13},
            "y": 0.98,
            "yanchor": "top",
        },
    }
    return {"data": [trace], "layout": layout}


def heatmap_csv(history, moment, students, labels):
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["student", "version saved", *history.problems])
    for uid, row in zip(students, model.heatmap(history, moment, students)):
        version = history.state_at(uid, moment)
        writer.writerow([labels[uid], clock(version.t) if version else "", *row])
    return out.getvalue()


def progress_figure(history, start, moment, students):
    times = np.linspace(start, max(start + 60, moment), STEPS).astype(np.int64)
    answered, median, q1, q3 = model.progress_series(history, list(times), students)
    x = times.astype("datetime64[s]").astype("datetime64[ms]").astype(np.int64)
    traces = [
        {
            "type": "scatter",
            "mode": "lines",
            "x": x,
            "y": answered[i],
            "name": model.plotly_text(problem),
        }
        for i, problem in enumerate(history.problems)
    ]
    traces += [
        {
            "type": "scatter",
            "mode": "lines",
            "x": x,
            "y": q3,
            "line": {"width": 0},
            "yaxis": "y2",
            "showlegend": False,
            "hoverinfo": "skip",
        },
        {
            "type": "scatter",
            "mode": "lines",
            "x": x,
            "y": q1,
            "line": {"width": 0},
            "fill": "tonexty",
            "fillcolor": "rgba(0,0,0,0.12)",
            "yaxis": "y2",
            "name": "interquartile range",
            "hoverinfo": "skip",
        },
        {
            "type": "scatter",
            "mode": "lines",
            "x": x,
            "y": median,
            "yaxis": "y2",
            "line": {"color": "black", "dash": "dot"},
            "name": "median answered",
        },
    ]
    layout = {
        "height": 350,
        "margin": {"l": 10, "r": 10, "t": 30, "b": 40},
        "xaxis": {"type": "date"},
        "yaxis": {
            "title": {"text": "students with it answered"},
            "rangemode": "tozero",
            "automargin": True,
        },
        "yaxis2": {
            "title": {"text": "answered per student"},
            "overlaying": "y",
            "side": "right",
            "rangemode": "tozero",
            "automargin": True,
        },
        "legend": {"orientation": "h", "y": -0.2},
        "title": {
            "text": f"class progress on {model.plotly_text(history.assignment)}",
            "font": {"size": 13},
        },
    }
    return {"data": traces, "layout": layout}


def stuck_rows(history, moment, minutes, students, labels, url_of):
    """The stuck and idle table; `url_of(filename)` links each row's version (None: no
    links, without the password)."""
    rows = model.stuck_and_idle(history, moment, minutes, students)
    return [
        {
            "student": labels[r["student"]],
            "kind": r["kind"],
            "problem": r["problem"],
            "since": clock(r["since"]),
            "link": f"[open]({url_of(r['filename'])})" if url_of else "",
            "rowid": r["rowid"],
        }
        for r in rows
    ]


# ---------------------------------------------------------------------------- data access


def assignments_of(catalog, people):
    """{assignment: [source index]}, kept until the database or users.csv changes."""
    key = ("assignments", people.key)
    if key not in catalog.cache:
        catalog.cache[key] = model.assignments(
            catalog.sources, catalog.source_owner, people.prefixes
        )
    return catalog.cache[key]


def assignment_options(catalog, people, authorized):
    """Assignments most students have first; without the password, only shared ones."""
    found = assignments_of(catalog, people)
    names = sorted(found, key=lambda a: (-len(found[a]), a))
    return [
        {"label": f"{a} ({len(found[a])})", "value": a}
        for a in names
        if authorized or len(found[a]) > 1
    ]


def history_of(context, catalog, people, assignment):
    key = ("history", people.key, assignment)
    if key not in catalog.cache:
        sources = assignments_of(catalog, people).get(assignment, [])
        index = np.flatnonzero(np.isin(catalog.src, sources))
        rows = [
            (catalog.source_owner[s], t, rowid)
            for s, t, rowid in zip(
                catalog.src[index].tolist(),
                catalog.t[index].astype(np.int64).tolist(),
                catalog.rowid[index].tolist(),
            )
        ]
        conn = context.connect()
        try:
            catalog.cache[key] = model.load_history(conn, assignment, rows)
        finally:
            conn.close()
    return catalog.cache[key]


def moment_of(slider_value, now):
    return now + int(slider_value or 0) * 60


class Shown:
    """One assignment as the controls ask to show it: the students the filter keeps, in
    the chosen order, their labels (masked without the password) and the moment M."""

    def __init__(self, context, assignment, slider, sort, passwd, column, value):
        catalog, people = context.catalog_and_people()
        self.authorized = context.authorized(passwd)
        self.history = history_of(context, catalog, people, assignment)
        allowed = context.allowed_uids(people, column, value, self.authorized)
        students = [u for u in self.history.students if allowed is None or u in allowed]
        self.now = to_seconds(datetime.now())
        self.moment = moment_of(slider, self.now)
        team_of = context.team_of(people, self.authorized)
        self.ordered = model.sort_students(self.history, self.moment, students, sort, team_of)
        self.labels = student_labels(self.history.students, people, context.attrs, self.authorized)


# ---------------------------------------------------------------------------- callbacks


def register(app, context, filter_inputs):
    """The callbacks of this section; `context` is the page's ActivityView."""

    @app.callback(
        Output(Ids.assignment, "options"),
        Output(Ids.assignment, "value"),
        Input(context.ids.passwd, "value"),
        Input(context.ids.interval, "n_intervals"),
        State(Ids.assignment, "value"),
    )
    def update_assignments(passwd, _, current):
        try:
            catalog, people = context.catalog_and_people()
        except context.data_errors:
            return [], None
        options = assignment_options(catalog, people, context.authorized(passwd))
        values = [o["value"] for o in options]
        return options, current if current in values else (values[0] if values else None)

    @app.callback(
        Output(Ids.heatmap, "figure"),
        Output(Ids.progress, "figure"),
        Output(Ids.stuck, "data"),
        Output(Ids.moment, "min"),
        Output(Ids.moment_label, "children"),
        Input(Ids.assignment, "value"),
        Input(Ids.moment, "value"),
        Input(Ids.minutes, "value"),
        Input(Ids.sort, "value"),
        Input(context.ids.passwd, "value"),
        *[Input(*i) for i in filter_inputs],
        Input(context.ids.interval, "n_intervals"),
    )
    def update_problems(assignment, slider, minutes, sort, passwd, column, value, _):
        empty = {"data": [], "layout": {"height": 200}}
        if not assignment:
            return empty, empty, [], -60, "no assignment with a known owner yet"
        try:
            shown = Shown(context, assignment, slider, sort, passwd, column, value)
        except context.data_errors as error:
            return empty, empty, [], -60, str(error)
        try:
            window = max(1, int(minutes or 10))
        except (TypeError, ValueError):
            window = 10
        url_of = context.file_url if shown.authorized else None
        history, moment, ordered, labels = shown.history, shown.moment, shown.ordered, shown.labels
        start = history.first_time() or shown.now
        return (
            heatmap_figure(history, moment, ordered, labels),
            progress_figure(history, start, moment, ordered),
            stuck_rows(history, moment, window, ordered, labels, url_of),
            min(-1, -((shown.now - start) // 60) - 1),
            f"moment M: {clock(moment)} (slide to replay the session)",
        )

    @app.callback(
        Output(Ids.download, "data"),
        Input(Ids.download_button, "n_clicks"),
        State(Ids.assignment, "value"),
        State(Ids.moment, "value"),
        State(Ids.sort, "value"),
        State(context.ids.passwd, "value"),
        *[State(*i) for i in filter_inputs],
        prevent_initial_call=True,
    )
    def download(_, assignment, slider, sort, passwd, column, value):
        shown = Shown(context, assignment, slider, sort, passwd, column, value)
        text = heatmap_csv(shown.history, shown.moment, shown.ordered, shown.labels)
        name = f"heatmap_{assignment.replace('/', '_')}_{time.strftime('%H%M')}.csv"
        return {"content": text, "filename": name, "type": "text/csv"}

    @app.callback(
        Output(Ids.selected_version, "data"),
        Input(Ids.heatmap, "clickData"),
        Input(Ids.stuck, "active_cell"),
        State(Ids.stuck, "derived_viewport_data"),
        prevent_initial_call=True,
    )
    def select_version(click, active_cell, table_rows):
        from dash import ctx

        if ctx.triggered_id == Ids.stuck and active_cell and table_rows:
            return table_rows[active_cell["row"]].get("rowid")
        try:
            rowid = int(click["points"][0]["customdata"])
        except (TypeError, KeyError, IndexError, ValueError):
            return None
        return rowid if rowid >= 0 else None
