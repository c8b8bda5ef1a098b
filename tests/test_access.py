"""progress_views/access.py: the token or basic auth on every route, bounded requests, and
the limits on guessing a secret, through the viewer's real Flask stack and real servers."""

import base64
import logging
import os
import re
import stat

import pytest
from conftest import ACCESS_TOKEN, private_access_db, token_client
from test_viewer import course, settings_for  # noqa: F401  (the session's synced course)
from werkzeug.security import generate_password_hash

import progress_viewer as pv
from progress_views import access


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


def test_wrong_tokens_are_limited_like_passwords(course, caplog):  # noqa: F811
    client = pv.create_app(settings_for(course)).server.test_client()
    for n in range(access.FAILURES_PER_CLIENT):
        assert client.get(f"/?token=guess{n}").status_code == 401
    assert "wrong access token from 127.0.0.1" in caplog.text
    assert client.get(f"/?token={ACCESS_TOKEN}").status_code == 401  # locked out for now


def test_the_ready_url_carries_the_token():
    settings = {**pv.DEFAULTS, "URL_PREFIX": "/p/"}
    served = access.settings_to_serve(settings, "127.0.0.1")
    token = served["ACCESS_TOKEN"]
    assert len(token) >= 40 and token != access.settings_to_serve(settings, "x")["ACCESS_TOKEN"]
    assert access.ready_url(served, "127.0.0.1", 8050) == f"http://127.0.0.1:8050/p/?token={token}"
    with_basic = {**served, "BASIC_AUTH_USER_PASSWORD_PAIRS": {"ta": "pw"}}
    assert access.ready_url(with_basic, "::1", 80) == "http://[::1]:80/p/"
