"""The version view: every version of one student's assignment, one rendered read-only,
with a cell-by-cell diff against the version before it; opened by a click on the first
screen (a stuck row or a heatmap cell), scrolled to the clicked problem.

Without the names password it shows no notebook (cells often hold the student's name):
only which versions there are. Files are read only from the destination folder
(SYNC_DEST); a path that resolves outside it is refused.
"""

from dash import Input, Output, State, dcc, html

from progress_views import moment as moments
from progress_views import notebook
from progress_views.problems import Ids as ProblemIds
from progress_views.widgets import PageIds, index, optional_text, text

clock = moments.clock
HIDDEN = "Type the password to see notebooks."


class Ids:
    student = "version_student"
    select = "version_select"
    view = "version_view"
    section = "version_section"
    scrolled = "version_scrolled"  # a dcc.Store: the scrolling script's (unused) output


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
            dcc.Store(id=Ids.scrolled),
        ],
        id=Ids.section,
    )


def version_label(version, problems):
    counts = {}
    for problem in problems:
        kind = version.outcomes.get(problem, "none")
        counts[kind] = counts.get(kind, 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    return f"{clock(version.t)}  ({summary})"


def render_version(dest, history, uid, rowid, url):
    """The chosen version: when it was saved, its diff with the version before (folded
    when long), then the notebook, each graded cell at its problem_anchor. Safe and bounded
    (progress_views.notebook); a version that cannot be read is a message naming no path."""
    versions = history.versions.get(uid, [])
    index = next((i for i, v in enumerate(versions) if v.rowid == rowid), None)
    if index is None:
        return html.Div("That version is not in the database.")
    try:
        current = notebook.read_notebook(dest, versions[index].filename)
    except ValueError as error:
        return html.Div(
            f"This version {error}.", className="nb-unreadable", style={"color": "#b00"}
        )
    parts = [html.Div(f"saved {clock(versions[index].t)}", className="nb-saved")]
    if url:
        parts.append(html.A("open in Jupyter", href=url, target="_blank", rel="noopener"))
    if index > 0:
        title = f"changes since {clock(versions[index - 1].t)}"
        try:
            previous = notebook.read_notebook(dest, versions[index - 1].filename)
        except ValueError as error:
            parts.append(html.Div(f"{title}: not shown, the version before {error}."))
        else:
            parts.append(notebook.render_diff(notebook.cell_diff(previous, current), title))
    rendered = notebook.render_notebook(current, versions[index].outcomes)
    parts.append(html.Div(rendered, className="nb-notebook"))
    return html.Div(parts)


def current_history(data, assignment, student):
    """The assignment's History when the database can be read and it still has student
    number `student` (the list may have changed since the browser got it), else None."""
    if not isinstance(assignment, str):
        return None
    try:
        history = data.history(assignment)
    except (KeyError, *data.errors):
        return None
    return history if index(student, len(history.students)) is not None else None


def students_of(data, history):
    """The assignment's students in pseudonym order: the student dropdown's values are
    places in it (not uids, and not places in uid order, which would rank the uids)."""
    return sorted(history.students, key=data.student_order(False))


def student_options(data, history, names, allowed):
    """The dropdown's options: the students the page's filter keeps, in the page's
    order (Data.student_order), each one's value its place in students_of()."""
    students = students_of(data, history)
    labels = data.student_labels(students, names)
    rank = data.student_order(names)
    places = sorted(range(len(students)), key=lambda n: rank(students[n]))
    return [
        {"label": labels[students[n]], "value": n}
        for n in places
        if allowed is None or students[n] in allowed
    ]


def selected_rowid(data, selected):
    """The rowid of the handle in the selected_version store, or None (whatever the
    browser sent)."""
    return data.rowid(selected.get("rowid") if isinstance(selected, dict) else None)


def chosen_student(data, history, options, selected, current):
    """The student's place to show: the one whose version was clicked, else the current
    one when the filter still keeps it, else None."""
    kept = {o["value"] for o in options}
    rowid = selected_rowid(data, selected)
    for n, uid in enumerate(students_of(data, history)):
        if n in kept and any(v.rowid == rowid for v in history.versions[uid]):
            return n
    place = index(current, len(history.students))
    return place if place in kept else None


def version_options(data, history, student, selected, moment):
    """(options, value): newest first, each version's value its handle; the clicked
    version, else the state at M."""
    uid = students_of(data, history)[student]
    versions = history.versions[uid]
    newest_first = versions[::-1]
    options = [
        {"label": version_label(v, history.problems), "value": handle}
        for v, handle in zip(newest_first, data.handles_of([v.rowid for v in newest_first]))
    ]
    rowid = selected_rowid(data, selected)
    if rowid not in {v.rowid for v in versions}:
        rowid = (history.state_at(uid, moment) or versions[0]).rowid
    return options, data.handle(rowid)


def shown_version(data, handle, student, assignment, password):
    """The version view's content, for a version's handle."""
    history = current_history(data, assignment, student)
    rowid = data.rowid(handle)
    if history is None or rowid is None:
        return ""
    if not data.names_shown(password):
        # brought into view by the click as a notebook is: it says why there is none
        return html.Div(HIDDEN, style={"fontStyle": "italic"}, **{"data-rowid": handle})
    uid = students_of(data, history)[student]
    filename = next((v.filename for v in history.versions[uid] if v.rowid == rowid), None)
    url = data.file_url(filename) if filename else None
    shown = render_version(data.settings["SYNC_DEST"], history, uid, rowid, url)
    return html.Div(shown, **{"data-rowid": handle})  # the scroll script looks for it


def register(app, data):
    @app.callback(
        Output(Ids.student, "options"),
        Output(Ids.student, "value"),
        Input(ProblemIds.assignment, "value"),
        Input(ProblemIds.selected_version, "data"),
        Input(PageIds.password, "value"),
        Input(PageIds.filter_column, "value"),
        Input(PageIds.filter_value, "value"),
        State(Ids.student, "value"),
    )
    def update_students(assignment, selected, password, column, value, current):
        history = current_history(data, assignment, 0)
        if history is None:
            return [], None
        names = data.names_shown(text(password))
        allowed = data.allowed_uids(optional_text(column), optional_text(value), names)
        options = student_options(data, history, names, allowed)
        return options, chosen_student(data, history, options, selected, current)

    @app.callback(
        Output(Ids.select, "options"),
        Output(Ids.select, "value"),
        Input(Ids.student, "value"),
        State(ProblemIds.assignment, "value"),
        State(ProblemIds.selected_version, "data"),
        State(PageIds.moment, "data"),
    )
    def update_versions(student, assignment, selected, moment):
        history = current_history(data, assignment, student)
        if history is None:
            return [], None
        at = moments.resolve(moment, moments.now_seconds())
        return version_options(data, history, student, selected, at)

    @app.callback(
        Output(Ids.view, "children"),
        Input(Ids.select, "value"),
        State(Ids.student, "value"),
        State(ProblemIds.assignment, "value"),
        State(PageIds.password, "value"),
    )
    def show_version(handle, student, assignment, password):
        return shown_version(data, handle, student, assignment, text(password))

    # Once the clicked version is on the page (its wrapper's data-rowid), bring it into
    # view at the clicked problem; each click once (window.versionScrolled), so that a
    # refresh of the view does not move the page, and the same row clicked again does.
    app.clientside_callback(
        """
        function(children, selected) {
            var ready = function() {
                if (!selected || window.versionScrolled === selected.click) { return; }
                var shown = document.querySelector(
                    '#VIEW_ID > [data-rowid="' + selected.rowid + '"]');
                if (!shown) { return; }
                window.versionScrolled = selected.click;
                var problem = selected.anchor && document.getElementById(selected.anchor);
                var bring = function() {
                    (problem || shown).scrollIntoView({block: problem ? "center" : "start"});
                };
                // again once code highlighting and the graphs above have settled
                bring();
                setTimeout(bring, 400);
                setTimeout(bring, 1200);
            };
            setTimeout(ready, 50);
            return window.dash_clientside.no_update;
        }
        """.replace("VIEW_ID", Ids.view),
        Output(Ids.scrolled, "data"),
        Input(Ids.view, "children"),
        Input(ProblemIds.selected_version, "data"),
    )
