"""What a student (or the machine) can do to the loop, rsync_notebooks.py: real rsync on real
folders, a real SQLite file. Each test is a finding of issue 9."""

import errno
import os
import pathlib
import re
import shutil
import signal
import subprocess
import tempfile
import time

import pytest
from conftest import ROOT, rows, run_script, sync, tmpfs_at, write_json, write_text, write_users
from demo_course import execute_result, grade_cell, notebook
from test_sync import NOBODY, dest_files, local, read_until, start_loop

import make_database as md
import rsync_notebooks as rn

LONG_NAME = "課題" * 39 + ".ipynb"  # 240 bytes: with `.bak_T` over the 255-byte limit


def answered(answer):
    return notebook([grade_cell(answer, "q", [execute_result(answer)])])


def versions(db, folder):
    """[(filename, t)] recorded under `folder`, by time."""
    query = "SELECT filename, t FROM summary WHERE filename LIKE ? ORDER BY t, filename"
    return rows(db, query, (folder + "/%",))


def backup_of(path, log):
    """The recorded name of the version of `path` that the cycle of `log` replaced."""
    t = log[len("sync_") : -len(".log")]
    stem, ext = os.path.splitext(path)
    return f"{stem}.bak_{t}{ext}"


def logs(root):
    return sorted(os.listdir(root / "sync_logs"))


# ---------------------------------------------------------------------------- 1. long names


def beside(root, path):
    """The files in the copied folder of `path` other than its copy."""
    folder = root / "sync_dest" / os.path.dirname(path)
    return sorted(name for name in os.listdir(folder) if name != os.path.basename(path))


EVERY_TABLE = [
    f"SELECT * FROM {table}"  # noqa: S608  (the scripts' own table names)
    for table in ("summary", "problems", "version_details", "applied_logs", "oversize_files")
]


def every_table(db):
    """Every row of every table the scripts write, sorted."""
    return [sorted(map(repr, rows(db, query))) for query in EVERY_TABLE]


@pytest.mark.parametrize("locale", ["C.UTF-8", "C"])
def test_a_long_file_name_stops_nobody(hoge, locale):
    """A 240-byte notebook name (its backup name would be over 255 bytes): b's new version
    is still copied and recorded in the same cycle, the long-named file's new version too,
    and the version it replaced is recorded beside it under a shortened name that fits,
    with its source in version_details and a warning naming the file."""
    env = {"LC_ALL": locale, "LANG": locale}
    long_path, b_path = f"hoge/a/notebooks/{LONG_NAME}", "hoge/b/notebooks/nb.ipynb"
    write_json(hoge / long_path, answered("1"), 1_600_000_000)
    write_json(hoge / b_path, answered("1"), 1_600_000_000)
    sync(hoge, env=env)
    write_json(hoge / long_path, answered("2"), 1_600_000_100)
    write_json(hoge / b_path, answered("2"), 1_600_000_100)
    result = sync(hoge, env=env)
    second = logs(hoge)[-1]
    assert f"warning: {long_path}" in result.stderr
    assert (hoge / "sync_dest" / b_path).read_text() == (hoge / b_path).read_text()
    assert versions(hoge / "sync.sqlite", "hoge/b") == [
        (backup_of(b_path, second), local(1_600_000_000)),
        (b_path, local(1_600_000_100)),
    ]
    assert (hoge / "sync_dest" / long_path).read_text() == (hoge / long_path).read_text()
    (short,) = beside(hoge, long_path)
    assert short.startswith("課題課題") and short.endswith(f".bak_{second[5:-4]}.ipynb")
    assert len(short.encode()) <= 255
    assert '"1"' in (hoge / "sync_dest/hoge/a/notebooks" / short).read_text()
    short_path = f"hoge/a/notebooks/{short}"
    assert versions(hoge / "sync.sqlite", "hoge/a") == [
        (short_path, local(1_600_000_000)),
        (long_path, local(1_600_000_100)),
    ]
    source = "SELECT source FROM version_details WHERE filename = ?"
    assert rows(hoge / "sync.sqlite", source, (short_path,)) == [(long_path,)]
    assert not (hoge / "sync_dest/.long_name_versions").exists()


def test_every_version_of_a_long_named_file_is_the_same_after_applying_again_or_replaying(hoge):
    """Three saves of a long-named notebook (two of them with one answer more): its two
    replaced versions are recorded with their own counts; applying every log again, and
    replaying them on a fresh database, gives the very same rows in every table."""
    long_path = f"hoge/a/notebooks/{LONG_NAME}"
    for i in range(3):
        cells = [grade_cell(str(q), f"q{q}", [execute_result(str(q))]) for q in range(i + 1)]
        write_json(hoge / long_path, notebook(cells), 1_600_000_000 + 100 * i)
        sync(hoge)
    db = hoge / "sync.sqlite"
    recorded = rows(db, "SELECT code_ok FROM summary WHERE owner = 'a' ORDER BY t")
    assert recorded == [(1,), (2,), (3,)]
    assert len(beside(hoge, long_path)) == 2
    once = every_table(db)
    for log in logs(hoge):
        run_script("make_database.py", "--log", f"sync_logs/{log}", cwd=hoge)
    assert every_table(db) == once
    run_script("rsync_notebooks.py", "--no-sudo", "--replay-log", "--db", "re.sqlite", cwd=hoge)
    assert every_table(hoge / "re.sqlite") == once
    assert len(beside(hoge, long_path)) == 2


def test_a_long_named_notebook_over_max_size_is_recorded_as_changed(hoge):
    """A notebook whose name is too long for a backup suffix and that is over 10 MiB: the
    second rsync, which copies the long names, also says it left it out, so it is a row
    without counts, as any big notebook."""
    long_path = f"hoge/a/notebooks/{LONG_NAME}"
    big = notebook([grade_cell("x" * (11 << 20), "q1")])
    write_json(hoge / long_path, big, 1_600_000_000)
    result = sync(hoge)
    assert f"warning: {long_path} is over max-size" in result.stderr
    assert rows(hoge / "sync.sqlite", "SELECT t, owner, code_ok FROM summary") == [
        (local(1_600_000_000), "a", None)
    ]


def test_a_folder_with_a_long_name_is_copied_as_usual(hoge):
    """The filter leaves out long file names only: a folder's name gets no suffix."""
    path = f"hoge/a/notebooks/{LONG_NAME[: -len('.ipynb')]}/nb.ipynb"
    write_json(hoge / path, answered("1"), 1_600_000_000)
    sync(hoge)
    write_json(hoge / path, answered("2"), 1_600_000_100)
    sync(hoge)
    assert (hoge / "sync_dest" / path).read_text() == (hoge / path).read_text()
    assert [t for _, t in versions(hoge / "sync.sqlite", "hoge/a")] == [
        local(1_600_000_000),
        local(1_600_000_100),
    ]


def test_a_failed_rsync_does_not_stop_the_others_in_later_cycles(hoge):
    """An rsync that fails whenever it is to copy a's folder (here: a wrapper around the
    real rsync, which gets the folders as arguments or on its input): the next cycle copies
    folder by folder, so b's work is copied and recorded."""
    write_text(hoge / "hoge/a/notebooks/x.txt", "a", 1_600_000_000)
    write_text(hoge / "hoge/b/notebooks/x.txt", "b", 1_600_000_000)
    (hoge / "bin").mkdir()
    wrapper = hoge / "bin/rsync"
    real = shutil.which("rsync")
    wrapper.write_text(
        f"#!/bin/sh\nfolders=$(mktemp -p {hoge})\ncat > $folders\n"
        "(tr '\\0' '\\n' < $folders; printf '%s\\n' \"$@\")"
        " | grep -q 'hoge/a/notebooks$' && exit 12\n"
        f'exec {real} "$@" < $folders\n'
    )
    wrapper.chmod(0o755)
    env = {"PATH": f"{hoge / 'bin'}:{os.environ['PATH']}"}
    result = sync(hoge, "--repeat", 2, env=env, check=False)
    assert rows(hoge / "sync.sqlite", "SELECT filename, owner FROM summary") == [
        ("hoge/b/notebooks/x.txt", "b")
    ]
    assert result.returncode == 1
    assert "rsync failed with exit code 12 copying hoge/a/notebooks" in result.stderr


def test_a_folder_that_keeps_failing_ends_up_alone_and_the_others_in_one_rsync():
    """Each cycle halves the groups whose rsync failed; the rest copy as one."""
    sources = [f"s{i}" for i in range(8)]
    assert rn.rsync_groups(sources, []) == [sources]
    groups, cycles = [sources], 0
    while groups != [[s for s in sources if s != "s5"], ["s5"]]:
        groups = rn.rsync_groups(sources, [group for group in groups if "s5" in group])
        cycles += 1
    assert cycles == 4  # 8 -> 4 -> 2 -> 1, then its last partner rejoins the others
    assert rn.rsync_groups(["s1", "s2"], [["s0", "s1"]]) == [["s2"], ["s1"]]  # s0 is gone


# ---------------------------------------------------------------------------- 3. every change


def test_a_file_dated_in_the_future_is_copied_at_every_save(hoge):
    """Saved once with a 2031 date, then again today: the new content is a version."""
    path = "hoge/a/notebooks/nb.ipynb"
    write_json(hoge / path, answered("1"), time.mktime((2031, 1, 1, 0, 0, 0, 0, 0, -1)))
    sync(hoge)
    write_json(hoge / path, answered("2"), 1_700_000_000)
    sync(hoge)
    assert (hoge / "sync_dest" / path).read_text() == (hoge / path).read_text()
    assert len(versions(hoge / "sync.sqlite", "hoge/a")) == 2


def test_an_older_copy_restored_with_cp_p_is_a_new_version(hoge):
    path = hoge / "hoge/a/notebooks/nb.ipynb"
    write_json(path, answered("1"), 1_600_000_000)
    old = hoge / "old.ipynb"
    subprocess.run(["cp", "-p", str(path), str(old)], check=True)
    sync(hoge)
    write_json(path, answered("2"), 1_600_000_100)
    sync(hoge)
    subprocess.run(["cp", "-p", str(old), str(path)], check=True)
    sync(hoge)
    assert (hoge / "sync_dest/hoge/a/notebooks/nb.ipynb").read_text() == old.read_text()
    recorded = versions(hoge / "sync.sqlite", "hoge/a")
    assert [t for _, t in recorded] == [
        local(1_600_000_000),
        local(1_600_000_000),
        local(1_600_000_100),
    ]


def test_a_same_size_edit_within_the_same_second_is_copied(hoge):
    path = hoge / "hoge/a/notebooks/x.txt"
    write_text(path, "aaaa")
    os.utime(path, ns=(1_600_000_000_100_000_000,) * 2)
    sync(hoge)
    write_text(path, "bbbb")
    os.utime(path, ns=(1_600_000_000_700_000_000,) * 2)
    sync(hoge)
    assert (hoge / "sync_dest/hoge/a/notebooks/x.txt").read_text() == "bbbb"
    assert len(versions(hoge / "sync.sqlite", "hoge/a")) == 2


# ---------------------------------------------------------------------------- 5. disk full


@pytest.fixture
def small_disk(tmp_path):
    """A 8 MB tmpfs at tmp_path/disk, unmounted afterwards."""
    with tmpfs_at(tmp_path / "disk", "8m") as disk:
        yield disk


def fill(disk):
    """Fill `disk` up with one file; its path."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as stream:
        try:
            while True:
                stream.write(b"\0" * 65536)
        except OSError as error:
            assert error.errno == errno.ENOSPC
    return filler


def test_a_full_disk_is_reported_and_the_loop_recovers_when_space_returns(tmp_path, small_disk):
    """Logs, copies and database on a disk that fills up: the cycle that cannot write its
    log says so and the loop goes on; once space returns every version is recorded, and no
    empty log is left behind."""
    write_users(tmp_path / "users.csv", [("a", "hoge/a")])
    path = tmp_path / "hoge/a/nb.ipynb"
    write_json(path, answered("1"), 1_600_000_000)
    where = ["--dest", small_disk / "dest", "--log-dir", small_disk / "logs"]
    loop = start_loop(
        tmp_path, *where, "--db", small_disk / "db.sqlite", "--repeat", 3, "--min-sleep", 1
    )
    try:
        read_until(loop, "took")
        write_json(path, answered("2"), 1_600_000_100)
        filler = fill(small_disk)
        read_until(loop, "took")
        filler.unlink()
        read_until(loop, "took")
    finally:
        out, err = loop.communicate(timeout=60)
    assert "No space left on device" in err and "trying again next cycle" in err
    assert loop.returncode == 1  # a cycle failed
    recorded = versions(small_disk / "db.sqlite", "hoge/a")
    assert [t for _, t in recorded] == [local(1_600_000_000), local(1_600_000_100)]
    assert all(os.path.getsize(log) > 0 for log in (small_disk / "logs").iterdir())
    assert "took" in sync(tmp_path, *where, "--db", small_disk / "db.sqlite").stdout


def test_the_disk_set_aside_for_a_log_is_there_when_the_disk_fills_up(small_disk):
    """A log started with 1 MB set aside takes rsync's output after the disk is full, and
    gives back what it did not use."""
    log = small_disk / "sync_T.log"
    with rn.start_log(str(log), ".bak_T", reserve=1024 * 1024) as stream:
        fill(small_disk)
        stream.write(b">f+++++++++|hoge/a/nb.ipynb|\n" * 20_000)
        rn.end_log(stream)
    assert log.stat().st_size == len("suffix=.bak_T\n") + 20_000 * 29


def test_a_log_that_cannot_be_started_is_not_left_behind(small_disk):
    fill(small_disk)
    with pytest.raises(OSError):
        rn.start_log(str(small_disk / "sync_T.log"), ".bak_T", reserve=1024 * 1024)
    assert not (small_disk / "sync_T.log").exists()


def test_an_empty_or_cut_log_left_behind_never_blocks_a_start(hoge):
    """A 0-byte log and one cut in the middle of a line (a full disk, a crash) in the log
    folder: the loop starts, copies and records as usual; --replay-log too."""
    write_text(hoge / "hoge/a/notebooks/x.txt", "1", 1_600_000_000)
    sync(hoge)
    (hoge / "sync_logs/sync_2000-01-01T00:00:00.log").write_bytes(b"")
    (hoge / "sync_logs/sync_2000-01-01T00:00:01.log").write_bytes(
        b"suffix=.bak_2000-01-01T00:00:01\n>f+++"
    )
    write_text(hoge / "hoge/a/notebooks/x.txt", "2", 1_600_000_100)
    result = sync(hoge)
    assert result.returncode == 0
    assert len(versions(hoge / "sync.sqlite", "hoge/a")) == 2
    replay = run_script(
        "rsync_notebooks.py", "--no-sudo", "--replay-log", "--db", "re.sqlite", cwd=hoge
    )
    assert replay.returncode == 0
    assert rows(hoge / "re.sqlite") == rows(hoge / "sync.sqlite")


# ---------------------------------------------------------------------------- 6. big notebooks


def test_a_notebook_over_max_size_is_named_in_one_warning_each_cycle_it_changes(hoge):
    """A notebook over 10 MiB: one warning naming it in the cycle that first sees it, none
    in a cycle where it did not change, one again when it changed; the cycle's summary
    counts it among its warnings only then."""
    big = hoge / "hoge/a/notebooks/big.ipynb"
    big.parent.mkdir(parents=True)
    with open(big, "wb") as stream:
        stream.truncate(11 * 1024 * 1024)
    os.utime(big, (1_600_000_000, 1_600_000_000))
    for changed in (True, False, True):
        if changed:
            os.utime(big, (big.stat().st_mtime + 100,) * 2)
        result = sync(hoge)
        named = [line for line in result.stderr.splitlines() if "big.ipynb" in line]
        assert len(named) == changed, result.stderr
        summary = re.search(r"(\d+) warnings", result.stdout).group(1)
        assert int(summary) == changed
        log = (hoge / "sync_logs" / logs(hoge)[-1]).read_text()
        assert "hoge/a/notebooks/big.ipynb is over max-size\n" in log
    assert not (hoge / "sync_dest/hoge/a/notebooks/big.ipynb").exists()


# ---------------------------------------------------------------------------- 7. monitor rows


def test_a_row_holding_the_monitor_or_inside_it_is_refused(tmp_path):
    """`x,.` holds the destination, logs and database; other rows lie inside them: each is
    refused with a warning naming its line, and the monitor is never copied into itself."""
    (tmp_path / "users.csv").write_text(
        "uid,notebooks\nx,.\ny,sync_dest/hoge\nz,./sync_logs\nw,data\ngood,hoge/g\n"
    )
    write_text(tmp_path / "hoge/g/nb.txt", "g")
    (tmp_path / "data").mkdir()
    for _ in range(2):
        result = sync(tmp_path, "--db", "data/sync.sqlite")
        for line in (2, 3, 4, 5):
            assert f"users.csv:{line}: refused" in result.stderr, line
    assert dest_files(tmp_path) == ["hoge/g/nb.txt"]
    assert rows(tmp_path / "data/sync.sqlite", "SELECT filename, owner FROM summary") == [
        ("hoge/g/nb.txt", "good")
    ]


# ---------------------------------------------------------------------------- 8. temporary files


def test_jupyter_atomic_save_files_are_neither_copied_nor_recorded(hoge):
    write_json(hoge / "hoge/a/notebooks/nb.ipynb", answered("1"))
    write_json(hoge / "hoge/a/notebooks/.~nb.ipynb", answered("0"))
    sync(hoge)
    assert dest_files(hoge) == ["hoge/a/notebooks/nb.ipynb"]
    assert [name for name, *_ in rows(hoge / "sync.sqlite")] == ["hoge/a/notebooks/nb.ipynb"]


def descendants(pid):
    """The pids of every process below `pid`."""
    children = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as stream:
                parent = int(stream.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


TEMP_NAME = re.compile(r"\.?big\.ipynb\.\w{6}")  # rsync's: `.big.ipynb.XXXXXX` in the folder


def test_a_killed_transfer_leaves_no_temporary_file_among_the_copies(hoge):
    """rsync killed (SIGKILL, as the OOM killer or a reboot would) while it writes a
    notebook: its temporary file is not in the student's copied folder, and the next cycle
    removes it; it is never recorded."""
    big = hoge / "hoge/a/notebooks/big.ipynb"
    big.parent.mkdir(parents=True)
    big.write_bytes(b"{" + b" " * (4 * 1024 * 1024) + b"}")
    (hoge / "bin").mkdir()
    wrapper = hoge / "bin/rsync"
    wrapper.write_text(f'#!/bin/sh\nexec {shutil.which("rsync")} --bwlimit=500 "$@"\n')
    wrapper.chmod(0o755)
    loop = start_loop(hoge, "--repeat", 1, env={"PATH": f"{hoge / 'bin'}:{os.environ['PATH']}"})
    try:
        deadline = time.time() + 30
        while time.time() < deadline and not any(
            p.is_file() and TEMP_NAME.fullmatch(p.name) for p in (hoge / "sync_dest").rglob("*")
        ):
            time.sleep(0.05)
        # all frozen first: none may see another die and clean up after it
        below = descendants(loop.pid)
        for number in (signal.SIGSTOP, signal.SIGKILL):
            for pid in below:
                os.kill(pid, number)
    finally:
        loop.communicate(timeout=60)
    left = [p for p in (hoge / "sync_dest").rglob("*") if TEMP_NAME.fullmatch(p.name)]
    assert left and all(p.parent.name == ".rsync_tmp" for p in left)
    result = sync(hoge)
    assert "left by an interrupted rsync" in result.stdout
    assert dest_files(hoge) == ["hoge/a/notebooks/big.ipynb"]
    assert [name for name, *_ in rows(hoge / "sync.sqlite")] == ["hoge/a/notebooks/big.ipynb"]


# ---------------------------------------------------------------------------- 10. the lock


def test_a_symlink_to_the_destination_does_not_start_a_second_loop(hoge):
    write_text(hoge / "hoge/a/notebooks/x.txt", "x")
    (hoge / "real_dest").mkdir()
    os.symlink("real_dest", hoge / "link_dest")
    first = start_loop(hoge, "--dest", "real_dest", "--min-sleep", 60)
    try:
        read_until(first, "took")
        second = sync(hoge, "--dest", "link_dest", check=False)
        assert second.returncode == 1
        assert "another rsync_notebooks.py" in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=20)


# ---------------------------------------------------------------------------- issue 12: class size


def test_thirty_thousand_rows_are_copied_by_one_rsync(tmp_path):
    """30,000 folders with long paths (2.5 MB of them: more than one argument list may
    hold, E2BIG) and one absolute folder: every one is copied and recorded."""
    top = tmp_path / "class" / ("x" * 70)
    lines = ["uid,notebooks"]
    for i in range(30_000):
        (top / f"s{i:05d}").mkdir(parents=True)
        lines.append(f"s{i:05d},class/{'x' * 70}/s{i:05d}")
    lines.append(f"abs,{tmp_path / 'abs'}")
    (tmp_path / "users.csv").write_text("\n".join(lines) + "\n")
    write_text(top / "s00000/first.txt", "1")
    write_text(top / "s29999/last.txt", "1")
    write_text(tmp_path / "abs/a.txt", "1")
    sync(tmp_path, timeout=300)
    recorded = rows(tmp_path / "sync.sqlite", "SELECT filename, owner FROM summary ORDER BY 1")
    assert recorded == [
        (f"class/{'x' * 70}/s00000/first.txt", "s00000"),
        (f"class/{'x' * 70}/s29999/last.txt", "s29999"),
        (f"{str(tmp_path).lstrip('/')}/abs/a.txt", "abs"),
    ]


# ---------------------------------------------------------------------------- issue 11: service


@pytest.fixture
def instructor_home():
    """A folder owned by `nobody` (standing in for the instructor) that `nobody` can reach
    (pytest's own folders are root's only)."""
    home = tempfile.mkdtemp(prefix="a1_instructor_", dir="/tmp")
    os.chmod(home, 0o755)
    os.chown(home, NOBODY, NOBODY)
    yield pathlib.Path(home)
    shutil.rmtree(home)


def test_owner_gets_the_files_and_can_read_the_database(instructor_home):
    """Started as plain root with --owner: the viewer's account reads the database."""
    write_users(instructor_home / "users.csv", [("a", "hoge/a")])
    write_text(instructor_home / "hoge/a/x.txt", "x")
    result = sync(instructor_home, "--owner", "nobody")
    assert "belong to nobody" in result.stdout
    for name in ("sync_dest", "sync_logs", "sync.sqlite", "sync_dest.lock"):
        assert (instructor_home / name).stat().st_uid == NOBODY, name
    read = subprocess.run(
        ["runuser", "-u", "nobody", "--", "sqlite3", "sync.sqlite", "SELECT filename FROM summary"],
        cwd=instructor_home,
        capture_output=True,
        text=True,
    )
    assert (read.returncode, read.stdout) == (0, "hoge/a/x.txt\n"), read.stderr


def test_plain_root_without_owner_says_who_owns_the_files(hoge):
    write_text(hoge / "hoge/a/notebooks/x.txt", "x")
    result = sync(hoge)
    assert "belong to root" in result.stderr and "--owner" in result.stderr


def test_an_unknown_owner_is_refused_before_anything_is_made(hoge):
    result = sync(hoge, "--owner", "no_such_account_here", check=False)
    assert result.returncode == 2
    assert "--owner no_such_account_here: no such account" in result.stderr
    assert sorted(os.listdir(hoge)) == ["users.csv"]


def test_sudo_that_needs_a_password_fails_clearly_instead_of_waiting(hoge, monkeypatch, capsys):
    """As a user whose sudo asks for a password (a stand-in sudo: it waits at its prompt
    unless given -n): the loop says what to do and exits 2, having made nothing."""
    bin_dir = hoge / "bin"
    bin_dir.mkdir()
    (bin_dir / "sudo").write_text(
        '#!/bin/sh\nif [ "$1" = -n ]; then echo "sudo: a password is required" >&2; exit 1; fi\n'
        "sleep 5\n"
    )
    (bin_dir / "sudo").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr(os, "geteuid", lambda: NOBODY)  # not root
    monkeypatch.chdir(hoge)
    assert rn.main(["--repeat", "1", "--min-sleep", "0"]) == 2
    assert "sudo needs a password: run as root or with --no-sudo" in capsys.readouterr().err
    assert sorted(os.listdir(hoge)) == ["bin", "users.csv"]


def test_a_sudo_ticket_that_expires_fails_the_cycle_clearly_and_never_waits(
    hoge, monkeypatch, capsys
):
    """sudo lets the loop start, then asks for a password (its ticket expired): with -n
    the cycle fails at once, saying what to do, instead of waiting at a prompt."""
    bin_dir = hoge / "bin"
    bin_dir.mkdir()
    (bin_dir / "sudo").write_text(
        '#!/bin/sh\ncase "$*" in *--version*) exit 0;; esac\n'
        'if [ "$1" = -n ]; then echo "sudo: a password is required" >&2; exit 1; fi\n'
        "sleep 5\n"
    )
    (bin_dir / "sudo").chmod(0o755)
    write_text(hoge / "hoge/a/notebooks/x.txt", "x")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr(os, "geteuid", lambda: NOBODY)  # not root
    monkeypatch.chdir(hoge)
    # the loop installs its own handlers: pytest's are put back
    handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        assert rn.main(["--repeat", "1", "--min-sleep", "0"]) == 1
    finally:
        for number, handler in handlers.items():
            signal.signal(number, handler)
    err = capsys.readouterr().err
    assert "rsync failed with exit code 1" in err
    assert "if sudo now asks for a password: run as root or with --no-sudo" in err


def test_each_cycle_is_one_summary_line(hoge):
    """The rsync command is shown once; each cycle ends with what it did."""
    write_text(hoge / "hoge/a/notebooks/x.txt", "1", 1_600_000_000)
    write_text(hoge / "hoge/b/notebooks/y.txt", "1", 1_600_000_000)
    loop = start_loop(hoge, "--repeat", 2, "--min-sleep", 1)
    try:
        first = read_until(loop, "took")
        write_text(hoge / "hoge/a/notebooks/x.txt", "2", 1_600_000_100)
    finally:
        rest, _ = loop.communicate(timeout=60)
    lines = (first + rest).splitlines()
    (shown,) = [line for line in lines if "rsync " in line]
    assert shown.endswith(" -- <the 5 folders of users.csv> sync_dest/")
    summaries = [line for line in lines if "took" in line]
    assert re.fullmatch(
        r"copied 2 files, recorded 2 versions, 0 warnings, took [\d.]+ sec, sleep .*", summaries[0]
    )
    assert re.fullmatch(
        r"copied 1 files, recorded 2 versions, 0 warnings, took [\d.]+ sec", summaries[1]
    )
    assert not any("make_database.py" in line for line in lines)


def test_a_long_copy_says_which_folder_it_is_at(hoge, capsys):
    """While a cycle's rsync runs long, the loop says how far it got in the log rsync is
    writing (here a real rsync's finished log, looked at every 10 ms)."""
    for u, count in (("a", 2), ("b", 3)):
        for i in range(count):
            write_text(hoge / f"hoge/{u}/notebooks/{i}.txt", "x")
    sources = [f"hoge/{u}/notebooks" for u in "abc"]
    log = hoge / "sync.log"
    (hoge / "dest" / rn.RSYNC_TEMP_DIR).mkdir(parents=True)
    with open(log, "wb") as stream:
        command = rn.listed_rsync_command(str(hoge / "dest"), ".bak_T", sudo=False)
        subprocess.run(
            command, input=rn.files_from(sources[:2], str(hoge)), stdout=stream, check=True
        )
    with rn.CopyProgress(str(log), sources, every=0.01):
        deadline = time.time() + 20
        seen = ""
        while "files so far" not in seen and time.time() < deadline:
            time.sleep(0.05)
            seen += capsys.readouterr().out
    assert seen.splitlines()[0] == "... folder 2 of 3, 5 files so far"


def test_replay_counts_its_logs_and_ends_with_a_total(hoge):
    for i in range(3):
        write_text(hoge / "hoge/a/notebooks/x.txt", str(i), 1_600_000_000 + i)
        sync(hoge)
    result = run_script(
        "rsync_notebooks.py", "--no-sudo", "--replay-log", "--db", "re.sqlite", cwd=hoge
    )
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines if " of 3" in line][:3] == [
        "1 of 3",
        "2 of 3",
        "3 of 3",
    ]
    assert re.fullmatch(
        r"replayed 3 of 3 logs in sync_logs, 0 failed: recorded 5 versions, 0 warnings,"
        r" took [\d.]+ sec",
        lines[-1],
    )


def test_version_is_the_projects():
    result = run_script("rsync_notebooks.py", "--version", cwd=ROOT)
    assert result.stdout.split() == ["rsync_notebooks.py", md.__version__]
