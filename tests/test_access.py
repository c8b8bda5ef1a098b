"""progress_views/access.py: the token or basic auth on every route, bounded requests, and
the limits on guessing a secret, through the viewer's real Flask stack and real servers."""

import base64
import logging
import os
import re
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time

import psutil
import pytest
import requests
from conftest import ACCESS_TOKEN, ROOT, open_page, private_access_db, run_script, token_client
from test_viewer import course, free_port, settings_for  # noqa: F401  (the session's synced course)
from werkzeug.security import check_password_hash, generate_password_hash

import progress_viewer as pv
from progress_views import access, problems
from progress_views.widgets import PageIds


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# ---------------------------------------------------------------------------- secrets and guesses


def test_secret_matches_plain_and_hashed():
    assert access.secret_matches("pw", "pw")
    assert not access.secret_matches("pW", "pw")
    assert not access.secret_matches("", "")
    hashed = generate_password_hash("pw")
    assert access.secret_matches("pw", hashed)
    assert not access.secret_matches(hashed, hashed)


def test_wrong_passwords_are_limited_per_client_logged_and_shared_by_workers(caplog):
    """Two gates on one ACCESS_DB (two workers): 5 wrong guesses from one client lock it out
    of both, the right password included; another client is not locked out."""
    path = private_access_db()
    first, second = (access.PasswordGate("right", access.AttemptLog(path)) for _ in "12")
    for n in range(access.FAILURES_PER_CLIENT):
        gate = (first, second)[n % 2]
        assert not gate.check(f"wrong{n}", "10.0.0.1")
    assert caplog.text.count("wrong names password from 10.0.0.1") == 5
    assert "wrong0" not in caplog.text  # the typed value is never logged
    assert not first.check("right", "10.0.0.1") and not second.check("right", "10.0.0.1")
    assert second.check("right", "10.0.0.2")


def test_the_same_wrong_password_from_several_callbacks_is_one_guess(caplog):
    """One Enter reaches every callback that takes the password: one guess, one log line."""
    gate = access.PasswordGate("right", access.AttemptLog(private_access_db()))
    for _ in range(3 * access.FAILURES_PER_CLIENT):
        assert not gate.check("wrong", "10.0.0.1")
    assert caplog.text.count("wrong names password") == 1
    assert gate.check("right", "10.0.0.1")


def test_wrong_guesses_in_total_lock_everyone_out():
    gate = access.PasswordGate("right", access.AttemptLog(private_access_db()))
    for n in range(access.FAILURES_IN_TOTAL):
        gate.check("wrong", f"10.0.{n // 250}.{n % 250}")
    assert not gate.check("right", "10.9.9.9")


def test_wrong_tokens_from_outside_do_not_lock_the_names_password():
    """Each kind of secret counts alone: a student without the token who locks out every
    new token login does not take the names away from the teacher's open page."""
    attempts = access.AttemptLog(private_access_db())
    for n in range(access.FAILURES_IN_TOTAL):
        attempts.admit(f"10.0.{n // 250}.{n % 250}", access.TOKEN, f"guess{n}", lambda: False)
    assert not attempts.admit("10.9.9.9", access.TOKEN, "right", lambda: True)
    assert access.PasswordGate("right", attempts).check("right", "10.9.9.9")


def test_no_password_or_a_forged_value_is_no_guess():
    gate = access.PasswordGate("right", access.AttemptLog(private_access_db()))
    for forged in ["", None, ["right"], {"a": 1}, 5] * access.FAILURES_PER_CLIENT:
        assert not gate.check(forged, "10.0.0.1")
    assert gate.check("right", "10.0.0.1")


def test_the_access_db_is_private(tmp_path):
    settings = {**pv.DEFAULTS, "SYNC_SQLITE": str(tmp_path / "sync.sqlite")}
    access.PasswordGate({**settings, "PASSWD": "pw"}).check("wrong", "10.0.0.1")
    path = tmp_path / access.ACCESS_DB_NAME
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert not (tmp_path / "sync.sqlite").exists()


def test_a_link_planted_where_the_access_db_goes_is_refused(tmp_path):
    """In a folder others could write, a link where ACCESS_DB goes would have the viewer
    create or change the file it points to: it is refused with its name instead."""
    target = tmp_path / "someone_elses_file"
    target.write_text("theirs\n")
    target.chmod(0o644)
    (tmp_path / "access.sqlite").symlink_to(target)
    settings = {**pv.DEFAULTS, "ACCESS_DB": str(tmp_path / "access.sqlite"), "PASSWD": "pw"}
    with pytest.raises(access.AccessDbError, match="access.sqlite"):
        access.PasswordGate(settings).check("wrong", "10.0.0.1")
    assert target.read_text() == "theirs\n" and stat.S_IMODE(target.stat().st_mode) == 0o644


# ---------------------------------------------------------------------------- every route


def test_security_headers_and_no_traceback(course):  # noqa: F811
    client = token_client(pv.create_app(settings_for(course)))
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors" in page.headers["Content-Security-Policy"]
    broken = client.post(
        "/_dash-update-component", data="{not json", content_type="application/json"
    )
    assert broken.status_code in (400, 500)
    assert b"Traceback" not in broken.data and b'File "' not in broken.data


@pytest.mark.parametrize("stored", ["pw", generate_password_hash("pw")], ids=["plain", "hashed"])
def test_basic_auth(course, stored):  # noqa: F811
    app = pv.create_app(settings_for(course, BASIC_AUTH_USER_PASSWORD_PAIRS={"ta": stored}))
    client = app.server.test_client()

    def get(header):
        return client.get("/", headers={"Authorization": header} if header else {})

    assert get(None).status_code == 401
    assert get(basic("ta", "nope")).status_code == 401
    for malformed in [
        "Basic",
        "Basic !!!",
        "Bearer x",
        "Basic " + base64.b64encode(b"\xff").decode(),
        f"token {ACCESS_TOKEN}",  # with basic auth, basic auth is the access control
    ]:
        response = get(malformed)
        assert response.status_code == 401, malformed
        assert b"Traceback" not in response.data
    assert get(basic("ta", "pw")).status_code == 200


def test_warning_when_the_token_is_off(course, caplog):  # noqa: F811
    with caplog.at_level(logging.WARNING):
        app = pv.create_app(settings_for(course, ACCESS_TOKEN=False))
    assert "ACCESS_TOKEN = False" in caplog.text
    assert app.server.test_client().get("/").status_code == 200


def test_wrong_basic_auth_passwords_are_limited_and_logged(course, caplog):  # noqa: F811
    pairs = {"ta": generate_password_hash("pw")}
    client = pv.create_app(settings_for(course, BASIC_AUTH_USER_PASSWORD_PAIRS=pairs))
    client = client.server.test_client()

    def get(password, address="10.0.0.1"):
        headers = {"Authorization": basic("ta", password)}
        return client.get("/", headers=headers, environ_base={"REMOTE_ADDR": address})

    for n in range(access.FAILURES_PER_CLIENT):
        assert get(f"guess{n}").status_code == 401
    assert "wrong basic-auth password for user 'ta' from 10.0.0.1" in caplog.text
    assert "guess" not in caplog.text
    assert get("pw").status_code == 401  # locked out for now
    assert get("pw", "10.0.0.2").status_code == 200


def test_an_unknown_basic_auth_user_costs_a_password_hash_too(monkeypatch):
    """A known user's password was hashed (150 ms), an unknown one's not (3 ms): the time
    told which user names exist. Now an unknown user's password is checked against a
    dummy hash made as the known ones were."""
    known = generate_password_hash("pw")
    checked = []

    def counted(hashed, password):
        checked.append(hashed.split("$", 1)[0])
        return check_password_hash(hashed, password)

    monkeypatch.setattr(access, "check_password_hash", counted)
    check = access.basic_auth_checker({"ta": known})
    assert not check("ta", "guess")
    assert not check("someone", "guess")
    assert not check("someone", "pw")
    assert checked == [known.split("$", 1)[0]] * 3


def test_a_verified_basic_auth_user_is_remembered_by_the_session(course):  # noqa: F811
    """After one check of the (hashed) password, the session cookie alone lets the browser
    in: assets do not cost a password hash each."""
    pairs = {"ta": generate_password_hash("pw")}
    settings = settings_for(course, BASIC_AUTH_USER_PASSWORD_PAIRS=pairs)
    client = pv.create_app(settings).server.test_client()
    assert client.get("/", headers={"Authorization": basic("ta", "pw")}).status_code == 200
    assert client.get("/_dash-layout").status_code == 200  # no Authorization header
    changed = {**settings, "BASIC_AUTH_USER_PASSWORD_PAIRS": {"ta": "new"}}
    after_change = pv.create_app(changed).server.test_client()
    after_change.set_cookie(access.COOKIE_NAME, client.get_cookie(access.COOKIE_NAME).value)
    assert after_change.get("/_dash-layout").status_code == 401  # a new password: log in again


def test_the_client_address_comes_from_x_forwarded_for_only_behind_a_trusted_proxy(
    course,  # noqa: F811
    caplog,
):
    """Behind nginx every request comes from 127.0.0.1: with TRUSTED_PROXIES = 1 the limit
    and the log use the address nginx forwards; without it, the header is ignored (a
    client could send any)."""

    def wrong_then_right(trusted_proxies):
        settings = settings_for(course, TRUSTED_PROXIES=trusted_proxies)
        client = pv.create_app(settings).server.test_client()
        for n in range(access.FAILURES_PER_CLIENT):
            client.get(f"/?token=guess{n}", headers={"X-Forwarded-For": f"10.0.0.{n}"})
        right = {"X-Forwarded-For": "10.0.1.1", "Authorization": f"token {ACCESS_TOKEN}"}
        return client.get("/", headers=right).status_code

    assert wrong_then_right(0) == 401  # five guesses from one address: 127.0.0.1
    assert "wrong access token from 127.0.0.1" in caplog.text
    assert "10.0.0" not in caplog.text
    assert wrong_then_right(1) == 200  # one guess from each of five addresses
    assert "wrong access token from 10.0.0.4" in caplog.text


# ---------------------------------------------------------------------------- the token


def test_every_route_needs_the_token_and_says_nothing_else(course):  # noqa: F811
    """Page, layout, dependencies, callbacks, component suites, assets: 401, a short text."""
    app = pv.create_app(settings_for(course))
    client = app.server.test_client()
    page = token_client(app).get("/").get_data(as_text=True)
    suite = re.search(r'src="(/_dash-component-suites/[^"]+)"', page).group(1)
    for method, path in [
        ("GET", "/"),
        ("GET", "/_dash-layout"),
        ("GET", "/_dash-dependencies"),
        ("POST", "/_dash-update-component"),
        ("GET", suite),
        ("GET", "/assets/style.css"),
        ("GET", "/_favicon.ico"),
    ]:
        response = client.open(path, method=method, json={} if method == "POST" else None)
        assert response.status_code == 401, path
        assert response.content_type == "text/plain", path
        assert b"activity" not in response.data and len(response.data) < 200, path
    assert token_client(app).get(suite).status_code == 200
    assert token_client(app).get("/_dash-layout").status_code == 200


def test_wrong_or_malformed_tokens_are_refused(course):  # noqa: F811
    app = pv.create_app(settings_for(course))
    client = app.server.test_client()
    for header in ["token nope", "token", "Token  ", "Bearer " + ACCESS_TOKEN, "token \xff"]:
        assert client.get("/", headers={"Authorization": header}).status_code == 401, header
    assert client.get("/?token=nope").status_code == 401
    assert client.get("/", headers={"Authorization": f"Token {ACCESS_TOKEN}"}).status_code == 200


def test_token_in_the_url_becomes_a_private_cookie_and_leaves_the_address_bar(course):  # noqa: F811
    settings = settings_for(course, URL_PREFIX="/progress/")
    client = pv.create_app(settings).server.test_client()
    response = client.get(f"/progress/?token={ACCESS_TOKEN}&x=1")
    assert response.status_code == 302
    assert response.headers["Location"] == "/progress/?x=1"
    cookie = response.headers["Set-Cookie"]
    assert ACCESS_TOKEN not in cookie
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/progress/"]:
        assert attribute in cookie
    assert client.get("/progress/").status_code == 200  # the cookie is enough now
    assert client.get("/progress/_dash-layout").status_code == 200
    cookie = client.get_cookie(access.COOKIE_NAME, path="/progress/")
    restarted = pv.create_app({**settings, "ACCESS_TOKEN": "a new one"}).server.test_client()
    restarted.set_cookie(access.COOKIE_NAME, cookie.value, path="/progress/")
    assert restarted.get("/progress/").status_code == 401  # a new token ends the old cookies


def test_the_cookie_is_secure_when_the_page_is_asked_for_over_https(course):  # noqa: F811
    """Behind the README's nginx (TLS ended there, X-Forwarded-Proto: https, TRUSTED_PROXIES
    = 1) the cookie is never sent over plain HTTP; over plain HTTP (./progress_viewer.py on
    localhost) it has to be; in the app, X-Forwarded-Proto from a client no proxy vouches
    for counts for nothing."""

    def cookie(trusted_proxies, headers):
        settings = settings_for(course, TRUSTED_PROXIES=trusted_proxies)
        client = pv.create_app(settings).server.test_client()
        response = client.get(f"/?token={ACCESS_TOKEN}", headers=headers)
        assert response.status_code == 302
        return response.headers["Set-Cookie"].split("; ")

    https = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "10.0.0.7"}
    assert "Secure" in cookie(1, https)
    assert "Secure" not in cookie(1, {"X-Forwarded-For": "10.0.0.7"})
    assert "Secure" not in cookie(0, https)


def test_wrong_tokens_are_limited_like_passwords(course, caplog):  # noqa: F811
    client = pv.create_app(settings_for(course)).server.test_client()
    for n in range(access.FAILURES_PER_CLIENT):
        assert client.get(f"/?token=guess{n}").status_code == 401
    assert "wrong access token from 127.0.0.1" in caplog.text
    assert client.get(f"/?token={ACCESS_TOKEN}").status_code == 401  # locked out for now


def test_a_strong_token_is_never_locked_out_by_a_flood(course, caplog):  # noqa: F811
    """A student who floods wrong tokens cannot keep the teacher from opening the page: a
    token made by the viewer cannot be guessed, so wrong ones are logged, not limited."""
    strong = access.new_token()
    client = pv.create_app(settings_for(course, ACCESS_TOKEN=strong)).server.test_client()
    for n in range(access.FAILURES_IN_TOTAL + 1):
        assert client.get(f"/?token=guess{n}").status_code == 401
    access.UNLIMITED_GUESSES.flush()
    assert "wrong access tokens from 127.0.0.1 in the last minute" in caplog.text
    assert client.get(f"/?token={strong}").status_code == 302
    assert client.get("/").status_code == 200


def test_wrong_strong_tokens_are_counted_not_written(course, caplog):  # noqa: F811
    """5000 wrong strong tokens once added 1 MB to ACCESS_DB and 5000 log lines: now nothing
    is written for them, and each client gets one line a minute with their number."""
    settings = settings_for(course, ACCESS_TOKEN=access.new_token())
    client = pv.create_app(settings).server.test_client()
    access.UNLIMITED_GUESSES.flush()
    caplog.clear()
    for n in range(200):
        response = client.get(f"/?token=guess{n}", environ_base={"REMOTE_ADDR": "10.0.0.7"})
        assert response.status_code == 401
    with sqlite3.connect(settings["ACCESS_DB"]) as conn:
        assert conn.execute("SELECT COUNT(*) FROM failures").fetchone() == (0,)
    assert "10.0.0.7" not in caplog.text  # counted, not yet logged
    access.UNLIMITED_GUESSES.flush()  # what the minute's timer does
    lines = [record.getMessage() for record in caplog.records]
    assert lines == ["200 wrong access tokens from 10.0.0.7 in the last minute"]


def test_a_short_token_is_warned_about(course, caplog):  # noqa: F811
    pv.create_app(settings_for(course, ACCESS_TOKEN="short"))
    assert "ACCESS_TOKEN has fewer than 32 characters" in caplog.text


def test_the_ready_url_carries_the_token():
    settings = {**pv.DEFAULTS, "URL_PREFIX": "/p/"}
    served = access.settings_to_serve(settings, "127.0.0.1")
    token = served["ACCESS_TOKEN"]
    assert len(token) >= 40 and token != access.settings_to_serve(settings, "x")["ACCESS_TOKEN"]
    assert access.ready_url(served, "127.0.0.1", 8050) == f"http://127.0.0.1:8050/p/?token={token}"
    with_basic = {**served, "BASIC_AUTH_USER_PASSWORD_PAIRS": {"ta": "pw"}}
    assert access.ready_url(with_basic, "::1", 80) == "http://[::1]:80/p/"


# ---------------------------------------------------------------------------- Host, Origin, size


def test_a_post_from_a_foreign_origin_is_refused(course):  # noqa: F811
    client = token_client(pv.create_app(settings_for(course)))

    def post(origin):  # to a route that takes no POST: 405 once past the checks
        headers = {"Origin": origin} if origin else {}
        return client.post("/_dash-layout", headers=headers).status_code

    for foreign in [
        "http://evil.example",
        "http://localhost:9999",
        "http://localhost.evil",
        "null",
    ]:
        assert post(foreign) == 403, foreign
    for same in [None, "http://localhost", "http://localhost:80"]:
        assert post(same) == 405, same


def test_an_unexpected_host_is_refused(course):  # noqa: F811
    settings = access.settings_to_serve(settings_for(course), "127.0.0.1")
    client = token_client(pv.create_app(settings))
    for host in ["127.0.0.1:8050", "localhost", "[::1]:8050"]:
        assert client.get("/", headers={"Host": host}).status_code == 200, host
    for host in ["evil.example", "evil.example:8050", "127.0.0.2", "[bad"]:
        assert client.get("/", headers={"Host": host}).status_code == 403, host
    everywhere = access.settings_to_serve(settings_for(course), "0.0.0.0")
    assert everywhere["ALLOWED_HOSTS"] is None  # any Host when listening on every address


def test_a_large_body_is_refused_before_it_is_read(course):  # noqa: F811
    client = token_client(pv.create_app(settings_for(course)))
    big = b"[" + b" " * access.MAX_REQUEST_BYTES + b"]"
    declared = client.post("/_dash-update-component", data=big, content_type="application/json")
    assert declared.status_code == 413


# ---------------------------------------------------------------------------- a real server


def start_viewer(cwd, *args):
    """`progress_viewer.py` serving on a free port; (the process, the ready URL it printed)."""
    port = free_port()
    command = [sys.executable, os.path.join(ROOT, "progress_viewer.py"), "--port", str(port)]
    server = subprocess.Popen(
        [*command, *map(str, args)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = server.stdout.readline()
    assert line.startswith("serving "), line
    url = line.split(" at ", 1)[1].strip()
    wait_until_listening(url)
    return server, url


def wait_until_listening(url):
    for _ in range(100):
        try:
            requests.get(url.split("?")[0], timeout=5)
            return
        except requests.ConnectionError:
            time.sleep(0.2)
    raise AssertionError(f"nothing listens at {url}")


def stop(server):
    server.terminate()
    server.wait(timeout=20)


def test_the_request_log_never_shows_a_token(course, tmp_path):  # noqa: F811
    """werkzeug logs each request line: `GET /?token=...` showed the right token, and the
    text of every wrong one. Both are hidden now, in the viewer's real output."""
    command = [sys.executable, os.path.join(ROOT, "progress_viewer.py"), "--port", free_port()]
    command += ["--db", course / "sync.sqlite", "--users-csv", course / "users.csv"]
    with open(tmp_path / "stderr.log", "w") as log:
        server = subprocess.Popen(
            list(map(str, command)), cwd=tmp_path, stdout=subprocess.PIPE, stderr=log, text=True
        )
    try:
        url = server.stdout.readline().split(" at ", 1)[1].strip()
        wait_until_listening(url)
        assert requests.get(url, allow_redirects=False, timeout=30).status_code == 302
        wrong = url.split("?")[0] + "?token=wrong-guess-text"
        assert requests.get(wrong, timeout=30).status_code == 401
    finally:
        stop(server)
    output = re.sub(r"\x1b\[[0-9;]*m", "", (tmp_path / "stderr.log").read_text())  # colours
    assert 'GET /?token=<hidden> HTTP/1.1" 302' in output
    assert 'GET /?token=<hidden> HTTP/1.1" 401' in output
    assert url.split("?token=")[1] not in output and "wrong-guess-text" not in output
    addresses = re.findall(r"https?://\S+", output)
    assert addresses == []  # the only address printed is the ready URL, with its token


class Streamed:
    """A request body of `count` MB, made as it is sent (never held whole), without a
    length (chunked)."""

    def __init__(self, count):
        self.count = count

    def __iter__(self):
        chunk = b" " * 2**20
        for _ in range(self.count):
            yield chunk


class Sized(Streamed):
    """The same, sent with its Content-Length."""

    def __len__(self):
        return self.count * 2**20


def post_body(url, body, headers=None):
    """The status of a POST of `body`, or None when the server closed the connection
    before reading it all (what a server that refuses a body early may do)."""
    try:
        return requests.post(url, data=body, headers=headers or {}, timeout=120).status_code
    except requests.ConnectionError:
        return None


def test_large_bodies_do_not_grow_the_server(course, tmp_path):  # noqa: F811
    """Three unauthenticated 300 MB bodies (two streamed without a length) are refused
    unread; an authenticated one is read up to the limit only."""
    server, url = start_viewer(
        tmp_path, "--db", course / "sync.sqlite", "--users-csv", course / "users.csv"
    )
    try:
        page = url.split("?")[0]
        callback = page + "_dash-update-component"
        process = psutil.Process(server.pid)
        before = process.memory_info().rss
        json_type = {"Content-Type": "application/json"}
        assert post_body(callback, Streamed(300), json_type) in (401, None)
        assert post_body(callback, Sized(300), json_type) in (413, None)
        assert post_body(page, Streamed(300)) in (401, None)
        token = {**json_type, "Authorization": "token " + url.split("?token=")[1]}
        assert post_body(callback, Streamed(300), token) in (400, 413, None)  # read up to 1 MB
        grown = process.memory_info().rss - before
        assert grown < 100 * 2**20, f"the server grew by {grown // 2**20} MB"
        assert requests.get(url, timeout=30).status_code == 200  # still serving
    finally:
        stop(server)


class AccessLog:
    """gunicorn's access log, one `pid status` line per request, read as it is written."""

    def __init__(self, stream):
        self.lines = []
        threading.Thread(target=self.read, args=(stream,), daemon=True).start()

    def read(self, stream):
        for line in stream:
            self.lines.append(tuple(line.split()))

    def workers(self, status, since=0):
        """The workers (pids) that answered `status`, from line `since` on."""
        return {pid for pid, answered in self.lines[since:] if answered == status}


def until_both_workers(log, status, request, tries=200):
    """Repeat `request` (each must answer `status`) until both workers have answered it."""
    since = len(log.lines)
    for _ in range(tries):
        if len(log.workers(status, since)) == 2:
            return
        assert request() == int(status)
    raise AssertionError(f"one worker answered every one of {tries} requests")


def test_gunicorn_workers_share_one_token_and_one_cookie_key(course, tmp_path):  # noqa: F811
    """ACCESS_TOKEN unset under gunicorn -w 2: one token, kept in ACCESS_DB (where the
    README says to read it); a cookie one worker set is good in the other; wrong guesses of
    this strong token lock nobody out. (Counts shared by workers: the test of two gates.)"""
    db, users = str(course / "sync.sqlite"), str(course / "users.csv")
    access_db = tmp_path / "access.sqlite"
    (tmp_path / "progress_viewer_config.py").write_text(
        f"SYNC_SQLITE = {db!r}\nUSERS_CSV = {users!r}\nACCESS_DB = {str(access_db)!r}\n"
    )
    port = free_port()
    gunicorn = os.path.join(os.path.dirname(sys.executable), "gunicorn")
    command = [gunicorn, "-w", "2", "-b", f"127.0.0.1:{port}", "--pythonpath", ROOT]
    command += ["--access-logfile", "-", "--access-logformat", "%(p)s %(s)s"]
    server = subprocess.Popen(
        [*command, "progress_viewer:application"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    log = AccessLog(server.stdout)
    layout = f"http://127.0.0.1:{port}/_dash-layout"
    try:
        wait_until_listening(layout)
        with sqlite3.connect(access_db) as conn:
            (token,) = conn.execute("SELECT value FROM secrets WHERE name = 'token'").fetchone()
        assert stat.S_IMODE(os.stat(access_db).st_mode) == 0o600
        browser = requests.Session()
        assert browser.get(f"http://127.0.0.1:{port}/?token={token}", timeout=30).ok
        until_both_workers(log, "200", lambda: browser.get(layout, timeout=60).status_code)

        def with_token(guess):
            headers = {"Authorization": f"token {guess}"}
            return requests.get(layout, headers=headers, timeout=60).status_code

        assert with_token(token) == 200 and requests.get(layout, timeout=30).status_code == 401
        for n in range(access.FAILURES_PER_CLIENT):
            assert with_token(f"guess{n}") == 401
        until_both_workers(log, "200", lambda: with_token(token))  # strong: never locked out
    finally:
        stop(server)


# The demo's files that name students or hold the names password, and their modes (its
# folder is 0700 too).
PRIVATE_DEMO = {"progress_viewer_config.py": 0o600, "users.csv": 0o600}


def test_the_demo_prints_the_token_url_and_the_page_works_from_it(tmp_path):
    """`./run demo`: the viewer's ready URL carries the token; the page opens from it. The
    demo's folder, its config (PASSWD) and users.csv (real names) are private."""
    port = free_port()
    command = [sys.executable, os.path.join(ROOT, "tools", "demo.py"), "--dir", tmp_path / "d"]
    command += ["--students", 3, "--assignments", 1, "--minutes", 10, "--step", 10]
    demo = subprocess.Popen(
        [*map(str, command), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # the demo and the viewer it starts stop together
    )
    try:
        served = next(line for line in demo.stdout if line.startswith("serving "))
        (url,) = re.findall(rf"http://127\.0\.0\.1:{port}/\?token=\S+", served)
        wait_until_listening(url)
        folder = tmp_path / "d"
        modes = {name: stat.S_IMODE(os.stat(folder / name).st_mode) for name in PRIVATE_DEMO}
        assert (stat.S_IMODE(os.stat(folder).st_mode), modes) == (0o700, PRIVATE_DEMO)
        browser = requests.Session()
        assert browser.get(url, timeout=30).status_code == 200
        assert browser.get(f"http://127.0.0.1:{port}/_dash-layout", timeout=30).ok
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=30).status_code == 401
    finally:
        os.killpg(demo.pid, signal.SIGTERM)
        demo.wait(timeout=20)


def test_access_db_in_a_config_file_is_beside_it(tmp_path):
    (tmp_path / "progress_viewer_config.py").write_text('ACCESS_DB = "private/access.sqlite"\n')
    settings = pv.load_settings(str(tmp_path / "progress_viewer_config.py"))
    assert access.access_db_path(settings) == str(tmp_path / "private" / "access.sqlite")
    assert access.access_db_path(pv.DEFAULTS) == os.path.abspath(access.ACCESS_DB_NAME)


def components(node):
    """Every component of a Dash layout, depth first."""
    yield node
    children = getattr(node, "children", None)
    for child in children if isinstance(children, (list, tuple)) else [children]:
        if hasattr(child, "to_plotly_json"):
            yield from components(child)


def test_the_password_box_sends_on_enter_or_leaving_it_not_per_key(course):  # noqa: F811
    """Typing `demo` slowly is one guess, not four (each keystroke was one, and the fifth
    wrong one locked the right password out)."""
    app = pv.create_app(settings_for(course))
    layout = app.layout() if callable(app.layout) else app.layout
    (box,) = [c for c in components(layout) if getattr(c, "id", None) == PageIds.password]
    assert box.type == "password" and box.debounce is True


@pytest.mark.skipif(not shutil.which("chromedriver"), reason="chromium-driver is not installed")
def test_a_browser_opens_the_page_from_the_token_url(dash_duo, course):  # noqa: F811
    """In Chromium: the token URL opens the page, the token leaves the address bar for an
    HttpOnly cookie the page's scripts cannot read, and the page's callbacks work."""
    open_page(dash_duo, pv.create_app(settings_for(course)))
    dash_duo.wait_for_contains_text(f"#{problems.Ids.status}", "stuck", timeout=20)
    assert "token" not in dash_duo.driver.current_url
    (cookie,) = dash_duo.driver.get_cookies()
    assert (cookie["name"], cookie["httpOnly"], cookie["sameSite"]) == (
        access.COOKIE_NAME,
        True,
        "Strict",
    )
    assert dash_duo.driver.execute_script("return document.cookie") == ""
    assert dash_duo.get_logs() == []  # no request of the page was refused
    dash_duo.driver.delete_all_cookies()
    dash_duo.driver.get(dash_duo.server.url + "/")
    assert "Unauthorized" in dash_duo.find_element("body").text


def test_an_access_db_that_cannot_be_made_is_one_clear_error(tmp_path):
    missing = tmp_path / "no such folder" / "sync.sqlite"
    result = run_script("progress_viewer.py", "--db", missing, cwd=tmp_path, check=False)
    assert result.returncode == 2
    expected = f"Error: cannot use ACCESS_DB {missing.parent / access.ACCESS_DB_NAME}: "
    assert expected in result.stderr and "Traceback" not in result.stderr
