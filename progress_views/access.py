"""Who may use the viewer, and how often they may guess a secret.

Access: with BASIC_AUTH_USER_PASSWORD_PAIRS, basic auth guards every route; without it the
access token does, Jupyter's way. ACCESS_TOKEN unset: `main` makes one at every start and
prints the ready URL; under a WSGI server one is made once and kept in ACCESS_DB, so that
every worker takes the same (the README says how to read it). The token is
accepted as `?token=` (then remembered in the session cookie, and the address bar loses
it) or as the header `Authorization: token <token>`. ACCESS_TOKEN = False turns it off.

Before any of that, every request is bounded: a body over MAX_REQUEST_BYTES gets 413, a
Host outside ALLOWED_HOSTS or a POST from a foreign Origin gets 403.

Guesses: every secret a client types (the names password, a token, a basic-auth password)
goes through one AttemptLog, a small SQLite file (ACCESS_DB, mode 0600) shared by every
worker of the deployment. A client with FAILURES_PER_CLIENT distinct wrong guesses of a
kind within FAILURE_WINDOW_SECONDS, or everyone once FAILURES_IN_TOTAL were made, is
refused even the right secret of that kind until the window passes; each wrong guess is
logged with the client's address (never its text). A token of STRONG_TOKEN_LENGTH
characters or more (the ones made here have 43) cannot be guessed, so wrong tokens are only
counted, in memory, and logged once a minute per client with their number (nothing is
written for them): a limit would let any student lock the teacher's new pages out, as
every local account reaches `main`'s port from 127.0.0.1. The same file keeps the key
that signs the session cookie.

Logs: a token in a request line (werkzeug's, gunicorn's access log) is shown as
`token=<hidden>` (TokenRedaction).
"""

import hashlib
import hmac
import logging
import os
import re
import secrets
import sqlite3
import stat
import threading
import time
import urllib.parse
from contextlib import closing

import flask
from flask.sessions import SecureCookieSessionInterface
from werkzeug.exceptions import InternalServerError
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.security import check_password_hash, generate_password_hash

LOG = logging.getLogger("progress_viewer")

MAX_REQUEST_BYTES = 1024 * 1024
FAILURES_PER_CLIENT = 5
FAILURES_IN_TOTAL = 50
FAILURE_WINDOW_SECONDS = 300
STRONG_TOKEN_LENGTH = 32
TALLY_SECONDS = 60  # wrong guesses that are not limited are logged once per this, counted
TALLY_CLIENTS = 1000  # clients counted apart in one tally; the rest count together
ACCESS_DB_NAME = "progress_viewer_access.sqlite"
COOKIE_NAME = "progress_viewer_session"
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
ANY_ADDRESS = ("", "0.0.0.0", "::")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
REFUSALS = {
    413: f"Request too large (the limit is {MAX_REQUEST_BYTES} bytes).",
    403: "Forbidden: unexpected Host or Origin.",
}
# The kinds of secret a client may guess; wrong guesses are limited kind by kind.
NAMES, TOKEN, BASIC = "names password", "access token", "basic-auth password"
SCHEMA = """
CREATE TABLE IF NOT EXISTS failures (
    kind TEXT NOT NULL,  -- what was guessed: 'names password', 'access token', ...
    client TEXT NOT NULL,
    guess TEXT NOT NULL,  -- an HMAC of the wrong secret, never its text
    at REAL NOT NULL,
    PRIMARY KEY (kind, client, guess)
);
CREATE TABLE IF NOT EXISTS secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

# ---------------------------------------------------------------------------- secrets


def secret_matches(typed, expected):
    """Constant-time check of a typed secret against a plain or werkzeug-hashed one."""
    if not expected or not isinstance(typed, str):
        return False
    if is_password_hash(expected):
        return check_password_hash(expected, typed)
    return hmac.compare_digest(typed.encode(), str(expected).encode())


def dummy_hash_like(hashes):
    """A hash of a random secret made as the first of `hashes` was (its method and cost),
    or None when none is a hash: checked for unknown basic-auth users, so that they cost
    what a known one does."""
    method = next((h.split("$", 1)[0] for h in hashes if is_password_hash(h)), None)
    return method and generate_password_hash(secrets.token_urlsafe(16), method=method)


def is_password_hash(value):
    return isinstance(value, str) and re.match(r"^(pbkdf2:|scrypt:)[^$]*\$[^$]+\$", value)


def fingerprint(key, *parts):
    """An HMAC of `parts` under the deployment's key: kept or compared instead of a secret."""
    message = "\0".join(parts).encode("utf-8", "replace")
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def new_token():
    return secrets.token_urlsafe(32)


def client_address():
    """The requesting client's address (X-Forwarded-For only through TRUSTED_PROXIES)."""
    try:
        return flask.request.remote_addr or "?"
    except RuntimeError:  # outside a request
        return "?"


# ---------------------------------------------------------------------------- the attempt log


def access_db_path(settings):
    """ACCESS_DB, else a file beside the database."""
    if settings.get("ACCESS_DB"):
        return settings["ACCESS_DB"]
    folder = os.path.dirname(os.path.abspath(settings["SYNC_SQLITE"]))
    return os.path.join(folder, ACCESS_DB_NAME)


def make_private_file(path):
    """Create `path` readable by its owner only, or make an existing one so; a link there
    is refused (OSError), not followed to a file it would make private or create."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        if stat.S_IMODE(os.fstat(descriptor).st_mode) & 0o077:
            os.fchmod(descriptor, 0o600)
    finally:
        os.close(descriptor)


class AccessDbError(Exception):
    """ACCESS_DB cannot be created or used."""


class AttemptLog:
    """Wrong guesses and the deployment's own secrets, in a private SQLite file that every
    worker (and every process on the same ACCESS_DB) shares."""

    def __init__(self, path):
        self.path = path
        self.key_value = None

    def connect(self):
        try:
            make_private_file(self.path)
            conn = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            conn.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as error:
            raise AccessDbError(f"cannot use ACCESS_DB {self.path}: {error}") from error
        return conn

    def secret(self, name, make=new_token):
        """The deployment's secret `name`: made on first use, then the same for everyone."""
        with closing(self.connect()) as conn:
            conn.execute("INSERT OR IGNORE INTO secrets VALUES (?, ?)", (name, make()))
            return conn.execute("SELECT value FROM secrets WHERE name = ?", (name,)).fetchone()[0]

    def key(self):
        """The key that signs session cookies and fingerprints guesses."""
        if self.key_value is None:
            self.key_value = self.secret("key")
        return self.key_value

    def locked_out(self, kind, client):
        """True when `client`, or everyone, made too many wrong guesses of `kind` lately
        (each kind counts alone: wrong tokens from outside do not lock the names password
        of those inside)."""
        since = time.time() - FAILURE_WINDOW_SECONDS
        with closing(self.connect()) as conn:
            total, mine = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(client = ?), 0) FROM failures"
                " WHERE kind = ? AND at > ?",
                (client, kind, since),
            ).fetchone()
        return mine >= FAILURES_PER_CLIENT or total >= FAILURES_IN_TOTAL

    def record_failure(self, kind, client, guess):
        """Count a wrong guess once per client and value (one Enter reaches several
        callbacks); True when it is new."""
        now = time.time()
        with closing(self.connect()) as conn:
            conn.execute("DELETE FROM failures WHERE at <= ?", (now - FAILURE_WINDOW_SECONDS,))
            return conn.execute(
                "INSERT OR IGNORE INTO failures VALUES (?, ?, ?, ?)",
                (kind, client, fingerprint(self.key(), kind, guess), now),
            ).rowcount

    def admit(self, client, kind, guess, is_right, detail="", limited=True):
        """True when the secret of `kind` guessed (`guess`) is right (`is_right()`) and
        `client` is not locked out; a wrong guess is recorded and logged with the client's
        address and `detail` (a user name), never its text. When not `limited`, nobody is
        locked out and a wrong guess is only counted in UNLIMITED_GUESSES."""
        if limited and self.locked_out(kind, client):
            LOG.warning("refused a %s%s from %s: too many wrong guesses", kind, detail, client)
            return False
        if is_right():
            return True
        if not limited:
            UNLIMITED_GUESSES.add(kind, client)
        elif self.record_failure(kind, client, guess):
            LOG.warning("wrong %s%s from %s", kind, detail, client)
        return False


class GuessTally:
    """Wrong guesses of a secret that cannot be guessed (a strong token), counted per kind
    and client in this process and logged as one line per client every TALLY_SECONDS
    ("12 wrong access tokens from 10.0.0.5 in the last minute"): a flood costs neither
    disk nor a log line per request."""

    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}
        self.timer = None

    def add(self, kind, client):
        with self.lock:
            if (kind, client) not in self.counts and len(self.counts) >= TALLY_CLIENTS:
                client = "other addresses"
            self.counts[kind, client] = self.counts.get((kind, client), 0) + 1
            if self.timer is None:
                self.timer = threading.Timer(TALLY_SECONDS, self.flush)
                self.timer.daemon = True
                self.timer.start()

    def flush(self):
        """Log the counts so far and start counting anew."""
        with self.lock:
            counts, self.counts = self.counts, {}
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
        for (kind, client), count in counts.items():
            plural = "" if count == 1 else "s"
            LOG.warning("%d wrong %s%s from %s in the last minute", count, kind, plural, client)


UNLIMITED_GUESSES = GuessTally()


class TokenRedaction(logging.Filter):
    """Shows `token=<hidden>` in a log line instead of a token (a request line holds the
    page's `?token=`, right or wrong)."""

    PATTERN = re.compile(r"(token=)[^&\s\"']*", re.IGNORECASE)

    def filter(self, record):
        message = record.getMessage()
        if "token=" in message.lower():
            record.msg, record.args = self.PATTERN.sub(r"\1<hidden>", message), ()
        return True


class PasswordGate:
    """The names password (PASSWD), checked the same way by every callback that takes it.

    PasswordGate(settings) keeps its guesses in the settings' ACCESS_DB;
    PasswordGate(expected, attempts) checks `expected` against the AttemptLog `attempts`."""

    def __init__(self, settings_or_expected, attempts=None):
        if isinstance(settings_or_expected, dict):
            self.expected = settings_or_expected["PASSWD"]
            attempts = attempts or AttemptLog(access_db_path(settings_or_expected))
        else:
            self.expected = settings_or_expected
        self.attempts = attempts
        # Fingerprints of the typed values found right, so that a hashed PASSWD is hashed
        # once: 8 checks (a page's callbacks) took 1.4 s of scrypt each time, now 1 ms.
        self.right = set()

    def check(self, typed, client):
        """True when `typed` is the password and `client` may guess; '' or a non-string
        is no guess at all; a wrong one is counted and logged."""
        if not typed or not isinstance(typed, str) or not self.expected:
            return False
        return self.attempts.admit(client, NAMES, typed, lambda: self.is_right(typed))

    def is_set(self):
        """False when there is no password (PASSWD empty): names are never shown."""
        return bool(self.expected)

    def locked_out(self, client):
        """True while `client` may not guess the names password (too many wrong ones)."""
        return self.attempts.locked_out(NAMES, client)

    def is_right(self, typed):
        mark = fingerprint(self.attempts.key(), NAMES, typed)
        if mark not in self.right and secret_matches(typed, self.expected):
            self.right.add(mark)
        return mark in self.right


# ---------------------------------------------------------------------------- requests


def settings_to_serve(settings, listen_host):
    """The settings `main` serves with when it listens on `listen_host`: ACCESS_TOKEN unset
    is a new token at every start; ALLOWED_HOSTS unset is that host and the local names
    (any host when it listens on every address)."""
    served = dict(settings)
    if served["ACCESS_TOKEN"] is None:
        served["ACCESS_TOKEN"] = new_token()
    if served["ALLOWED_HOSTS"] is None and listen_host not in ANY_ADDRESS:
        served["ALLOWED_HOSTS"] = [listen_host, *LOCAL_HOSTS]
    return served


def host_name(host):
    """The name in a Host header or an origin's netloc, lower-case ('' when malformed)."""
    try:
        return urllib.parse.urlsplit("//" + host).hostname or ""
    except ValueError:
        return ""


def same_origin(origin, host):
    """True when the Origin header `origin` names the server reached as `host`."""
    try:
        parts = urllib.parse.urlsplit(origin)
        target = urllib.parse.urlsplit("//" + host)
        default = {"http": 80, "https": 443}.get(parts.scheme)
        ports = (parts.port or default, target.port or default)
    except ValueError:
        return False
    return default is not None and parts.hostname == target.hostname and ports[0] == ports[1]


def refusal(request, allowed_hosts):
    """The status refusing `request` before anyone reads it (413, 403), or None."""
    if (request.content_length or 0) > MAX_REQUEST_BYTES:
        return 413
    if allowed_hosts is not None:
        if host_name(request.host) not in {h.lower() for h in allowed_hosts}:
            return 403
    origin = request.headers.get("Origin")
    if request.method not in SAFE_METHODS and origin and not same_origin(origin, request.host):
        return 403
    return None


def plain_response(status, text, headers=()):
    return flask.Response(text + "\n", status, {"Content-Type": "text/plain", **dict(headers)})


def offered_token(request):
    """The token a request offers: `Authorization: token <t>`, else `?token=`, else None."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "token":
        return value.strip()
    return request.args.get("token")


def without_token(request):
    """The URL of `request` without its `token` parameter (a relative redirect)."""
    query = [(k, v) for k, v in request.args.items(multi=True) if k != "token"]
    path = request.script_root + request.path
    return path + ("?" + urllib.parse.urlencode(query) if query else "")


def basic_credentials(request):
    """(user, password) of a Basic Authorization header, or None (absent or malformed)."""
    try:
        credentials = request.authorization
    except Exception:  # werkzeug refuses some headers outright
        return None
    if credentials is None or credentials.type != "basic":
        return None
    return credentials.username or "", credentials.password or ""


def basic_auth_checker(pairs):
    """check(user, password): True for a pair of BASIC_AUTH_USER_PASSWORD_PAIRS. An unknown
    user's password is checked against a dummy hash made like the known ones', so that
    its time does not tell which user names exist."""
    dummy = dummy_hash_like(pairs.values()) or secrets.token_urlsafe(16)

    def check(user, password):
        expected = pairs.get(user)
        matched = secret_matches(password, expected if expected else dummy)
        return matched and expected is not None

    return check


class TokenGuard:
    """Every route needs the token: the session's fingerprint of it, the header, or `?token=`."""

    def __init__(self, token, attempts):
        self.token = token
        self.attempts = attempts
        self.expected = fingerprint(attempts.key(), "token", token)
        self.limited = len(token) < STRONG_TOKEN_LENGTH
        if self.limited:
            LOG.warning(
                "ACCESS_TOKEN has fewer than %d characters: it can be guessed, so wrong"
                " tokens lock clients out; leave it unset for a strong one",
                STRONG_TOKEN_LENGTH,
            )

    def __call__(self, request, session):
        if hmac.compare_digest(str(session.get("token", "")), self.expected):
            return None
        offered = offered_token(request)
        if offered is None:
            return self.refuse()
        right = lambda: hmac.compare_digest(offered.encode(), self.token.encode())  # noqa: E731
        if not self.attempts.admit(client_address(), TOKEN, offered, right, "", self.limited):
            return self.refuse()
        if "token" in request.args:
            session["token"] = self.expected
            if request.method == "GET":
                return flask.redirect(without_token(request))
        return None

    @staticmethod
    def refuse():
        text = "Unauthorized: open the page with the URL the viewer printed at start (?token=...)."
        return plain_response(401, text, {"WWW-Authenticate": 'Token realm="progress viewer"'})


class BasicAuthGuard:
    """Every route needs basic auth; a verified user is remembered in the session (by a
    fingerprint of their entry), so the password hash is not recomputed per request."""

    def __init__(self, pairs, attempts):
        self.check = basic_auth_checker(pairs)
        key = attempts.key()
        self.entries = {user: fingerprint(key, "basic", user, str(v)) for user, v in pairs.items()}
        self.attempts = attempts

    def remembered(self, session):
        user, _, entry = str(session.get("basic", "")).partition("\0")
        return user in self.entries and hmac.compare_digest(entry, self.entries[user])

    def __call__(self, request, session):
        if self.remembered(session):
            return None
        credentials = basic_credentials(request)
        if credentials is None:
            return self.refuse()
        user, password = credentials
        right = lambda: self.check(user, password)  # noqa: E731
        detail = f" for user {user[:40]!r}"
        guess = f"{user}\0{password}"
        if not self.attempts.admit(client_address(), BASIC, guess, right, detail):
            return self.refuse()
        session["basic"] = f"{user}\0{self.entries[user]}"
        return None

    @staticmethod
    def refuse():
        challenge = 'Basic realm="progress viewer", charset="UTF-8"'
        return plain_response(401, "Unauthorized", {"WWW-Authenticate": challenge})


def access_token(settings, attempts):
    """The token every route needs, or None when basic auth guards them or the token is off."""
    if settings["BASIC_AUTH_USER_PASSWORD_PAIRS"] or settings["ACCESS_TOKEN"] is False:
        return None
    return settings["ACCESS_TOKEN"] or attempts.secret("token")


class SessionCookie(SecureCookieSessionInterface):
    """Flask's signed session cookie, marked Secure (never sent over plain HTTP) whenever
    the page is asked for over HTTPS: behind a proxy that ends TLS, as the README's nginx,
    that is when TRUSTED_PROXIES lets its X-Forwarded-Proto count."""

    def get_cookie_secure(self, app):
        return flask.request.is_secure


def make_guard(settings, attempts):
    pairs = dict(settings["BASIC_AUTH_USER_PASSWORD_PAIRS"])
    if pairs:
        return BasicAuthGuard(pairs, attempts)
    token = access_token(settings, attempts)
    if token:
        return TokenGuard(token, attempts)
    LOG.warning("ACCESS_TOKEN = False: anyone who can reach the port can use the page")
    return lambda request, session: None


def install(app, settings):
    """Guard every route of the Dash `app` (page, callbacks, assets, downloads) as the
    settings say, bound request bodies and add the security headers."""
    server = app.server
    attempts = AttemptLog(access_db_path(settings))
    server.secret_key = attempts.key()
    server.config.update(
        MAX_CONTENT_LENGTH=MAX_REQUEST_BYTES,
        SESSION_COOKIE_NAME=COOKIE_NAME,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_PATH=settings["URL_PREFIX"],
    )
    server.session_interface = SessionCookie()
    if settings["TRUSTED_PROXIES"]:
        proxies = settings["TRUSTED_PROXIES"]
        server.wsgi_app = ProxyFix(server.wsgi_app, x_for=proxies, x_proto=proxies)
    guard = make_guard(settings, attempts)
    allowed_hosts = settings["ALLOWED_HOSTS"]

    def check_request():
        status = refusal(flask.request, allowed_hosts)
        if status:
            return plain_response(status, REFUSALS[status])
        return guard(flask.request, flask.session)

    # First of all hooks: Dash's own must not run for a refused request.
    server.before_request_funcs.setdefault(None, []).insert(0, check_request)
    add_security(server)


def ready_url(settings, host, port):
    """The URL `main` prints: the page, with the token when one is needed."""
    shown_host = f"[{host}]" if ":" in host else host
    url = f"http://{shown_host}:{port}{settings['URL_PREFIX']}"
    token = settings["ACCESS_TOKEN"]
    if token and not settings["BASIC_AUTH_USER_PASSWORD_PAIRS"]:
        url += "?" + urllib.parse.urlencode({"token": token})
    return url


def add_security(server):
    @server.after_request
    def security_headers(response):
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Content-Security-Policy"] = "frame-ancestors 'self'"
        response.headers["X-Frame-Options"] = "SAMEORIGIN"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    @server.errorhandler(InternalServerError)
    def internal_error(error):
        LOG.error("internal error: %r", getattr(error, "original_exception", error))
        return "Internal Server Error", 500, {"Content-Type": "text/plain"}
