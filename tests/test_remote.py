"""Several hubs from one monitor (rsync_notebooks.py --remote): real rsync daemons on
127.0.0.1 (and a real sshd where Debian's openssh-server can run), the real loop, a real
SQLite file. Each host's folders land under `sync_dest/<host>/`."""

import os
import shutil
import signal
import socket
import subprocess
import time

import pytest
from conftest import kill_make_database_after, rows, run_script, sync, write_json, write_text
from demo_course import execute_result, grade_cell, notebook
from test_hostile_sync import LONG_NAME
from test_sync import KILL_POINTS, db_state, dest_files, read_until, start_loop

import make_database as md
import rsync_notebooks as rn

STUDENT_PATH = "s1/notebooks"  # the same path under each daemon's module
UID_ON = {1: 1001, 2: 1002}  # the student's account on each machine: copies keep it
ODD_NAME = "odd |name\nwith a newline and 日本語.ipynb"


def answered(answer):
    return notebook([grade_cell(answer, "q", [execute_result(answer)])])


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port, process, what):
    """Wait until `port` on 127.0.0.1 accepts a connection; fail when `process` died."""
    for _ in range(200):
        if process.poll() is not None:
            raise AssertionError(f"{what} exited {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{what} does not listen on {port}")


class Daemon:
    """`rsync --daemon --no-detach` on 127.0.0.1, its module `home` serving `folder`."""

    def __init__(self, root, name):
        self.folder = root / name / "home"
        self.folder.mkdir(parents=True)
        self.port = free_port()
        self.config = root / name / "rsyncd.conf"
        self.config.write_text(
            "use chroot = no\nuid = root\ngid = root\n"
            f"pid file = {root / name / 'rsyncd.pid'}\n"
            f"[home]\npath = {self.folder}\nread only = yes\n"
        )
        self.process = None
        self.start()

    def start(self):
        command = ["rsync", "--daemon", "--no-detach", "--address", "127.0.0.1"]
        command += ["--port", str(self.port), "--config", str(self.config)]
        self.process = subprocess.Popen(command)
        wait_for_port(self.port, self.process, "rsync --daemon")

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=10)

    def row(self, path=STUDENT_PATH):
        return f"rsync://127.0.0.1:{self.port}/home/{path}"

    def folder_in_dest(self):
        return f"127.0.0.1+{self.port}/home"


@pytest.fixture
def daemons(tmp_path):
    """Two daemons serving the same student path from different folders, each file owned
    by the student's account on that machine."""
    started = [Daemon(tmp_path, "node1"), Daemon(tmp_path, "node2")]
    yield started
    for daemon in started:
        if daemon.process.poll() is None:
            daemon.stop()


def write_users_rows(root, rows_):
    (root / "users.csv").write_text("uid,notebooks\n" + "".join(f"{u},{n}\n" for u, n in rows_))


def save(daemon, number, name, content, mtime):
    path = daemon.folder / STUDENT_PATH / name
    write_json(path, content, mtime)
    for folder in (path, path.parent, path.parent.parent):
        os.lchown(folder, UID_ON[number], UID_ON[number])
    return path


def course(root, daemons):
    """u1 on node1 and u2 on node2, at the same path; a local row too."""
    one, two = daemons
    write_users_rows(root, [("u1", one.row()), ("u2", two.row()), ("local", "hoge/l")])
    save(one, 1, "nb.ipynb", answered("1"), 1_600_000_000)
    save(two, 2, "nb.ipynb", answered("2"), 1_600_000_000)
    write_text(root / "hoge/l/hello.txt", "hi\n", 1_600_000_000)


def warnings(stderr):
    """The loop's warnings but the one about running as root (the tests run as root)."""
    return [
        line for line in stderr.splitlines() if line.startswith("warning") and "as root" not in line
    ]


def logs(root):
    return sorted(os.listdir(root / "sync_logs"))


def summary(root):
    return rows(root / "sync.sqlite", "SELECT filename, t, owner FROM summary ORDER BY filename")


# ---------------------------------------------------------------------------- the rows


def test_remote_rows_are_refused_without_the_flag_and_a_colon_path_stays_local(tmp_path):
    """Without --remote a host:/path or rsync:// row is refused with a warning naming its
    line, as before; `./a:b` is a local folder with or without the flag."""
    write_users_rows(
        tmp_path,
        [("r1", "node1:/home/a/nb"), ("r2", "rsync://node1/home/a/nb"), ("c", "./a:b")],
    )
    write_text(tmp_path / "a:b/hello.txt", "hi\n", 1_600_000_000)
    result = sync(tmp_path)
    assert "users.csv:2: refused" in result.stderr and "users.csv:3: refused" in result.stderr
    assert "--remote" in result.stderr
    assert summary(tmp_path) == [("a:b/hello.txt", rn.format_t(1_600_000_000), "c")]
    assert logs(tmp_path) == [logs(tmp_path)[0]] and "@" not in logs(tmp_path)[0]


def test_a_colon_path_stays_local_with_the_flag(tmp_path):
    """`./a:b` and `/x:y/...` name local folders; with --remote only [user@]host:/path and
    rsync://host[:port]/module/path are remote, and a home-relative host:path is refused."""
    write_text(tmp_path / "a:b/hello.txt", "hi\n", 1_600_000_000)
    write_text(tmp_path / "abs:x/hello.txt", "hi\n", 1_600_000_000)
    write_users_rows(
        tmp_path, [("c", "./a:b"), ("d", f"{tmp_path}/abs:x"), ("e", "node1:relative/nb")]
    )
    result = sync(tmp_path, "--remote")
    assert "users.csv:4: skipped" in result.stderr and "absolute path" in result.stderr
    absolute = f"{str(tmp_path).lstrip('/')}/abs:x/hello.txt"
    assert summary(tmp_path) == sorted(
        [
            ("a:b/hello.txt", rn.format_t(1_600_000_000), "c"),
            (absolute, rn.format_t(1_600_000_000), "d"),
        ]
    )


def test_the_remote_forms_and_where_their_copies_land():
    """Each form's host, the rsync source shared by its host's rows, and its folder under
    the destination: two daemons on one address differ by port, and no folder has a `:`."""
    assert md.remote_folder("alice@node1:/home/a/nb") == md.RemoteFolder(
        "alice@node1", "alice@node1:/", "alice@node1/", "home/a/nb"
    )
    assert md.remote_folder("rsync://10.0.0.5/home/a/nb") == md.RemoteFolder(
        "10.0.0.5:873", "rsync://10.0.0.5:873/home/", "10.0.0.5+873/home/", "a/nb"
    )
    assert md.dest_relative("rsync://10.0.0.5:8730/home/a/nb") == "10.0.0.5+8730/home/a/nb"
    for local, folder in (("./a:b", "a:b"), ("/x:y/nb", "x:y/nb"), ("hoge/a", "hoge/a")):
        assert md.remote_folder(local) is None
        assert md.dest_relative(local) == folder
    for bad in ("node1:nb", "node1:/", "rsync://h/m/../../etc", "rsync://h:99999/m/a", "a b:/x"):
        assert md.notebooks_problem(bad), bad


# ---------------------------------------------------------------------------- two daemons


def test_two_daemons_serving_the_same_paths_are_copied_apart_with_their_owners(tmp_path, daemons):
    """One cycle copies both hosts and the local row, one log each; each host's copy is
    under its own folder, keeps its owner, and is recorded for its row; an edit on one
    host gives a backup and its row, as for a local folder."""
    one, two = daemons
    course(tmp_path, daemons)
    first = sync(tmp_path, "--remote")
    assert warnings(first.stderr) == []
    t = logs(tmp_path)[0][len("sync_") : -len(".log")]
    assert logs(tmp_path) == sorted(
        [
            f"sync_{t}.log",
            f"sync_{t}@127.0.0.1+{one.port}+home.log",
            f"sync_{t}@127.0.0.1+{two.port}+home.log",
        ]
    )
    copy1 = f"{one.folder_in_dest()}/{STUDENT_PATH}/nb.ipynb"
    copy2 = f"{two.folder_in_dest()}/{STUDENT_PATH}/nb.ipynb"
    dest = tmp_path / "sync_dest"
    assert '"1"' in (dest / copy1).read_text() and '"2"' in (dest / copy2).read_text()
    assert [os.lstat(dest / copy).st_uid for copy in (copy1, copy2)] == [1001, 1002]
    v0 = rn.format_t(1_600_000_000)
    assert summary(tmp_path) == sorted(
        [(copy1, v0, "u1"), (copy2, v0, "u2"), ("hoge/l/hello.txt", v0, "local")]
    )

    save(one, 1, "nb.ipynb", answered("11"), 1_600_000_100)
    sync(tmp_path, "--remote")
    second = max(log for log in logs(tmp_path) if "@" not in log)[len("sync_") : -len(".log")]
    backup = f"{one.folder_in_dest()}/{STUDENT_PATH}/nb.bak_{second}.ipynb"
    assert '"1"' in (dest / backup).read_text() and '"11"' in (dest / copy1).read_text()
    assert summary(tmp_path) == sorted(
        [
            (backup, v0, "u1"),
            (copy1, rn.format_t(1_600_000_100), "u1"),
            (copy2, v0, "u2"),
            ("hoge/l/hello.txt", v0, "local"),
        ]
    )
    counts = "SELECT code_ok FROM summary WHERE filename = ?"
    assert rows(tmp_path / "sync.sqlite", counts, (copy1,)) == [(1,)]
    # the logs replayed on a new database give the same
    run_script("rsync_notebooks.py", "--no-sudo", "--replay-log", "--db", "re.sqlite", cwd=tmp_path)
    assert db_state(tmp_path / "re.sqlite") == db_state(tmp_path / "sync.sqlite")


def test_odd_and_long_names_on_a_host_are_copied_and_recorded(tmp_path, daemons):
    """A name with `|`, a newline and Japanese, and a 240-byte name: copied and recorded
    under the host's folder, each replaced version kept and recorded, the long name's
    under a shortened name, as for a local folder."""
    one, _ = daemons
    write_users_rows(tmp_path, [("u1", one.row())])
    for name in (ODD_NAME, LONG_NAME):
        save(one, 1, name, answered("1"), 1_600_000_000)
    sync(tmp_path, "--remote")
    for name in (ODD_NAME, LONG_NAME):
        save(one, 1, name, answered("2"), 1_600_000_100)
    result = sync(tmp_path, "--remote")
    second = [log for log in logs(tmp_path) if "@" in log][-1]
    t = second[len("sync_") : second.index("@")]
    folder = f"{one.folder_in_dest()}/{STUDENT_PATH}"
    assert f"{folder}/{LONG_NAME}: its name is too long for a backup suffix" in result.stderr
    long_copy = tmp_path / "sync_dest" / folder / LONG_NAME
    assert '"2"' in long_copy.read_text()
    # the version it replaced is kept (wherever make_database.py keeps a long name's)
    kept = [
        path
        for path in (tmp_path / "sync_dest").rglob(f"{LONG_NAME[:30]}*")
        if path.is_file() and path != long_copy
    ]
    assert len(kept) == 1 and '"1"' in kept[0].read_text()
    odd_stem = ODD_NAME[: -len(".ipynb")]
    recorded = summary(tmp_path)
    for row in [
        (f"{folder}/{LONG_NAME}", rn.format_t(1_600_000_100), "u1"),
        (f"{folder}/{odd_stem}.bak_{t}.ipynb", rn.format_t(1_600_000_000), "u1"),
        (f"{folder}/{ODD_NAME}", rn.format_t(1_600_000_100), "u1"),
    ]:
        assert row in recorded


def test_a_notebook_over_max_size_on_a_host_is_recorded_without_counts(tmp_path, daemons):
    """rsync names a host's file over 10 MB in the host's log; it is recorded (no counts,
    a warning naming it under the host's folder) and not copied, the other file is."""
    one, _ = daemons
    write_users_rows(tmp_path, [("u1", one.row())])
    save(one, 1, "nb.ipynb", answered("1"), 1_600_000_000)
    big = save(one, 1, "big.ipynb", answered("x" * (11 << 20)), 1_600_000_000)
    result = sync(tmp_path, "--remote")
    folder = f"{one.folder_in_dest()}/{STUDENT_PATH}"
    t = [log for log in logs(tmp_path) if "@" in log][0]
    t = t[len("sync_") : t.index("@")]
    assert f"warning: {folder}/big.ipynb is over max-size" in result.stderr
    assert not (tmp_path / "sync_dest" / folder / big.name).exists()
    assert rows(tmp_path / "sync.sqlite", "SELECT filename, owner, code_ok FROM summary") == [
        (f"{folder}/nb.ipynb", "u1", 1),
        (f"{folder}/big.bak_{t}.ipynb", "u1", None),
    ]


def test_a_stopped_host_is_reported_the_other_recorded_and_it_catches_up(tmp_path, daemons):
    """One daemon stops mid-term in a running loop: the next cycle reports it (one warning
    naming the host and rsync's reason) and records the other host; once it is back, the
    next cycle records its changes made meanwhile."""
    one, two = daemons
    course(tmp_path, daemons)
    loop = start_loop(tmp_path, "--remote", "--repeat", 3, "--min-sleep", 3)
    try:
        read_until(loop, "took")
        two.stop()
        save(one, 1, "nb.ipynb", answered("11"), 1_600_000_100)
        save(two, 2, "nb.ipynb", answered("22"), 1_600_000_100)
        second = read_until(loop, "took")
        copy1 = f"{one.folder_in_dest()}/{STUDENT_PATH}/nb.ipynb"
        copy2 = f"{two.folder_in_dest()}/{STUDENT_PATH}/nb.ipynb"
        times = "SELECT t FROM summary WHERE filename = ?"
        assert rows(tmp_path / "sync.sqlite", times, (copy1,)) == [(rn.format_t(1_600_000_100),)]
        assert rows(tmp_path / "sync.sqlite", times, (copy2,)) == [(rn.format_t(1_600_000_000),)]
        assert "1 warnings" in second
        two.start()
        read_until(loop, "took")
        assert rows(tmp_path / "sync.sqlite", times, (copy2,)) == [(rn.format_t(1_600_000_100),)]
        _, stderr = loop.communicate(timeout=60)
    finally:
        if loop.poll() is None:
            loop.send_signal(signal.SIGTERM)
            loop.wait(timeout=30)
    warnings = [line for line in stderr.splitlines() if f"127.0.0.1:{two.port}" in line]
    assert len(warnings) == 1, stderr
    assert "tried again next cycle" in warnings[0] and "rsync exit 10" in warnings[0]
    assert "Connection refused" in warnings[0]
    assert loop.returncode == 1  # a cycle did not copy everything


def test_a_module_the_daemon_refuses_is_one_warning_and_the_rest_is_recorded(tmp_path, daemons):
    """A row naming a module the daemon does not have (rsync exit 5): one warning naming
    the host and rsync's reason; the other host's row is recorded in the same cycle."""
    one, two = daemons
    write_users_rows(tmp_path, [("u1", one.row()), ("u2", f"rsync://127.0.0.1:{two.port}/nope/x")])
    save(one, 1, "nb.ipynb", answered("1"), 1_600_000_000)
    result = sync(tmp_path, "--remote", check=False)
    assert result.returncode == 1
    (warning,) = warnings(result.stderr)
    assert f"host 127.0.0.1:{two.port}: not copied this cycle" in warning
    assert "rsync exit 5" in warning and "nope" in warning
    copy = f"{one.folder_in_dest()}/{STUDENT_PATH}/nb.ipynb"
    assert summary(tmp_path) == [(copy, rn.format_t(1_600_000_000), "u1")]


def test_a_host_log_left_unapplied_is_applied_at_the_next_start(tmp_path, daemons):
    """kill -9 between a host's rsync and make_database.py: the next loop applies that
    host's log (the previous version renamed and recorded) before its first cycle."""
    one, _ = daemons
    write_users_rows(tmp_path, [("u1", one.row())])
    save(one, 1, "nb.ipynb", answered("1"), 1_600_000_000)
    sync(tmp_path, "--remote")
    save(one, 1, "nb.ipynb", answered("2"), 1_600_000_100)
    # what the killed loop did: its rsync of the host and its log, no make_database.py
    remote = md.remote_folder(one.row())
    t = rn.next_timestamp(time.time(), None, str(tmp_path / "sync_logs"))
    suffix = f".bak_{rn.format_t(t)}"
    log = rn.log_path(str(tmp_path / "sync_logs"), t, remote.root)
    with rn.start_log(log, suffix, folder=remote.root) as stream:
        command = rn.host_rsync_command(remote, str(tmp_path / "sync_dest"), suffix, False, "ssh")
        subprocess.run(
            command, cwd=tmp_path, input=rn.nul_terminated([remote.path]), stdout=stream, check=True
        )
    result = sync(tmp_path, "--remote")
    assert f"{os.path.relpath(log, tmp_path)} is not applied yet" in result.stdout
    folder = f"{one.folder_in_dest()}/{STUDENT_PATH}"
    assert summary(tmp_path) == [
        (f"{folder}/nb{suffix}.ipynb", rn.format_t(1_600_000_000), "u1"),
        (f"{folder}/nb.ipynb", rn.format_t(1_600_000_100), "u1"),
    ]


@pytest.mark.parametrize("point", KILL_POINTS)
def test_make_database_killed_mid_apply_of_a_host_log_then_rerun_equals_a_clean_run(
    tmp_path, daemons, point
):
    """SIGKILL at each step of applying a host's log, then the same log again: as if never
    killed (the same database and copies as a clean run)."""
    one, _ = daemons
    clean, crashed = tmp_path / "clean", tmp_path / "crashed"
    clean.mkdir()
    write_users_rows(clean, [("u1", one.row())])
    save(one, 1, "nb.ipynb", answered("1"), 1_600_000_000)
    sync(clean, "--remote")
    save(one, 1, "nb.ipynb", answered("2"), 1_600_000_100)
    save(one, 1, "new.ipynb", answered("3"), 1_600_000_100)
    subprocess.run(["cp", "-a", str(clean), str(crashed)], check=True)
    remote = md.remote_folder(one.row())
    t = rn.next_timestamp(time.time(), None, str(clean / "sync_logs"))
    suffix, log = f".bak_{rn.format_t(t)}", rn.log_path("sync_logs", t, remote.root)
    for root in (clean, crashed):  # the same rsync of the host in both
        with rn.start_log(root / log, suffix, folder=remote.root) as stream:
            command = rn.host_rsync_command(remote, str(root / "sync_dest"), suffix, False, "ssh")
            paths = rn.nul_terminated([remote.path])
            subprocess.run(command, input=paths, stdout=stream, check=True)
    args = ["--log", log, "--dest", "sync_dest", "--db", "sync.sqlite"]
    run_script("make_database.py", *args, cwd=clean)
    kill_make_database_after(KILL_POINTS[point], *args, cwd=crashed)
    run_script("make_database.py", *args, cwd=crashed)
    assert db_state(crashed / "sync.sqlite") == db_state(clean / "sync.sqlite")
    assert dest_files(crashed) == dest_files(clean)
    assert len(rows(clean / "sync.sqlite")) == 3


# ---------------------------------------------------------------------------- ssh


def test_an_ssh_host_that_cannot_be_reached_is_one_warning(tmp_path):
    """ssh to a port where nothing listens (BatchMode: never a password prompt): one
    warning naming the host, the loop's exit status 1, nothing else stopped."""
    write_users_rows(tmp_path, [("u1", "root@127.0.0.1:/home/u1/nb"), ("l", "hoge/l")])
    write_text(tmp_path / "hoge/l/hello.txt", "hi\n", 1_600_000_000)
    ssh = f"ssh -p {free_port()} {NO_HOST_KEY_CHECK}"
    result = sync(tmp_path, "--remote", "--ssh", ssh, check=False)
    assert result.returncode == 1
    warnings = [line for line in result.stderr.splitlines() if "root@127.0.0.1" in line]
    assert len(warnings) == 1 and "Connection refused" in warnings[0], result.stderr
    assert "tried again next cycle" in warnings[0]
    assert summary(tmp_path) == [("hoge/l/hello.txt", rn.format_t(1_600_000_000), "l")]


SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
NO_HOST_KEY_CHECK = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"


@pytest.fixture
def sshd(tmp_path):
    """sshd on 127.0.0.1 with a host key and a client key made for the test; (port, the
    --ssh command). Skipped where openssh-server is missing or cannot run."""
    if not os.path.exists(SSHD) or os.geteuid() != 0:
        pytest.skip("needs Debian's openssh-server (/usr/sbin/sshd) and root")
    keys = tmp_path / "ssh"
    keys.mkdir()
    for name in ("host_key", "client_key"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", keys / name], check=True
        )
    shutil.copy(keys / "client_key.pub", keys / "authorized_keys")
    port = free_port()
    config = keys / "sshd_config"
    config.write_text(
        f"ListenAddress 127.0.0.1\nHostKey {keys / 'host_key'}\nPidFile {keys / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {keys / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nUsePAM no\nStrictModes no\n"
    )
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # its privilege separation folder
    process = subprocess.Popen(
        [SSHD, "-D", "-e", "-p", str(port), "-f", config], stderr=subprocess.PIPE
    )
    try:
        wait_for_port(port, process, "sshd")
    except AssertionError:
        pytest.skip(f"sshd cannot run here: {process.stderr.read().decode(errors='replace')}")
    yield f"ssh -p {port} -i {keys / 'client_key'} {NO_HOST_KEY_CHECK}"
    process.terminate()
    process.wait(timeout=10)


def test_an_ssh_host_is_copied_with_backups_and_owners(tmp_path, sshd):
    """root@127.0.0.1:/path over a real sshd: the copy lands under sync_dest/root@127.0.0.1/,
    keeps its owner, is recorded for its row, and an edit gives a backup."""
    home = tmp_path / "node/home/u1/nb"
    write_json(home / "nb.ipynb", answered("1"), 1_600_000_000)
    os.lchown(home / "nb.ipynb", 1001, 1001)
    write_users_rows(tmp_path, [("u1", f"root@127.0.0.1:{home}")])
    sync(tmp_path, "--remote", "--ssh", sshd)
    write_json(home / "nb.ipynb", answered("2"), 1_600_000_100)
    sync(tmp_path, "--remote", "--ssh", sshd)
    second = [log for log in logs(tmp_path) if "@" in log][-1]
    assert second.endswith("@root@127.0.0.1.log")
    t = second[len("sync_") : second.index("@")]
    folder = f"root@127.0.0.1{home}"
    assert os.lstat(tmp_path / "sync_dest" / folder / "nb.ipynb").st_uid == 1001
    assert summary(tmp_path) == [
        (f"{folder}/nb.bak_{t}.ipynb", rn.format_t(1_600_000_000), "u1"),
        (f"{folder}/nb.ipynb", rn.format_t(1_600_000_100), "u1"),
    ]
