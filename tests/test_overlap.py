"""How the loop hands the class's folders to rsync (issue 12 part 3, the cycle's time): as
arguments while they fit, on rsync's input beyond; the same copies either way. Real rsync,
real folders."""

import os

from conftest import write_json, write_text, write_users
from demo_course import execute_result, grade_cell, notebook

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
