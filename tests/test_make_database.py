"""make_database.py's pure parts: log lines, names, and counting graded cells."""

import glob
import json
import marshal
import os
import signal
import time
import types

import pytest
from conftest import REALDATA, rows, run_script, sync, write_json, write_text, write_users
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


# ---------------------------------------------------------------------------- shortcuts for speed
# Each gives the answers of the plain way it replaces.


@pytest.mark.parametrize(
    "t",
    [
        "2021-10-17T18:26:14",
        "2021-03-28T02:30:00",  # a local time that does not exist in some zones
        "2021-10-31T02:30:00",  # one that exists twice in some zones
        "2021-10-17T23:59:60",  # strptime takes seconds 60 and 61
        "2021-1-5T1:2:3",  # and fields without their leading zeros
    ],
)
@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris", "America/Santiago"])
def test_t_seconds_reads_t_as_strptime_does(t, zone, monkeypatch):
    """Does a cycle's T give the same UTC seconds as time.strptime gave it?"""
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        assert md.t_seconds(t) == time.mktime(time.strptime(t, md.TIME_FORMAT))
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize(
    "t", ["2021-02-29T00:00:00", "2021-13-01T00:00:00", "2021-10-17T24:00:00", "T", ""]
)
def test_t_seconds_refuses_what_strptime_refuses(t):
    """Is a T that names no time refused (the log's mtime then stands in for it)?"""
    with pytest.raises(ValueError):
        time.strptime(t, md.TIME_FORMAT)
    with pytest.raises(ValueError):
        md.t_seconds(t)


def graded(*outcomes):
    """A notebook with one graded code cell per outcome (`ok`, `error` or `empty`)."""
    outputs = {"ok": [execute_result("1")], "error": [error_output("E", "x")], "empty": []}
    return notebook(
        [
            grade_cell("" if o == "empty" else "x", f"q{i}", outputs[o])
            for i, o in enumerate(outcomes)
        ]
    )


def two_cycles(root):
    """A course copied twice by the loop: the second cycle has new versions whose graded
    cells changed, an autosave whose cells did not, a notebook become unreadable, a new
    file. The logs, oldest first."""
    write_users(root / "users.csv", [("a", "class/a"), ("b", "class/b")])
    for uid in "ab":
        for i in range(6):
            write_json(root / f"class/{uid}/nb{i}.ipynb", graded("ok", "error", "empty"), 1e9)
        write_text(root / f"class/{uid}/notes.txt", "x", 1e9)
    sync(root)
    time.sleep(1.1)  # the next cycle's T
    write_json(root / "class/a/nb0.ipynb", graded("ok", "ok", "empty"), 1.1e9)
    write_json(root / "class/a/nb1.ipynb", graded("ok", "error", "empty") | {"x": 1}, 1.1e9)
    write_text(root / "class/b/nb2.ipynb", '{"cells": [', 1.1e9)
    write_json(root / "class/b/new.ipynb", graded("error"), 1.1e9)
    sync(root)
    return sorted((root / "sync_logs").iterdir())


def recorded(db):
    """Every table's rows, with the rowids that the viewer follows; problems in rowid order."""
    return [
        rows(db, "SELECT rowid, * FROM summary ORDER BY rowid"),
        rows(db, "SELECT rowid, * FROM version_details ORDER BY rowid"),
        rows(db, "SELECT rowid, * FROM summary_changes ORDER BY rowid"),
        rows(db, "SELECT rowid, * FROM applied_logs ORDER BY rowid"),
        rows(db, "SELECT filename, grade_id, result FROM problems ORDER BY rowid"),
    ]


def test_rows_written_while_workers_parse_equal_rows_written_at_once(tmp_path, monkeypatch):
    """Do the logs give the same rows whether the workers parse one notebook at a time and
    each record is written on its own, or everything is parsed here and written at once?"""
    logs = two_cycles(tmp_path)
    monkeypatch.chdir(tmp_path)
    users = md.read_users_csv("users.csv")
    databases = []
    for chunk, batch, min_bytes in ((1, 1, 0), (10**6, 10**6, 10**12)):
        monkeypatch.setattr(md.Parsing, "CHUNK", chunk)
        monkeypatch.setattr(md.Parsing, "MIN_BYTES", min_bytes)
        monkeypatch.setattr(md, "RECORDS_PER_WRITE", batch)
        databases.append(tmp_path / f"chunk{chunk}.sqlite")
        conn = md.connect(databases[-1])
        try:
            for log in logs:
                md.apply_log(conn, log, "sync_dest", users, warn=lambda message: None)
        finally:
            conn.close()
    by_chunks, at_once = map(recorded, databases)
    assert by_chunks == at_once
    assert len(by_chunks[0]) == 2 * 7 + 3 + 1  # two copies, three backups, one new file


def test_a_worker_that_dies_halfway_leaves_the_rest_to_this_process(tmp_path, monkeypatch):
    """Does a worker that dies after sending its first chunk cost nothing: every notebook
    still gets its own result, the rest being parsed here?"""
    names = [f"n{i}.ipynb" for i in range(12)]
    for i, name in enumerate(names):
        write_json(tmp_path / name, graded(*["ok", "error", "empty"][: i % 3 + 1]))
    sent = []

    def dumps_then_die(value):
        if sent:  # the second chunk: the OOM killer, say
            os.kill(os.getpid(), signal.SIGKILL)
        sent.append(value)
        return marshal.dumps(value)

    monkeypatch.setattr(md.Parsing, "MIN_BYTES", 0)
    monkeypatch.setattr(md.Parsing, "CHUNK", 2)
    monkeypatch.setattr(
        md, "marshal", types.SimpleNamespace(dumps=dumps_then_die, loads=marshal.loads)
    )
    parsing = md.Parsing(str(tmp_path), names, cores=2)
    try:
        results = [parsing.result(name) for name in names]
        assert [worker.failed for worker in parsing.workers] == [True, True]
    finally:
        parsing.close()
    assert results == md.parse_each([tmp_path / name for name in names])


@pytest.mark.parametrize(
    "lines",
    [
        [],
        ["created directory sync_dest\n", "cd+++++++++|hoge/a/notebooks/|\n"],
        ["cL+++++++++|hoge/a/notebooks/link -> x|\n", ">f+++++++++|../x|\n"],
        ["cd+++++++++|hoge/a/|\n", ">f.st......|hoge/a/notebooks/nb.ipynb|\n"],
        ["hoge/a/notebooks/big.ipynb is over max-size\n"],
    ],
)
@pytest.mark.parametrize("folder", ["", "folder=node1/\n"])
def test_lists_files_says_what_parse_log_lists(lines, folder):
    """Does the loop's look at a log (does it name a file to record?) agree with the log
    read in full?"""
    log = ["suffix=.bak_2021-10-17T18:26:14\n", *([folder] if folder else []), *lines]
    sync_log = md.parse_log(log)
    assert md.lists_files(log) == bool(sync_log.files or sync_log.oversize)


def test_no_fork_possible_parses_everything_here_and_leaves_no_pipe_open(tmp_path, monkeypatch):
    """When no worker can be forked (too many processes), is every notebook still parsed,
    with no pipe left open?"""
    names = [f"n{i}.ipynb" for i in range(5)]
    for name in names:
        write_json(tmp_path / name, graded("ok", "error"))
    open_before = sorted(os.listdir("/proc/self/fd"))

    def no_fork():
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(md.Parsing, "MIN_BYTES", 0)
    monkeypatch.setattr(md.os, "fork", no_fork)
    parsing = md.Parsing(str(tmp_path), names, cores=2)
    assert parsing.workers == [None]
    assert sorted(os.listdir("/proc/self/fd")) == open_before
    assert [parsing.result(name) for name in names] == md.parse_each(
        [tmp_path / name for name in names]
    )
    parsing.close()
