"""The README cannot drift from the scripts: every flag of every script is documented."""

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


def test_readme_quick_start_commands_exist():
    with open(os.path.join(ROOT, "README.md")) as stream:
        readme = stream.read()
    assert "./run demo" in readme and "./run test" in readme
    with open(os.path.join(ROOT, ".ci", "run")) as stream:
        assert "./run test" in stream.read()
