"""make_database.py's pure parts: log lines, names, and counting graded cells."""

import glob
import json
import os

import pytest
from conftest import REALDATA, run_script
from demo_course import (
    code_cell,
    display_png,
    error_output,
    execute_result,
    grade_cell,
    notebook,
    stream_output,
)

import make_database as md


def parse(nb):
    return md.parse_notebook_bytes(json.dumps(nb).encode())


# ---------------------------------------------------------------------------- the log


def test_parse_log_keeps_regular_files_and_skips_other_lines():
    """Which lines of a log are files to record?"""
    lines = [
        "suffix=.bak_2021-10-17T18:26:14\n",
        "created directory sync_dest\n",
        "cd+++++++++|hoge/a/notebooks/|\n",
        ">f+++++++++|hoge/a/notebooks/hello.txt|\n",
        ">f.st......|hoge/a/notebooks/nb.ipynb|\n",
        "cL+++++++++|hoge/a/notebooks/link -> x|\n",
        'skipping non-regular file "hoge/a/notebooks/fifo"\n',
        ".f...p.....|hoge/b/notebooks/x.ipynb|\n",
    ]
    assert md.parse_log(lines) == md.SyncLog(
        ".bak_2021-10-17T18:26:14",
        ["hoge/a/notebooks/hello.txt", "hoge/a/notebooks/nb.ipynb", "hoge/b/notebooks/x.ipynb"],
        {"hoge/a/notebooks/hello.txt"},  # created: no previous version to look for
        [],
    )


def test_a_file_listed_again_as_changed_is_not_taken_for_created():
    """Overlapping folders can list a file twice; the second copy made a backup."""
    lines = ["suffix=.bak_T\n", ">f+++++++++|a/x.ipynb|\n", ">f.st......|a/x.ipynb|\n"]
    assert md.parse_log(lines) == md.SyncLog(".bak_T", ["a/x.ipynb"], set(), [])


def test_parse_log_decodes_bars_and_octal_escapes():
    """Names with `|`, a newline (\\#012) and UTF-8 escaped under the C locale."""
    lines = [
        "suffix=.bak_T\n",
        ">f+++++++++|a/pipe|name.ipynb|\n",
        ">f+++++++++|a/line\\#012break.ipynb|\n",
        ">f+++++++++|a/\\#346\\#227\\#245\\#346\\#234\\#254.ipynb|\n",
        ">f+++++++++|a/back\\slash.txt|\n",
    ]
    assert md.parse_log(lines)[1] == [
        "a/pipe|name.ipynb",
        "a/line\nbreak.ipynb",
        "a/日本.ipynb",
        "a/back\\slash.txt",
    ]


def test_parse_log_without_suffix_line_is_an_error():
    with pytest.raises(md.LogError):
        md.parse_log([">f+++++++++|a/b|\n"])


def test_backup_name_keeps_the_extension_last():
    assert md.backup_name("d/nb.ipynb", ".bak_T") == "d/nb.bak_T.ipynb"
    assert md.backup_name("d/Makefile", ".bak_T") == "d/Makefile.bak_T"
    assert md.source_of("d/nb.bak_2021-10-17T18:26:14.ipynb") == "d/nb.ipynb"
    assert md.source_of("d/nb.ipynb") == "d/nb.ipynb"


def test_owner_is_matched_by_whole_path_components():
    """hoge/x/nb does not own hoge/x/nb2/..., and the longest folder wins."""
    users = [
        md.User("x", "hoge/x/nb", 2, {}),
        md.User("y", "hoge/x/nb2", 3, {}),
        md.User("z", "/abs/z/", 4, {}),
    ]
    folders = md.user_folders(users)
    assert md.owner_of("hoge/x/nb/a.ipynb", folders) == "x"
    assert md.owner_of("hoge/x/nb2/a.ipynb", folders) == "y"
    assert md.owner_of("hoge/x/nb3/a.ipynb", folders) == "unknown"
    assert md.owner_of("abs/z/a.ipynb", folders) == "z"


# ---------------------------------------------------------------------------- counting


def test_each_outcome_is_counted_in_its_column():
    """One graded code cell of each outcome gives one in each column."""
    nb = notebook(
        [
            grade_cell("1+1", "ok", [execute_result("2")]),
            grade_cell("plot()", "display", [display_png(b"png")]),
            grade_cell("print(1)", "stream", [stream_output("1\n")]),
            grade_cell("1/0", "error", [error_output("ZeroDivisionError", "division by zero")]),
            grade_cell("   \n", "empty"),
            grade_cell("x = 1", "written"),
        ]
    )
    counts, problems = parse(nb)
    assert counts == (1, 1, 1, 1, 1)
    assert problems == [
        ("ok", "execute_result"),
        ("display", "display_data"),
        ("stream", "stream"),
        ("error", "error"),
        ("empty", "empty"),
        ("written", "non-empty"),
    ]


@pytest.mark.parametrize(
    "outputs, expected",
    [
        ([execute_result("1"), stream_output("x"), error_output("E", "e")], "error"),
        ([execute_result("1"), stream_output("x"), display_png(b"p")], "display_data"),
        ([execute_result("1"), stream_output("x")], "stream"),
        ([execute_result("1")], "execute_result"),
        ([{"output_type": "unknown"}], "non-empty"),
    ],
)
def test_first_output_type_in_priority_order_wins(outputs, expected):
    assert parse(notebook([grade_cell("x", "q", outputs)]))[1] == [("q", expected)]


def test_only_cells_with_grade_true_and_a_grade_id_count():
    nb = notebook(
        [
            code_cell("x", [execute_result("1")]),
            code_cell("x", [execute_result("1")], grade=False, grade_id="a", solution=True),
            code_cell("x", [execute_result("1")], grade=True),
            code_cell("x", [execute_result("1")], grade="true", grade_id="b"),
            grade_cell("y", "c", [execute_result("1")]),
        ]
    )
    assert parse(nb) == ((1, 0, 0, 0, 0), [("c", "execute_result")])


def test_markdown_graded_cells_go_to_problems_but_not_to_counts():
    nb = notebook(
        [grade_cell("", "m1", cell_type="markdown"), grade_cell("ans", "m2", (), "markdown")]
    )
    assert parse(nb) == ((0, 0, 0, 0, 0), [("m1", "empty"), ("m2", "non-empty")])


def test_repeated_grade_id_counts_once_with_last_outcome_at_first_place():
    """Students copy cells: a grade_id seen twice counts once."""
    nb = notebook(
        [
            grade_cell("1/0", "a", [error_output("E", "e")]),
            grade_cell("", "b"),
            grade_cell("1", "a", [execute_result("1")]),
        ]
    )
    assert parse(nb) == ((1, 0, 0, 0, 1), [("a", "execute_result"), ("b", "empty")])


def test_source_as_list_of_lines():
    nb = notebook([grade_cell(["  ", "\n"], "a"), grade_cell(["x = 1\n", "y"], "b")])
    assert parse(nb)[1] == [("a", "empty"), ("b", "non-empty")]


def test_nbformat_v3_counts_the_same():
    """v3: worksheets, `input`, pyout and pyerr."""
    nb = {
        "nbformat": 3,
        "worksheets": [
            {
                "cells": [
                    {
                        "cell_type": "code",
                        "input": "1",
                        "outputs": [{"output_type": "pyout", "text": "1"}],
                        "metadata": {"nbgrader": {"grade": True, "grade_id": "a"}},
                    },
                    {
                        "cell_type": "code",
                        "input": "1/0",
                        "outputs": [{"output_type": "pyerr"}],
                        "metadata": {"nbgrader": {"grade": True, "grade_id": "b"}},
                    },
                    {
                        "cell_type": "code",
                        "input": "",
                        "outputs": [],
                        "metadata": {"nbgrader": {"grade": True, "grade_id": "c"}},
                    },
                ]
            }
        ],
    }
    assert parse(nb) == ((1, 0, 0, 1, 1), [("a", "execute_result"), ("b", "error"), ("c", "empty")])


def test_metadata_less_and_odd_shapes_never_raise():
    nb = {
        "nbformat": 4,
        "cells": [
            {"cell_type": "code", "source": "x"},
            "not a cell",
            {"cell_type": "code", "metadata": None},
            {"cell_type": "code", "metadata": {"nbgrader": "x"}, "outputs": "x"},
            {"metadata": {"nbgrader": {"grade": True, "grade_id": "a"}}, "outputs": [None, 3]},
        ],
    }
    assert parse(nb) == ((0, 0, 0, 0, 0), [("a", "empty")])


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b'{"cells": [',
        b"[1, 2]",
        b'{"nbformat": 4}',
        b"[" * 100000 + b"]" * 100000,
    ],
    ids=["empty", "not-json", "truncated", "list", "no-cells", "deeply-nested"],
)
def test_unreadable_notebooks_raise_not_a_notebook(data):
    with pytest.raises(md.NotANotebook):
        md.parse_notebook_bytes(data)


def test_utf8_bom_notebook_is_read():
    data = (
        b"\xef\xbb\xbf"
        + json.dumps(notebook([grade_cell("1", "a", [execute_result("1")])])).encode()
    )
    assert md.parse_notebook_bytes(data) == ((1, 0, 0, 0, 0), [("a", "execute_result")])


# ---------------------------------------------------------------------------- real notebooks


def realdata_notebooks():
    return sorted(glob.glob(os.path.join(REALDATA, "**", "*.ipynb"), recursive=True))


@pytest.mark.skipif(not realdata_notebooks(), reason="shared/realdata is not beside the project")
def test_every_real_nbgrader_notebook_parses_or_is_reported():
    """All 86 notebooks from nbgrader's repository parse without an exception."""
    parsed = 0
    for path in realdata_notebooks():
        try:
            counts, problems = md.parse_notebook(path)
        except md.NotANotebook:
            continue
        assert all(isinstance(n, int) and n >= 0 for n in counts), path
        assert sum(counts) <= len(problems), path
        parsed += 1
    assert parsed >= 80


@pytest.mark.skipif(not realdata_notebooks(), reason="shared/realdata is not beside the project")
def test_executed_real_notebook_counts():
    """problem1 of bitdiddle, run in a real kernel: which graded cells print, pass or fail."""
    path = os.path.join(
        REALDATA, "executed/docs/source/user_guide/submitted/bitdiddle/ps1/problem1.ipynb"
    )
    with open(path) as stream:
        nb = json.load(stream)
    expected = []
    for cell in nb["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("grade") is True:
            types = {o["output_type"] for o in cell.get("outputs", [])}
            first = next(
                (k for k in ("error", "display_data", "stream", "execute_result") if k in types),
                None,
            )
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            expected.append(
                (meta["grade_id"], first or ("non-empty" if source.strip() else "empty"))
            )
    counts, problems = md.parse_notebook(path)
    assert problems == expected
    assert len(problems) == 6
    assert {outcome for _, outcome in problems} >= {"error"}


@pytest.mark.skipif(not realdata_notebooks(), reason="shared/realdata is not beside the project")
def test_parse_only_prints_counts_and_problems(tmp_path):
    path = os.path.join(REALDATA, "nbgrader/tests/preprocessors/files/duplicate-grade-ids.ipynb")
    result = run_script("make_database.py", "--parse-only", path, cwd=tmp_path)
    assert result.stdout.splitlines() == [
        "code_ok=0 code_display=0 code_stream=0 code_error=0 code_empty=0",
        "id1\tnon-empty",
    ]


def test_parse_only_names_an_unreadable_file(tmp_path):
    bad = tmp_path / "bad.ipynb"
    bad.write_text("{oops")
    result = run_script("make_database.py", "--parse-only", bad, cwd=tmp_path, check=False)
    assert result.returncode == 1
    assert str(bad) in result.stderr and "not a readable notebook" in result.stderr


def test_parse_log_makes_absolute_names_relative_and_skips_climbing_ones():
    """Files of absolute sources are under dest: nothing outside dest is ever touched."""
    lines = ["suffix=.bak_T\n", ">f+++++++++|/home/a/nb/x.ipynb|\n", ">f+++++++++|a/../../etc/x|\n"]
    assert md.parse_log(lines)[1] == ["home/a/nb/x.ipynb"]
