"""rsync_notebooks.py + make_database.py end to end: real rsync, real folders, real SQLite."""

import glob
import marshal
import os
import re
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import time
import types

import pytest
from conftest import (
    REALDATA,
    ROOT,
    kill_make_database_after,
    rows,
    run_script,
    sync,
    write_json,
    write_text,
    write_users,
)
from demo_course import (
    code_cell,
    display_png,
    error_output,
    execute_result,
    grade_cell,
    notebook,
    png_image,
)

import make_database as md
import rsync_notebooks as rn
from progress_views.data import CatalogCache

T_RE = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d"
NOBODY = 65534


def local(seconds):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(seconds))


def dest_files(root):
    dest = root / "sync_dest"
    return sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())


def nb_with(outcome_cells):
    return notebook(outcome_cells)


# ---------------------------------------------------------------------------- the seed walkthrough


def test_seed_walkthrough(hoge):
    """The seed README, step by step: hello.txt rows with zeros, then a backup for b."""
    for u in "ab":
        write_text(hoge / f"hoge/{u}/notebooks/hello.txt", "hello\n", mtime=1_600_000_000)
    first = sync(hoge)
    assert re.search(rf"^======== {T_RE} ========$", first.stdout, re.M)
    assert "hoge/c/notebooks" in first.stdout  # the missing folders are named
    assert rows(hoge / "sync.sqlite") == [
        ("hoge/a/notebooks/hello.txt", local(1_600_000_000), "a", 0, 0, 0, 0, 0),
        ("hoge/b/notebooks/hello.txt", local(1_600_000_000), "b", 0, 0, 0, 0, 0),
    ]
    (log,) = os.listdir(hoge / "sync_logs")
    t = re.fullmatch(rf"sync_({T_RE})\.log", log).group(1)
    assert (hoge / "sync_logs" / log).read_text().splitlines() == [
        f"suffix=.bak_{t}",
        "cd+++++++++|hoge/|",
        "cd+++++++++|hoge/a/|",
        "cd+++++++++|hoge/a/notebooks/|",
        ">f+++++++++|hoge/a/notebooks/hello.txt|",
        "cd+++++++++|hoge/b/|",
        "cd+++++++++|hoge/b/notebooks/|",
        ">f+++++++++|hoge/b/notebooks/hello.txt|",
    ]

    for u in "bcde":
        write_text(hoge / f"hoge/{u}/notebooks/hello.txt", "bye\n", mtime=1_600_000_100)
    sync(hoge)
    second_log = max(os.listdir(hoge / "sync_logs"))
    t2 = second_log[len("sync_") : -len(".log")]
    assert dest_files(hoge) == [
        "hoge/a/notebooks/hello.txt",
        f"hoge/b/notebooks/hello.bak_{t2}.txt",
        "hoge/b/notebooks/hello.txt",
        "hoge/c/notebooks/hello.txt",
        "hoge/d/notebooks/hello.txt",
        "hoge/e/notebooks/hello.txt",
    ]
    assert (hoge / f"sync_dest/hoge/b/notebooks/hello.bak_{t2}.txt").read_text() == "hello\n"
    assert (hoge / "sync_dest/hoge/b/notebooks/hello.txt").read_text() == "bye\n"
    assert rows(hoge / "sync.sqlite", "SELECT filename, t, owner FROM summary ORDER BY 1") == [
        ("hoge/a/notebooks/hello.txt", local(1_600_000_000), "a"),
        (f"hoge/b/notebooks/hello.bak_{t2}.txt", local(1_600_000_000), "b"),
        ("hoge/b/notebooks/hello.txt", local(1_600_000_100), "b"),
        ("hoge/c/notebooks/hello.txt", local(1_600_000_100), "c"),
        ("hoge/d/notebooks/hello.txt", local(1_600_000_100), "d"),
        ("hoge/e/notebooks/hello.txt", local(1_600_000_100), "e"),
    ]


def test_schema_is_the_seeds(hoge):
    write_text(hoge / "hoge/a/notebooks/hello.txt", "hello\n")
    sync(hoge)
    schema = subprocess.run(
        ["sqlite3", hoge / "sync.sqlite", ".schema"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert schema[:2] == [
        "CREATE TABLE summary(filename unique, t, owner, code_ok, code_display, code_stream, "
        "code_error, code_empty);",
        "CREATE TABLE problems(filename, grade_id, result);",
    ]
    assert rows(hoge / "sync.sqlite", "PRAGMA journal_mode") == [("wal",)]


def test_notebook_versions_are_counted_and_backups_open_as_notebooks(hoge):
    nb_path = hoge / "hoge/a/notebooks/pl01.ipynb"
    write_json(
        nb_path, notebook([grade_cell("1/0", "q1", [error_output("E", "e")])]), 1_600_000_000
    )
    sync(hoge)
    write_json(nb_path, notebook([grade_cell("1", "q1", [execute_result("1")])]), 1_600_000_060)
    sync(hoge)
    t2 = max(os.listdir(hoge / "sync_logs"))[len("sync_") : -len(".log")]
    backup = f"hoge/a/notebooks/pl01.bak_{t2}.ipynb"
    assert rows(hoge / "sync.sqlite") == [
        (backup, local(1_600_000_000), "a", 0, 0, 0, 1, 0),
        ("hoge/a/notebooks/pl01.ipynb", local(1_600_000_060), "a", 1, 0, 0, 0, 0),
    ]
    assert rows(hoge / "sync.sqlite", "SELECT * FROM problems ORDER BY filename") == [
        (backup, "q1", "error"),
        ("hoge/a/notebooks/pl01.ipynb", "q1", "execute_result"),
    ]


# ---------------------------------------------------------------------------- every version kept


def test_every_version_is_kept_even_two_cycles_within_one_second(hoge):
    """Three cycles with no sleep: three distinct T, three versions of the file."""
    nb = hoge / "hoge/a/notebooks/x.txt"
    for i in range(3):
        write_text(nb, f"version {i}\n", mtime=1_600_000_000 + i)
        sync(hoge)
    logs = sorted(os.listdir(hoge / "sync_logs"))
    assert len(logs) == 3 and len(set(logs)) == 3
    contents = sorted((hoge / "sync_dest" / f).read_text() for f in dest_files(hoge))
    assert contents == ["version 0\n", "version 1\n", "version 2\n"]
    assert len(rows(hoge / "sync.sqlite")) == 3


def test_repeat_runs_distinct_cycles_without_overwriting_an_existing_log(hoge):
    """A log already there for the would-be T is never overwritten."""
    write_text(hoge / "hoge/a/notebooks/x.txt", "x\n")
    (hoge / "sync_logs").mkdir()
    now = int(time.time())
    planted = [hoge / "sync_logs" / f"sync_{local(now + i)}.log" for i in range(3)]
    for path in planted:
        path.write_text("suffix=.bak_planted\n")
    result = run_script(
        "rsync_notebooks.py", "--no-sudo", "--repeat", 2, "--min-sleep", 0, cwd=hoge
    )
    assert all(p.read_text() == "suffix=.bak_planted\n" for p in planted)
    cycles = re.findall(rf"^======== ({T_RE}) ========$", result.stdout, re.M)
    assert len(cycles) == 2 and len(set(cycles)) == 2
    assert not {f"sync_{t}.log" for t in cycles} & {p.name for p in planted}
    assert "sleep" not in result.stdout.splitlines()[-1]  # no sleep after the last cycle


def test_next_timestamp_is_later_than_previous_and_free():
    assert rn.next_timestamp(100.5, None, "/nonexistent") == 100
    assert rn.next_timestamp(100.5, 100, "/nonexistent") == 101
    assert rn.next_timestamp(90, 100, "/nonexistent") == 101


def test_sleep_is_took_over_overhead_but_at_least_min_sleep():
    assert rn.sleep_seconds(1.0, 0.05, 300) == 300
    assert rn.sleep_seconds(30.0, 0.05, 300) == pytest.approx(600)


# ---------------------------------------------------------------------------- hostile input


STRANGE_NAMES = [
    "with space.ipynb",
    "quote'and\"double.ipynb",
    "pipe|name.ipynb",
    "new\nline.ipynb",
    "日本語ノート.ipynb",
    "back\\#012slash.txt",
]


@pytest.mark.parametrize("locale", ["C.UTF-8", "C"])
def test_strange_file_names_are_copied_and_recorded(hoge, locale):
    folder = hoge / "hoge/a/notebooks"
    for name in STRANGE_NAMES:
        write_json(folder / name, notebook([grade_cell("1", "q", [execute_result("1")])]))
    sync(hoge, env={"LC_ALL": locale, "LANG": locale})
    for name in STRANGE_NAMES:
        write_json(folder / name, notebook([grade_cell("", "q")]), mtime=time.time() + 5)
    sync(hoge, env={"LC_ALL": locale, "LANG": locale})
    recorded = rows(
        hoge / "sync.sqlite", "SELECT filename, owner, code_ok, code_empty FROM summary"
    )
    for name in STRANGE_NAMES:
        stem, ext = os.path.splitext(name)
        current = [r for r in recorded if r[0] == f"hoge/a/notebooks/{name}"]
        backups = [
            r
            for r in recorded
            if re.fullmatch(
                re.escape(f"hoge/a/notebooks/{stem}.bak_") + T_RE + re.escape(ext), r[0]
            )
        ]
        if name.endswith(".ipynb"):
            assert current == [(f"hoge/a/notebooks/{name}", "a", 0, 1)], name
            assert [r[1:] for r in backups] == [("a", 1, 0)], name
        else:
            assert len(current) == 1 and len(backups) == 1, name
        assert (hoge / "sync_dest" / backups[0][0]).is_file()


def test_folder_named_like_a_command_substitution_runs_nothing(tmp_path):
    evil = "hoge/$(touch PWNED)/`touch PWNED2`;touch PWNED3"
    write_users(tmp_path / "users.csv", [("x", evil)])
    write_text(tmp_path / evil / "hello.txt", "hi\n")
    sync(tmp_path)
    assert not list(tmp_path.rglob("PWNED*"))
    assert rows(tmp_path / "sync.sqlite", "SELECT filename, owner FROM summary") == [
        (f"{evil}/hello.txt", "x")
    ]


def test_option_and_remote_rows_are_refused_and_others_run(tmp_path):
    """A row `--remove-source-files` deletes nothing; the good row still runs."""
    (tmp_path / "users.csv").write_text(
        "uid,notebooks\nevil,--remove-source-files\nremote,host:path\nempty,\ngood,hoge/g\n"
    )
    write_text(tmp_path / "hoge/g/hello.txt", "hi\n")
    result = sync(tmp_path)
    assert (tmp_path / "hoge/g/hello.txt").read_text() == "hi\n"  # still there
    assert "users.csv:2" in result.stderr and "users.csv:3" in result.stderr
    assert "users.csv:4" in result.stderr
    assert rows(tmp_path / "sync.sqlite", "SELECT filename, owner FROM summary") == [
        ("hoge/g/hello.txt", "good")
    ]


def test_student_owned_symlink_to_a_classmate_copies_nothing_of_theirs(tmp_path):
    write_users(tmp_path / "users.csv", [("a", "home/a/notebooks"), ("b", "home/b/notebooks")])
    write_text(tmp_path / "home/b/notebooks/secret.ipynb", "{}")
    (tmp_path / "home/a").mkdir(parents=True)
    os.symlink(tmp_path / "home/b/notebooks", tmp_path / "home/a/notebooks")
    os.lchown(tmp_path / "home/a/notebooks", NOBODY, NOBODY)
    result = sync(tmp_path)
    assert "refused home/a/notebooks" in result.stderr
    assert dest_files(tmp_path) == ["home/b/notebooks/secret.ipynb"]
    assert [r[2] for r in rows(tmp_path / "sync.sqlite")] == ["b"]


def test_root_owned_symlink_on_the_way_is_fine(tmp_path):
    write_users(tmp_path / "users.csv", [("a", "home/a/notebooks")])
    write_text(tmp_path / "data/home/a/notebooks/x.txt", "x")
    os.symlink(tmp_path / "data/home", tmp_path / "home")
    sync(tmp_path)
    assert [r[:1] + r[2:3] for r in rows(tmp_path / "sync.sqlite")] == [
        ("home/a/notebooks/x.txt", "a")
    ]


def test_fifo_big_file_and_outside_symlink_do_not_stop_the_others(hoge):
    folder = hoge / "hoge/a/notebooks"
    write_text(folder / "ok.txt", "ok")
    os.mkfifo(folder / "fifo")
    with open(folder / "big.bin", "wb") as stream:
        stream.truncate(11 * 1024 * 1024)
    os.symlink("/etc/passwd", folder / "passwd")
    write_text(hoge / "hoge/b/notebooks/ok.txt", "ok")
    sync(hoge)
    assert dest_files(hoge) == ["hoge/a/notebooks/ok.txt", "hoge/b/notebooks/ok.txt"]
    assert not os.path.lexists(hoge / "sync_dest/hoge/a/notebooks/passwd")
    assert not os.path.exists(hoge / "sync_dest/hoge/a/notebooks/fifo")


def test_checkpoints_are_copied_but_not_recorded(hoge):
    write_text(hoge / "hoge/a/notebooks/.ipynb_checkpoints/x-checkpoint.ipynb", "{}")
    write_text(hoge / "hoge/a/notebooks/x.ipynb", "{}")
    sync(hoge)
    assert "hoge/a/notebooks/.ipynb_checkpoints/x-checkpoint.ipynb" in dest_files(hoge)
    assert [r[0] for r in rows(hoge / "sync.sqlite")] == ["hoge/a/notebooks/x.ipynb"]


@pytest.mark.parametrize(
    "content",
    [b"", b"{not json", b"\xff\xfe\x00garbage", b"[" * 5000 + b"]" * 5000, b'{"cells": 3}'],
    ids=["empty", "corrupt", "binary", "deep", "bad-shape"],
)
def test_unreadable_notebook_gets_a_row_with_null_counts_and_a_warning(hoge, content):
    folder = hoge / "hoge/a/notebooks"
    (folder).mkdir(parents=True)
    (folder / "bad.ipynb").write_bytes(content)
    write_json(folder / "good.ipynb", notebook([grade_cell("1", "q", [execute_result("1")])]))
    result = sync(hoge)
    assert "hoge/a/notebooks/bad.ipynb" in result.stderr and "warning" in result.stderr
    assert [r[:1] + r[3:] for r in rows(hoge / "sync.sqlite")] == [
        ("hoge/a/notebooks/bad.ipynb", None, None, None, None, None),
        ("hoge/a/notebooks/good.ipynb", 1, 0, 0, 0, 0),
    ]


def test_real_nbgrader_course_is_recorded(tmp_path):
    """The nbgrader user guide's submitted notebooks, synced as two students' folders."""
    base = os.path.join(os.path.dirname(ROOT), "shared/realdata/executed/docs/source/user_guide")
    if not os.path.isdir(base):
        pytest.skip("shared/realdata is not beside the project")
    write_users(tmp_path / "users.csv", [(s, f"submitted/{s}") for s in ("bitdiddle", "hacker")])
    subprocess.run(["cp", "-r", f"{base}/submitted", str(tmp_path)], check=True)
    sync(tmp_path)
    recorded = rows(tmp_path / "sync.sqlite", "SELECT filename, owner FROM summary ORDER BY 1")
    assert recorded == [
        ("submitted/bitdiddle/ps1/problem1.ipynb", "bitdiddle"),
        ("submitted/bitdiddle/ps1/problem2.ipynb", "bitdiddle"),
        ("submitted/hacker/ps1/problem1.ipynb", "hacker"),
        ("submitted/hacker/ps1/problem2.ipynb", "hacker"),
    ]
    for filename, _ in recorded:
        expected = md.parse_notebook(os.path.join(tmp_path, filename))
        got = rows(
            tmp_path / "sync.sqlite",
            "SELECT grade_id, result FROM problems WHERE filename = ? ORDER BY rowid",
            (filename,),
        )
        assert got == expected[1]


PLOTS = 100  # more than 3 chunks of Parsing.CHUNK, without ../shared/realdata too


def write_big_cycle(root):
    """A cycle of many notebooks, several megabytes in all (so make_database parses them in
    worker processes): the real nbgrader notebooks, plotted answers of every outcome, a
    corrupt one and a non-notebook. [(relative path under root, kind)]."""
    written = []
    for i, path in enumerate(glob.glob(os.path.join(REALDATA, "**", "*.ipynb"), recursive=True)):
        target = root / f"class/a/real/{i:03d}_{os.path.basename(path)}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        written.append(target)
    outputs = [
        [display_png(png_image(200, 150, seed=0))],
        [execute_result("1")],
        [error_output("NameError", "x")],
        [],
    ]
    for i in range(PLOTS):
        cells = [grade_cell(f"x = {i}", f"q{j}", outputs[(i + j) % 4]) for j in range(3)]
        write_json(root / f"class/b/plots/p{i:02d}.ipynb", notebook(cells))
    write_text(root / "class/b/plots/broken.ipynb", '{"cells": [')
    write_text(root / "class/b/plots/notes.txt", "x")
    write_users(root / "users.csv", [("a", "class/a"), ("b", "class/b")])


def test_a_big_cycle_parsed_in_workers_records_what_each_notebook_holds(tmp_path):
    """The database of a multi-megabyte cycle equals each copy parsed on its own."""
    write_big_cycle(tmp_path)
    result = sync(tmp_path)
    assert "broken.ipynb: not a readable notebook" in result.stderr
    dest = tmp_path / "sync_dest"
    recorded = rows(
        tmp_path / "sync.sqlite",
        "SELECT filename, owner, code_ok, code_display,"
        " code_stream, code_error, code_empty FROM summary ORDER BY filename",
    )
    assert len(recorded) == PLOTS + 2 + len(glob.glob(str(tmp_path / "class/a/real/*")))
    assert sum(os.path.getsize(dest / name) for name, *_ in recorded) > md.Parsing.MIN_BYTES
    for filename, owner, *counts in recorded:
        assert owner == filename.split("/")[1]
        problems = rows(
            tmp_path / "sync.sqlite",
            "SELECT grade_id, result FROM problems WHERE filename = ? ORDER BY rowid",
            (filename,),
        )
        if not filename.endswith(".ipynb"):
            assert (counts, problems) == ([0] * 5, [])
            continue
        try:
            expected = md.parse_notebook(dest / filename)
        except md.NotANotebook:
            assert (counts, problems) == ([None] * 5, []), filename
            continue
        assert (tuple(counts), problems) == expected, filename


def test_a_parse_worker_that_dies_costs_nothing(tmp_path, monkeypatch):
    """A worker that dies before sending its results (the OOM killer, say) leaves its
    share to be parsed at home. Here every worker dies for sure: sending fails in it."""
    write_big_cycle(tmp_path)
    names = sorted(
        os.path.relpath(path, tmp_path) for path in glob.glob(str(tmp_path / "class/*/*/*.ipynb"))
    )
    serial = {name: md.parse_each([tmp_path / name])[0] for name in names}

    def die(value):
        os.kill(os.getpid(), signal.SIGKILL)

    monkeypatch.setattr(md, "marshal", types.SimpleNamespace(dumps=die, loads=marshal.loads))
    parsing = md.Parsing(str(tmp_path), names, cores=3)
    try:
        assert len(parsing.workers) == 3
        assert {name: parsing.result(name) for name in names} == serial
        assert all(worker.failed for worker in parsing.workers)
    finally:
        parsing.close()


# ---------------------------------------------------------------------------- users.csv


def test_spreadsheet_csv_with_bom_and_crlf_works(tmp_path):
    (tmp_path / "users.csv").write_bytes(
        b"\xef\xbb\xbfuid,notebooks,real_name\r\na,hoge/a,Alice\r\n"
    )
    write_text(tmp_path / "hoge/a/x.txt", "x")
    sync(tmp_path)
    assert [r[2] for r in rows(tmp_path / "sync.sqlite")] == ["a"]


@pytest.mark.parametrize(
    "content", [None, "uid,folder\na,hoge/a\n", ""], ids=["absent", "no-notebooks", "empty"]
)
def test_unusable_users_csv_exits_2_naming_it_and_creates_nothing(tmp_path, content):
    if content is not None:
        (tmp_path / "users.csv").write_text(content)
    result = sync(tmp_path, check=False)
    assert result.returncode == 2
    assert "users.csv" in result.stderr
    assert sorted(os.listdir(tmp_path)) == ([] if content is None else ["users.csv"])


# ---------------------------------------------------------------------------- one instance, privacy


def test_second_instance_refuses_to_start(hoge):
    write_text(hoge / "hoge/a/notebooks/x.txt", "x")
    first = subprocess.Popen(
        [
            sys.executable,
            os.path.join(ROOT, "rsync_notebooks.py"),
            "--no-sudo",
            "--min-sleep",
            "60",
        ],
        cwd=hoge,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 20
        while not (hoge / "sync.sqlite").exists() and time.time() < deadline:
            time.sleep(0.1)
        second = sync(hoge, check=False)
        assert second.returncode == 1
        assert "another rsync_notebooks.py" in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        out, _ = first.communicate(timeout=20)
    assert first.returncode == 0  # SIGTERM during the sleep is a clean stop
    assert "stopped" in out


def test_sigterm_during_a_cycle_finishes_applying_the_log(hoge):
    """The loop stops between steps: the cycle under way is recorded whole."""
    for i in range(300):
        write_json(
            hoge / f"hoge/a/notebooks/n{i}.ipynb",
            notebook([grade_cell("1", "q", [execute_result("1")])]),
        )
    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "rsync_notebooks.py"), "--no-sudo"],
        cwd=hoge,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 20
    while not (hoge / "sync_logs").exists() and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert "stopped" in out
    assert len(rows(hoge / "sync.sqlite")) == 300


def start_loop(root, *args, env=None):
    return subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "rsync_notebooks.py"), "--no-sudo", *map(str, args)],
        cwd=root,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_until(proc, text):
    """The loop's output up to the first line containing `text`."""
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if text in line:
            return "".join(lines)
    raise AssertionError(f"the loop ended before printing {text!r}:\n{''.join(lines)}")


SUDO_NOBODY = {"SUDO_UID": str(NOBODY), "SUDO_GID": str(NOBODY), "SUDO_USER": "nobody"}


@pytest.mark.parametrize("env", [{}, SUDO_NOBODY], ids=["instructor", "root-through-sudo"])
def test_while_the_loop_runs_cycles_commit_to_the_wal_and_its_end_leaves_one_file(hoge, env):
    """A cycle ends with its commit (the viewer sees it at once); when the loop ends, the
    database is one self-contained file again. The WAL belongs to the instructor."""
    db, viewer = str(hoge / "sync.sqlite"), CatalogCache()
    write_json(hoge / "hoge/a/notebooks/one.ipynb", notebook([grade_cell("", "q")]))
    loop = start_loop(hoge, "--repeat", 3, "--min-sleep", 2, env=env)
    try:
        read_until(loop, "took")
        assert viewer.get(db).sources == ["hoge/a/notebooks/one.ipynb"]
        write_json(hoge / "hoge/b/notebooks/two.ipynb", notebook([grade_cell("", "q")]))
        read_until(loop, "took")
        # cycle 2 is committed, its pages still in the WAL, which only the instructor reads
        wal = hoge / "sync.sqlite-wal"
        assert wal.stat().st_size > 0
        for path in (wal, hoge / "sync.sqlite-shm"):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert path.stat().st_uid == (NOBODY if env else os.geteuid())
        assert sorted(viewer.get(db).sources) == [
            "hoge/a/notebooks/one.ipynb",
            "hoge/b/notebooks/two.ipynb",
        ]
    finally:
        out, err = loop.communicate(timeout=60)
    assert loop.returncode == 0, out + err
    assert not wal.exists() or wal.stat().st_size == 0
    conn = sqlite3.connect(f"file:{hoge / 'sync.sqlite'}?mode=ro&immutable=1", uri=True)
    assert len(conn.execute("SELECT * FROM summary").fetchall()) == 2  # without the WAL


def test_a_student_added_to_users_csv_is_copied_from_the_next_cycle(hoge):
    write_text(hoge / "hoge/a/notebooks/one.txt", "1")
    loop = start_loop(hoge, "--repeat", 2, "--min-sleep", 1)
    try:
        read_until(loop, "took")
        with open(hoge / "users.csv", "a") as stream:
            stream.write("f,hoge/f/notebooks\n")
        write_text(hoge / "hoge/f/notebooks/late.txt", "2")
        assert "users.csv changed: 6 users" in read_until(loop, "took")
    finally:
        loop.communicate(timeout=60)
    assert [(name, owner) for name, _, owner, *_ in rows(hoge / "sync.sqlite")] == [
        ("hoge/a/notebooks/one.txt", "a"),
        ("hoge/f/notebooks/late.txt", "f"),
    ]


def test_logs_that_failed_to_apply_are_recorded_once_they_can_be(hoge):
    """users.csv saved half-edited for three cycles: the loop copies the users it had,
    make_database.py refuses the file (tried once for the waiting logs, not once per log);
    once the file is fixed, the next cycle records every log."""
    write_text(hoge / "hoge/a/notebooks/one.txt", "0", 1_600_000_000)
    loop = start_loop(hoge, "--repeat", 5, "--min-sleep", 1)
    try:
        read_until(loop, "took")
        good = (hoge / "users.csv").read_text()
        (hoge / "users.csv").write_text("uid,folder\na,hoge/a/notebooks\n")
        for cycle in (1, 2, 3):
            write_text(hoge / "hoge/a/notebooks/one.txt", str(cycle), 1_600_000_000 + cycle)
            output = read_until(loop, "took")
            assert output.count("is not applied yet") == (0 if cycle == 1 else 1)
            assert ("copying the 5 users it had before" in output) == (cycle == 1)
        (hoge / "users.csv").write_text(good)
        assert read_until(loop, "took").count("is not applied yet") == 3
    finally:
        out, err = loop.communicate(timeout=60)
    assert loop.returncode == 1  # cycles failed
    assert "make_database.py failed with exit code 2" in err
    logs = sorted(os.listdir(hoge / "sync_logs"))
    previous = [f"hoge/a/notebooks/one.bak_{log[len('sync_') : -len('.log')]}.txt" for log in logs]
    assert rows(hoge / "sync.sqlite", "SELECT filename, t FROM summary ORDER BY t") == [
        *((previous[i + 1], rn.format_t(1_600_000_000 + i)) for i in range(3)),
        ("hoge/a/notebooks/one.txt", rn.format_t(1_600_000_003)),
    ]


def running(pid):
    try:
        with open(f"/proc/{pid}/stat") as stream:
            return stream.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_killed_loop_leaves_nothing_running_and_a_new_one_can_start(hoge):
    """kill -9 of the loop: its database keeper follows it, the lock is free again."""
    write_text(hoge / "hoge/a/notebooks/one.txt", "1")
    loop = start_loop(hoge, "--min-sleep", 60)
    read_until(loop, "took")
    children = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(loop.pid)], capture_output=True, text=True
    ).stdout.split()
    assert len(children) == 1  # the keeper
    loop.kill()
    loop.communicate(timeout=20)
    deadline = time.time() + 20
    while running(children[0]) and time.time() < deadline:
        time.sleep(0.05)
    assert not running(children[0])
    assert "took" in sync(hoge).stdout
    assert len(rows(hoge / "sync.sqlite")) == 1


def test_destination_logs_and_database_are_private(hoge):
    """Another account cannot read the copies, the logs or the database."""
    write_text(hoge / "hoge/a/notebooks/x.txt", "secret")
    os.chmod(hoge, 0o755)
    sync(hoge)
    log = next((hoge / "sync_logs").iterdir())
    for path in (hoge / "sync_dest", hoge / "sync_logs"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
    for path in (hoge / "sync.sqlite", log):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for path in (hoge / "sync_dest/hoge/a/notebooks/x.txt", log, hoge / "sync.sqlite"):
        attempt = subprocess.run(
            ["runuser", "-u", "nobody", "--", "cat", str(path)], capture_output=True
        )
        assert attempt.returncode != 0 and b"secret" not in attempt.stdout, path
    # the copies themselves are readable (the seed's chmod -R +rX) by whoever reaches them
    assert stat.S_IMODE((hoge / "sync_dest/hoge/a/notebooks/x.txt").stat().st_mode) & 0o444 == 0o444


def test_run_through_sudo_gives_everything_to_the_instructor(hoge):
    """Started as root through sudo: dest, logs and database belong to SUDO_UID."""
    write_text(hoge / "hoge/a/notebooks/x.txt", "x")
    sync(hoge, env=SUDO_NOBODY)
    for name in ("sync_dest", "sync_logs", "sync.sqlite", "sync_dest.lock"):
        assert (hoge / name).stat().st_uid == NOBODY, name
    assert next((hoge / "sync_logs").iterdir()).stat().st_uid == NOBODY


def test_rsync_command_is_an_argument_list_with_sudo_first():
    command = rn.rsync_command(["a b", "$(x)"], "dest", ".bak_T", sudo=True)
    assert command[:4] == ["sudo", "-n", "--", "rsync"]
    assert command[-4:] == ["--", "a b", "$(x)", "dest/"]
    assert "--suffix=.bak_T" in command and "--out-format=%i|%n|" in command


def test_rsync_failure_is_reported_and_the_loop_goes_on(hoge):
    """A cycle whose rsync fails (an rsync on PATH that exits 12) exits 1 after all cycles."""
    write_text(hoge / "hoge/a/notebooks/x.txt", "x")
    (hoge / "bin").mkdir()
    fake = hoge / "bin" / "rsync"
    fake.write_text("#!/bin/sh\necho 'rsync: simulated failure' >&2\nexit 12\n")
    fake.chmod(0o755)
    result = run_script(
        "rsync_notebooks.py",
        "--no-sudo",
        "--repeat",
        2,
        "--min-sleep",
        0,
        cwd=hoge,
        check=False,
        env={"PATH": f"{hoge / 'bin'}:{os.environ['PATH']}"},
    )
    assert result.returncode == 1
    assert result.stdout.count("========") == 4  # both cycles ran
    assert "rsync failed with exit code 12" in result.stderr


# ---------------------------------------------------------------------------- crash safety


def populate_two_cycles(root):
    """Two cycles over two students' notebooks; the second makes backups."""
    write_users(root / "users.csv", [("a", "hoge/a"), ("b", "hoge/b")])
    for i, u in enumerate("ab"):
        write_json(root / f"hoge/{u}/nb.ipynb", notebook([grade_cell("", "q")]), 1_600_000_000 + i)
        write_text(root / f"hoge/{u}/notes.txt", "x", 1_600_000_000)
    sync(root)
    for i, u in enumerate("ab"):
        write_json(
            root / f"hoge/{u}/nb.ipynb",
            notebook([grade_cell("1", "q", [execute_result("1")])]),
            1_600_000_100 + i,
        )
    return root


def db_state(db):
    return (
        rows(db),
        rows(db, "SELECT * FROM problems ORDER BY filename, rowid"),
        rows(db, "SELECT * FROM applied_logs ORDER BY log"),
    )


KILL_POINTS = {
    "after-rename": "rename_backups",
    "before-commit": "write_applied_log",
    "after-commit": "restrict_to_instructor",
}


@pytest.mark.parametrize("point", KILL_POINTS)
def test_make_database_killed_mid_apply_then_rerun_equals_a_clean_run(tmp_path, point):
    """SIGKILL at each step of applying a log, then the same log again: as if never killed."""
    clean, crashed = tmp_path / "clean", tmp_path / "crashed"
    clean.mkdir()
    populate_two_cycles(clean)
    subprocess.run(["cp", "-a", str(clean), str(crashed)], check=True)
    # the same second rsync run in both, then make_database applies it differently
    sync(clean)
    log = max(os.listdir(clean / "sync_logs"))
    suffix = (clean / "sync_logs" / log).read_text().splitlines()[0][len("suffix=") :]
    rsync = rn.rsync_command(["hoge/a", "hoge/b"], "sync_dest", suffix, sudo=False)
    with open(crashed / "sync_logs" / log, "x") as stream:
        stream.write(f"suffix={suffix}\n")
        stream.flush()
        subprocess.run(rsync, cwd=crashed, stdout=stream, check=True)
    args = [
        "--users-csv",
        "users.csv",
        "--log",
        f"sync_logs/{log}",
        "--dest",
        "sync_dest",
        "--db",
        "sync.sqlite",
    ]
    kill_make_database_after(KILL_POINTS[point], *args, cwd=crashed)
    run_script("make_database.py", *args, cwd=crashed)
    assert db_state(crashed / "sync.sqlite") == db_state(clean / "sync.sqlite")
    assert dest_files(crashed) == dest_files(clean)


def test_applying_a_log_twice_changes_nothing(tmp_path):
    root = populate_two_cycles(tmp_path)
    sync(root)
    before = db_state(root / "sync.sqlite")
    for log in sorted(os.listdir(root / "sync_logs")):
        run_script("make_database.py", "--log", f"sync_logs/{log}", cwd=root)
    assert db_state(root / "sync.sqlite") == before


def test_replay_on_a_fresh_database_equals_the_incremental_one(tmp_path):
    root = populate_two_cycles(tmp_path)
    sync(root)
    result = run_script(
        "rsync_notebooks.py", "--no-sudo", "--replay-log", "--db", "replayed.sqlite", cwd=root
    )
    assert [line.split(":")[0] for line in result.stdout.splitlines()][:2] == ["1 of 2", "2 of 2"]
    assert db_state(root / "replayed.sqlite") == db_state(root / "sync.sqlite")
    assert len(rows(root / "sync.sqlite")) == 6


def test_every_version_keeps_its_problems_when_a_save_changes_no_outcome(tmp_path):
    """An autosave that changes only ungraded text, then a save with a new answer: each
    of the three versions has its own problems rows, and a replay gives the same."""
    write_users(tmp_path / "users.csv", [("a", "hoge/a")])
    path = tmp_path / "hoge/a/nb.ipynb"

    def save(note, answer, mtime):
        q2 = grade_cell(answer, "q2", [execute_result(answer)] if answer else [])
        cells = [code_cell(note), grade_cell("1/0", "q1", [error_output("ZeroDivisionError", "")])]
        write_json(path, notebook([*cells, q2]), mtime)
        sync(tmp_path)

    save("# notes", "", 1_600_000_000)
    save("# notes, more of them", "", 1_600_000_100)
    save("# notes, more of them", "42", 1_600_000_200)
    db = tmp_path / "sync.sqlite"
    names = [name for name, *_ in rows(db, "SELECT filename FROM summary ORDER BY t")]
    assert len(names) == 3 and names[-1] == "hoge/a/nb.ipynb"
    before = [("q1", "error"), ("q2", "empty")]
    expected = [before, before, [("q1", "error"), ("q2", "execute_result")]]
    for name, problems in zip(names, expected):
        query = "SELECT grade_id, result FROM problems WHERE filename = ? ORDER BY rowid"
        assert rows(db, query, (name,)) == problems, name
    assert rows(db, "SELECT count(*) FROM problems") == [(6,)]
    run_script("rsync_notebooks.py", "--no-sudo", "--replay-log", "--db", "re.sqlite", cwd=tmp_path)
    assert db_state(tmp_path / "re.sqlite")[:2] == db_state(db)[:2]


def test_a_log_left_by_a_loop_killed_before_make_database_is_applied_at_the_next_start(hoge):
    """kill -9 between rsync and make_database.py: the next loop records that log's
    versions (the previous one renamed) before its first cycle."""
    nb = hoge / "hoge/a/notebooks/nb.ipynb"
    write_json(nb, notebook([grade_cell("", "q")]), 1_600_000_000)
    sync(hoge)
    write_json(nb, notebook([grade_cell("1", "q", [execute_result("1")])]), 1_600_000_100)
    # what the killed loop did: its rsync and its log, no make_database.py
    t = rn.next_timestamp(time.time(), None, str(hoge / "sync_logs"))
    suffix, log = f".bak_{rn.format_t(t)}", rn.log_path(str(hoge / "sync_logs"), t)
    with rn.start_log(log, suffix) as stream:
        command = rn.rsync_command(["hoge/a/notebooks"], "sync_dest", suffix, sudo=False)
        subprocess.run(command, cwd=hoge, stdout=stream, check=True)
    result = sync(hoge)
    assert f"{os.path.relpath(log, hoge)} is not applied yet" in result.stdout
    previous = f"hoge/a/notebooks/nb{suffix}.ipynb"
    assert os.path.isfile(hoge / "sync_dest" / previous)
    assert rows(hoge / "sync.sqlite", "SELECT filename, t FROM summary ORDER BY t") == [
        (previous, rn.format_t(1_600_000_000)),
        ("hoge/a/notebooks/nb.ipynb", rn.format_t(1_600_000_100)),
    ]
    # started again, nothing is left to catch up
    assert "not applied" not in sync(hoge).stdout
    # a new database is not filled from old logs behind the instructor's back
    result = sync(hoge, "--db", "new.sqlite")
    assert "not applied" not in result.stdout
    assert rows(hoge / "new.sqlite") == []


def test_dry_run_writes_nothing(tmp_path):
    root = populate_two_cycles(tmp_path)
    sync(root)
    log = max(os.listdir(root / "sync_logs"))
    result = run_script(
        "make_database.py", "--dry-run", "--log", f"sync_logs/{log}", "--db", "dry.sqlite", cwd=root
    )
    assert "current version\thoge/a/nb.ipynb\ta" in result.stdout
    assert not (root / "dry.sqlite").exists()


def test_viewer_can_read_while_a_log_is_applied(tmp_path):
    """WAL: a reader holding a read transaction does not block the writer."""
    root = populate_two_cycles(tmp_path)
    reader = sqlite3.connect(root / "sync.sqlite")
    reader.execute("BEGIN")
    assert len(reader.execute("SELECT * FROM summary").fetchall()) == 4
    sync(root)
    reader.execute("COMMIT")
    assert len(reader.execute("SELECT * FROM summary").fetchall()) == 6
    reader.close()


def test_ctrl_c_while_make_database_applies_a_log_does_not_stop_it(tmp_path):
    """SIGINT and SIGTERM in the middle of writing: the log is still applied whole."""
    root = populate_two_cycles(tmp_path)
    sync(root)
    expected = db_state(root / "sync.sqlite")
    os.remove(root / "sync.sqlite")
    interrupter = (
        "import os, signal, sys; sys.path.insert(0, sys.argv[1]); import make_database as md\n"
        "original = md.write_summary\n"
        "def wrapped(*a, **k):\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    return original(*a, **k)\n"
        "md.write_summary = wrapped\n"
        "sys.exit(md.main(sys.argv[2:]))\n"
    )
    for log in sorted(os.listdir(root / "sync_logs")):
        done = subprocess.run(
            [sys.executable, "-c", interrupter, ROOT, "--log", f"sync_logs/{log}"], cwd=root
        )
        assert done.returncode == 0
    assert db_state(root / "sync.sqlite") == expected


def test_absolute_notebooks_folders_keep_their_path_under_dest(tmp_path):
    """users.csv may name absolute folders; rsync --relative keeps the whole path."""
    home = tmp_path / "home"
    write_users(tmp_path / "users.csv", [("a", str(home / "a" / "nb")), ("b", str(home / "b"))])
    write_text(home / "a/nb/x.txt", "x")
    write_text(home / "b/y.txt", "y")
    work = tmp_path / "work"
    work.mkdir()
    sync(work, "--users-csv", tmp_path / "users.csv")
    relative = str(home).lstrip("/")
    assert rows(work / "sync.sqlite", "SELECT filename, owner FROM summary ORDER BY 1") == [
        (f"{relative}/a/nb/x.txt", "a"),
        (f"{relative}/b/y.txt", "b"),
    ]


def test_no_folder_yet_writes_an_empty_log_and_exits_0(hoge):
    """Before any student has a folder: a cycle with nothing to copy, and no error."""
    result = sync(hoge)
    assert "no folder to copy" in result.stdout
    (log,) = os.listdir(hoge / "sync_logs")
    assert (hoge / "sync_logs" / log).read_text() == f"suffix=.bak_{log[5:-4]}\n"
