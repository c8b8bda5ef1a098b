"""Shared helpers: run the real scripts, build tiny courses and notebooks in code."""

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REALDATA = os.path.join(os.path.dirname(ROOT), "shared", "realdata")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools"))
# The viewer's access token in tests (ACCESS_TOKEN): what the printed URL would carry.
ACCESS_TOKEN = "test-access-token"


# make_database.py's main in `python -c KILL_AFTER ROOT FUNCTION ARGS...`: killed with
# SIGKILL right after FUNCTION returns (a crash at that point of applying a log)
KILL_AFTER = (
    "import os, signal, sys; sys.path.insert(0, sys.argv[1]); import make_database as md\n"
    "name = sys.argv[2]; original = getattr(md, name)\n"
    "def wrapped(*a, **k):\n"
    "    result = original(*a, **k)\n"
    "    os.kill(os.getpid(), signal.SIGKILL)\n"
    "setattr(md, name, wrapped)\n"
    "sys.exit(md.main(sys.argv[3:]))\n"
)


def kill_make_database_after(function, *args, cwd):
    """make_database.py with `args` in `cwd`, killed with SIGKILL right after its
    `function` returns (a crash at that point)."""
    killed = subprocess.run([sys.executable, "-c", KILL_AFTER, ROOT, function, *args], cwd=cwd)
    assert killed.returncode == -signal.SIGKILL


@contextlib.contextmanager
def tmpfs_at(folder, size):
    """A tmpfs of `size` (e.g. "8m") mounted at `folder` while in the block; the test is
    skipped, with mount's reason, where it cannot mount one."""
    folder.mkdir(exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def run_script(script, *args, cwd, env=None, check=True, timeout=120):
    """Run one of the project's scripts as a user would; the CompletedProcess."""
    command = [sys.executable, os.path.join(ROOT, script), *map(str, args)]
    result = subprocess.run(
        command,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{script} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result


def sync(cwd, *args, **kwargs):
    """One cycle of rsync_notebooks.py --no-sudo in `cwd`."""
    return run_script(
        "rsync_notebooks.py",
        "--no-sudo",
        "--repeat",
        1,
        "--min-sleep",
        0,
        *args,
        cwd=cwd,
        **kwargs,
    )


def rows(db, query="SELECT * FROM summary ORDER BY filename", params=()):
    conn = sqlite3.connect(db)
    try:
        return conn.execute(query, params).fetchall()
    finally:
        conn.close()


def write_users(path, lines):
    with open(path, "w") as stream:
        stream.write("uid,notebooks\n")
        for uid, notebooks in lines:
            stream.write(f"{uid},{notebooks}\n")


def write_json(path, content, mtime=None):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as stream:
        json.dump(content, stream)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def write_text(path, text, mtime=None):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as stream:
        stream.write(text)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


@pytest.fixture
def hoge(tmp_path):
    """The seed README's course: users a..e under hoge/, none of the folders made yet."""
    write_users(tmp_path / "users.csv", [(u, f"hoge/{u}/notebooks") for u in "abcde"])
    return tmp_path


# ---------------------------------------------------------------------------- the viewer's access


def private_access_db():
    """A fresh ACCESS_DB, so that one test's wrong guesses never lock another test out."""
    return os.path.join(tempfile.mkdtemp(prefix="viewer-access-"), "access.sqlite")


def token_client(app):
    """A Flask test client of the Dash `app` that sends ACCESS_TOKEN, as a script would."""
    client = app.server.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"token {ACCESS_TOKEN}"
    return client


def open_page(dash_duo, app):
    """Start `app` and open it in the browser as the teacher does: from the token URL."""
    dash_duo.start_server(app, navigate=False)
    dash_duo.server_url = f"{dash_duo.server.url}/?token={ACCESS_TOKEN}"
