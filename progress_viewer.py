#!/usr/bin/env python3
"""A Dash web page showing the class's progress, from the database rsync_notebooks.py keeps.

The first screen answers "who is stuck, on what, since when": at the moment M (now, or a
replayed time) a status line counts the students stuck, idle, working and finished across
every assignment, a table lists the stuck and idle ones, longest first, and a heatmap shows
one assignment's problems per student. Below: the version view (a student's notebook as
saved, with its diff) and the activity view (every notebook, every version). The views
are in progress_views/, one module per view, over one data layer (progress_views/data.py).

Students' names stay hidden: without the names password (PASSWD) a student is `student N`
everywhere, and no notebook is shown. Every route needs the access token (or basic auth):
see progress_views/access.py.

Settings come from progress_viewer_config.py, looked up in the working directory, then
beside this script (or --config PATH); see progress_viewer_config.py.example. Run it in
the directory holding users.csv and sync.sqlite:

    ./progress_viewer.py                 # prints http://127.0.0.1:8050/?token=...
    gunicorn progress_viewer:application # behind a WSGI server

Exit codes: 0 stopped normally; 1 the address cannot be listened on (the port is in
use), or no python with dash (`./run setup` makes .venv); 2 bad arguments, a config file
that cannot be loaded, or an ACCESS_DB that cannot be made.
"""

import argparse
import contextlib
import logging
import os
import pwd
import runpy
import socket
import stat
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
VENV = os.path.join(HERE, ".venv")  # what `./run setup` makes


def run_by_venv_python():
    """`./progress_viewer.py` run by a python3 without dash (.venv not activated): the
    script again under .venv's python when there is one, else a message saying what to do."""
    python = os.path.join(VENV, "bin", "python")
    # once only: the python run again is that very path (whatever sys.prefix it reports)
    if os.path.exists(python) and os.path.abspath(sys.executable) != python:
        with contextlib.suppress(OSError):  # a python that cannot be run: the message
            os.execv(python, [python, os.path.abspath(__file__), *sys.argv[1:]])
    sys.exit(
        f"progress_viewer.py: {sys.executable} has no dash; run `./run setup` in {HERE}, "
        "then this command again (or `.venv/bin/python progress_viewer.py`)"
    )


try:
    import dash
except ImportError:
    if __name__ != "__main__":
        raise
    run_by_venv_python()
from dash import Input, Output, dcc, html  # noqa: E402

sys.path.insert(0, HERE)
import make_database  # noqa: E402  (the version string)
from progress_views import access, activity, moment, problems, snapshot, version  # noqa: E402
from progress_views.data import Data  # noqa: E402
from progress_views.widgets import (  # noqa: E402
    ERROR_STYLE,
    PageIds,
    optional_text,
    password_refused,
    text,
    text_box,
)

LOG = logging.getLogger("progress_viewer")

# ---------------------------------------------------------------------------- constants

CONFIG_NAME = "progress_viewer_config.py"
DEFAULTS = {
    "SYNC_SQLITE": "sync.sqlite",
    "USERS_CSV": "users.csv",
    "USER_ATTRS": [],  # users.csv columns shown (after the password) in each row's label
    # users.csv columns shown and offered as filters without the password (they must not
    # tell who a student is: a team, a class)
    "PUBLIC_ATTRS": [],
    "PASSWD": "",  # reveals uids and USER_ATTRS; empty: they are never shown
    "URL_TEMPLATE": "http://localhost:8888/notebooks/sync_dest/{filename}",
    "BASIC_AUTH_USER_PASSWORD_PAIRS": {},  # {user: password or hash}; empty: no HTTP auth
    "URL_PREFIX": "/",  # where the page is served, e.g. "/progress/" behind a proxy
    "REFRESH_SECONDS": 60,  # how often the page re-reads the database
    "SYNC_DEST": "sync_dest",
    # Access (progress_views/access.py): the token every route needs without basic auth
    # (None: made at start; False: no token, anyone reaching the port uses the page).
    "ACCESS_TOKEN": None,
    "ALLOWED_HOSTS": None,  # Host names accepted; None: any (main: its --host and localhost)
    "TRUSTED_PROXIES": 0,  # proxies in front that set X-Forwarded-For (nginx: 1)
    "ACCESS_DB": None,  # wrong guesses and the cookie key; None: beside SYNC_SQLITE
}
# The views, top to bottom; each has make_section() and register(app, data).
VIEWS = (problems, version, activity)

# ---------------------------------------------------------------------------- settings


def find_config(explicit=None):
    """The config file to use: --config, else one in the working dir, else beside us."""
    if explicit:
        return explicit
    for folder in (os.getcwd(), HERE):
        path = os.path.join(folder, CONFIG_NAME)
        if os.path.isfile(path):
            return path
    return None


def load_settings(config_path=None, overrides=None):
    """DEFAULTS, updated by the config file's upper-case names, then by `overrides`."""
    settings = dict(DEFAULTS)
    path = find_config(config_path)
    if path:
        values = runpy.run_path(path)
        for unknown in sorted(k for k in values if k.isupper() and k not in DEFAULTS):
            LOG.warning("%s: unknown setting %s is ignored", path, unknown)
        settings.update({k: v for k, v in values.items() if k.isupper() and k in DEFAULTS})
        base = os.path.dirname(os.path.abspath(path))
        for key in ("SYNC_SQLITE", "USERS_CSV", "SYNC_DEST", "ACCESS_DB"):
            if values.get(key):
                settings[key] = os.path.join(base, settings[key])
    settings.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return settings


# ---------------------------------------------------------------------------- the page


def make_header():
    """The title, the names password, the filter by a users.csv column, projector mode
    and the refresh switch: one line."""
    dropdown = {"width": "9em", "display": "inline-block", "verticalAlign": "middle"}
    return html.Div(
        [
            html.B("Class progress", style={"fontSize": "1.3em"}),
            html.Label(
                [
                    "password: ",
                    text_box(PageIds.password, size=10, kind="password"),
                    html.Span(id=PageIds.password_message, style={"marginLeft": "0.5em"}),
                ],
                style={"display": "flex", "alignItems": "center", "whiteSpace": "nowrap"},
            ),
            html.Label(
                [
                    "only ",
                    dcc.Dropdown(id=PageIds.filter_column, placeholder="column", style=dropdown),
                    " = ",
                    dcc.Dropdown(id=PageIds.filter_value, placeholder="any", style=dropdown),
                ]
            ),
            dcc.Checklist(
                id=PageIds.projector,
                options=[{"label": "projector", "value": "on"}],
                value=[],
                inline=True,
            ),
            dcc.Checklist(
                id=PageIds.pause,
                options=[{"label": "pause refresh", "value": "pause"}],
                value=[],
                inline=True,
            ),
        ],
        style={"display": "flex", "gap": "1.2em", "alignItems": "center", "flexWrap": "wrap"},
    )


def make_layout(settings):
    """The page; a function, so every load starts fresh."""
    refresh_ms = max(5, int(settings["REFRESH_SECONDS"])) * 1000
    return html.Div(
        [
            make_header(),
            moment.make_bar(),
            *[view.make_section() for view in VIEWS],
            moment.make_store(),
            dcc.Interval(id=PageIds.interval, interval=refresh_ms),
        ],
        id="page",
        style={"fontFamily": "sans-serif", "margin": "0.5em 1em"},
    )


def password_message(data, password):
    """What the header says about the typed password."""
    if not password:
        return ""
    if data.names_shown(password):
        return html.Span("names shown", style={"color": "#555"})
    return html.Span(password_refused(data), style=ERROR_STYLE)


def register_page(app, data):
    """The header's callbacks."""

    @app.callback(Output(PageIds.password_message, "children"), Input(PageIds.password, "value"))
    def update_password_message(password):
        return password_message(data, text(password))

    @app.callback(Output(PageIds.interval, "disabled"), Input(PageIds.pause, "value"))
    def pause_refresh(pause):
        return bool(pause)

    @app.callback(
        Output(PageIds.filter_column, "options"),
        Output(PageIds.filter_value, "options"),
        Input(PageIds.password, "value"),
        Input(PageIds.filter_column, "value"),
    )
    def update_filter_options(password, column):
        names = data.names_shown(text(password))
        return data.filter_columns(names), data.filter_values(optional_text(column), names)

    app.clientside_callback(
        "function(value) { return (value && value.length) ? 'projector' : ''; }",
        Output("page", "className"),
        Input(PageIds.projector, "value"),
    )


def create_app(settings):
    """The Dash app for these settings (nothing is read from the database here)."""
    app = dash.Dash(
        __name__,
        title="Class progress",
        url_base_pathname=settings["URL_PREFIX"],
        update_title=None,
        assets_folder=os.path.join(HERE, "progress_views", "assets"),
    )
    store = snapshot.Store.for_settings(settings)
    data = Data(settings, access.PasswordGate(settings), access.client_address, store)
    app.server.before_request(data.follower.touch)  # read each commit before pages ask
    app.layout = lambda: make_layout(settings)
    register_page(app, data)
    moment.register(app, data)
    for view in VIEWS:
        view.register(app, data)
    access.install(app, settings)
    set_up_before_serving(app)
    return app


def set_up_before_serving(app):
    """Dash's setup (its scripts registered, the layout checked), done now rather than by
    the first request: requests that came while another one did it, as a browser's
    scripts to a new gunicorn worker, found no script registered (500s, a page stuck at
    "Loading..."; plotly/dash#3971, open as of Dash 4.4)."""
    with app.server.test_request_context():
        app._setup_server()


def database_problem(db):
    """Why this account cannot read the database `db`, or None. A loop started as plain
    root leaves files only root reads: say whose they are and how to fix it."""
    try:
        with open(db, "rb"):
            return None
    except FileNotFoundError:
        return f"no database at {db} yet: has rsync_notebooks.py run?"
    except PermissionError:
        try:
            owner = pwd.getpwuid(os.stat(db).st_uid).pw_name
        except (OSError, KeyError):
            owner = "another account"
        return (
            f"cannot read {db} (it belongs to {owner}): run the viewer as {owner}, or restart "
            "rsync_notebooks.py with --owner set to the viewer's account"
        )
    except OSError as error:
        return f"cannot read {db}: {error.strerror}"


def exposure_problem(path):
    """Why other accounts can read or change the file `path` (its mode lets them, and
    every folder above it lets them through), or None."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        folder = os.path.dirname(os.path.abspath(path))
        while True:
            if not os.stat(folder).st_mode & 0o011:
                return None
            if folder == os.path.dirname(folder):
                break
            folder = os.path.dirname(folder)
    except OSError:
        return None
    can = [word for bits, word in ((0o044, "read"), (0o022, "changed")) if mode & bits]
    if not can:
        return None
    return f"{path} can be {' and '.join(can)} by other accounts: run chmod 600 {path}"


def startup_problems(settings, config_path=None):
    """Warnings worth printing at start-up (the page shows them too): among them the
    config file (`config_path`), users.csv or the database open to other accounts."""
    database = database_problem(settings["SYNC_SQLITE"])
    problems = [database] if database else []
    for path in (config_path, settings["USERS_CSV"], settings["SYNC_SQLITE"]):
        exposed = path and exposure_problem(path)
        if exposed:
            problems.append(exposed)
    if not os.path.exists(settings["USERS_CSV"]):
        problems.append(f"no users file at {settings['USERS_CSV']}: names cannot be shown")
    if not os.path.isdir(settings["SYNC_DEST"]):
        problems.append(
            f"no destination folder at {settings['SYNC_DEST']}: the version view has no files "
            "(give --dest or SYNC_DEST)"
        )
    if not settings["PASSWD"]:
        problems.append("PASSWD is not set: names stay hidden")
    return problems


_default_app = None


def __getattr__(name):
    """`application`, the Flask server for gunicorn or mod_wsgi, and `app`, the Dash app:
    built on first use with the settings found as the command line finds them (or named
    by the environment variable PROGRESS_VIEWER_CONFIG)."""
    global _default_app
    if name in ("application", "app"):
        if _default_app is None:
            configure_logging()
            config = os.environ.get("PROGRESS_VIEWER_CONFIG")
            settings = load_settings(config)
            for problem in startup_problems(settings, find_config(config)):
                LOG.warning(problem)  # what main prints, in the server's log
            _default_app = create_app(settings)
        return _default_app.server if name == "application" else _default_app
    raise AttributeError(name)


# ---------------------------------------------------------------------------- command line


def configure_logging():
    """Timestamped log lines on stderr, from main or under gunicorn (which leaves the
    root logger alone); nothing changes when the host program configured logging. The
    request logs (werkzeug's, gunicorn's access log) never show a token."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for name in ("werkzeug", "gunicorn.access"):
        request_log = logging.getLogger(name)
        if not any(isinstance(f, access.TokenRedaction) for f in request_log.filters):
            request_log.addFilter(access.TokenRedaction())


def proxy_problem(settings):
    """Why TRUSTED_PROXIES is unsafe for `main`, which listens on TCP, or None."""
    if not settings["TRUSTED_PROXIES"]:
        return None
    return (
        "TRUSTED_PROXIES is set, but every account that reaches the port can send "
        "X-Forwarded-For (and forge its address): trust it only behind a Unix socket "
        "that only the proxy reaches (README: Deploying)"
    )


def listen_problem(host, port):
    """Why nothing can listen on host:port (another program holds it, say), or None."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        socket.create_server((host, port), family=family).close()
    except OSError as error:
        return (error.strerror or str(error)).lower()
    return None


def build_parser():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n", 1)[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        help=f"Settings file to use (default: {CONFIG_NAME} in the working directory, "
        "then beside this script, else built-in defaults).",
    )
    parser.add_argument("--db", help="The database to show (default: SYNC_SQLITE, sync.sqlite).")
    parser.add_argument(
        "--users-csv", help="The users file given to rsync_notebooks.py (default: USERS_CSV)."
    )
    parser.add_argument(
        "--dest", help="The folder rsync_notebooks.py copies into (default: SYNC_DEST, sync_dest)."
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="Address to listen on (default: %(default)s)."
    )
    parser.add_argument(
        "--port", type=int, default=8050, help="Port to listen on (default: %(default)s)."
    )
    parser.add_argument(
        "--debug", action="store_true", help="Run Dash in debug mode (never on a shared server)."
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {make_database.__version__}"
    )
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    configure_logging()
    overrides = {"SYNC_SQLITE": args.db, "USERS_CSV": args.users_csv, "SYNC_DEST": args.dest}
    try:
        settings = load_settings(args.config, overrides)
    except Exception as error:  # a config file is Python: any error in it lands here
        print(f"Error: cannot load the config file: {error}", file=sys.stderr)
        return 2
    problems = startup_problems(settings, find_config(args.config))
    for problem in [*problems, proxy_problem(settings)]:
        if problem:
            print(f"warning: {problem}", file=sys.stderr)
    problem = listen_problem(args.host, args.port)
    if problem:
        print(f"Error: cannot listen on {args.host}:{args.port}: {problem}", file=sys.stderr)
        return 1
    settings = access.settings_to_serve(settings, args.host)
    try:
        app = create_app(settings)
    except access.AccessDbError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 2
    url = access.ready_url(settings, args.host, args.port)
    print(f"serving {settings['SYNC_SQLITE']} at {url}", flush=True)
    # Dash's and werkzeug's own banners name the address without the token: the line above
    # is the one to open
    logging.getLogger("dash.dash").setLevel(logging.WARNING)
    logging.getLogger("werkzeug").addFilter(lambda record: "Running on" not in record.getMessage())
    app.run(host=args.host, port=args.port, debug=args.debug)
    return 0


if __name__ == "__main__":
    sys.exit(main())
