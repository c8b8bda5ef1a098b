"""The version view: every version of one student's assignment, one rendered read-only,
with a cell-by-cell diff against the version before it.

Files are read only from the destination folder (SYNC_DEST); a path that resolves outside
it is refused.
"""

from dash import Input, Output, State, dcc, html

from progress_views import notebook
from progress_views.problems import Ids as ProblemIds
from progress_views.problems import clock, history_of, student_labels


class Ids:
    student = "version_student"
    select = "version_select"
    view = "version_view"


def make_section():
    return html.Div(
        [
            html.H4("Version"),
            html.Div(
                [
                    dcc.Dropdown(id=Ids.student, placeholder="student", style={"width": "20em"}),
                    dcc.Dropdown(id=Ids.select, placeholder="version", style={"width": "30em"}),
                ],
                style={"display": "flex", "gap": "1em"},
            ),
            html.Div(id=Ids.view, style={"marginTop": "0.5em"}),
        ]
    )


def version_label(version, problems):
    counts = {}
    for problem in problems:
        kind = version.outcomes.get(problem, "none")
        counts[kind] = counts.get(kind, 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    return f"{clock(version.t)}  ({summary})"


def render_version(dest, history, uid, rowid, url):
    """The chosen version rendered, then its diff with the previous version."""
    versions = history.versions.get(uid, [])
    index = next((i for i, v in enumerate(versions) if v.rowid == rowid), None)
    if index is None:
        return html.Div("That version is not in the database.")
    version = versions[index]
    try:
        cells = notebook.read_notebook(dest, version.filename)
    except (ValueError, notebook.OutsideDestination) as error:
        return html.Div(str(error), style={"color": "#b00"})
    parts = [html.Div(f"saved {clock(version.t)}")]
    if url:
        parts.append(html.A("open in Jupyter", href=url, target="_blank", rel="noopener"))
    parts += notebook.render_notebook(cells, version.outcomes)
    if index > 0:
        try:
            previous = notebook.read_notebook(dest, versions[index - 1].filename)
        except (ValueError, notebook.OutsideDestination):
            previous = []
        changes = notebook.cell_diff(previous, cells)
        parts.append(html.H5(f"changes since {clock(versions[index - 1].t)}"))
        parts += [
            html.Div([html.B(f"cell {number}"), html.Pre("\n".join(lines), className="nb-diff")])
            for number, lines in changes
        ] or [html.Div("no change in the cells")]
    return html.Div(parts)


def current_history(context, assignment, student):
    """The assignment's History when the database can be read and it still has student
    number `student` (the list may have changed since the browser got it), else None."""
    if student is None or not assignment:
        return None
    try:
        history = history_of(context, *context.catalog_and_people(), assignment)
    except context.data_errors:
        return None
    return history if 0 <= student < len(history.students) else None


def register(app, context):
    @app.callback(
        Output(Ids.student, "options"),
        Output(Ids.student, "value"),
        Input(ProblemIds.assignment, "value"),
        Input(ProblemIds.selected_version, "data"),
        Input(context.ids.passwd, "value"),
        State(Ids.student, "value"),
    )
    def update_students(assignment, selected, passwd, current):
        if not assignment:
            return [], None
        try:
            catalog, people = context.catalog_and_people()
        except context.data_errors:
            return [], None
        history = history_of(context, catalog, people, assignment)
        authorized = context.authorized(passwd)
        labels = student_labels(history.students, people, context.attrs, authorized)
        # values are row numbers, not uids: the uid never reaches the browser unasked
        order = history.students
        options = [{"label": labels[uid], "value": n} for n, uid in enumerate(order)]
        for n, uid in enumerate(order):
            if selected is not None and any(v.rowid == selected for v in history.versions[uid]):
                return options, n
        return options, current if current is not None and current < len(order) else None

    @app.callback(
        Output(Ids.select, "options"),
        Output(Ids.select, "value"),
        Input(Ids.student, "value"),
        State(ProblemIds.assignment, "value"),
        State(ProblemIds.selected_version, "data"),
    )
    def update_versions(student, assignment, selected):
        history = current_history(context, assignment, student)
        if history is None:
            return [], None
        versions = history.versions[history.students[student]]
        options = [
            {"label": version_label(v, history.problems), "value": v.rowid}
            for v in reversed(versions)
        ]
        values = [o["value"] for o in options]
        return options, selected if selected in values else values[0]

    @app.callback(
        Output(Ids.view, "children"),
        Input(Ids.select, "value"),
        State(Ids.student, "value"),
        State(ProblemIds.assignment, "value"),
        State(context.ids.passwd, "value"),
    )
    def show_version(rowid, student, assignment, passwd):
        history = current_history(context, assignment, student)
        if rowid is None or history is None:
            return ""
        uid = history.students[student]
        url = context.version_url_of(rowid) if context.authorized(passwd) else None
        return render_version(context.settings["SYNC_DEST"], history, uid, rowid, url)
