"""The README works as written: its commands run from a fresh clone in a plain shell, and
what it says about Python, the requirements and the config file is what the code does."""

import ast
import glob
import importlib.metadata
import os
import re
import shlex
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import time
import tomllib

import pytest
from conftest import ROOT, run_script, write_json
from demo_course import grade_cell, markdown_cell, notebook, stream_output
from test_deploy import free_port, wait_for_http

import make_database
import progress_viewer
import rsync_notebooks
from progress_views import model

SCRIPTS = {
    "rsync_notebooks.py": rsync_notebooks,
    "make_database.py": make_database,
    "progress_viewer.py": progress_viewer,
}
RUNTIME_CODE = ["*.py", "progress_views/*.py"]
DEVELOPMENT_CODE = ["tests/*.py", "tools/*.py", "bench/*.py"]
# Listed in requirements.txt without being imported: it runs the viewer (deploy/).
RUN_NOT_IMPORTED = {"gunicorn"}
# Listed in requirements-dev.txt without being imported: ./run test runs them.
DEV_TOOLS = {"ruff", "pytest-timeout"}
# How a line of a README code block starts when it is a command a reader types.
COMMAND_START = re.compile(
    r"(\./|sudo |\. |\.venv/|~/|python3 |sqlite3 |\$ |mkdir |journalctl |tmux |cd |git |pip "
    r"|cp |chmod )"
)
# README commands the tests below do not run, and why.
NOT_RUN = {
    "./run test": "it is this test suite",
    "tmux ": "interactive",
    "cd ~/course": "an example folder",
    "sudo git clone . /opt/monitoring": "installs under /opt (test_deploy checks the units)",
    "mkdir -m 700 ~/monitoring": "the service's course folder (test_deploy)",
    "sudo cp /opt/monitoring/deploy/": "installs into /etc/systemd (test_deploy verifies)",
    "sudo sed -i 's/instructor/alice/g'": "test_deploy checks it",
    "sudo systemd-analyze verify": "test_deploy runs systemd-analyze verify",
    "sudo systemctl ": "needs a running systemd",
    "journalctl ": "needs a running systemd",
    "$ sqlite3 sync.sqlite": "run by test_loop_database_and_sqlite_examples",
    ".venv/bin/python bench/": "benchmarks take minutes (./run bench)",
}
# The environment of a plain login shell: nothing of this test run's virtualenv.
PLAIN_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": os.environ.get("HOME", "/root"),
    "LANG": "C.UTF-8",
    **{key: value for key, value in os.environ.items() if key.startswith("PIP_")},
}
# What sudo's secure_path leaves of PATH: the system's python3, not .venv's.
SUDO_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def read(path):
    with open(os.path.join(ROOT, path)) as stream:
        return stream.read()


def readme_command_lines():
    """Every line of the README's code blocks that a reader types, comments removed."""
    lines, in_block = [], False
    for line in read("README.md").splitlines():
        if line.startswith("```"):
            in_block = not in_block
        elif in_block and COMMAND_START.match(line):
            lines.append(re.sub(r"\s+# .*$", "", line).strip())
    return lines


def readme_line(start):
    """The shortest README command line that starts with `start` (`sudo ./x.py` rather
    than `sudo ./x.py 2>&1 | tee ...`)."""
    found = [line for line in readme_command_lines() if line.startswith(start)]
    assert found, f"no README command starts with {start!r}"
    return min(found, key=len)


def requirement_names(path):
    """Normalized distribution names a requirements file lists (not its -r includes)."""
    names = set()
    for line in read(path).splitlines():
        match = re.match(r"([A-Za-z0-9._-]+)", line)
        if match and not line.startswith(("#", "-")):
            names.add(normalize(match.group(1)))
    return names


def normalize(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_distributions(patterns):
    """Distributions of every third-party module imported by the files of `patterns`."""
    local = {
        os.path.splitext(os.path.basename(path))[0]
        for folder in ("", "tests", "tools", "bench")
        for path in glob.glob(os.path.join(ROOT, folder, "*.py"))
    } | {"progress_views"}
    modules = set()
    for pattern in patterns:
        for path in glob.glob(os.path.join(ROOT, pattern)):
            for node in ast.walk(ast.parse(read(path))):
                if isinstance(node, ast.Import):
                    modules |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    modules.add(node.module.split(".")[0])
    third_party = modules - set(sys.stdlib_module_names) - local
    owners = importlib.metadata.packages_distributions()
    return {normalize(owners[module][0]) for module in third_party}


# ---------------------------------------------------------------------------- facts


def test_python_floor_is_one_fact():
    """README, pyproject.toml and ./run name the same oldest Python, and CI runs at least it."""
    requires = tomllib.loads(read("pyproject.toml"))["project"]["requires-python"]
    floor = re.fullmatch(r">=(\d+)\.(\d+)", requires).groups()
    assert f"PYTHON_FLOOR={'.'.join(floor)}\n" in read("run")
    assert f"Python {'.'.join(floor)} or newer" in read("README.md")
    assert sys.version_info[:2] >= tuple(map(int, floor))


def test_runtime_requirements_are_what_the_scripts_import():
    """requirements.txt lists every third-party module the scripts import, and nothing else
    but gunicorn, which the viewer's unit runs."""
    listed = requirement_names("requirements.txt")
    assert imported_distributions(RUNTIME_CODE) == listed - RUN_NOT_IMPORTED
    assert "/.venv/bin/gunicorn " in read("deploy/monitoring-viewer.service")


def test_dev_requirements_are_what_tests_tools_and_benchmarks_import():
    """requirements-dev.txt adds what tests, tools and benchmarks import, and the tools
    ./run test runs."""
    runtime = requirement_names("requirements.txt")
    added = requirement_names("requirements-dev.txt") - runtime
    imported = imported_distributions(DEVELOPMENT_CODE)
    assert imported - runtime == added - DEV_TOOLS
    assert "-r requirements.txt" in read("requirements-dev.txt").splitlines()


def test_config_example_documents_every_setting(caplog):
    """The example config holds every setting the viewer knows and nothing it does not."""
    example = os.path.join(ROOT, "progress_viewer_config.py.example")
    text = read("progress_viewer_config.py.example")
    assigned = set(re.findall(r"^([A-Z_]+) = ", text, flags=re.MULTILINE))
    assert assigned == set(progress_viewer.DEFAULTS)
    progress_viewer.load_settings(example)
    assert caplog.records == []


def test_config_lookup_order_is_the_readmes(tmp_path, monkeypatch):
    """`--config PATH` wins over progress_viewer_config.py in the working directory, which
    wins over built-in defaults, as the README says."""
    said = "from the file `--config PATH` names, else `progress_viewer_config.py` in the working"
    assert said in " ".join(read("README.md").split())
    (tmp_path / "progress_viewer_config.py").write_text('URL_PREFIX = "/here/"\n')
    (tmp_path / "named.py").write_text('URL_PREFIX = "/named/"\n')
    monkeypatch.chdir(tmp_path)
    assert progress_viewer.load_settings(str(tmp_path / "named.py"))["URL_PREFIX"] == "/named/"
    assert progress_viewer.load_settings()["URL_PREFIX"] == "/here/"


def test_graded_markdown_answer_never_counts_as_answered(tmp_path):
    """The README says a written (markdown) answer is `non-empty` at best, never answered."""
    path = tmp_path / "essay.ipynb"
    cells = [
        grade_cell("My answer: recursion ends.", "essay", cell_type="markdown"),
        grade_cell("print(1)", "code", outputs=[stream_output("1\n")]),
        markdown_cell("not graded"),
    ]
    write_json(path, notebook(cells))
    result = run_script("make_database.py", "--parse-only", path, cwd=tmp_path)
    assert result.stdout.splitlines()[1:] == ["essay\tnon-empty", "code\tstream"]
    assert model.outcome_class("non-empty") != "answered"
    assert "never counts it as answered" in " ".join(read("README.md").split())


def test_run_help_exits_0_and_an_unknown_command_2():
    """`./run help` is a success; a typo gets the usage on stderr and exit 2."""
    help_ = subprocess.run(["./run", "help"], cwd=ROOT, capture_output=True, text=True)
    assert (help_.returncode, help_.stderr) == (0, "")
    assert "./run setup" in help_.stdout
    typo = subprocess.run(["./run", "tset"], cwd=ROOT, capture_output=True, text=True)
    assert typo.returncode == 2
    assert "unknown command 'tset'" in typo.stderr and "./run setup" in typo.stderr


def test_every_readme_command_is_run_or_excused():
    """Each command the README shows is run by a test here or listed in NOT_RUN with why."""
    run_here = [
        "./run setup",
        ". .venv/bin/activate",
        "cp users.csv.example users.csv",
        "cp progress_viewer_config.py.example progress_viewer_config.py",
        "chmod 600 users.csv progress_viewer_config.py",
        "./run demo",
        "python3 -m venv ~/monitoring-venv",
        "sudo ./rsync_notebooks.py",
        "./rsync_notebooks.py --no-sudo",
        "./make_database.py --parse-only",
        "./make_database.py --log",
        "./progress_viewer.py",
        ".venv/bin/gunicorn",
    ]
    unknown = [
        line for line in readme_command_lines() if not line.startswith((*run_here, *NOT_RUN))
    ]
    assert unknown == []


def test_every_readme_script_line_has_valid_flags():
    """Every invocation of a script in the README parses with that script's own parser."""
    checked = 0
    for line in readme_command_lines():
        words = shlex.split(line.split(" | ")[0].split(" 2>&1")[0])
        for index, word in enumerate(words):
            script = SCRIPTS.get(os.path.basename(word))
            if script and word.endswith(".py") and "bench" not in word:
                script.build_parser().parse_args(words[index + 1 :])
                checked += 1
    assert checked >= 6


# ---------------------------------------------------------------------------- a fresh clone


def shell(command, cwd, env=None, stdin=None, timeout=600):
    """Run `command` in bash as a plain shell would; the CompletedProcess."""
    return subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env={**PLAIN_ENV, **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ok(result):
    assert result.returncode == 0, f"{result.args}\n{result.stdout}\n{result.stderr}"
    return result


def serves(command, cwd, port, env=None):
    """Start `command` in its own session, check it answers HTTP on `port`, then stop it as
    Ctrl-C would (SIGINT to the whole process group); the HTTP status it gave."""
    process = subprocess.Popen(
        ["bash", "-c", command],
        cwd=cwd,
        env={**PLAIN_ENV, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        return wait_for_http(f"http://127.0.0.1:{port}/", process, timeout=120)
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    """A fresh clone of this repository after the README's `./run setup`, with the README's
    users.csv.example as users.csv and a notebook where the README's examples expect one."""
    if not os.path.isdir(os.path.join(ROOT, ".git")):
        pytest.skip("not a git clone")
    folder = tmp_path_factory.mktemp("readme") / "monitoring"
    subprocess.run(["git", "clone", "-q", ROOT, str(folder)], check=True)
    ok(shell(readme_line("./run setup"), folder))
    ok(shell("cp users.csv.example users.csv", folder))
    cells = [
        grade_cell("1/0", "p1", outputs=[]),
        grade_cell("print(2)", "p2", outputs=[stream_output("2\n")]),
    ]
    write_json(folder / "hoge" / "a" / "notebooks" / "pl01.ipynb", notebook(cells))
    return folder


def test_setup_installs_the_runtime_only(clone):
    """`./run setup` gives .venv what the scripts need, and no test tools."""
    ok(shell(".venv/bin/python -c 'import dash, numpy, orjson, re2, flask, gunicorn'", clone))
    for tool in ("pytest", "selenium", "ruff"):
        assert shell(f".venv/bin/python -c 'import {tool}'", clone).returncode == 1, tool


def test_scripts_run_from_a_plain_shell(clone):
    """The loop and make_database.py run on the system's python3 (as under sudo); the
    viewer once .venv is activated, as the Quick start says, and without activating it:
    run by a python3 without dash, it runs itself again under .venv's python."""
    for script in ("rsync_notebooks.py", "make_database.py"):
        ok(shell(f"./{script} --help", clone, env={"PATH": SUDO_PATH}))
    sudo_line = readme_line("sudo ./rsync_notebooks.py").split(" 2>&1")[0]
    ok(shell(sudo_line.removeprefix("sudo ") + " --help", clone, env={"PATH": SUDO_PATH}))
    activate = readme_line(". .venv/bin/activate")
    activated = ok(shell(f"{activate} && ./progress_viewer.py --version", clone))
    assert activated.stdout.split() == ["progress_viewer.py", make_database.__version__]
    if shell("python3 -c 'import dash'", clone, env={"PATH": SUDO_PATH}).returncode:
        plain = ok(shell("./progress_viewer.py --version", clone, env={"PATH": SUDO_PATH}))
        assert plain.stdout.split() == ["progress_viewer.py", make_database.__version__]


def test_viewer_without_venv_says_what_to_do(tmp_path):
    """progress_viewer.py run by a python3 without dash where there is no .venv beside it:
    one line naming the command that installs it, not a traceback."""
    if shell("python3 -c 'import dash'", tmp_path, env={"PATH": SUDO_PATH}).returncode == 0:
        pytest.skip("the system's python3 has dash")
    shutil.copy(os.path.join(ROOT, "progress_viewer.py"), tmp_path)
    run = shell("python3 progress_viewer.py --version", tmp_path, env={"PATH": SUDO_PATH})
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert "has no dash; run `./run setup` in " + str(tmp_path) in run.stderr
    # a .venv whose python has no dash either (here: the system's, without pyvenv.cfg, so
    # that its sys.prefix is not .venv): run again once, then the message, not forever
    venv_bin = tmp_path / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    system_python = shell("command -v python3", tmp_path, env={"PATH": SUDO_PATH}).stdout
    (venv_bin / "python").symlink_to(system_python.strip())
    run = shell(
        "python3 progress_viewer.py --version", tmp_path, env={"PATH": SUDO_PATH}, timeout=30
    )
    assert run.returncode == 1
    assert f"{venv_bin / 'python'} has no dash" in run.stderr


def test_own_course_steps(clone):
    """The Quick start's steps for one's own course, in the clone: the two files copied
    from their examples are what the scripts read (users.csv's rows, the config with
    PASSWD to set), only your account reads them (the viewer warns otherwise), and the
    clone's git ignores them."""
    steps = [
        readme_line(f"cp {name}.example") for name in ("users.csv", "progress_viewer_config.py")
    ]
    steps.append(readme_line("chmod 600 users.csv"))
    config = clone / "progress_viewer_config.py"
    (clone / "users.csv").unlink()  # the fixture's copy: the README's line makes it here
    try:
        for line in steps:
            ok(shell(line, clone))
        settings = progress_viewer.load_settings(str(config))
        problems = progress_viewer.startup_problems(settings, str(config))
        assert "PASSWD is not set: names stay hidden" in problems  # until you set it
        for private in (clone / "users.csv", config):  # what the viewer asks for otherwise
            assert stat.S_IMODE(private.stat().st_mode) == 0o600
        users = make_database.read_users_csv(str(clone / "users.csv"))
        assert users == make_database.read_users_csv(str(clone / "users.csv.example")) != []
        assert settings["PASSWD"] == "" and settings["USERS_CSV"] == str(clone / "users.csv")
        ignored = ok(
            shell("git status --porcelain --ignored users.csv progress_viewer_config.py", clone)
        )
        assert sorted(ignored.stdout.split()) == [
            "!!",
            "!!",
            "progress_viewer_config.py",
            "users.csv",
        ]
    finally:
        config.unlink(missing_ok=True)


def test_loop_database_and_sqlite_examples(clone):
    """The loop's, make_database.py's and sqlite3's examples, on the README's users.csv."""
    loop = readme_line("./rsync_notebooks.py --no-sudo")
    ok(shell(f"{loop} --repeat 1 --min-sleep 0", clone))
    parsed = ok(shell(readme_line("./make_database.py --parse-only"), clone))
    assert parsed.stdout.splitlines()[1:] == ["p1\tnon-empty", "p2\tstream"]
    (log,) = glob.glob(str(clone / "sync_logs" / "sync_*.log"))
    dry_run = readme_line("./make_database.py --log")
    dry_run = re.sub(r"sync_logs/sync_\S+\.log", f"sync_logs/{os.path.basename(log)}", dry_run)
    ok(shell(dry_run, clone))
    (replay,) = re.findall(r"`(\./rsync_notebooks\.py --replay-log[^`]*)`", read("README.md"))
    ok(shell(replay + ("" if os.geteuid() == 0 else " --no-sudo"), clone))
    query = "SELECT filename, t, owner FROM summary ORDER BY filename"
    with (
        sqlite3.connect(clone / "sync.sqlite") as old,
        sqlite3.connect(clone / "new.sqlite") as new,
    ):
        assert new.execute(query).fetchall() == old.execute(query).fetchall() != []
    session = [
        line.removeprefix("sqlite> ")
        for line in read("README.md").splitlines()
        if line.startswith("sqlite> ")
    ]
    answer = ok(shell("sqlite3 -bail sync.sqlite", clone, stdin="\n".join(session) + "\n"))
    shown = [line for line in read("README.md").splitlines() if line.startswith("CREATE TABLE ")]
    assert set(shown) <= set(answer.stdout.splitlines())
    assert "hoge/a/notebooks/pl01.ipynb|" in answer.stdout


def test_viewer_commands_serve(clone):
    """The README's viewer invocations and its gunicorn line each serve the page."""
    activate = readme_line(". .venv/bin/activate")
    plain = readme_line("./progress_viewer.py")
    port = free_port()
    assert serves(f"{activate} && {plain} --port {port}", clone, port) is not None
    explicit = readme_line("./progress_viewer.py --db").replace("/srv/monitoring", str(clone))
    elsewhere = clone.parent
    port = free_port()
    script = str(clone / "progress_viewer.py")
    command = explicit.replace("./progress_viewer.py", script, 1)
    activate_from_elsewhere = activate.replace(".venv", str(clone / ".venv"))
    started = serves(f"{activate_from_elsewhere} && {command} --port {port}", elsewhere, port)
    assert started is not None
    gunicorn = readme_line(".venv/bin/gunicorn")
    port = free_port()
    # The socket's folder is made by systemd (test_deploy serves on it): a port here.
    gunicorn = re.sub(r"unix:\S+", f"127.0.0.1:{port}", gunicorn)
    assert serves(gunicorn, clone, port) is not None


def test_demo_builds_and_serves(clone):
    """`./run demo` builds its course, syncs it and serves the viewer until Ctrl-C; the
    `./run test` that follows it in the Quick start still passes its lint (the demo/
    folder it leaves once made ruff take `import demo` for the project's own package)."""
    port = free_port()
    demo = readme_line("./run demo")
    assert serves(f"{demo} --students 6 --minutes 20 --port {port}", clone, port) is not None
    with sqlite3.connect(clone / "demo" / "sync.sqlite") as conn:
        assert conn.execute("SELECT count(*) FROM summary").fetchone()[0] > 0
    for lint in (["format", "--check", "."], ["check", "."]):
        ok(subprocess.run([sys.executable, "-m", "ruff", *lint], cwd=clone, capture_output=True))


def test_pip_install_gives_the_commands(clone, tmp_path):
    """`pip install .` into a fresh virtualenv gives the three commands, at the version of
    make_database.py, working outside the clone."""
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "PIP_CACHE_DIR": os.path.expanduser("~/.cache/pip")}
    ok(shell(readme_line("python3 -m venv ~/monitoring-venv"), clone, env=env))
    bin_ = home / "monitoring-venv" / "bin"
    for command in ("rsync-notebooks", "make-database", "progress-viewer"):
        result = ok(shell(f"{bin_ / command} --version", tmp_path, env=env))
        assert result.stdout.split()[-1] == make_database.__version__, command
    where = "import progress_viewer; print(progress_viewer.__file__)"
    located = ok(shell(f"{bin_ / 'python'} -c '{where}'", tmp_path, env=env))
    assert "site-packages" in located.stdout


def test_tee_keeps_the_loops_last_lines(clone):
    """The README's `| tee -i` line: Ctrl-C (SIGINT to the whole pipeline) while the loop
    sleeps stops the loop, and its last lines still reach the file."""
    line = readme_line("sudo ./rsync_notebooks.py 2>&1 | tee -i")
    command = line.removeprefix("sudo ").replace(
        "./rsync_notebooks.py", "./rsync_notebooks.py --no-sudo --min-sleep 600", 1
    )
    output = clone / shlex.split(line)[-1]
    process = subprocess.Popen(
        ["bash", "-c", command],
        cwd=clone,
        env=PLAIN_ENV,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while "sleep" not in (output.read_text() if output.exists() else ""):
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.2)
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    lines = output.read_text().splitlines()
    assert "SIGINT" in "\n".join(lines[-3:]) and lines[-1].startswith("stopped"), lines[-4:]
