"""Issue 12 part 3, the cycle's time. How the loop hands the class's folders to rsync: as
arguments while they fit, on rsync's input beyond; the same copies either way. Recording
that overlaps the copy: notebooks parsed while rsync still copies (the loop's EarlyParser,
handed to make_database) give exactly the rows of a cycle without it, and a result is
used only for the very file it was read from. Real rsync, real folders, real SQLite."""

import json
import os
import types

from conftest import rows, write_json, write_text, write_users
from demo_course import error_output, execute_result, grade_cell, notebook, stream_output

import make_database as md
import rsync_notebooks as rn

LONG_NAME = "課題" * 39 + ".ipynb"  # 240 bytes: with `.bak_T` over the 255-byte limit
SOURCES = ["hoge/a/notebooks", "hoge/b/notebooks"]


def make_course(root):
    """Two students' work: notebooks, a long name, a notebook over --max-size, an
    unreadable one, a checkpoint, a text file."""
    a, b, mtime = root / "hoge/a/notebooks", root / "hoge/b/notebooks", 1_600_000_000
    write_users(root / "users.csv", [("a", SOURCES[0]), ("b", SOURCES[1])])
    answered = notebook([grade_cell("1", "q1", [execute_result("1")]), grade_cell("", "q2")])
    write_text(a / "notes.txt", "x", mtime)
    write_json(a / "nb.ipynb", answered, mtime)
    write_json(a / LONG_NAME, answered, mtime)
    write_json(a / "big.ipynb", notebook([grade_cell("x" * (11 << 20), "q1")]), mtime)
    write_text(b / "broken.ipynb", "{not json", mtime)
    write_json(b / ".ipynb_checkpoints/nb-checkpoint.ipynb", answered, mtime)
    write_json(b / "nb.ipynb", answered, mtime)


def test_folders_given_as_arguments_or_on_rsyncs_input_are_copied_alike(tmp_path, monkeypatch):
    """A class whose folders fit is given to rsync as arguments (faster), a bigger one on
    rsync's input: the same copies in the same places, the same names in the log."""
    monkeypatch.chdir(tmp_path)
    make_course(tmp_path)
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


# ---------------------------------------------------------------------------- early parsing

CYCLE_0 = 1_700_000_000  # the loop cycles' T (seconds), one minute apart
CLASS = [(uid, f"class/{uid}/notebooks") for uid in "cdef"]  # beside make_course's a and b
PER_STUDENT = 40


def graded(kind, padding=""):
    """A notebook whose graded cell q1 came out as `kind` (ok, error, printed, empty), with
    a markdown cell of `padding`."""
    outputs = {
        "ok": [execute_result("1")],
        "error": [error_output("ZeroDivisionError", "division by zero")],
        "printed": [stream_output("1\n")],
        "empty": [],
    }[kind]
    cells = [grade_cell("" if kind == "empty" else "x = 1", "q1", outputs)]
    return notebook([*cells, grade_cell(padding, "notes", cell_type="markdown")])


def class_course(root, cycle):
    """make_course's two students, and four more with PER_STUDENT notebooks of 20 KB each;
    before cycle 1 every third notebook of theirs is saved again with another outcome."""
    if cycle == 0:
        make_course(root)
        write_users(root / "users.csv", [("a", SOURCES[0]), ("b", SOURCES[1]), *CLASS])
    kinds = ("ok", "error", "printed", "empty")
    for s, (_, folder) in enumerate(CLASS):
        for n in range(PER_STUDENT):
            if cycle == 0 or n % 3 == 0:
                kind = kinds[(s + n + cycle) % 4]
                mtime = 1_600_000_000 + 60 * cycle + n
                write_json(root / folder / f"nb{n}.ipynb", graded(kind, "x" * 20_000), mtime)


def count_parses(monkeypatch, counter):
    """Have every notebook make_database parses (md.parse_notebook, in the loop's forked
    make_database.py and its workers) named on a line of the file `counter`."""
    parse_notebook = md.parse_notebook

    def counted(path):
        with open(counter, "a") as stream:
            stream.write(f"{path}\n")
        return parse_notebook(path)

    monkeypatch.setattr(md, "parse_notebook", counted)


def parses(counter):
    """How many notebooks count_parses named in the file `counter`."""
    return counter.read_text().count("\n") if counter.exists() else 0


def loop_cycle(root, dest, cycle, monkeypatch):
    """One cycle of the loop (sync_loop, as main runs it without sudo) into `root/dest`,
    its logs in `root/dest_logs` and its database `root/dest.sqlite`, with T fixed by
    `cycle`; True when it completed."""
    t = CYCLE_0 + 60 * cycle
    monkeypatch.setattr(rn, "next_timestamp", lambda now, previous, log_dir: t)
    args = rn.build_parser().parse_args(
        ["--no-sudo", "--repeat", "1", "--min-sleep", "0", "--dest", dest]
        + ["--log-dir", f"{dest}_logs", "--db", f"{dest}.sqlite"]
    )
    rn.prepare_folders(args)
    users_file = rn.UsersFile(args.users_csv, rn.monitor_paths(args))
    return rn.sync_loop(args, users_file, False, rn.Stopper(), rn.WalKeeper(args.db), [])


def copied_notebooks(dest, cycle):
    """The notebooks the log of loop_cycle `cycle` lists, as make_database parses them."""
    log = rn.log_path(f"{dest}_logs", CYCLE_0 + 60 * cycle)
    return [f for f in md.read_log(log).files if md.is_parsed_notebook(f)]


def database(db):
    """Every row the cycles wrote; a file_key without its inode (two destinations, two
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


def parses_without_early_parsing(tmp_path, monkeypatch):
    """The database of two loop cycles into `old` whose EarlyParser parses nothing (as
    before it existed), and how many notebooks its make_database parsed."""
    with monkeypatch.context() as patched:
        patched.setattr(rn.EarlyParser, "run", lambda self: None)
        count_parses(patched, tmp_path / "old.parsed")
        for cycle in range(2):
            class_course(tmp_path, cycle)
            assert loop_cycle(tmp_path, "old", cycle, patched)
    return database("old.sqlite"), parses(tmp_path / "old.parsed")


def test_the_loop_parses_notebooks_while_rsync_copies_and_records_the_same_rows(
    tmp_path, monkeypatch
):
    """Two cycles of the loop (a full copy, then a third of the notebooks saved again):
    make_database.py parses fewer notebooks than rsync copied (the others were parsed
    while rsync copied), and the database holds exactly the rows of the same cycles
    without early parsing: every version, its counts and its problems."""
    monkeypatch.chdir(tmp_path)
    old, old_parses = parses_without_early_parsing(tmp_path, monkeypatch)
    for f in tmp_path.glob("class/*/notebooks/*.ipynb"):
        os.unlink(f)  # the same course again, from the start
    count_parses(monkeypatch, tmp_path / "early.parsed")
    # whether results are used, not how many: at the loop's own priority, so that a busy
    # test machine cannot leave the early parser no CPU at all during these short copies
    monkeypatch.setattr(rn, "EARLY_NICE", 0)
    for cycle in range(2):
        class_course(tmp_path, cycle)
        assert loop_cycle(tmp_path, "early", cycle, monkeypatch)
    copied = copied_notebooks("early", 0) + copied_notebooks("early", 1)
    assert len(copied) == 4 + 4 * PER_STUDENT + 4 * 14  # make_course's, the class's, edited
    assert old_parses >= len(copied)  # every one, and the previous versions not known
    assert parses(tmp_path / "early.parsed") < old_parses
    assert database("early.sqlite") == old
    recorded = [name for name, *_ in old[0]]
    assert f"class/c/notebooks/nb0.bak_{rn.format_t(CYCLE_0 + 60)}.ipynb" in recorded
    # notes.txt, make_course's notebooks and its one over max-size, the class's, and the
    # previous versions of those edited
    assert len(recorded) == 1 + 4 + 1 + 4 * PER_STUDENT + 4 * 14


def test_an_early_parser_that_fails_costs_only_its_results(tmp_path, monkeypatch, capfd):
    """An early parser that raises (here from its second notebook on) does not stop the
    cycle: no traceback, make_database.py parses every notebook itself (what was parsed
    before is dropped), and the rows are those of cycles without early parsing."""
    monkeypatch.chdir(tmp_path)
    old, old_parses = parses_without_early_parsing(tmp_path, monkeypatch)
    for f in tmp_path.glob("class/*/notebooks/*.ipynb"):
        os.unlink(f)
    parse_copy, calls = md.parse_copy, []

    def failing(path):
        calls.append(path)
        if len(calls) >= 2:
            raise RuntimeError("the early parser broke")
        return parse_copy(path)

    monkeypatch.setattr(md, "parse_copy", failing)
    monkeypatch.setattr(rn, "EARLY_NICE", 0)  # as above: never starved of CPU in a test
    count_parses(monkeypatch, tmp_path / "early.parsed")
    capfd.readouterr()
    for cycle in range(2):
        class_course(tmp_path, cycle)
        assert loop_cycle(tmp_path, "early", cycle, monkeypatch)
    assert len(calls) >= 2
    assert "the early parser broke" not in capfd.readouterr().err
    assert parses(tmp_path / "early.parsed") == old_parses
    assert database("early.sqlite") == old


def copy_course(dest, t):
    """The course's copy into `dest` as the loop makes it in cycle T `t` (rn.copy: rsync,
    then the long names' rsync); its log."""
    os.makedirs(f"{dest}/{rn.RSYNC_TEMP_DIR}")
    log = f"{dest}.log"
    with rn.start_log(log, f".bak_{rn.format_t(t)}") as stream:
        args = types.SimpleNamespace(dest=dest)
        assert rn.copy(SOURCES, args, t, stream, False, [], rn.Tally()) == []
    return log


def test_the_early_parser_parses_each_notebook_rsync_copied_once_it_is_in_place(
    tmp_path, monkeypatch
):
    """Over a cycle's log: each notebook rsync received is parsed once, as make_database
    would parse it (checkpoints, text files and what rsync left out are not); one whose
    student saved it again since is not in place, and stays pending for make_database."""
    monkeypatch.chdir(tmp_path)
    make_course(tmp_path)
    log = copy_course("d", CYCLE_0)
    write_json(tmp_path / "hoge/b/notebooks/nb.ipynb", graded("error"), 1_600_000_900)
    with open(log, "rb", buffering=0) as reader:
        reader.seek(0, os.SEEK_END)  # where rsync's output ended
        early = rn.EarlyParser(reader, "d", md.user_folders(md.read_users_csv("users.csv")))
        assert early.read_more(reader)
        assert early.parse_in_place()
        assert not early.read_more(reader) and not early.parse_in_place()  # nothing new
    a, b = "hoge/a/notebooks", "hoge/b/notebooks"
    assert sorted(early.results) == [f"{a}/nb.ipynb", f"{a}/{LONG_NAME}", f"{b}/broken.ipynb"]
    assert list(early.pending) == [f"{b}/nb.ipynb"]
    for name, (identity, result) in early.results.items():
        assert identity == md.file_identity(os.lstat(f"d/{name}"))
        assert result == md.parse_each([f"d/{name}"])[0]
    assert early.results[f"{b}/broken.ipynb"][1].startswith("not JSON")


def test_a_result_read_from_a_copy_since_replaced_is_never_used(tmp_path, monkeypatch):
    """A notebook parsed while rsync copied, whose copy is then replaced by another file
    with the same size and mtime but other outcomes, renamed over it: the record has the
    outcomes of the file that is there."""
    monkeypatch.chdir(tmp_path)
    make_course(tmp_path)
    log, name = copy_course("d", CYCLE_0), "hoge/a/notebooks/nb.ipynb"
    parsed = {name: md.parse_copy(f"d/{name}")}
    assert parsed[name][1] == ((1, 0, 0, 0, 1), [("q1", "execute_result"), ("q2", "empty")])
    assert md.parsed_in_place("d", [name], parsed) == parsed
    before = os.lstat(f"d/{name}")
    printed = notebook([grade_cell("1", "q1", [stream_output("1")]), grade_cell("", "q2")])
    data = json.dumps(printed).encode()
    with open("d/replacement", "wb") as stream:
        stream.write(data + b" " * (before.st_size - len(data)))  # JSON allows the spaces
    os.utime("d/replacement", ns=(before.st_atime_ns, before.st_mtime_ns))
    os.rename("d/replacement", f"d/{name}")
    after = os.lstat(f"d/{name}")
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    conn = md.connect("d.sqlite")
    try:
        md.apply_log(conn, log, "d", md.read_users_csv("users.csv"), print, parsed=parsed)
    finally:
        conn.close()
    counts = "SELECT code_ok, code_stream, code_empty FROM summary WHERE filename = ?"
    assert rows("d.sqlite", counts, (name,)) == [(0, 1, 1)]
    problems = "SELECT grade_id, result FROM problems WHERE filename = ? ORDER BY rowid"
    assert rows("d.sqlite", problems, (name,)) == [("q1", "stream"), ("q2", "empty")]


def test_the_early_parser_never_follows_a_link_nor_reads_what_is_not_a_file(tmp_path):
    """Where a copy should be, a symlink to a notebook, a FIFO (nothing ever written to
    it) or a folder: no result, and no wait; a notebook beside them is parsed."""
    write_json(tmp_path / "nb.ipynb", graded("ok"))
    os.symlink(tmp_path / "nb.ipynb", tmp_path / "link.ipynb")
    os.mkfifo(tmp_path / "fifo.ipynb")
    os.mkdir(tmp_path / "folder.ipynb")
    for name in ("link.ipynb", "fifo.ipynb", "folder.ipynb"):
        assert md.parse_copy(str(tmp_path / name)) is None
    identity, result = md.parse_copy(str(tmp_path / "nb.ipynb"))
    assert result == ((1, 0, 0, 0, 0), [("q1", "execute_result"), ("notes", "empty")])


def test_an_early_result_is_taken_only_for_the_file_asked_about(tmp_path):
    """A copy replaced after make_database checked it (between its start and the record):
    the record, made from the file there then, gets that file's counts."""
    write_json(tmp_path / "nb.ipynb", graded("ok"))
    parsed = {"nb.ipynb": md.parse_copy(str(tmp_path / "nb.ipynb"))}
    parsing = md.Parsing(str(tmp_path), ["nb.ipynb"], parsed=parsed)
    try:
        write_json(tmp_path / "new.ipynb", graded("error"))
        os.rename(tmp_path / "new.ipynb", tmp_path / "nb.ipynb")
        result = parsing.result("nb.ipynb", os.lstat(tmp_path / "nb.ipynb"))
    finally:
        parsing.close()
    assert result == ((0, 0, 0, 1, 0), [("q1", "error"), ("notes", "empty")])
