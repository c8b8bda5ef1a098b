"""make_database.py against what a student (or a term of bad luck) can do: odd notebooks,
absurd timestamps, saves within one second, files over --max-size, temporary files, a
classmate's files slipped into one's folder, and the repeated hour at the end of summer time.

Each test runs the real scripts with real rsync on real folders and a real SQLite file,
except where a pure function is the thing asked about.
"""

import json
import os
import re
import sqlite3
import subprocess
import tempfile
import time

import pytest
from conftest import (
    kill_make_database_after,
    rows,
    run_script,
    sync,
    tmpfs_at,
    write_json,
    write_text,
    write_users,
)
from demo_course import error_output, execute_result, grade_cell, notebook
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import make_database as md
import rsync_notebooks as rn

T_RE = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d"


def local(seconds):
    return time.strftime(md.TIME_FORMAT, time.localtime(seconds))


def logs(root):
    return sorted(os.listdir(root / "sync_logs"))


def cycle_t(log):
    """`sync_2021-10-17T18:26:14.log` -> `2021-10-17T18:26:14`."""
    return re.fullmatch(rf"sync_({T_RE})\.log", log).group(1)


def counted(db):
    """(filename, the five counts) of every row."""
    return [(name, *counts) for name, _, _, *counts in rows(db)]


def details(db, filename):
    return rows(
        db, "SELECT epoch, mtime, reason FROM version_details WHERE filename = ?", (filename,)
    )


def one_ok():
    return notebook([grade_cell("1", "q1", [execute_result("1")])])


# ---------------------------------------------------------------------------- 2. odd notebooks


ODD = notebook([grade_cell("1", "q1", [{"output_type": []}])])


def test_one_odd_notebook_costs_only_that_file(hoge):
    """A graded output whose output_type is a list (not hashable) once failed the whole
    log: is everybody else recorded, and the odd one a row without counts and a warning?"""
    write_json(hoge / "hoge/a/notebooks/odd.ipynb", ODD)
    write_json(hoge / "hoge/a/notebooks/good.ipynb", one_ok())
    write_json(hoge / "hoge/b/notebooks/good.ipynb", one_ok())
    result = sync(hoge)
    assert "warning: sync_dest/hoge/a/notebooks/odd.ipynb" in result.stderr
    assert counted(hoge / "sync.sqlite") == [
        ("hoge/a/notebooks/good.ipynb", 1, 0, 0, 0, 0),
        ("hoge/a/notebooks/odd.ipynb", None, None, None, None, None),
        ("hoge/b/notebooks/good.ipynb", 1, 0, 0, 0, 0),
    ]


def test_parse_workers_and_the_main_process_each_isolate_an_odd_notebook(tmp_path, monkeypatch):
    """The same isolation whichever process parses the file: a forked worker, or this one
    (a dead worker's chunks)."""
    names = [f"n{i}.ipynb" for i in range(6)]
    for i, name in enumerate(names):
        write_json(tmp_path / name, ODD if i == 3 else one_ok())
    monkeypatch.setattr(md.Parsing, "MIN_BYTES", 0)
    monkeypatch.setattr(md.Parsing, "CHUNK", 2)
    parsing = md.Parsing(str(tmp_path), names, cores=3)
    assert len(parsing.workers) == 3  # the files go to forked workers
    try:
        in_workers = {name: parsing.result(name) for name in names}
    finally:
        parsing.close()
    at_home = dict(zip(names, md.parse_each([tmp_path / name for name in names])))
    for results in (in_workers, at_home):
        assert isinstance(results["n3.ipynb"], str) and "TypeError" in results["n3.ipynb"]
        assert [results[name] for name in names if name != "n3.ipynb"] == [
            ((1, 0, 0, 0, 0), [("q1", "execute_result")])
        ] * 5


# ---------------------------------------------------------------------------- 3. absurd times


def test_version_time_is_the_cycles_when_the_mtime_is_absurd():
    """Before 2000, or more than a day after the cycle, the cycle's time stands in."""
    cycle = md.Cycle("2021-10-17T18:26:14", 1_634_487_974.0)
    good = 1_634_480_000
    assert md.version_time(good, cycle) == (local(good), good)
    assert md.version_time(cycle.epoch + 3600, cycle) == (
        local(cycle.epoch + 3600),
        cycle.epoch + 3600,
    )
    for absurd in (315_532_800, -5.0, 1_950_000_000, 1e17, -1e17, float("nan")):
        assert md.version_time(absurd, cycle) == (cycle.t, cycle.epoch), absurd


def test_a_log_whose_suffix_is_not_a_time_takes_the_logs_own_mtime(tmp_path):
    log = tmp_path / "sync_x.log"
    log.write_text("suffix=.bak_T\n")
    os.utime(log, (1_600_000_000, 1_600_000_000))
    assert md.cycle_time(".bak_T", log) == md.Cycle(local(1_600_000_000), 1_600_000_000)
    t = "2021-10-17T18:26:14"
    assert md.cycle_time(f".bak_{t}", log) == md.Cycle(
        t, time.mktime(time.strptime(t, md.TIME_FORMAT))
    )


@pytest.fixture
def tmpfs(tmp_path):
    """A tmpfs folder (it keeps 64-bit mtimes, as btrfs and ZFS do; ext4 clamps them)."""
    with tmpfs_at(tmp_path / "tmpfs", "64m") as folder:
        yield folder


def test_a_64_bit_mtime_is_recorded_at_the_cycles_time(tmpfs):
    """`touch -d @100000000000000000` once failed every log with EOVERFLOW."""
    write_users(tmpfs / "users.csv", [("a", "hoge/a"), ("b", "hoge/b")])
    far = 100_000_000_000_000_000
    write_json(tmpfs / "hoge/a/far.ipynb", one_ok())
    os.utime(tmpfs / "hoge/a/far.ipynb", (far, far))
    assert os.stat(tmpfs / "hoge/a/far.ipynb").st_mtime == far
    write_json(tmpfs / "hoge/b/nb.ipynb", one_ok(), mtime=1_600_000_000)
    sync(tmpfs)
    t = cycle_t(logs(tmpfs)[0])
    db = tmpfs / "sync.sqlite"
    assert rows(db, "SELECT filename, t, code_ok FROM summary ORDER BY 1") == [
        ("hoge/a/far.ipynb", t, 1),
        ("hoge/b/nb.ipynb", local(1_600_000_000), 1),
    ]
    assert details(db, "hoge/a/far.ipynb") == [(md.cycle_time(f".bak_{t}", None).epoch, far, None)]


def test_versions_dated_1980_or_in_the_future_are_recorded_at_the_cycles_time(hoge):
    """A zip's 1980 dates and `touch -d 2031-01-01` no longer reach summary.t (the viewer's
    time axis); the file's own mtime is kept in version_details."""
    folder = hoge / "hoge/a/notebooks"
    write_json(folder / "zip.ipynb", one_ok(), mtime=315_532_800)
    future = time.time() + 5 * 365 * 86400
    write_json(folder / "future.ipynb", one_ok(), mtime=future)
    write_json(folder / "now.ipynb", one_ok(), mtime=time.time() - 60)
    sync(hoge)
    t = cycle_t(logs(hoge)[0])
    db = hoge / "sync.sqlite"
    recorded = dict(rows(db, "SELECT filename, t FROM summary"))
    assert recorded["hoge/a/notebooks/zip.ipynb"] == t
    assert recorded["hoge/a/notebooks/future.ipynb"] == t
    assert recorded["hoge/a/notebooks/now.ipynb"] != t
    assert details(db, "hoge/a/notebooks/zip.ipynb")[0][1:] == (315_532_800, None)
    assert details(db, "hoge/a/notebooks/future.ipynb")[0][1] == pytest.approx(future)


# ---------------------------------------------------------------------------- 4. one second


def test_versions_saved_in_the_same_second_keep_their_own_counts(tmp_path):
    """Two saves within one second, seen by two cycles: the first version has one answer,
    the second three errors. A replay on a fresh database, and the same logs applied
    again, once gave the first version the second one's counts (1/0 became 0/3)."""
    write_users(tmp_path / "users.csv", [("a", "hoge/a")])
    path = tmp_path / "hoge/a/nb.ipynb"
    write_json(path, one_ok(), mtime=1_600_000_000.25)
    sync(tmp_path)
    errors = [
        grade_cell("1/0", f"q{i}", [error_output("ZeroDivisionError", "")]) for i in (1, 2, 3)
    ]
    write_json(path, notebook(errors), mtime=1_600_000_000.75)
    sync(tmp_path)
    backup = f"hoge/a/nb.bak_{cycle_t(logs(tmp_path)[1])}.ipynb"
    expected = [(backup, 1, 0, 0, 0, 0), ("hoge/a/nb.ipynb", 0, 0, 0, 3, 0)]
    assert counted(tmp_path / "sync.sqlite") == expected
    run_script("rsync_notebooks.py", "--no-sudo", "--replay-log", "--db", "re.sqlite", cwd=tmp_path)
    assert counted(tmp_path / "re.sqlite") == expected
    for log in logs(tmp_path):
        run_script("make_database.py", "--log", f"sync_logs/{log}", cwd=tmp_path)
    assert counted(tmp_path / "sync.sqlite") == expected
    problems = "SELECT grade_id, result FROM problems WHERE filename = ? ORDER BY rowid"
    for db in ("sync.sqlite", "re.sqlite"):
        assert rows(tmp_path / db, problems, (backup,)) == [("q1", "execute_result")]


def test_a_previous_version_recorded_a_cycle_ago_is_not_parsed_again(tmp_path, monkeypatch):
    """The same-second fix keeps the shortcut the loop's speed relies on: rsync keeps the
    previous version by renaming the very file recorded a cycle ago, whose row is reused."""
    write_users(tmp_path / "users.csv", [("a", "hoge/a")])
    path = tmp_path / "hoge/a/nb.ipynb"
    write_json(path, notebook([grade_cell("", "q1")]), mtime=1_600_000_000)
    sync(tmp_path)
    write_json(path, one_ok(), mtime=1_600_000_100)
    monkeypatch.chdir(tmp_path)
    log, _ = rsync_cycle(tmp_path, ["hoge/a"], apply=False)
    parsed = []
    parse_notebook = md.parse_notebook
    monkeypatch.setattr(md, "parse_notebook", lambda p: parsed.append(p) or parse_notebook(p))
    conn = md.connect("sync.sqlite")
    try:
        md.apply_log(conn, f"sync_logs/{log}", "sync_dest", md.read_users_csv("users.csv"))
    finally:
        conn.close()
    assert parsed == [os.path.join("sync_dest", "hoge/a/nb.ipynb")]
    assert counted(tmp_path / "sync.sqlite") == [
        (f"hoge/a/nb.bak_{cycle_t(log)}.ipynb", 0, 0, 0, 0, 1),
        ("hoge/a/nb.ipynb", 1, 0, 0, 0, 0),
    ]


# ---------------------------------------------------------------------------- 6. over max-size


def rsync_cycle(root, sources, apply=True):
    """One cycle's rsync, as the loop runs it (with --info=skip1, which names the files
    over --max-size), then make_database.py on its log unless not `apply`; (the log's
    name, make_database's CompletedProcess or None)."""
    os.makedirs(root / "sync_logs", exist_ok=True)
    os.makedirs(root / "sync_dest" / rn.RSYNC_TEMP_DIR, exist_ok=True)
    t = rn.next_timestamp(time.time(), None, str(root / "sync_logs"))
    suffix, log = f".bak_{rn.format_t(t)}", rn.log_path(str(root / "sync_logs"), t)
    command = rn.rsync_command(sources, "sync_dest", suffix, sudo=False)
    assert "--info=skip1" in command
    with rn.start_log(log, suffix) as stream:
        subprocess.run(command, cwd=root, stdout=stream, check=True)
    result = run_script("make_database.py", "--log", log, cwd=root) if apply else None
    return os.path.basename(log), result


def test_a_notebook_over_max_size_is_a_row_without_counts_once_per_change(hoge):
    """A notebook over 10 MiB is not copied; the teacher still sees that it changed."""
    big = hoge / "hoge/a/notebooks/big.ipynb"
    write_json(big, notebook([grade_cell("x" * (11 << 20), "q1")]), mtime=1_600_000_000)
    write_json(hoge / "hoge/b/notebooks/nb.ipynb", one_ok(), mtime=1_600_000_000)
    sources = ["hoge/a/notebooks", "hoge/b/notebooks"]
    first, result = rsync_cycle(hoge, sources)
    recorded = f"hoge/a/notebooks/big.bak_{cycle_t(first)}.ipynb"
    assert "hoge/a/notebooks/big.ipynb is over max-size" in result.stderr
    assert recorded in result.stderr
    db = hoge / "sync.sqlite"
    assert rows(db) == [
        (recorded, local(1_600_000_000), "a", None, None, None, None, None),
        ("hoge/b/notebooks/nb.ipynb", local(1_600_000_000), "b", 1, 0, 0, 0, 0),
    ]
    assert details(db, recorded) == [(1_600_000_000, 1_600_000_000, "over max-size: not copied")]
    _, result = rsync_cycle(hoge, sources)  # unchanged: nothing new, no warning
    assert "max-size" not in result.stderr and len(rows(db)) == 2
    os.utime(big, (1_600_000_100, 1_600_000_100))
    third, result = rsync_cycle(hoge, sources)
    assert "big.ipynb is over max-size" in result.stderr
    assert rows(db, "SELECT filename, t FROM summary WHERE owner = 'a' ORDER BY t") == [
        (recorded, local(1_600_000_000)),
        (f"hoge/a/notebooks/big.bak_{cycle_t(third)}.ipynb", local(1_600_000_100)),
    ]


def test_the_loop_records_a_cycle_whose_only_change_is_a_big_notebook(hoge):
    """The real loop: the teacher sees the big notebook change even when nothing else did."""
    write_json(hoge / "hoge/b/notebooks/nb.ipynb", one_ok(), mtime=1_600_000_000)
    sync(hoge)
    big = hoge / "hoge/a/notebooks/big.ipynb"
    write_json(big, notebook([grade_cell("x" * (11 << 20), "q1")]), mtime=1_600_000_100)
    result = sync(hoge)
    assert "hoge/a/notebooks/big.ipynb is over max-size" in result.stderr
    assert rows(hoge / "sync.sqlite", "SELECT filename, t FROM summary WHERE owner = 'a'") == [
        (f"hoge/a/notebooks/big.bak_{cycle_t(logs(hoge)[-1])}.ipynb", local(1_600_000_100))
    ]


def test_over_max_size_lines_are_parsed():
    lines = [
        "suffix=.bak_T\n",
        "hoge/a/big file.ipynb is over max-size\n",
        "hoge/a/\\#346\\#227\\#245.ipynb is over max-size\n",
        ">f+++++++++|hoge/a/x is over max-size|\n",
        "../../etc/passwd is over max-size\n",
    ]
    log = md.parse_log(lines)
    assert log.oversize == ["hoge/a/big file.ipynb", "hoge/a/日.ipynb"]
    assert log.files == ["hoge/a/x is over max-size"]


# ---------------------------------------------------------------------------- 8. temporary files


def test_jupyter_and_rsync_temporary_files_are_never_recorded(hoge):
    """Jupyter's atomic-save copy `.~nb.ipynb` and rsync's `.nb.ipynb.XmYmOH` are no
    versions of anything, whether listed by rsync or left in the destination."""
    names = ["nb.ipynb", ".~nb.ipynb", ".nb.ipynb.XmYmOH", ".hidden.ipynb"]
    for name in names:
        write_json(hoge / "sync_dest/hoge/a/notebooks" / name, one_ok())
    (hoge / "sync_logs").mkdir()
    log = "sync_logs/sync_2021-10-17T18:26:14.log"
    lines = ["suffix=.bak_2021-10-17T18:26:14"]
    lines += [f">f+++++++++|hoge/a/notebooks/{name}|" for name in names]
    write_text(hoge / log, "\n".join(lines) + "\n")
    run_script("make_database.py", "--log", log, cwd=hoge)
    assert [name for name, *_ in rows(hoge / "sync.sqlite")] == [
        "hoge/a/notebooks/.hidden.ipynb",
        "hoge/a/notebooks/nb.ipynb",
    ]


def test_a_name_too_long_for_its_backup_name_is_recorded_without_one(hoge):
    """`課題`*39 + `.ipynb` is 240 bytes: with `.bak_T` added no file can have the name, so
    there is no previous version beside it (rsync_notebooks.py keeps those elsewhere). It
    once failed the whole log with "File name too long"."""
    long_name = "課題" * 39 + ".ipynb"
    write_json(hoge / "sync_dest/hoge/a/notebooks" / long_name, one_ok())
    write_json(hoge / "sync_dest/hoge/b/notebooks/nb.ipynb", one_ok())
    (hoge / "sync_logs").mkdir()
    log = "sync_logs/sync_2021-10-17T18:26:14.log"
    lines = ["suffix=.bak_2021-10-17T18:26:14"]
    lines += [
        f">f.st......|hoge/{p}|" for p in (f"a/notebooks/{long_name}", "b/notebooks/nb.ipynb")
    ]
    write_text(hoge / log, "\n".join(lines) + "\n")
    run_script("make_database.py", "--log", log, cwd=hoge)
    assert counted(hoge / "sync.sqlite") == [
        (f"hoge/a/notebooks/{long_name}", 1, 0, 0, 0, 0),
        ("hoge/b/notebooks/nb.ipynb", 1, 0, 0, 0, 0),
    ]


LONG_NAME = "課題" * 39 + ".ipynb"  # 240 bytes: with `.bak_T` over the 255-byte limit


def test_the_short_name_of_a_long_named_version_fits_and_tells_names_apart():
    """The name a long-named file's previous version is recorded under: at most 255 bytes,
    a notebook's extension, the cycle's mark, whole characters of the name's start, the
    same every time, and another for a name that starts alike."""
    suffix = ".bak_2021-10-17T18:26:14"
    short = md.previous_version_names(f"hoge/a/{LONG_NAME}", suffix)[1]
    folder, name = os.path.split(short)
    assert folder == "hoge/a" and name.endswith(f"{suffix}.ipynb")
    assert len(name.encode()) <= 255 and name.startswith("課題" * 30)
    assert re.fullmatch(rf"(課題)+課?~[0-9a-f]{{8}}{re.escape(suffix)}\.ipynb", name)
    assert md.previous_version_names(f"hoge/a/{LONG_NAME}", suffix)[1] == short
    other = "課題" * 39 + "x.ipynb"
    assert md.previous_version_names(f"hoge/a/{other}", suffix)[1] != short
    undecodable = os.fsdecode(b"\xff" * 240 + b".txt")
    name = os.path.basename(md.previous_version_names(undecodable, suffix)[1])
    assert len(os.fsencode(name)) <= 255 and name.endswith(f"{suffix}.txt")
    assert md.previous_version_names("hoge/a/nb.ipynb", suffix) == (
        f"hoge/a/nb.ipynb{suffix}",
        f"hoge/a/nb{suffix}.ipynb",
    )


def loop_copy(root, sources):
    """One cycle's copy as the loop makes it (rsync, then the second rsync of long names),
    not applied; the log's name."""
    os.makedirs(root / "sync_logs", exist_ok=True)
    os.makedirs(root / "sync_dest" / rn.RSYNC_TEMP_DIR, exist_ok=True)
    t = rn.next_timestamp(time.time(), None, str(root / "sync_logs"))
    suffix, log = f".bak_{rn.format_t(t)}", rn.log_path("sync_logs", t)
    args = type("Args", (), {"dest": "sync_dest"})
    with rn.start_log(log, suffix) as stream:
        assert rn.copy(sources, args, t, stream, False, [], rn.Tally()) == []
    return os.path.basename(log)


def test_a_long_named_version_moved_before_a_kill_is_recorded_once_applied_again(hoge, monkeypatch):
    """make_database killed after it moved a long-named file's previous version beside it
    (out of .long_name_versions/), before its commit: applied again, the database is as
    after one clean run, and .long_name_versions/ is gone."""
    monkeypatch.chdir(hoge)
    long_path = f"hoge/a/notebooks/{LONG_NAME}"
    write_json(hoge / long_path, one_ok(), mtime=1_600_000_000)
    sources = ["hoge/a/notebooks"]
    run_script("make_database.py", "--log", f"sync_logs/{loop_copy(hoge, sources)}", cwd=hoge)
    write_json(hoge / long_path, notebook([grade_cell("", "q1")]), mtime=1_600_000_100)
    log = loop_copy(hoge, sources)
    assert os.listdir(hoge / "sync_dest/.long_name_versions") == [cycle_t(log)]
    subprocess.run(["cp", "-a", str(hoge), str(hoge) + "-clean"], check=True)
    clean = type(hoge)(str(hoge) + "-clean")
    run_script("make_database.py", "--log", f"sync_logs/{log}", cwd=clean)
    kill_make_database_after("write_applied_log", "--log", f"sync_logs/{log}", cwd=hoge)
    assert not (hoge / "sync_dest/.long_name_versions").exists()
    run_script("make_database.py", "--log", f"sync_logs/{log}", cwd=hoge)
    assert every_table(hoge / "sync.sqlite") == every_table(clean / "sync.sqlite")
    recorded = rows(hoge / "sync.sqlite", "SELECT t, code_ok, code_empty FROM summary ORDER BY t")
    assert recorded == [(local(1_600_000_000), 1, 0), (local(1_600_000_100), 0, 1)]


SEED_TABLES = [
    "CREATE TABLE summary(filename unique, t, owner, code_ok, code_display, code_stream,"
    " code_error, code_empty)",
    "CREATE TABLE problems(filename, grade_id, result)",
]
# make_database 0.3.0's side table, before it had `source`
OLD_DETAILS = "CREATE TABLE version_details(filename unique, epoch, mtime, file_key, reason)"


def test_a_database_from_before_gets_the_source_column_and_keeps_the_seeds_tables(hoge):
    """A database whose version_details has no `source` column yet (made by 0.3.0): the
    column is added and filled for a long-named version, the rows there stay; summary and
    problems stay exactly as the seed made them."""
    conn = sqlite3.connect(hoge / "sync.sqlite")
    for statement in [*SEED_TABLES, OLD_DETAILS]:
        conn.execute(statement)
    conn.execute("INSERT INTO version_details VALUES ('hoge/c/x.txt', 1, 1, '1:2:3', NULL)")
    conn.commit()
    conn.close()
    long_path = f"hoge/a/notebooks/{LONG_NAME}"
    write_json(hoge / long_path, one_ok(), mtime=1_600_000_000)
    sync(hoge)
    write_json(hoge / long_path, one_ok(), mtime=1_600_000_100)
    sync(hoge)
    db = hoge / "sync.sqlite"
    (short,) = set(os.listdir(hoge / "sync_dest/hoge/a/notebooks")) - {LONG_NAME}
    assert rows(db, "SELECT filename, source FROM version_details ORDER BY epoch") == [
        ("hoge/c/x.txt", None),
        (f"hoge/a/notebooks/{short}", long_path),
        (long_path, None),
    ]
    tables = rows(db, "SELECT sql FROM sqlite_master WHERE name IN ('summary', 'problems')")
    assert [sql for (sql,) in tables] == SEED_TABLES


# ---------------------------------------------------------------------------- 9. symlink race

STUDENT_A, STUDENT_B = 12345, 12346


def chown_tree(path, uid):
    for folder, _, files in os.walk(path):
        os.chown(folder, uid, uid)
        for name in files:
            os.chown(os.path.join(folder, name), uid, uid)


def test_a_copied_file_owned_by_a_classmate_is_removed_and_not_recorded(hoge):
    """What the symlink race leaves: b's notebook copied into a's tree. It is owned by b,
    so it is not recorded as a's and its copy is removed; root's handouts are fine."""
    a, b = hoge / "hoge/a/notebooks", hoge / "hoge/b/notebooks"
    write_json(a / "mine.ipynb", one_ok())
    write_json(b / "private.ipynb", one_ok())
    chown_tree(hoge / "hoge/a", STUDENT_A)
    chown_tree(hoge / "hoge/b", STUDENT_B)
    write_json(a / "private.ipynb", one_ok())
    os.chown(a / "private.ipynb", STUDENT_B, STUDENT_B)
    write_json(a / "handout.ipynb", one_ok())  # root's
    result = sync(hoge)
    assert "sync_dest/hoge/a/notebooks/private.ipynb" in result.stderr
    assert [(name, owner) for name, _, owner, *_ in rows(hoge / "sync.sqlite")] == [
        ("hoge/a/notebooks/handout.ipynb", "a"),
        ("hoge/a/notebooks/mine.ipynb", "a"),
        ("hoge/b/notebooks/private.ipynb", "b"),
    ]
    assert not os.path.lexists(hoge / "sync_dest/hoge/a/notebooks/private.ipynb")
    assert os.path.isfile(hoge / "sync_dest/hoge/b/notebooks/private.ipynb")


def test_the_students_account_is_the_owner_of_their_folder_or_of_their_symlink(tmp_path):
    folder = tmp_path / "home/a/course/notebooks"
    folder.mkdir(parents=True)
    assert md.folder_account(str(folder)) is None  # root's: nothing to check against
    os.chown(folder, STUDENT_A, STUDENT_A)
    assert md.folder_account(str(folder)) == STUDENT_A
    # mid-race: a's `course` is a symlink to b's
    (tmp_path / "home/b/course/notebooks").mkdir(parents=True)
    os.chown(tmp_path / "home/b/course/notebooks", STUDENT_B, STUDENT_B)
    os.rename(tmp_path / "home/a/course", tmp_path / "home/a/course.real")
    os.symlink(tmp_path / "home/b/course", tmp_path / "home/a/course")
    os.lchown(tmp_path / "home/a/course", STUDENT_A, STUDENT_A)
    assert md.folder_account(str(folder)) == STUDENT_A
    assert md.folder_account(str(tmp_path / "missing")) is None


# ---------------------------------------------------------------------------- 10. summer time


def test_versions_in_the_repeated_hour_keep_their_order(tmp_path):
    """On 2021-10-31 in Berlin 02:00-03:00 happens twice. A version saved at 02:30 (summer
    time) and the next one at 02:10 (winter time): their epoch orders them as saved."""
    write_users(tmp_path / "users.csv", [("a", "hoge/a")])
    path = tmp_path / "hoge/a/nb.ipynb"
    summer, winter = 1_635_640_200, 1_635_642_600  # 00:30 and 01:10 UTC
    write_json(path, notebook([grade_cell("", "q1")]), mtime=summer)
    sync(tmp_path, env={"TZ": "Europe/Berlin"})
    write_json(path, one_ok(), mtime=winter)
    sync(tmp_path, env={"TZ": "Europe/Berlin"})
    db = tmp_path / "sync.sqlite"
    by_epoch = rows(
        db,
        "SELECT s.t, s.code_ok FROM summary s JOIN version_details d USING (filename)"
        " ORDER BY d.epoch",
    )
    assert by_epoch == [("2021-10-31T02:30:00", 0), ("2021-10-31T02:10:00", 1)]
    assert sorted(by_epoch) != by_epoch  # the local time alone puts them the wrong way round


# ---------------------------------------------------------------------------- anything at all

JSON_LEAVES = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
# Mostly the shapes nbgrader writes, each part of them sometimes anything at all.
OUTPUT_TYPES = st.sampled_from(["error", "stream", "display_data", "execute_result", "pyout"])
OUTPUTS = st.lists(st.fixed_dictionaries({"output_type": OUTPUT_TYPES | JSON_VALUES}), max_size=3)
NBGRADER = st.fixed_dictionaries(
    {"grade_id": st.sampled_from(["q1", "q2"]) | JSON_VALUES, "grade": st.just(True) | JSON_VALUES}
)
CELLS = st.fixed_dictionaries(
    {
        "cell_type": st.sampled_from(["code", "markdown"]) | JSON_VALUES,
        "source": st.text(max_size=8) | st.lists(st.text(max_size=4)) | JSON_VALUES,
        "metadata": st.fixed_dictionaries({"nbgrader": NBGRADER}) | JSON_VALUES,
        "outputs": OUTPUTS | JSON_VALUES,
    }
)
NOTEBOOKS = (
    st.fixed_dictionaries({"cells": st.lists(CELLS | JSON_VALUES, max_size=4)})
    | st.fixed_dictionaries(
        {"worksheets": st.lists(st.fixed_dictionaries({"cells": st.lists(CELLS, max_size=3)}))}
    )
    | JSON_VALUES
)
NAMES = st.sampled_from(
    ["x.ipynb", "y.ipynb", "z.txt", ".~x.ipynb", ".x.ipynb.AbC123", "missing.ipynb", "d/x.ipynb"]
)
ITEMIZE = st.builds(
    lambda update, kind, flags: update + kind + flags,
    st.sampled_from("<>ch.*"),
    st.sampled_from("ffffdLDS"),
    st.text(alphabet="+.cstpogu", min_size=9, max_size=9),
)
LOG_LINES = st.lists(
    st.tuples(ITEMIZE, NAMES).map(lambda item: f"{item[0]}|hoge/a/{item[1]}|")
    | NAMES.map(lambda name: f"hoge/a/{name} is over max-size")
    | st.text(max_size=30).map(lambda text: text.replace("\n", " ")),
    max_size=8,
)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@example(contents=[ODD, ODD], lines=[])
@given(
    contents=st.lists(NOTEBOOKS | st.binary(max_size=40), min_size=2, max_size=2), lines=LOG_LINES
)
def test_random_notebooks_and_log_lines_never_raise_nor_cost_another_files_row(contents, lines):
    with tempfile.TemporaryDirectory() as root:
        dest = os.path.join(root, "dest")
        for name, content in zip(["x.ipynb", "y.ipynb"], contents):
            data = content if isinstance(content, bytes) else json.dumps(content).encode()
            for folder in ("hoge/a", "hoge/a/d"):
                os.makedirs(os.path.join(dest, folder), exist_ok=True)
                with open(os.path.join(dest, folder, name), "wb") as stream:
                    stream.write(data)
        write_json(os.path.join(dest, "hoge/a/good.ipynb"), one_ok())
        write_text(os.path.join(dest, "hoge/a/z.txt"), "z")
        log = os.path.join(root, "sync_2021-10-17T18:26:14.log")
        listed = ["suffix=.bak_2021-10-17T18:26:14", *lines]
        listed += [f">f.st......|hoge/a/{name}|" for name in ("x.ipynb", "y.ipynb", "good.ipynb")]
        write_text(log, "\n".join(listed) + "\n")
        users = [md.User("a", "hoge/a", 2, {})]
        conn = md.connect(os.path.join(root, "db.sqlite"))
        try:
            md.apply_log(conn, log, dest, users, warn=lambda message: None)
            recorded = dict(
                (name, counts)
                for name, *counts in conn.execute(
                    "SELECT filename, code_ok, code_display, code_stream, code_error, code_empty"
                    " FROM summary"
                )
            )
        finally:
            conn.close()
        assert recorded["hoge/a/good.ipynb"] == [1, 0, 0, 0, 0]
        for path in md.parse_log(listed).files:
            if os.path.isfile(os.path.join(dest, path)) and md.is_version(path):
                assert path in recorded


# ---------------------------------------------------------------------------- crash safety


# every table, but the inode in file_key (the clean run is in a copy: other inodes)
EVERY_TABLE = {
    "summary": "SELECT * FROM summary",
    "problems": "SELECT * FROM problems",
    "applied_logs": "SELECT * FROM applied_logs",
    "version_details": "SELECT filename, epoch, mtime, substr(file_key, instr(file_key, ':')),"
    " reason, source FROM version_details",
    "oversize_files": "SELECT source, substr(file_key, instr(file_key, ':')) FROM oversize_files",
}


def every_table(db):
    return {table: sorted(map(repr, rows(db, query))) for table, query in EVERY_TABLE.items()}


def test_side_tables_are_the_same_after_a_kill_and_after_applying_again(hoge):
    """SIGKILL just before the commit, then the log again, then every log once more: the
    side tables, like the seed's, are as after one clean run."""
    write_json(hoge / "hoge/a/notebooks/nb.ipynb", one_ok(), mtime=315_532_800)
    write_json(hoge / "hoge/b/notebooks/odd.ipynb", ODD, mtime=1_600_000_000)
    sources = ["hoge/a/notebooks", "hoge/b/notebooks"]
    rsync_cycle(hoge, sources)
    write_json(hoge / "hoge/a/notebooks/nb.ipynb", ODD, mtime=1_600_000_100)
    big = hoge / "hoge/b/notebooks/big.ipynb"
    write_json(big, notebook([grade_cell("x" * (11 << 20), "q1")]), mtime=1_600_000_000)
    log, _ = rsync_cycle(hoge, sources, apply=False)
    subprocess.run(["cp", "-a", str(hoge), str(hoge) + "-clean"], check=True)
    clean = type(hoge)(str(hoge) + "-clean")
    run_script("make_database.py", "--log", f"sync_logs/{log}", cwd=clean)
    kill_make_database_after("write_applied_log", "--log", f"sync_logs/{log}", cwd=hoge)
    run_script("make_database.py", "--log", f"sync_logs/{log}", cwd=hoge)
    assert every_table(hoge / "sync.sqlite") == every_table(clean / "sync.sqlite")
    assert len(every_table(hoge / "sync.sqlite")["version_details"]) == 4
    for name in logs(hoge):
        run_script("make_database.py", "--log", f"sync_logs/{name}", cwd=hoge)
    assert every_table(hoge / "sync.sqlite") == every_table(clean / "sync.sqlite")
