"""The README cannot drift from the scripts: every flag of every script, every test file and
CI's command are in it."""

import glob
import os
import re

import pytest
from conftest import ROOT

import make_database
import progress_viewer
import rsync_notebooks


@pytest.mark.parametrize("module", [rsync_notebooks, make_database, progress_viewer])
def test_every_flag_appears_in_the_readme(module):
    with open(os.path.join(ROOT, "README.md")) as stream:
        readme = stream.read()
    flags = [
        option
        for action in module.build_parser()._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    ]
    assert flags, module.__name__
    missing = [flag for flag in flags if not re.search(rf"`{re.escape(flag)}[` ]", readme)]
    assert missing == []


def test_ci_runs_exactly_the_readmes_test_command():
    """CI's script runs `./run test`, the command the README gives for the tests."""
    with open(os.path.join(ROOT, "README.md")) as stream:
        readme = stream.read()
    assert re.search(r"^\./run test +# ", readme, flags=re.MULTILINE)
    with open(os.path.join(ROOT, ".ci", "run")) as stream:
        commands = [line for line in stream.read().splitlines() if not line.startswith("#")]
    assert commands[-1] == "exec ./run test"


def test_every_test_file_is_described_in_the_readme():
    """The README's Tests section says what each tests/test_*.py checks."""
    with open(os.path.join(ROOT, "README.md")) as stream:
        readme = stream.read()
    section = readme[readme.index("## Tests\n") : readme.index("## Benchmarks\n")]
    files = sorted(
        os.path.basename(path) for path in glob.glob(os.path.join(ROOT, "tests", "test_*.py"))
    )
    assert [name for name in files if f"`{name}`" not in section] == []
