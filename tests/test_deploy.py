"""Running the scripts as a service for a term: the viewer's command line and messages,
the viewer under gunicorn, and the systemd units in deploy/."""

import base64
import concurrent.futures
import getpass
import grp
import http.client
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

import pytest
from conftest import ROOT, run_script

import make_database
import progress_viewer
import rsync_notebooks

DEPLOY = os.path.join(ROOT, "deploy")
UNITS = ["monitoring-sync.service", "monitoring-viewer.service"]
# Where the units expect the clone and the course folder, and the account they name
# (README.md's install step changes the account with sed).
UNIT_CLONE = "/opt/monitoring"
UNIT_COURSE = "/home/instructor/monitoring"
UNIT_ACCOUNT = "instructor"
UNIT_RUNTIME = "/run/monitoring-viewer"  # where systemd makes the viewer's RuntimeDirectory
README_INSTALL = f"sudo sed -i 's/{UNIT_ACCOUNT}/alice/g' /etc/systemd/system/monitoring-*.service"
TIMESTAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_http(url, process, timeout=60):
    """The HTTP status of `url` once something answers there (None if `process` died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code
        except OSError:
            time.sleep(0.3)
    return None


def installed_unit(name, course):
    """The text of a unit in deploy/ as installed for this clone, a course folder and the
    account running the tests."""
    with open(os.path.join(DEPLOY, name)) as stream:
        text = stream.read()
    text = text.replace(UNIT_CLONE, ROOT).replace(UNIT_COURSE, str(course))
    return text.replace(UNIT_ACCOUNT, getpass.getuser())


def exec_start(unit_text):
    """The command line of a unit's ExecStart= as an argument list."""
    for line in unit_text.splitlines():
        if line.startswith("ExecStart="):
            return shlex.split(line.removeprefix("ExecStart="))
    raise AssertionError("no ExecStart= line")


def service_settings(unit_text):
    """The `Key=value` lines of a unit, as a dict."""
    pairs = (line.split("=", 1) for line in unit_text.splitlines() if "=" in line)
    return {key: value for key, value in pairs if not key.startswith("#")}


class UnixHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to a server on a Unix socket (as nginx's proxy_pass http://unix:)."""

    def __init__(self, path):
        super().__init__("localhost", timeout=10)
        self.socket_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


def status_through_socket(path, url, headers, process, timeout=60):
    """The HTTP status of `url` through the Unix socket `path` once something answers there
    (None if `process` died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        connection = UnixHTTPConnection(path)
        try:
            connection.request("GET", url, headers=headers)
            return connection.getresponse().status
        except OSError:
            time.sleep(0.3)
        finally:
            connection.close()
    return None


def connects_as(uid, gid, bind):
    """True when an account (`uid`, primary group `gid`, no other group) can open a
    connection to gunicorn's --bind address `bind` (unix:PATH or HOST:PORT)."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            if bind.startswith("unix:"):
                family, address = socket.AF_UNIX, bind.removeprefix("unix:")
            else:
                host, port = bind.rsplit(":", 1)
                family, address = socket.AF_INET, (host, int(port))
            socket.socket(family, socket.SOCK_STREAM).connect(address)
            os._exit(0)
        except BaseException:
            os._exit(1)
    return os.waitpid(pid, 0)[1] == 0


def write_config(folder, text):
    path = os.path.join(folder, "progress_viewer_config.py")
    with open(path, "w") as stream:
        stream.write(text)
    return path


# ---------------------------------------------------------------------------- command line


def test_viewer_version_is_the_projects():
    """Does `progress_viewer.py --version` print the one version string?"""
    result = run_script("progress_viewer.py", "--version", cwd=ROOT)
    assert result.stdout.split() == ["progress_viewer.py", make_database.__version__]


def test_unknown_config_key_is_named(tmp_path, caplog):
    """A misspelt setting (PASWD for PASSWD) is not silently ignored: the warning names it."""
    path = write_config(tmp_path, 'PASWD = "secret"\nUSER_ATTRS = ["team"]\nhelper = 1\n')
    settings = progress_viewer.load_settings(path)
    assert settings["USER_ATTRS"] == ["team"]
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1
    assert "PASWD" in warnings[0] and path in warnings[0]


def test_busy_port_says_why_and_exits_1(tmp_path):
    """On a port another program holds, the viewer says so, exits 1, and never claims to serve."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_script("progress_viewer.py", "--port", port, cwd=tmp_path, check=False)
    assert result.returncode == 1
    assert "serving" not in result.stdout
    assert f"Error: cannot listen on 127.0.0.1:{port}: address already in use" in result.stderr


def test_viewer_warns_when_the_destination_is_missing(tmp_path):
    """Given --db and --users-csv from elsewhere but no --dest, the viewer says the version
    view has no files to show (the README's example once left SYNC_DEST out)."""
    course = tmp_path / "srv"
    (course / "sync_dest").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        flags = ["--db", course / "sync.sqlite", "--users-csv", course / "users.csv"]
        flags += ["--port", port]
        without = run_script("progress_viewer.py", *flags, cwd=elsewhere, check=False)
        given = run_script(
            "progress_viewer.py", *flags, "--dest", course / "sync_dest", cwd=elsewhere, check=False
        )
    assert "warning: no destination folder at sync_dest" in without.stderr
    assert "destination" not in given.stderr


def test_trusted_proxies_on_a_port_is_warned_about(tmp_path):
    """`main` listens on TCP, which every local account reaches: with TRUSTED_PROXIES set,
    any of them could forge X-Forwarded-For (to lock out an address, or everyone), so the
    viewer says so at start."""
    with socket.socket() as holder:  # a busy port: the viewer warns, then stops
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        plain = run_script("progress_viewer.py", "--port", port, cwd=tmp_path, check=False)
        write_config(tmp_path, "TRUSTED_PROXIES = 1\n")
        trusting = run_script("progress_viewer.py", "--port", port, cwd=tmp_path, check=False)
    warning = "warning: TRUSTED_PROXIES is set, but every account that reaches the port"
    assert warning in trusting.stderr
    assert "TRUSTED_PROXIES" not in plain.stderr


def test_files_open_to_other_accounts_are_named_with_the_fix():
    """The demo once left PASSWD (in the config) and real names (in users.csv) readable by
    every account: the viewer names each such file and the chmod to run, unless a folder
    above it is closed to others."""
    course = tempfile.mkdtemp(prefix="course-")  # in /tmp, which every account crosses
    try:
        os.chmod(course, 0o755)
        config = write_config(
            course, 'PASSWD = "s"\nUSERS_CSV = "users.csv"\nSYNC_SQLITE = "sync.sqlite"\n'
        )
        users, db = os.path.join(course, "users.csv"), os.path.join(course, "sync.sqlite")
        with open(users, "w") as stream:
            stream.write("uid,real_name\nu1,Ann Lee\n")
        sqlite3.connect(db).close()
        os.chmod(config, 0o644)
        os.chmod(users, 0o646)
        os.chmod(db, 0o600)
        settings = progress_viewer.load_settings(config)
        problems = progress_viewer.startup_problems(settings, config)
        assert f"{config} can be read by other accounts: run chmod 600 {config}" in problems
        exposed = f"{users} can be read and changed by other accounts: run chmod 600 {users}"
        assert exposed in problems
        assert not any(db in problem for problem in problems)
        os.chmod(course, 0o700)
        assert not any("other accounts" in p for p in progress_viewer.startup_problems(settings))
    finally:
        shutil.rmtree(course)


# ---------------------------------------------------------------------------- gunicorn


@pytest.fixture
def gunicorn_viewer(tmp_path):
    """The viewer as its systemd unit runs it (gunicorn, on a free port here), configured
    with basic auth; (url, process, log)."""
    write_config(tmp_path, 'BASIC_AUTH_USER_PASSWORD_PAIRS = {"staff": "right"}\n')
    port = free_port()
    command = exec_start(installed_unit("monitoring-viewer.service", tmp_path))
    command[command.index("--bind") + 1] = f"127.0.0.1:{port}"
    command[1:1] = ["--access-logfile", "-"]  # what a teacher may add
    log = open(tmp_path / "gunicorn.log", "w+")
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}/", process, log
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        log.close()


def lines_logged(log, text, timeout=10):
    """The lines of the server's log (an open file) that contain `text`, once there are
    some (waiting up to `timeout` seconds; none after it)."""
    deadline = time.monotonic() + timeout
    while True:
        log.seek(0)
        found = [line for line in log if text in line]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_gunicorn_log_lines_carry_timestamps(gunicorn_viewer):
    """Under gunicorn, the viewer's own log lines (a refused login) start with the time."""
    url, process, log = gunicorn_viewer
    assert wait_for_http(url, process) == 401
    credentials = base64.b64encode(b"staff:Tr0ub4dor").decode()
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {credentials}"})
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(request, timeout=10)
    refused = lines_logged(log, "'staff'")
    assert refused and re.match(TIMESTAMP, refused[0]), refused
    log.seek(0)
    assert "Tr0ub4dor" not in log.read()


def page_scripts(settings):
    """The URLs of the scripts the page loads (Dash's own libraries among them), as the
    viewer with these settings serves them: read from an app in this process."""
    client = progress_viewer.create_app(settings).server.test_client()
    page = client.get("/", headers={"Authorization": "token " + settings["ACCESS_TOKEN"]})
    return re.findall(r'<script src="([^"]+)"', page.get_data(as_text=True))


def test_the_first_requests_a_worker_gets_at_once_are_all_served(tmp_path):
    """A browser opening the page asks for its scripts at once; when those are the first
    requests a gunicorn worker gets (the page came from the other worker), each one is
    served, not a 500 with "dash is not a registered library" (the page then stayed at
    "Loading..." until reloaded): Dash set itself up on the first request, and a thread
    that came while another did it found nothing registered yet. The threads here switch
    as often as Python lets them, so that they meet inside those 2-3 ms as on a busy hub."""
    token = "a-token-for-this-test-0123456789"
    write_config(tmp_path, f"ACCESS_TOKEN = {token!r}\nPASSWD = 'pw'\n")
    settings = progress_viewer.load_settings(str(tmp_path / "progress_viewer_config.py"))
    scripts = page_scripts(settings)
    assert any("/dash/" in url for url in scripts), scripts
    urls = scripts * 4
    worker = progress_viewer.create_app(settings).server  # as a gunicorn worker builds it
    ready = threading.Barrier(len(urls))

    def status(url):
        client = worker.test_client()
        ready.wait()
        return client.get(url, headers={"Authorization": "token " + token}).status_code

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with concurrent.futures.ThreadPoolExecutor(len(urls)) as pool:
            statuses = list(pool.map(status, urls))
    finally:
        sys.setswitchinterval(switch)
    assert statuses == [200] * len(urls)


def test_gunicorn_logs_the_start_up_warnings(gunicorn_viewer):
    """What `./progress_viewer.py` warns of at start is in gunicorn's log too (here: no
    PASSWD, no database yet), each line with its time."""
    url, process, log = gunicorn_viewer
    wait_for_http(url, process)
    for warning in ("PASSWD is not set: names stay hidden", "no database at "):
        logged = lines_logged(log, warning)
        assert logged and re.match(TIMESTAMP + ".* WARNING ", logged[0]), (warning, logged)


def test_gunicorn_access_log_hides_tokens(gunicorn_viewer):
    """gunicorn's access log, when asked for, shows `token=<hidden>` for a token in the URL."""
    url, process, log = gunicorn_viewer
    assert wait_for_http(f"{url}?token=a-secret-token&x=1", process) == 401
    logged = lines_logged(log, '"GET /?token=')
    assert logged and '"GET /?token=<hidden>&x=1 HTTP/1.1" 401' in logged[0], logged
    log.seek(0)
    assert "a-secret-token" not in log.read()


# ---------------------------------------------------------------------------- systemd units


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as other accounts")
def test_viewer_unit_listens_where_only_the_proxy_group_reaches(tmp_path):
    """The viewer's unit serves the page on a Unix socket in its RuntimeDirectory (made here
    as systemd makes it), which the proxy's group reaches and another local account (a
    student's, nobody here) does not: no student can stall the workers or forge
    X-Forwarded-For. On 127.0.0.1:8050 every account could."""
    runtime = tempfile.mkdtemp(prefix="run-")  # traversable by every account, unlike tmp_path
    try:
        os.chmod(runtime, 0o755)
        unit = installed_unit("monitoring-viewer.service", tmp_path)
        unit = unit.replace(UNIT_RUNTIME, os.path.join(runtime, "monitoring-viewer"))
        service = service_settings(unit)
        proxy_gid = grp.getgrnam(service["Group"]).gr_gid
        folder = os.path.join(runtime, service["RuntimeDirectory"])
        os.mkdir(folder, int(service["RuntimeDirectoryMode"], 8))
        os.chown(folder, os.getuid(), proxy_gid)
        token = "t" * 43
        write_config(tmp_path, f"ACCESS_TOKEN = {token!r}\n")
        command = exec_start(unit)
        bind = command[command.index("--bind") + 1]
        assert bind.startswith(f"unix:{folder}/")
        with open(tmp_path / "gunicorn.log", "w") as log:
            process = subprocess.Popen(
                command, cwd=tmp_path, group=proxy_gid, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            headers = {"Authorization": f"token {token}"}
            path = bind.removeprefix("unix:")
            assert status_through_socket(path, "/", headers, process) == 200
            nobody = pwd.getpwnam("nobody")
            assert not connects_as(nobody.pw_uid, nobody.pw_gid, bind)
            assert connects_as(nobody.pw_uid, proxy_gid, bind)  # an account in nginx's group
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
    finally:
        shutil.rmtree(runtime)


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_units_verify(tmp_path):
    """Do the units in deploy/, installed for this clone, pass `systemd-analyze verify`?"""
    for name in UNITS:
        (tmp_path / name).write_text(installed_unit(name, tmp_path))
    result = subprocess.run(
        ["systemd-analyze", "verify", *(str(tmp_path / name) for name in UNITS)],
        capture_output=True,
        text=True,
    )
    assert (result.returncode, result.stderr) == (0, "")


def test_sync_unit_runs_the_loop_with_valid_flags(tmp_path):
    """The loop's unit runs the clone's rsync_notebooks.py with .venv's Python, with flags
    the script accepts, and lets the loop finish applying a log when stopped."""
    unit = installed_unit("monitoring-sync.service", tmp_path)
    command = exec_start(unit)
    assert command[:2] == [os.path.join(ROOT, ".venv", "bin", "python"), rsync_notebooks.__file__]
    rsync_notebooks.build_parser().parse_args(command[2:])
    assert "KillMode=mixed" in unit.splitlines()


def test_readme_installs_the_units_for_an_account():
    """The README's install step names the account the units are written for."""
    with open(os.path.join(ROOT, "README.md")) as stream:
        readme = stream.read().splitlines()
    assert README_INSTALL in readme
    for name in UNITS:
        with open(os.path.join(DEPLOY, name)) as stream:
            text = stream.read()
        assert f"--owner {UNIT_ACCOUNT}" in text or f"User={UNIT_ACCOUNT}" in text


@pytest.mark.skipif(os.geteuid() != 0, reason="the loop's unit runs as root")
def test_sync_unit_command_runs_a_cycle(hoge):
    """The loop's ExecStart, run as root in a course folder, completes a cycle."""
    (hoge / "hoge" / "a" / "notebooks").mkdir(parents=True)
    (hoge / "hoge" / "a" / "notebooks" / "hello.txt").write_text("hello\n")
    command = exec_start(installed_unit("monitoring-sync.service", hoge))
    result = subprocess.run(
        [*command, "--repeat", "1", "--min-sleep", "0"],
        cwd=hoge,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert (hoge / "sync_dest" / "hoge" / "a" / "notebooks" / "hello.txt").exists()


def problems_seen_by_nobody(settings):
    """The viewer's start-up problems for `settings`, as the account nobody sees them (a
    forked child that gave up root; the interpreter itself lives where nobody cannot run it)."""
    nobody = pwd.getpwnam("nobody")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)
        os.write(write_end, "\n".join(progress_viewer.startup_problems(settings)).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as stream:
        problems = stream.read().splitlines()
    os.waitpid(pid, 0)
    return problems


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as nobody")
def test_unreadable_database_says_whose_it_is():
    """A database the viewer's account cannot read (the loop ran as plain root) is named
    at start-up with its owner and the fix, not taken for a missing one."""
    course = tempfile.mkdtemp(prefix="course-")  # traversable by nobody, unlike tmp_path
    try:
        os.chmod(course, 0o755)
        db = os.path.join(course, "sync.sqlite")
        sqlite3.connect(db).close()
        os.chmod(db, 0o600)
        settings = progress_viewer.load_settings(None, {"SYNC_SQLITE": db, "SYNC_DEST": course})
        problems = problems_seen_by_nobody(settings)
        assert any(p.startswith(f"cannot read {db} (it belongs to root)") for p in problems)
        assert not any("no database" in problem for problem in problems), problems
        assert any("--owner" in problem for problem in problems)
    finally:
        shutil.rmtree(course)
