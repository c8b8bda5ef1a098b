"""What every view shares: the page-wide component ids, the input boxes made one way
everywhere, and the checks every callback applies to what the browser sends (a student
with a shell on the hub can send anything: a list for a string, a string for a number)."""

import math

from dash import dcc, html


class PageIds:
    """Components every view reads (one definition; the views import these)."""

    password = "activity_graph_passwd"
    password_message = "password_message"
    filter_column = "filter_column"
    filter_value = "filter_value"
    interval = "activity_graph_interval"
    pause = "refresh_pause"
    moment = "moment"  # a dcc.Store: `live` or `YYYY-MM-DDTHH:MM:SS`
    projector = "projector_mode"


ERROR_STYLE = {"color": "#a00", "whiteSpace": "pre-wrap"}
PASSWORD_LOCKED = "too many wrong passwords: wait a few minutes, then try again"
PASSWORD_UNSET = "no names password is set (PASSWD in progress_viewer_config.py)"


def password_refused(data):
    """Why a typed names password shows no names: none is set, it is wrong, or it is
    refused for now after too many wrong ones (then even the right one is refused)."""
    if not data.names_password_set():
        return PASSWORD_UNSET
    return PASSWORD_LOCKED if data.names_locked_out() else "wrong password"


def labelled(text, component):
    return html.Label([text, " ", component], style={"marginRight": "1.5em"})


def text_box(component_id, placeholder="", size=18, kind="text"):
    """A text box that sends its value on Enter or when it loses focus, not per key: one
    request (and, for the password, one attempt) per word typed."""
    return dcc.Input(
        id=component_id,
        type=kind,
        debounce=True,
        placeholder=placeholder,
        size=str(size),
        autoComplete="off",
        style={"width": f"{size * 0.6 + 1:.1f}em", "flexShrink": 0},
    )


def number_box(component_id, value, width="5em"):
    """A number box; no `min`: a browser sends nothing for a value under it, and a bad
    value must reach the server to be named in a message."""
    return dcc.Input(
        id=component_id,
        type="number",
        value=value,
        debounce=True,
        style={"width": width},
    )


# ---------------------------------------------------------------------------- input checks


def text(value):
    """A text input's value as a string ('' for anything that is not one)."""
    return value if isinstance(value, str) else ""


def optional_text(value):
    """A dropdown's value: a string, or None for anything else."""
    return value if isinstance(value, str) else None


def texts(value):
    """A checklist's value: the strings in it ([] for anything that is not a list)."""
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def choice(value, allowed, default):
    """`value` when it is one of `allowed`, else `default`."""
    return value if isinstance(value, str) and value in allowed else default


def whole_number(value, name, default, minimum=1, maximum=10**6):
    """A number box's value as an int; `default` when empty; ValueError naming the box
    when it is not a whole number in [minimum, maximum]."""
    if value is None or value == "":
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{name} must be a whole number")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, not {str(value)[:20]!r}") from None
    if not math.isfinite(number) or number != int(number):
        raise ValueError(f"{name} must be a whole number, not {str(value)[:20]!r}")
    if not minimum <= number <= maximum:
        raise ValueError(f"{name} must be between {minimum} and {maximum}, not {int(number)}")
    return int(number)


def finite_number(value, bound=10**12):
    """A number the browser sent (int or float, finite, within +-bound), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) and -bound <= value <= bound else None


def index(value, size):
    """A row number the browser sends back (an int in [0, size)), else None."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if 0 <= value < size else None
