"""Recording that overlaps the copy: notebooks parsed while rsync still copies (the loop's
EarlyParsing, handed to make_database) give exactly the rows of a cycle applied the old
way, whatever was parsed when. Real rsync, real folders, real SQLite."""

import os
import types

from conftest import rows, run_script, sync, write_json, write_text, write_users
from demo_course import error_output, execute_result, grade_cell, notebook

import make_database as md
import rsync_notebooks as rn

LONG_NAME = "課題" * 39 + ".ipynb"  # 240 bytes: with `.bak_T` over the 255-byte limit
CYCLE_0 = 1_700_000_000  # the cycles' T (seconds), one minute apart
SOURCES = ["hoge/a/notebooks", "hoge/b/notebooks"]


def answered(value):
    return notebook([grade_cell(value, "q1", [execute_result(value)]), grade_cell("", "q2")])


def failed():
    return notebook([grade_cell("1/0", "q1", [error_output("ZeroDivisionError", "")])])


def edit_course(root, cycle):
    """The students' work before cycle `cycle` (0, 1, 2): edits, new files, a long name,
    a notebook over --max-size, an unreadable one, a checkpoint, a text file."""
    a, b, mtime = root / "hoge/a/notebooks", root / "hoge/b/notebooks", 1_600_000_000 + cycle
    if cycle == 0:
        write_users(root / "users.csv", [("a", SOURCES[0]), ("b", SOURCES[1])])
        write_text(a / "notes.txt", "x", mtime)
        write_text(b / "broken.ipynb", "{not json", mtime)
        write_json(b / ".ipynb_checkpoints/nb-checkpoint.ipynb", answered("0"), mtime)
        write_json(b / "nb.ipynb", answered("1"), mtime)
    write_json(a / "nb.ipynb", answered(str(cycle)) if cycle != 1 else failed(), mtime)
    write_json(a / LONG_NAME, answered(str(10 + cycle)), mtime)
    write_json(a / "big.ipynb", notebook([grade_cell("x" * (11 << 20), f"q{cycle}")]), mtime)
    if cycle >= 1:
        write_json(b / f"new{cycle}.ipynb", failed(), mtime)
        write_json(b / "nb.ipynb", answered(str(cycle + 1)), mtime)


def loop_copy(root, dest, t, early=None):
    """One cycle's copy into `root/dest` as the loop makes it (rn.copy: rsync, then the
    second rsync of long names), with `early` parsing beside it or not; its log."""
    logs = root / f"{dest}_logs"
    os.makedirs(logs, exist_ok=True)
    os.makedirs(root / dest / rn.RSYNC_TEMP_DIR, exist_ok=True)
    log = rn.log_path(str(logs), t)
    args = types.SimpleNamespace(dest=dest)
    with rn.start_log(log, f".bak_{rn.format_t(t)}") as stream:
        assert rn.copy(SOURCES, args, t, stream, False, [], rn.Tally(), early) == []
    return log


def apply(root, dest, log, early=None):
    conn = md.connect(str(root / f"{dest}.sqlite"))
    try:
        users = md.read_users_csv(str(root / "users.csv"))
        md.apply_log(conn, log, dest, users, warn=lambda message: None, early=early)
    finally:
        conn.close()


def database(db):
    """Every row a cycle writes; a file_key without its inode (two destinations, two
    inodes for one version)."""
    details = [
        (name, epoch, mtime, key.split(":", 1)[1] if key else key, reason, source)
        for name, epoch, mtime, key, reason, source in rows(
            db, "SELECT * FROM version_details ORDER BY filename"
        )
    ]
    return (
        rows(db),
        rows(db, "SELECT * FROM problems ORDER BY filename, rowid"),
        details,
        rows(db, "SELECT * FROM oversize_files ORDER BY source"),
        rows(db, "SELECT * FROM applied_logs ORDER BY log"),
    )


def test_cycles_applied_with_what_was_parsed_during_the_copy_equal_the_old_way(
    tmp_path, monkeypatch
):
    """Three cycles copied into two destinations with the same T: one applied with what
    was parsed while rsync copied (and, after it, every copy in place), the other applied
    as before. The same rows."""
    monkeypatch.chdir(tmp_path)
    for cycle in range(3):
        edit_course(tmp_path, cycle)
        t = CYCLE_0 + 60 * cycle
        folders = md.user_folders(md.read_users_csv("users.csv"))
        log_file = str(tmp_path / "early" / rn.RSYNC_TEMP_DIR / rn.COPIED_FILES_LOG)
        during = rn.EarlyParsing(log_file, "early", folders)
        early_log = loop_copy(tmp_path, "early", t, during)
        assert not os.path.exists(log_file)
        copied = [
            name
            for name in md.read_log(early_log).files
            if name.endswith(".ipynb") and rn.copy_in_place("early", name, folders)
        ]
        after = dict(filter(None, (md.parse_copy("early", name) for name in copied)))
        assert len(after) == len(copied) >= 3
        apply(tmp_path, "early", early_log, {**during.results, **after})
        apply(tmp_path, "old", loop_copy(tmp_path, "old", t))
        assert database("early.sqlite") == database("old.sqlite")
    recorded = [name for name, *_ in rows("old.sqlite")]
    assert f"hoge/a/notebooks/nb.bak_{rn.format_t(CYCLE_0 + 60)}.ipynb" in recorded
    assert "hoge/b/notebooks/new2.ipynb" in recorded
    assert any(name.startswith("hoge/a/notebooks/big.bak_") for name in recorded)
    assert len([name for name in recorded if "~" in name]) == 2  # a long name's versions


def test_what_rsync_names_in_its_log_file_is_parsed_once_in_place(tmp_path, monkeypatch):
    """rsync's own --log-file, as the loop has it write: each notebook it received is
    parsed (checkpoints and text files are not); one whose source changed since it was
    copied is not in place, and is left to make_database."""
    monkeypatch.chdir(tmp_path)
    edit_course(tmp_path, 0)
    os.makedirs(f"d/{rn.RSYNC_TEMP_DIR}")
    log_file = str(tmp_path / "copied.log")
    command, listed = rn.group_rsync(SOURCES, "d", ".bak_T", False, log_file)
    with open("sync.log", "wb") as stream:
        assert rn.run_rsync(command, listed, stream, "the course")
    write_json(tmp_path / "hoge/b/notebooks/nb.ipynb", failed(), 1_600_000_900)
    early = rn.EarlyParsing(log_file, "d", md.user_folders(md.read_users_csv("users.csv")))
    assert early.read_more()
    parsed = {key[0]: result for key, result in early.results.items()}
    assert sorted(parsed) == ["hoge/a/notebooks/nb.ipynb", "hoge/b/notebooks/broken.ipynb"]
    assert parsed["hoge/a/notebooks/nb.ipynb"] == md.parse_each(["d/hoge/a/notebooks/nb.ipynb"])[0]
    assert parsed["hoge/b/notebooks/broken.ipynb"].startswith("not JSON")
    assert not early.read_more()  # nothing new since


def test_folders_given_as_arguments_or_on_rsyncs_input_are_copied_alike(tmp_path, monkeypatch):
    """A class whose folders fit is given to rsync as arguments (faster), a bigger one on
    rsync's input: the same copies in the same places, the same names in the log."""
    monkeypatch.chdir(tmp_path)
    edit_course(tmp_path, 0)
    sources = [SOURCES[0], str(tmp_path / SOURCES[1])]  # a relative and an absolute folder
    copies = {}
    for dest, limit in (("as_arguments", rn.ARGUMENT_BYTES), ("listed", 0)):
        monkeypatch.setattr(rn, "ARGUMENT_BYTES", limit)
        command, listed = rn.group_rsync(sources, dest, ".bak_T", False)
        assert (listed is None) == (dest == "as_arguments")
        os.makedirs(f"{dest}/{rn.RSYNC_TEMP_DIR}")
        with open(f"{dest}.log", "wb") as stream:
            assert rn.run_rsync(command, listed, stream, dest)
        with open(f"{dest}.log") as stream:
            files = md.parse_log(["suffix=.bak_T\n", *stream]).files
        copies[dest] = (
            sorted(files),
            sorted(
                str(p.relative_to(tmp_path / dest))
                for p in (tmp_path / dest).rglob("*")
                if p.is_file()
            ),
        )
    assert copies["as_arguments"] == copies["listed"]
    assert f"{str(tmp_path / SOURCES[1]).lstrip('/')}/nb.ipynb" in copies["listed"][0]


def test_a_result_parsed_from_a_copy_that_was_replaced_is_never_used(tmp_path, monkeypatch):
    """A notebook parsed before rsync replaced its copy (the line came before the file was
    in place, or a student saved again): the new copy is recorded as it is."""
    monkeypatch.chdir(tmp_path)
    edit_course(tmp_path, 0)
    apply(tmp_path, "d", loop_copy(tmp_path, "d", CYCLE_0))
    name = "hoge/a/notebooks/nb.ipynb"
    stale = dict([md.parse_copy("d", name)])
    assert list(stale.values()) == [((1, 0, 0, 0, 1), [("q1", "execute_result"), ("q2", "empty")])]
    write_json(tmp_path / name, failed(), 1_600_000_100)
    apply(tmp_path, "d", loop_copy(tmp_path, "d", CYCLE_0 + 60), stale)
    query = "SELECT grade_id, result FROM problems WHERE filename = ? ORDER BY rowid"
    assert rows("d.sqlite", query, (name,)) == [("q1", "error")]
    counts = "SELECT code_ok, code_error, code_empty FROM summary WHERE filename = ?"
    assert rows("d.sqlite", counts, (name,)) == [(0, 1, 0)]


def test_the_running_loop_records_what_a_replay_of_its_logs_records(tmp_path):
    """The loop itself (rsync's --log-file read while it copies, the parsed notebooks
    handed to its make_database): its database equals a replay of its logs on a new one,
    which parses every copy afresh; rsync's --log-file is never taken for a cycle's log."""
    for cycle in range(3):
        edit_course(tmp_path, cycle)
        sync(tmp_path)
    assert os.listdir(tmp_path / "sync_dest" / rn.RSYNC_TEMP_DIR) == []
    assert len(os.listdir(tmp_path / "sync_logs")) == 3
    result = run_script(
        "rsync_notebooks.py", "--no-sudo", "--replay-log", "--db", "replayed.sqlite", cwd=tmp_path
    )
    assert "replayed 3 of 3 logs" in result.stdout
    state = copied_versions(tmp_path / "sync.sqlite")
    assert copied_versions(tmp_path / "replayed.sqlite") == state
    assert len(state[0]) == 13


def copied_versions(db):
    """database(db) but for the rows of the notebook over --max-size: a replay sees its
    source as it is now, not once per change (a limitation of replays, not of the loop)."""
    return [[row for row in table if "/big." not in row[0]] for table in database(db)]
