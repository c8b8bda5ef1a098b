"""The version view's rendering of one notebook version and its diff with the version
before: safe (no student markup runs), readable (markdown, highlighted code, graded cells
by outcome) and bounded (crafted notebooks render truncated, small and fast)."""

import json
import os

import pytest
from demo_course import (
    code_cell,
    notebook,
    stream_output,
)
from plotly.io.json import to_json_plotly

from progress_views import model, version

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
        assert "this version is not a readable notebook" in response
        assert "home/u1" not in response and "u1" not in response
    history = write_versions(str(tmp_path / "gone"), [notebook([])])
    os.remove(os.path.join(tmp_path / "gone", history.versions["u1"][0].filename))
    response = to_json_plotly(
        version.render_version(str(tmp_path / "gone"), history, "u1", 1, None)
    )
    assert "cannot be read" in response and "u1" not in response
