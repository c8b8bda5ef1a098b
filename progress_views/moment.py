"""The moment M every view shows: `live` (now, moving on) or a replayed local time
`YYYY-MM-DDTHH:MM:SS` that stays put. It lives in one dcc.Store (`moment`), kept in the
tab's session storage, so a refresh or a reload later shows the same M; the slider sets it
and shows clock times.
"""

import time

import numpy as np
from dash import Input, Output, State, ctx, dcc, html, no_update

from progress_views.widgets import PageIds, finite_number

LIVE = "live"
STAMP_FORMAT = "%Y-%m-%dT%H:%M:%S"
DEFAULT_SPAN = 3600  # the slider's range before anything is recorded, seconds
MARKS = 7  # clock-time labels under the slider


class Ids:
    slider = "moment_slider"
    label = "moment_label"
    live = "moment_live"


def make_store():
    return dcc.Store(id=PageIds.moment, storage_type="session", data=LIVE)


def make_bar():
    return html.Div(
        [
            html.Span(id=Ids.label, style={"whiteSpace": "nowrap", "minWidth": "19em"}),
            html.Div(
                dcc.Slider(
                    id=Ids.slider,
                    min=0,
                    max=60,
                    step=60,
                    value=60,
                    marks=None,
                    allow_direct_input=False,  # it would show seconds, not a clock time
                ),
                style={"flex": "1"},
            ),
            html.Button("live", id=Ids.live, title="follow the present moment"),
        ],
        style={"display": "flex", "alignItems": "center", "gap": "1em"},
    )


# ---------------------------------------------------------------------------- pure parts


def now_seconds():
    """Now, as seconds of local time (the database's clock)."""
    return seconds_of(time.strftime(STAMP_FORMAT))


def seconds_of(stamp):
    return int(np.datetime64(stamp, "s").astype(np.int64))


def stamp_of(seconds):
    """`YYYY-MM-DDTHH:MM:SS` of seconds of local time."""
    return str(np.datetime64(int(seconds), "s"))


def clock(seconds):
    """`YYYY-MM-DD HH:MM:SS`, as the page shows times."""
    return stamp_of(seconds).replace("T", " ")


def read(value):
    """The moment store's value as LIVE or a `YYYY-MM-DDTHH:MM:SS` stamp (LIVE for
    anything else a browser may send)."""
    if isinstance(value, str) and len(value) == 19 and value[10] == "T":
        try:
            return stamp_of(seconds_of(value))
        except ValueError:
            return LIVE
    return LIVE


def resolve(value, now):
    """M in seconds: now for LIVE, else the stored time."""
    value = read(value)
    return now if value == LIVE else seconds_of(value)


def from_slider(position, end):
    """The store's value for a slider position: LIVE at the right end (and for anything
    that is not a number of seconds a clock can show)."""
    position = finite_number(position)
    if position is None:
        return LIVE
    return LIVE if position >= end else stamp_of(position)


def slider_range(first, now):
    """(min, max) of the slider in seconds: from the first recorded save, whole minutes,
    to now."""
    start = now - DEFAULT_SPAN if first is None else min(first, now - 60)
    return start - start % 60, now


def slider_marks(start, end):
    """A few `HH:MM` labels along the slider."""
    step = max(60, (end - start) // (MARKS - 1))
    return {int(t): clock(t)[11:16] for t in range(start, end + 1, step)}


def label_text(value, moment):
    if read(value) == LIVE:
        return f"M = now ({clock(moment)}); slide to replay the session"
    return f"M = {clock(moment)} (replayed; 'live' follows now)"


def first_save(data):
    """The time of the first recorded version, or None (also when nothing is readable)."""
    try:
        catalog = data.catalog()
    except data.errors:
        return None
    times = catalog.t[~np.isnat(catalog.t)]
    return int(times.min().astype(np.int64)) if len(times) else None


# ---------------------------------------------------------------------------- callbacks


def register(app, data):
    @app.callback(
        Output(PageIds.moment, "data"),
        Output(Ids.slider, "min"),
        Output(Ids.slider, "max"),
        Output(Ids.slider, "value"),
        Output(Ids.slider, "marks"),
        Output(Ids.label, "children"),
        Input(Ids.slider, "value"),
        Input(Ids.live, "n_clicks"),
        Input(PageIds.moment, "data"),
        Input(PageIds.interval, "n_intervals"),
        State(Ids.slider, "max"),
    )
    def update_moment(position, _live, stored, _tick, previous_end):
        now = now_seconds()
        if ctx.triggered_id == Ids.slider:
            end = previous_end if isinstance(previous_end, int) else now
            value = from_slider(position, end)
        elif ctx.triggered_id == Ids.live:
            value = LIVE
        else:
            value = read(stored)
        start, end = slider_range(first_save(data), now)
        moment = resolve(value, now)
        changed = ctx.triggered_id in (Ids.slider, Ids.live) and value != stored
        return (
            value if changed else no_update,
            start,
            end,
            min(max(moment, start), end),
            slider_marks(start, end),
            label_text(value, moment),
        )
