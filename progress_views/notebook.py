"""One copied notebook, read safely from the destination folder and rendered read-only, with
its cell-by-cell diff against the version before.

Everything here is a student's text, and a student can craft it:
- Nothing they write runs or loads in the teacher's browser. Markdown goes through
  dcc.Markdown with raw HTML escaped (a `<script>` shows as text) and its images turned into
  plain links (the browser fetches no student-chosen URL); code is a fenced block whose fence
  is longer than any run of backticks in it; only valid base64 PNG outputs become images.
- The work is bounded (the limits below): past a limit the view shows what it can and says
  what it left out. Linear passes over the parsed file are fine (rsync copies nothing over
  10 MB); what grows faster (components sent, difflib) is capped.
- A forged shape (`outputs: 5`, `source: 7`, `metadata: []`) shows what can be read of it;
  the only error is ValueError for a file that is not a readable notebook, and its message
  never names the file (the caller labels the version without naming the student).
"""

import base64
import binascii
import difflib
import gc
import hashlib
import os
import re
from dataclasses import dataclass, field

import orjson
from dash import dcc, html

import make_database
from progress_views.model import CLASS_COLORS, outcome_class

MB = 1024 * 1024
MAX_NOTEBOOK_BYTES = 10 * MB  # rsync copies nothing larger (--max-size=10m)
MAX_CELLS = 300  # cells rendered and compared
MAX_CELL_CHARS = 20_000  # of one cell's source shown
MAX_OUTPUT_CHARS = 10_000  # of one output's text shown
MAX_OUTPUTS = 30  # outputs shown per cell
MAX_TEXT_CHARS = 300_000  # of text shown in one notebook, markup included (PART_CHARS)
PART_CHARS = 100  # charged to MAX_TEXT_CHARS for each cell and output shown (its markup)
MAX_IMAGE_CHARS = 1_000_000  # of one PNG's base64
MAX_IMAGES_CHARS = 3_000_000  # of all PNGs' base64 in one notebook
# of code highlighted in one notebook (the rest is plain text): highlight.js takes about a
# second for 100,000 characters in the teacher's browser
MAX_HIGHLIGHT_CHARS = 50_000
MAX_LABEL_CHARS = 80  # of a grade_id shown as a label
DIFF_MAX_LINES = 200  # lines of one cell (either version) that are diffed
# difflib's worst case is cubic (a long run of one line against fewer than 200 lines of two
# took 64 s for 134 KB). diff_cost bounds its steps; 20 M of them take 0.2 to 0.6 s here.
DIFF_WORK = 20_000_000
DIFF_SHOWN_LINES = 1_500  # diff lines shown, over all cells
DIFF_LINE_CHARS = 160  # of one diff line shown
DIFF_OPEN_LINES = 40  # a diff this short is shown open, a longer one folded

ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
BACKTICKS_RE = re.compile(r"`+")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The languages highlight.js knows in dcc.Markdown, by the names notebooks give them
# (metadata.language_info.name or kernelspec.language); others are shown as plain text.
HIGHLIGHT_NAMES = {
    "python": "python",
    "python3": "python",
    "ipython": "python",
    "ipython3": "python",
    "bash": "bash",
    "sh": "bash",
    "shell": "bash",
    "zsh": "bash",
    "julia": "julia",
    "r": "r",
    "ruby": "ruby",
    "sql": "sql",
    "javascript": "javascript",
    "matlab": "matlab",
    "octave": "matlab",
    "c#": "csharp",
    "csharp": "csharp",
    "f#": "fsharp",
    "fsharp": "fsharp",
    "json": "json",
    "yaml": "yaml",
    "markdown": "markdown",
    "html": "xml",
    "xml": "xml",
    "css": "css",
}
# How a graded cell's outcome reads without colour: an icon and the cell's border style.
OUTCOME_MARKS = {
    "answered": ("✓", "solid"),
    "error": ("✗", "double"),
    "non-empty": ("✎", "dashed"),
    "empty": ("○", "dotted"),
    "none": ("?", "dotted"),
}
DIFF_COLORS = {"+": "#d7f5dd", "-": "#fbdcdc", "@": "#eeeeee", " ": "transparent"}
DIFF_CLASSES = {"+": "nb-diff-add", "-": "nb-diff-del", "@": "nb-diff-hunk", " ": "nb-diff-context"}
NOTE_STYLE = {"fontStyle": "italic", "color": "#555"}
SECTION_STYLE = {"margin": "0.5em 0 1em", "padding": "0.3em 0.6em", "border": "1px solid #ccc"}
TEXT_OUTPUTS = {"stream": "nb-stream", "error": "nb-error", "pyerr": "nb-error"}  # -> class


class OutsideDestination(ValueError):
    """The path resolves outside the destination folder."""


@dataclass
class Notebook:
    """What the view reads of one version: the cells among its first MAX_CELLS that are
    dicts (in order), how many cells it has, and the language of its code cells as
    highlight.js names it."""

    cells: list
    count: int
    language: str = "plaintext"


@dataclass
class Budget:
    """What is left of a limit that many parts share (text of a notebook, image data, diff
    steps, diff lines)."""

    left: int

    def take(self, wanted):
        """Up to `wanted`, as much as is left; that much is used up."""
        granted = max(0, min(wanted, self.left))
        self.left -= granted
        return granted


@dataclass
class Room:
    """What is left of one notebook's limits while its cells are rendered."""

    text: Budget = field(default_factory=lambda: Budget(MAX_TEXT_CHARS))
    images: Budget = field(default_factory=lambda: Budget(MAX_IMAGES_CHARS))
    highlighted: Budget = field(default_factory=lambda: Budget(MAX_HIGHLIGHT_CHARS))


@dataclass
class CellChange:
    """One cell that differs between two versions."""

    label: str  # the grade_id of a graded cell, else `cell N` (its number in its version)
    status: str  # changed, added or removed
    lines: list = field(default_factory=list)  # unified diff lines (+, -, space, @@)
    note: str = ""  # why `lines` is empty or cut short


@dataclass
class Diff:
    changes: list  # [CellChange] in cell order
    notes: list  # what was left out, in words


# ---------------------------------------------------------------------------- reading


def confined_path(dest, filename):
    """dest/filename, refused when it resolves (symlinks, `..`) outside dest."""
    root = os.path.realpath(dest)
    path = os.path.realpath(os.path.join(root, filename))
    if os.path.commonpath([root, path]) != root or path == root:
        raise OutsideDestination("is outside the destination folder")
    return path


def read_notebook(dest, filename):
    """The Notebook at dest/filename; ValueError when it cannot be read, is too large or is
    not a notebook (v4 or v3), whose message completes "This version …" (`is not a readable
    notebook`) and so never names the file."""
    path = confined_path(dest, filename)
    try:
        with open(path, "rb") as stream:
            data = stream.read(MAX_NOTEBOOK_BYTES + 1)
    except OSError as error:
        raise ValueError(f"cannot be read ({error.strerror})") from None
    if len(data) > MAX_NOTEBOOK_BYTES:
        raise ValueError(f"is over {MAX_NOTEBOOK_BYTES // MB} MB, too large to show")
    content = parsed(data.removeprefix(b"\xef\xbb\xbf"))
    cells = make_database.notebook_cells(content)
    if cells is None:
        raise ValueError("is not a readable notebook")
    shown = [cell for cell in cells[:MAX_CELLS] if isinstance(cell, dict)]
    return Notebook(shown, len(cells), notebook_language(content))


def parsed(data):
    """The JSON value of `data`, None when it is not JSON. The cyclic garbage collector is
    paused meanwhile: JSON makes no cycles, and a notebook of a million `{}` would otherwise
    set it walking every object of the viewer many times over."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    finally:
        if was_enabled:
            gc.enable()


def notebook_language(content):
    """The highlight.js name of the notebook's language, `plaintext` when unknown."""
    metadata = content.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    for key, name_key in (("language_info", "name"), ("kernelspec", "language")):
        section = metadata.get(key)
        name = section.get(name_key) if isinstance(section, dict) else None
        if isinstance(name, str) and name.lower() in HIGHLIGHT_NAMES:
            return HIGHLIGHT_NAMES[name.lower()]
    return "plaintext"


# ---------------------------------------------------------------------------- cell text


def text_of(value):
    """A notebook text field (a string or a list of strings) as one string."""
    if isinstance(value, list):
        return "".join(part for part in value if isinstance(part, str))
    return value if isinstance(value, str) else ""


def strip_ansi(text):
    return ANSI_RE.sub("", text)


def outputs_of(cell):
    """(the dicts among the cell's first MAX_OUTPUTS outputs, how many outputs it has);
    ([], 0) for a markdown cell or a forged `outputs`."""
    outputs = cell.get("outputs")
    if not isinstance(outputs, list):
        return [], 0
    return [o for o in outputs[:MAX_OUTPUTS] if isinstance(o, dict)], len(outputs)


def output_type(output):
    """`stream`, `error`, `execute_result`, ... ("" for a forged one that is not text)."""
    kind = output.get("output_type")
    return kind if isinstance(kind, str) else ""


def output_data(output):
    """The mime bundle of an output (v4 `data`), or the output itself (v3 keeps `png`,
    `text` at the top)."""
    data = output.get("data")
    return data if isinstance(data, dict) else output


def error_text(output):
    """An error output's traceback without terminal colours, else `ename: evalue`."""
    traceback = output.get("traceback")
    if isinstance(traceback, list):
        text = "\n".join(line for line in traceback if isinstance(line, str))
    else:
        text = text_of(traceback)
    return strip_ansi(text or f"{text_of(output.get('ename'))}: {text_of(output.get('evalue'))}")


def output_text(output):
    """The text an output shows: a stream's text, an error's traceback, a result's
    text/plain."""
    kind = output_type(output)
    if kind == "stream":
        return text_of(output.get("text"))
    if kind in ("error", "pyerr"):
        return error_text(output)
    data = output_data(output)
    return text_of(data.get("text/plain") or data.get("text"))


def problem_anchor(grade_id):
    """The element id of the graded cell `grade_id` in the rendered notebook. grade_ids are
    the student's text: the id is a hash, safe in any selector."""
    digest = hashlib.sha256(str(grade_id).encode("utf-8", "surrogatepass")).hexdigest()
    return f"problem-{digest[:16]}"


def label_of(cell, number):
    """How the view names a cell: its grade_id (cut to MAX_LABEL_CHARS), else `cell N`."""
    grade_id = make_database.graded_id(cell)
    if grade_id is None:
        return f"cell {number}"
    return grade_id if len(grade_id) <= MAX_LABEL_CHARS else grade_id[:MAX_LABEL_CHARS] + "…"


# ---------------------------------------------------------------------------- rendering


def clipped(text, limit, budget):
    """(the start of `text` that fits in `limit` and what is left of `budget`, the number of
    characters cut)."""
    shown = text[: budget.take(min(len(text), limit))]
    return shown, len(text) - len(shown)


def note(words):
    return html.Div(words, className="nb-truncated", style=NOTE_STYLE)


def cut_note(cut, what):
    return [note(f"… {cut:,} more characters of this {what} not shown")] if cut else []


def fenced(source, language):
    """Markdown for `source` as a code block: the fence is longer than any run of backticks
    in it, so nothing in the source can close it."""
    longest = max((len(run) for run in BACKTICKS_RE.findall(source)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{source}\n{fence}"


def without_images(markdown):
    """Markdown whose images (`![alt](url)`, `![alt][ref]`) are plain links: a zero-width
    space after the `!` keeps the browser from fetching a URL the student chose."""
    return markdown.replace("![", "!\u200b[")


def markdown(text, class_name):
    """Student markdown, rendered with raw HTML escaped and links opened in a new tab."""
    return dcc.Markdown(
        text,
        className=class_name,
        dangerously_allow_html=False,
        dedent=False,
        link_target="_blank",
    )


def render_source(cell, language, room):
    """A cell's source: markdown rendered, code highlighted (while room.highlighted lasts),
    anything else as text."""
    source, cut = clipped(make_database.cell_source(cell), MAX_CELL_CHARS, room.text)
    kind = cell.get("cell_type")
    if kind == "markdown":
        shown = markdown(without_images(source), "nb-markdown")
    elif kind == "heading":  # nbformat 3
        level = cell.get("level") if type(cell.get("level")) is int else 1
        level = min(max(level, 1), 6)
        shown = markdown("#" * level + " " + without_images(source), "nb-markdown")
    elif kind == "code":
        if room.highlighted.take(len(source)) < len(source):
            language = "plaintext"
        shown = markdown(fenced(source, language), "nb-code")
    else:
        shown = html.Pre(source, className="nb-raw")
    return [shown, *cut_note(cut, "cell")]


def png_data_url(output, images):
    """(a data: URL of the output's PNG, a note) — the URL only for valid base64 of a PNG
    within the image limits; the note says why an image is not shown."""
    value = output_data(output)
    value = value.get("image/png") or value.get("png")
    if value is None:
        return None, ""
    encoded = "".join(text_of(value).split())
    if len(encoded) > MAX_IMAGE_CHARS:
        return None, f"image not shown: over {MAX_IMAGE_CHARS:,} characters of base64"
    if len(encoded) > images.left:
        return (
            None,
            f"image not shown: the view shows {MAX_IMAGES_CHARS:,} characters of images a notebook",
        )
    try:
        decoded = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if not decoded.startswith(PNG_SIGNATURE):
        return None, "image not shown: not a valid PNG"
    images.take(len(encoded))
    return "data:image/png;base64," + encoded, ""


def render_output(output, room):
    """Dash components for one output: text (a traceback without terminal colours) or a
    PNG image."""
    kind = output_type(output)
    url, why = (None, "") if kind in TEXT_OUTPUTS else png_data_url(output, room.images)
    if url:
        return [html.Img(src=url, className="nb-image", style={"maxWidth": "100%"})]
    text, cut = clipped(output_text(output), MAX_OUTPUT_CHARS, room.text)
    shown = [note(why)] if why else []
    if text:
        shown.append(html.Pre(text, className=TEXT_OUTPUTS.get(kind, "nb-result")))
    return shown + cut_note(cut, "output")


def render_outputs(cell, room):
    outputs, count = outputs_of(cell)
    shown = []
    for output in outputs:
        if room.text.take(PART_CHARS) < PART_CHARS:
            return shown + [note("… more outputs not shown: the view's text limit is reached")]
        shown += render_output(output, room)
    if count > MAX_OUTPUTS:
        shown.append(note(f"{count - MAX_OUTPUTS:,} more outputs not shown"))
    return shown


def outcome_badge(grade_id, kind):
    """`✗ q1: error` after a swatch of the heatmap's colour for `kind`."""
    swatch = html.Span(
        style={
            "display": "inline-block",
            "width": "0.9em",
            "height": "0.9em",
            "marginRight": "0.4em",
            "verticalAlign": "middle",
            "background": CLASS_COLORS.get(kind, "#ffffff"),
            "border": "1px solid #555",
        }
    )
    icon = OUTCOME_MARKS.get(kind, ("?", "solid"))[0]
    return html.Div([swatch, f"{icon} {grade_id}: {kind}"], className="nb-badge")


def graded_class(cell, grade_id, outcomes):
    """The outcome class of a graded cell: the version's (`outcomes`, grade_id ->
    problems.result), as the heatmap shows it, else the cell's own."""
    result = outcomes.get(grade_id)
    return outcome_class(result if isinstance(result, str) else make_database.cell_outcome(cell))


def render_cell(cell, number, language, outcomes, room, anchor=None):
    """One cell: a graded cell with its outcome (badge, colour and border style) and, for
    the first cell of its grade_id, the anchor the page scrolls to."""
    grade_id = make_database.graded_id(cell)
    kind = None if grade_id is None else graded_class(cell, grade_id, outcomes)
    color = CLASS_COLORS.get(kind, "#3c78d8") if kind else "#e4e4e4"
    border = OUTCOME_MARKS.get(kind, ("", "solid"))[1] if kind else "solid"
    header = [html.Div(f"cell {number}", className="nb-cell-number", style=NOTE_STYLE)]
    if grade_id is not None:
        header.append(outcome_badge(label_of(cell, number), kind))
    parts = [
        html.Div(header, style={"display": "flex", "gap": "1em", "fontSize": "85%"}),
        *render_source(cell, language, room),
        *render_outputs(cell, room),
    ]
    class_name = f"nb-cell nb-graded nb-outcome-{kind}" if kind else "nb-cell"
    style = {"borderLeft": f"6px {border} {color}", "padding": "0.2em 0.6em", "margin": "0.4em 0"}
    if anchor:
        return html.Div(parts, id=anchor, className=class_name, style=style)
    return html.Div(parts, className=class_name, style=style)


def render_notebook(notebook, outcomes):
    """The notebook, read-only, within the limits; notes say what is not shown. `outcomes`
    maps grade_id to problems.result (the version's, as the heatmap shows it)."""
    room, count = Room(), notebook.count
    shown, anchored = [], set()
    for number, cell in enumerate(notebook.cells, 1):
        if room.text.take(PART_CHARS) < PART_CHARS:
            shown.append(
                note(
                    f"Cells from cell {number:,} on (of {count:,} cells) are not shown: the "
                    f"view shows at most {MAX_TEXT_CHARS:,} characters of a notebook."
                )
            )
            return shown
        grade_id, anchor = make_database.graded_id(cell), None
        if grade_id is not None and grade_id not in anchored:
            anchor = problem_anchor(grade_id)
            anchored.add(grade_id)
        shown.append(render_cell(cell, number, notebook.language, outcomes, room, anchor))
    if count > MAX_CELLS:
        shown.append(
            note(
                f"This notebook has {count:,} cells: the cells after the first "
                f"{MAX_CELLS:,} are not shown."
            )
        )
    return shown


# ---------------------------------------------------------------------------- diff


def cell_text(cell):
    """A cell's source followed by its first MAX_OUTPUTS outputs' text, one `[output_type]
    text` each: what the diff compares."""
    parts = [make_database.cell_source(cell)]
    outputs, count = outputs_of(cell)
    for output in outputs:
        kind = output_type(output)
        if kind in ("error", "pyerr"):
            text = f"{text_of(output.get('ename'))}: {text_of(output.get('evalue'))}"
        else:
            text = output_text(output)
        if text:
            parts.append(f"[{kind or 'output'}] {text}")
    if count > MAX_OUTPUTS:
        parts.append(f"[{count - MAX_OUTPUTS:,} more outputs]")
    return "\n".join(parts)


def diff_cost(matcher):
    """An upper bound of difflib's steps for `matcher`: each longest-match search (at most
    two per matching block, plus one) looks at each pair of equal elements at most once."""
    pairs = sum(len(matcher.b2j.get(element, ())) for element in matcher.a)
    return pairs * (2 * min(len(matcher.a), len(matcher.b)) + 1)


def aligned(before_texts, after_texts, work):
    """[(tag, before indexes, after indexes)] pairing the cells of two versions, as difflib
    aligns sequences (an inserted cell does not shift the rest); by position when that
    would take more than the work left."""
    keys = [hash(text) for text in before_texts], [hash(text) for text in after_texts]
    matcher = difflib.SequenceMatcher(None, *keys)
    cost = diff_cost(matcher)
    if cost <= work.left:
        work.take(cost)
        return [
            (tag, range(i1, i2), range(j1, j2)) for tag, i1, i2, j1, j2 in matcher.get_opcodes()
        ]
    common = min(len(before_texts), len(after_texts))
    blocks = [("replace", range(common), range(common))]
    return blocks + [("replace", range(common, len(before_texts)), range(common, len(after_texts)))]


def line_diff(before, after, work):
    """(unified diff lines with one line of context, why they are missing or '')."""
    before_lines, after_lines = before.splitlines(), after.splitlines()
    if max(len(before_lines), len(after_lines)) > DIFF_MAX_LINES:
        return [], (
            f"too large to diff ({len(before_lines):,} lines before, "
            f"{len(after_lines):,} after; the limit is {DIFF_MAX_LINES:,})"
        )
    cost = diff_cost(difflib.SequenceMatcher(None, before_lines, after_lines))
    if cost > work.left:
        return [], "not compared: the diff's work limit for one version is reached"
    work.take(cost)
    lines = difflib.unified_diff(before_lines, after_lines, lineterm="", n=1)
    return list(lines)[2:], ""


def paired_changes(tag, before_range, after_range):
    """[(status, before index or None, after index or None)] for one block of `aligned`."""
    if tag == "equal":
        return []
    pairs = list(zip(before_range, after_range))
    changes = [("changed", i, j) for i, j in pairs]
    changes += [("removed", i, None) for i in before_range[len(pairs) :]]
    changes += [("added", None, j) for j in after_range[len(pairs) :]]
    return changes


def cell_diff(previous, current):
    """The Diff of two Notebooks: one CellChange per changed, added or removed cell among
    the first MAX_CELLS of each, within the work budget DIFF_WORK."""
    before, after = previous.cells, current.cells
    before_texts, after_texts = [cell_text(c) for c in before], [cell_text(c) for c in after]
    notes = []
    if max(previous.count, current.count) > MAX_CELLS:
        notes.append(f"Only the first {MAX_CELLS:,} cells of each version are compared.")
    work = Budget(DIFF_WORK)
    changes = []
    for block in aligned(before_texts, after_texts, work):
        for status, i, j in paired_changes(*block):
            if i is not None and j is not None and before_texts[i] == after_texts[j]:
                continue
            cell, number = (after[j], j + 1) if j is not None else (before[i], i + 1)
            old = before_texts[i] if i is not None else ""
            new = after_texts[j] if j is not None else ""
            lines, why = line_diff(old, new, work)
            changes.append(CellChange(label_of(cell, number), status, lines, why))
    return Diff(changes, notes)


def render_diff_lines(lines):
    """A <pre> of diff lines, each coloured by its sign and cut to DIFF_LINE_CHARS."""
    spans = []
    for line in lines:
        sign = line[:1] if line[:1] in DIFF_COLORS else " "
        text = line if len(line) <= DIFF_LINE_CHARS else line[:DIFF_LINE_CHARS] + "…"
        style = {"background": DIFF_COLORS[sign], "display": "block"}
        spans.append(html.Span(text, className=DIFF_CLASSES[sign], style=style))
    return html.Pre(spans, className="nb-diff", style={"margin": "0.2em 0"})


def render_change(change, shown_lines):
    """One changed cell: its label and status, its diff lines (as many as are left of
    `shown_lines`) and its note."""
    label = html.Div([html.B(change.label), f" {change.status}"], className="nb-diff-label")
    parts = [label]
    shown = shown_lines.take(len(change.lines))
    if shown:
        parts.append(render_diff_lines(change.lines[:shown]))
    if shown < len(change.lines):
        parts.append(note(f"… lines not shown: the diff shows at most {DIFF_SHOWN_LINES:,}"))
    if change.note:
        parts.append(note(change.note))
    return html.Div(parts, className="nb-diff-cell", style={"margin": "0.4em 0"})


def render_diff(diff, title):
    """The diff under a summary line `title: p1_5 changed, cell 7 added`, open when short."""
    if not diff.changes:
        return html.Div(
            f"{title}: no change in the cells", className="nb-diff-section", style=SECTION_STYLE
        )
    shown_lines = Budget(DIFF_SHOWN_LINES)
    summary = ", ".join(f"{c.label} {c.status}" for c in diff.changes[:20])
    if len(diff.changes) > 20:
        summary += f", and {len(diff.changes) - 20:,} more"
    total_lines = sum(len(c.lines) for c in diff.changes)
    return html.Details(
        [
            html.Summary(f"{title}: {summary}"),
            *[note(words) for words in diff.notes],
            *[render_change(change, shown_lines) for change in diff.changes],
        ],
        open=total_lines <= DIFF_OPEN_LINES,
        className="nb-diff-section",
        style=SECTION_STYLE,
    )
