"""One copied notebook, read safely from the destination folder and rendered read-only."""

import difflib
import os
import re

import orjson
from dash import html

import make_database

ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
MAX_NOTEBOOK_BYTES = 50 * 1024 * 1024


class OutsideDestination(Exception):
    """The path resolves outside the destination folder."""


def confined_path(dest, filename):
    """dest/filename, refused when it resolves (symlinks, `..`) outside dest."""
    root = os.path.realpath(dest)
    path = os.path.realpath(os.path.join(root, filename))
    if os.path.commonpath([root, path]) != root or path == root:
        raise OutsideDestination(f"{filename!r} is outside the destination folder")
    return path


def read_notebook(dest, filename):
    """The notebook's cells (v4 or v3) from dest/filename; ValueError when unreadable."""
    path = confined_path(dest, filename)
    try:
        with open(path, "rb") as stream:
            data = stream.read(MAX_NOTEBOOK_BYTES + 1)
    except OSError as error:
        raise ValueError(f"cannot read {filename}: {error.strerror}") from None
    if len(data) > MAX_NOTEBOOK_BYTES:
        raise ValueError(f"{filename} is too large to show")
    try:
        cells = make_database.notebook_cells(orjson.loads(data.removeprefix(b"\xef\xbb\xbf")))
    except orjson.JSONDecodeError:
        cells = None
    if cells is None:
        raise ValueError(f"{filename} is not a readable notebook")
    return [cell for cell in cells if isinstance(cell, dict)]


def strip_ansi(text):
    return ANSI_RE.sub("", text)


def text_of(value):
    if isinstance(value, list):
        return "".join(v for v in value if isinstance(v, str))
    return value if isinstance(value, str) else ""


def render_output(output):
    """Dash components for one output: text, an error traceback, or a PNG image."""
    if not isinstance(output, dict):
        return []
    kind = output.get("output_type")
    if kind == "stream":
        return [html.Pre(text_of(output.get("text")), className="nb-stream")]
    if kind in ("error", "pyerr"):
        trace = "\n".join(strip_ansi(text_of(line)) for line in output.get("traceback") or [])
        header = f"{output.get('ename', '')}: {output.get('evalue', '')}"
        return [html.Pre(strip_ansi(trace or header), className="nb-error")]
    data = output.get("data") if isinstance(output.get("data"), dict) else output
    png = data.get("image/png") or data.get("png")
    if isinstance(png, (str, list)):
        source = "data:image/png;base64," + text_of(png).replace("\n", "")
        return [html.Img(src=source, style={"maxWidth": "100%"})]
    plain = data.get("text/plain") or data.get("text")
    return [html.Pre(text_of(plain), className="nb-result")] if plain else []


def render_cell(cell, outcome=None):
    """One cell: its source as text, its outputs, and its grade_id and outcome if graded."""
    nbgrader = make_database.nbgrader_metadata(cell)
    graded = make_database.is_graded(cell)
    badge = []
    if graded:
        badge = [html.Div(f"{nbgrader['grade_id']}: {outcome or '?'}", className="nb-badge")]
    outputs = [part for output in cell.get("outputs") or [] for part in render_output(output)]
    style = {
        "borderLeft": "4px solid #3c78d8" if graded else "4px solid #eee",
        "padding": "0.2em 0.6em",
        "margin": "0.4em 0",
    }
    kind = cell.get("cell_type", "code")
    source = html.Pre(make_database.cell_source(cell), className=f"nb-{kind}")
    return html.Div([*badge, source, *outputs], style=style)


def render_notebook(cells, outcomes):
    """The whole notebook, read-only; `outcomes` maps grade_id to problems.result."""
    return [
        render_cell(cell, outcomes.get(make_database.nbgrader_metadata(cell).get("grade_id")))
        for cell in cells
    ]


def cell_diff(previous_cells, cells):
    """[(cell number, unified diff lines)] for each cell whose source or outputs changed."""
    changes = []
    for index in range(max(len(previous_cells), len(cells))):
        before = cell_text(previous_cells[index]) if index < len(previous_cells) else ""
        after = cell_text(cells[index]) if index < len(cells) else ""
        if before != after:
            lines = difflib.unified_diff(
                before.splitlines(), after.splitlines(), "before", "after", lineterm="", n=1
            )
            changes.append((index + 1, list(lines)[2:]))
    return changes


def cell_text(cell):
    """A cell's source followed by its text outputs, for the diff."""
    parts = [make_database.cell_source(cell)]
    for output in cell.get("outputs") or []:
        if isinstance(output, dict):
            data = output.get("data") if isinstance(output.get("data"), dict) else {}
            text = text_of(output.get("text")) or text_of(data.get("text/plain"))
            if output.get("output_type") in ("error", "pyerr"):
                text = f"{output.get('ename', '')}: {output.get('evalue', '')}"
            if text:
                parts.append(f"[{output.get('output_type')}] {text}")
    return "\n".join(parts)
