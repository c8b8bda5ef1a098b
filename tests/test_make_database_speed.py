"""make_database.py's shortcuts for speed give the answers of the plain ways they replace."""

import marshal
import os
import signal
import time
import types

import pytest
from conftest import rows, sync, write_json, write_text, write_users
from demo_course import error_output, execute_result, grade_cell, notebook

import make_database as md


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
