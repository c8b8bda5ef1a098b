"""The version view's rendering of one notebook version and its diff with the version
before: safe (no student markup runs), readable (markdown, highlighted code, graded cells
by outcome) and bounded (crafted notebooks render truncated, small and fast)."""

import base64
import json
import os
import shutil

import dash
import pytest
from dash import html
from demo_course import (
    code_cell,
    display_png,
    error_output,
    execute_result,
    grade_cell,
    markdown_cell,
    notebook,
    png_image,
    stream_output,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from plotly.io.json import to_json_plotly

from progress_views import model, version
from progress_views import notebook as nbview

MB = 1024 * 1024


def write_versions(dest, contents, name="pl01.ipynb"):
    """A History of one student (`u1`) whose versions are `contents` (notebook dicts, or
    bytes written as they are), oldest first, under dest/home/u1/notebooks/."""
    versions = []
    for number, content in enumerate(contents):
        filename = f"home/u1/notebooks/v{number}/{name}"
        path = os.path.join(dest, filename)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        data = content if isinstance(content, bytes) else json.dumps(content).encode()
        with open(path, "wb") as stream:
            stream.write(data)
        versions.append(model.Version(1000 + 60 * number, number + 1, filename, {}))
    return model.History(name, [], {"u1": versions})


def shown(dest, contents):
    """The serialized components of the last version of `contents`, as the browser gets them."""
    history = write_versions(str(dest), contents)
    last = history.versions["u1"][-1]
    return to_json_plotly(version.render_version(str(dest), history, "u1", last.rowid, None))


# ---------------------------------------------------------------------------- bounded work


def test_a_70000_cell_notebook_renders_truncated_and_small(tmp_path):
    """Issue 8, Found 5: a 9.6 MB notebook of 70,000 cells gave a 48 MB response."""
    cells = [
        {
            "cell_type": "code",
            "metadata": {},
            "source": f"x_{i} = {i} + 1  # {i:06d}",
            "outputs": [],
        }
        if i % 2
        else {
            "cell_type": "code",
            "source": f"x_{i} = {i} + 1  # {i:06d}",
            "outputs": [stream_output("ok\n")],
        }
        for i in range(70_000)
    ]
    for i in range(0, 70_000, 3):
        cells[i]["metadata"] = {"nbgrader": {"grade": True, "grade_id": f"g{i}"}}
    content = notebook(cells)
    assert 9 * MB < len(json.dumps(content)) < 10 * MB
    response = shown(tmp_path, [content, content])
    assert len(response) < 2 * MB
    assert "70,000 cells" in response and "not shown" in response
    assert "x_0 = 0" in response and "x_69999" not in response


def test_a_notebook_of_350000_empty_cells_renders_truncated_and_small(tmp_path):
    """Issue 8, Found 5: 1 MB of 350,000 `{}` cells took 16 s and 950 MB."""
    content = b'{"cells": [' + b",".join([b"{}"] * 350_000) + b'], "nbformat": 4}'
    response = shown(tmp_path, [content, content])
    assert len(response) < 2 * MB
    assert "350,000 cells" in response and "not shown" in response


def crafted_diff_pair():
    """Two versions built to make difflib quadratic in each cell: a long run of one line
    against fewer than 200 lines (below difflib's autojunk threshold) of two."""
    before = notebook([code_cell("x\n" * 30_000)] + [code_cell("x\n" * 180)] * 200)
    after = notebook([code_cell("x\ny\n" * 99)] + [code_cell("x\ny\n" * 90)] * 200)
    return before, after


def test_a_crafted_pair_of_versions_is_diffed_within_bounds(tmp_path):
    """Issue 8, Found 5: a crafted 134 KB pair of versions took 64 s of diff CPU. Cells past
    the line limit, and past the diff's work budget, say so instead of being diffed."""
    before, after = crafted_diff_pair()
    response = shown(tmp_path, [before, after])
    assert len(response) < 2 * MB
    assert "too large to diff" in response
    assert "not compared" in response


# ---------------------------------------------------------------------------- forged shapes

FORGED_CELLS = [
    {"cell_type": "code", "source": "1", "outputs": 5},
    {"cell_type": "code", "source": 5, "outputs": [1, "x", None, [], {"output_type": 3}]},
    {"cell_type": "code", "metadata": [], "source": ["a", 1, None]},
    {"cell_type": "code", "metadata": {"nbgrader": ["grade_id", "q1"]}, "source": "s"},
    {"cell_type": "markdown", "metadata": {"nbgrader": {"grade_id": 7, "grade": True}}},
    {"cell_type": 7, "source": {"a": 1}},
    {"cell_type": "heading", "level": "x", "source": "Title"},
    {
        "cell_type": "code",
        "outputs": [
            {"output_type": "error", "traceback": 5, "ename": [], "evalue": {}},
            {"output_type": "stream", "text": 5},
            {"output_type": "display_data", "data": {"image/png": 5, "text/plain": 7}},
            {"output_type": "display_data", "data": {"image/png": "not base64!"}},
            {"output_type": "execute_result", "data": []},
        ],
    },
    "not a cell",
    17,
]


def test_forged_cells_render_and_diff_without_an_error(tmp_path):
    """Issue 8, Found 6: `outputs: 5` (and other forged shapes) gave a server error."""
    forged = notebook(FORGED_CELLS)
    response = shown(tmp_path, [notebook([code_cell("1")]), forged])
    assert "changes since" in response
    response = shown(tmp_path / "again", [forged, notebook([code_cell("1")])])
    assert "changes since" in response


@pytest.mark.parametrize(
    "content",
    [
        {"cells": 5},
        {"cells": {"a": 1}},
        [1, 2],
        "text",
        {"worksheets": 5},
        {"metadata": []},
    ],
)
def test_forged_notebooks_are_not_readable_notebooks(tmp_path, content):
    """A notebook without a list of cells is 'not a readable notebook', never an error."""
    response = shown(tmp_path, [content])
    assert "not a readable notebook" in response


# ---------------------------------------------------------------------------- messages


def test_an_unreadable_version_is_reported_without_its_path(tmp_path):
    """Issue 8, Found 3: the message named the student's path (`home/s2/notebooks/...`)."""
    for content in (b"{ not json", b"\xff\xfe garbage", b""):
        response = shown(tmp_path / str(len(content)), [content])
        assert "This version is not a readable notebook." in response
        assert "home/u1" not in response and "u1" not in response
    history = write_versions(str(tmp_path / "gone"), [notebook([])])
    os.remove(os.path.join(tmp_path / "gone", history.versions["u1"][0].filename))
    response = to_json_plotly(
        version.render_version(str(tmp_path / "gone"), history, "u1", 1, None)
    )
    assert "This version cannot be read (No such file or directory)." in response
    assert "u1" not in response


# ---------------------------------------------------------------------------- readable and safe


def walk(component):
    """Every Dash component in the tree under `component`."""
    if isinstance(component, (list, tuple)):
        for child in component:
            yield from walk(child)
    elif hasattr(component, "to_plotly_json"):
        yield component
        yield from walk(getattr(component, "children", None))


def rendered(cells, outcomes=None, kernelspec=None, tmp_path=None):
    """The components of a notebook of `cells`, read back from a real file."""
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(notebook(cells, kernelspec)))
    return nbview.render_notebook(nbview.read_notebook(str(tmp_path), "nb.ipynb"), outcomes or {})


def of_class(components, name):
    return [c for c in walk(components) if name in (getattr(c, "className", None) or "").split()]


HOSTILE_MARKDOWN = (
    "# Answer\n<script>window.pwned = 1</script>\n\n"
    '<img src=x onerror="window.pwned = 2">\n\n'
    "![tracker](http://attacker.invalid/t.png) and [a link](javascript:alert(1))"
)


def test_markdown_is_rendered_with_raw_html_escaped_and_no_images(tmp_path):
    """A student's markdown is markdown (dcc.Markdown), never raw HTML, and makes the
    browser fetch nothing: an image becomes a link."""
    (shown,) = of_class(
        rendered([markdown_cell(HOSTILE_MARKDOWN)], tmp_path=tmp_path), "nb-markdown"
    )
    assert shown.dangerously_allow_html is False
    assert "<script>window.pwned = 1</script>" in shown.children
    assert (
        "![" not in shown.children and "[tracker](http://attacker.invalid/t.png)" in shown.children
    )


def test_code_is_a_fenced_block_in_the_notebooks_language_that_nothing_closes(tmp_path):
    """Code is highlighted as the notebook's language (plain text for one highlight.js does
    not know), and a run of backticks in the code cannot end the block."""
    source = "s = '''\n````\n```\n'''\nprint(s)"
    (code,) = of_class(rendered([code_cell(source)], tmp_path=tmp_path), "nb-code")
    assert code.children == f"`````python\n{source}\n`````"
    assert code.dangerously_allow_html is False
    ocaml = {"name": "ocaml-jupyter", "language": "OCaml"}
    (code,) = of_class(rendered([code_cell("x")], kernelspec=ocaml, tmp_path=tmp_path), "nb-code")
    assert code.children == "```plaintext\nx\n```"


def test_code_past_the_highlighting_limit_is_plain_text(tmp_path):
    """Highlighting runs in the teacher's browser: past MAX_HIGHLIGHT_CHARS of code in a
    notebook, code blocks are plain text."""
    cells = [code_cell(f"x = {i:05d}\n" * 100) for i in range(60)]  # 1,000 characters each
    fences = [
        c.children.split("\n")[0] for c in of_class(rendered(cells, tmp_path=tmp_path), "nb-code")
    ]
    assert fences == ["```python"] * 50 + ["```plaintext"] * 10


def test_graded_cells_show_their_outcome_in_words_icon_colour_and_border(tmp_path):
    """Graded cells read by outcome without relying on colour: the word, an icon and a
    border style, beside the heatmap's colour. The outcome is the version's, as recorded
    (q1, q2), else the cell's own (q3)."""
    cells = [
        grade_cell("1/0", "q1", [error_output("ZeroDivisionError", "division by zero")]),
        grade_cell("1", "q2", [execute_result("1")]),
        grade_cell("x", "q3"),
        code_cell("ungraded"),
    ]
    shown = rendered(cells, {"q1": "error", "q2": "execute_result"}, tmp_path=tmp_path)
    badges = [b.children[-1] for b in of_class(shown, "nb-badge")]
    assert badges == ["✗ q1: error", "✓ q2: answered", "✎ q3: non-empty"]
    error_cell, answered_cell = of_class(shown, "nb-outcome-error") + of_class(
        shown, "nb-outcome-answered"
    )
    assert error_cell.style["borderLeft"] == f"6px double {model.CLASS_COLORS['error']}"
    assert answered_cell.style["borderLeft"] == f"6px solid {model.CLASS_COLORS['answered']}"
    assert len(of_class(shown, "nb-cell")) == 4 and len(of_class(shown, "nb-graded")) == 3
    (traceback,) = of_class(shown, "nb-error")
    assert traceback.children == "ZeroDivisionError: division by zero"  # no terminal colours


def test_each_problem_has_one_anchor_made_safe_from_its_grade_id(tmp_path):
    """The page scrolls to a problem by an id that the grade_id (the student's text) cannot
    break out of; a copied cell does not repeat the id."""
    hostile = '"><script>alert(1)</script>'
    cells = [grade_cell("a", "q1"), grade_cell("b", hostile), grade_cell("c", "q1")]
    ids = [c.id for c in walk(rendered(cells, tmp_path=tmp_path)) if getattr(c, "id", None)]
    assert ids == [nbview.problem_anchor("q1"), nbview.problem_anchor(hostile)]
    for anchor in ids:
        assert anchor.startswith("problem-") and anchor[8:].isalnum() and len(anchor) == 24
    assert nbview.problem_anchor("q1") != nbview.problem_anchor("q2")


def test_png_outputs_are_images_only_when_valid_and_bounded(tmp_path):
    png = png_image(4, 4)
    big = png_image(700, 600)  # over MAX_IMAGE_CHARS once in base64
    forged = {"output_type": "display_data", "data": {"image/png": "PHN2Zz4=", "text/plain": "fig"}}
    cells = [
        code_cell("ok", [display_png(png)]),
        code_cell("big", [display_png(big)]),
        code_cell("forged", [forged]),
    ]
    shown = rendered(cells, tmp_path=tmp_path)
    (image,) = of_class(shown, "nb-image")
    assert image.src.startswith("data:image/png;base64,iVBORw0KGgo")
    notes = [n.children for n in of_class(shown, "nb-truncated")]
    assert any("image not shown: over" in n for n in notes)
    assert "image not shown: not a valid PNG" in notes


def test_a_long_output_and_a_long_cell_are_cut_with_a_note(tmp_path):
    cells = [code_cell("y = 1\n" * 5000, [stream_output("z" * 50_000)])]
    shown = rendered(cells, tmp_path=tmp_path)
    (stream,) = of_class(shown, "nb-stream")
    assert len(stream.children) == nbview.MAX_OUTPUT_CHARS
    notes = [n.children for n in of_class(shown, "nb-truncated")]
    assert "… 40,000 more characters of this output not shown" in notes
    assert "… 10,000 more characters of this cell not shown" in notes


# ---------------------------------------------------------------------------- the diff


def read(tmp_path, name, cells):
    (tmp_path / name).write_text(json.dumps(notebook(cells)))
    return nbview.read_notebook(str(tmp_path), name)


def test_the_diff_labels_changed_cells_by_grade_id_and_others_by_number(tmp_path):
    before = read(
        tmp_path,
        "a.ipynb",
        [markdown_cell("# Lab"), grade_cell("x = 1", "q1"), grade_cell("", "q2")],
    )
    after = read(
        tmp_path,
        "b.ipynb",
        [
            markdown_cell("# Lab 1"),
            grade_cell("x = 2", "q1", [execute_result("2")]),
            grade_cell("", "q2"),
        ],
    )
    diff = nbview.cell_diff(before, after)
    assert [(c.label, c.status) for c in diff.changes] == [("cell 1", "changed"), ("q1", "changed")]
    assert diff.changes[1].lines == ["@@ -1 +1,2 @@", "-x = 1", "+x = 2", "+[execute_result] 2"]
    section = nbview.render_diff(diff, "changes since 10:00:00")
    assert section.children[0].children == "changes since 10:00:00: cell 1 changed, q1 changed"
    assert [s.children for s in of_class(section, "nb-diff-add")] == [
        "+# Lab 1",
        "+x = 2",
        "+[execute_result] 2",
    ]
    assert [s.children for s in of_class(section, "nb-diff-del")] == ["-# Lab", "-x = 1"]


def test_an_inserted_cell_is_one_added_cell_not_every_cell_after_it(tmp_path):
    cells = [grade_cell(f"answer {i}", f"q{i}") for i in range(5)]
    before = read(tmp_path, "a.ipynb", cells)
    after = read(tmp_path, "b.ipynb", cells[:2] + [code_cell("scratch")] + cells[2:4])
    diff = nbview.cell_diff(before, after)
    assert [(c.label, c.status) for c in diff.changes] == [("cell 3", "added"), ("q4", "removed")]
    assert diff.changes[0].lines == ["@@ -0,0 +1 @@", "+scratch"]
    assert nbview.render_diff(nbview.cell_diff(before, before), "since").children == (
        "since: no change in the cells"
    )


# ---------------------------------------------------------------------------- any shape

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
TEXT = st.text(max_size=30) | st.lists(st.text(max_size=10) | JSON, max_size=4) | JSON
PNG_BASE64 = st.sampled_from(["iVBORw0KGgo=", base64.b64encode(png_image(2, 2)).decode(), "?"])
OUTPUT = st.fixed_dictionaries(
    {},
    optional={
        "output_type": st.sampled_from(
            ["stream", "error", "pyerr", "execute_result", "display_data", "pyout"]
        )
        | JSON,
        "text": TEXT,
        "traceback": TEXT,
        "ename": TEXT,
        "evalue": TEXT,
        "data": st.fixed_dictionaries(
            {}, optional={"image/png": PNG_BASE64 | TEXT, "text/plain": TEXT}
        )
        | JSON,
        "png": PNG_BASE64 | TEXT,
    },
)
NBGRADER = st.fixed_dictionaries(
    {}, optional={"grade_id": st.sampled_from(["q1", "q2"]) | JSON, "grade": st.booleans() | JSON}
)
CELL = st.fixed_dictionaries(
    {},
    optional={
        "cell_type": st.sampled_from(["code", "markdown", "raw", "heading"]) | JSON,
        "source": TEXT,
        "input": TEXT,
        "level": JSON,
        "outputs": st.lists(OUTPUT | JSON, max_size=4) | JSON,
        "metadata": st.fixed_dictionaries({}, optional={"nbgrader": NBGRADER | JSON}) | JSON,
    },
)
NOTEBOOK = st.fixed_dictionaries(
    {},
    optional={
        "cells": st.lists(CELL | JSON, max_size=6) | JSON,
        "worksheets": st.lists(st.fixed_dictionaries({}, optional={"cells": st.lists(CELL)}) | JSON)
        | JSON,
        "metadata": st.fixed_dictionaries(
            {},
            optional={
                "kernelspec": st.fixed_dictionaries({}, optional={"language": TEXT}) | JSON,
                "language_info": st.fixed_dictionaries({}, optional={"name": TEXT}) | JSON,
            },
        )
        | JSON,
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    before=NOTEBOOK | JSON,
    after=NOTEBOOK | JSON,
    outcomes=st.dictionaries(JSON.filter(lambda value: isinstance(value, str)), JSON, max_size=3),
)
def test_any_notebook_shaped_json_reads_renders_and_diffs_or_is_unreadable(
    tmp_path_factory, before, after, outcomes
):
    """Whatever JSON a student saves, reading it gives a Notebook or the documented
    ValueError, and rendering and diffing it give components the server can send."""
    folder = tmp_path_factory.mktemp("any")
    read_back = []
    for name, content in (("a.ipynb", before), ("b.ipynb", after)):
        (folder / name).write_bytes(json.dumps(content).encode())
        try:
            read_back.append(nbview.read_notebook(str(folder), name))
        except ValueError as error:
            assert str(error) == "is not a readable notebook"
            read_back.append(nbview.Notebook([], 0))
    previous, current = read_back
    to_json_plotly(nbview.render_notebook(current, outcomes))
    to_json_plotly(nbview.render_diff(nbview.cell_diff(previous, current), "since"))


# ---------------------------------------------------------------------------- in a browser


@pytest.mark.skipif(not shutil.which("chromedriver"), reason="chromium-driver is not installed")
def test_in_a_browser_student_markup_never_runs_and_code_is_highlighted(dash_duo, tmp_path):
    """In headless Chromium: a student's `<script>`, `<img onerror>`, image and
    `javascript:` link stay inert text or plain links; a code cell is highlighted and
    shown exactly, backticks included; the clicked problem's anchor exists."""
    source = "def f(x):\n    return '```'  # a fence inside\n"
    cells = [markdown_cell(HOSTILE_MARKDOWN), grade_cell(source, "q1", [execute_result("1")])]
    history = write_versions(str(tmp_path), [notebook(cells)])
    app = dash.Dash(__name__)
    app.layout = html.Div(version.render_version(str(tmp_path), history, "u1", 1, None))
    dash_duo.start_server(app)
    dash_duo.wait_for_element(".nb-code code.hljs .hljs-keyword", timeout=20)
    script = """
        const markdown = document.querySelector('.nb-markdown');
        return {
            pwned: window.pwned === undefined ? null : window.pwned,
            markup: markdown.querySelectorAll('script, img, iframe').length,
            text: markdown.textContent,
            links: [...markdown.querySelectorAll('a')].map(a => a.getAttribute('href')),
            code: document.querySelector('.nb-code code').textContent,
            language: document.querySelector('.nb-code code').className,
            anchor: document.getElementById(arguments[0]).className,
        };
    """
    page = dash_duo.driver.execute_script(script, nbview.problem_anchor("q1"))
    assert page["pwned"] is None and page["markup"] == 0
    assert "<script>window.pwned = 1</script>" in page["text"]
    assert '<img src=x onerror="window.pwned = 2">' in page["text"]
    assert "http://attacker.invalid/t.png" in page["links"]
    assert not any(link.startswith("javascript:alert") for link in page["links"])
    assert page["code"] == source.rstrip("\n")
    assert "language-python" in page["language"]
    assert "nb-outcome-answered" in page["anchor"]


def test_a_version_before_that_cannot_be_shown_is_said_in_the_diff_title(tmp_path):
    """The version before is too large, or a link out of the destination folder: the diff
    says so, without its path, and the chosen version still shows."""
    too_large = b" " * (nbview.MAX_NOTEBOOK_BYTES + 1)
    response = shown(tmp_path / "large", [too_large, notebook([code_cell("x = 1")])])
    assert "not shown, the version before is over 10 MB, too large to show." in response
    assert "x = 1" in response
    (tmp_path / "secret.ipynb").write_text(json.dumps(notebook([code_cell("secret")])))
    history = write_versions(str(tmp_path / "link"), [notebook([]), notebook([code_cell("y")])])
    first = tmp_path / "link" / history.versions["u1"][0].filename
    first.unlink()
    first.symlink_to(tmp_path / "secret.ipynb")
    response = to_json_plotly(
        version.render_version(str(tmp_path / "link"), history, "u1", 2, None)
    )
    assert "the version before is outside the destination folder." in response
    assert "secret" not in response and "u1" not in response


def test_cells_are_paired_by_position_when_aligning_them_would_cost_too_much():
    """Aligning cells is difflib's work too: past the budget, cells pair up by position and
    the longer version's extra cells are added or removed."""
    before, after = ["a", "b", "c"], ["new", "a", "b", "c"]
    assert nbview.aligned(before, after, nbview.Budget(nbview.DIFF_WORK))[0][0] == "insert"
    blocks = nbview.aligned(before, after, nbview.Budget(0))
    pairs = [change for block in blocks for change in nbview.paired_changes(*block)]
    assert pairs == [("changed", 0, 0), ("changed", 1, 1), ("changed", 2, 2), ("added", None, 3)]
