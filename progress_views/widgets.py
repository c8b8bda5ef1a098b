"""The page's input boxes, made one way everywhere."""

from dash import dcc, html

# Text boxes send their value once typing pauses this long (or on Enter): one request, and
# one password attempt, per word typed rather than per key.
TYPING_PAUSE = 0.5


def labelled(text, component):
    return html.Label([text, " ", component], style={"marginRight": "1.5em"})


def text_box(component_id, placeholder="", size=18, kind="text"):
    return dcc.Input(
        id=component_id,
        type=kind,
        debounce=TYPING_PAUSE,
        placeholder=placeholder,
        size=str(size),
        autoComplete="off",
    )


def number_box(component_id, value, width="5em"):
    return dcc.Input(
        id=component_id,
        type="number",
        value=value,
        min=1,
        debounce=TYPING_PAUSE,
        style={"width": width},
    )
