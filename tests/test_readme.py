"""The README stays true: every setting documented, the two commands exist and CI calls the test one."""

from __future__ import annotations

import re

from helpers import REPO

from uvkernel.settings import SETTING_NAMES
from uvkernel.settings_traits import UvKernelSettings


def test_every_setting_is_documented():
    readme = (REPO / "README.md").read_text()
    table = readme.split("## Configuration reference", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", table, flags=re.M))
    assert documented == set(SETTING_NAMES) == set(UvKernelSettings.class_traits(config=True))


def test_two_commands_exist_and_ci_runs_the_test_one():
    readme = (REPO / "README.md").read_text()
    assert "`bash scripts/demo.sh`" in readme and "`bash scripts/test.sh`" in readme
    assert (REPO / "scripts" / "demo.sh").is_file() and (REPO / "scripts" / "test.sh").is_file()
    assert "bash scripts/test.sh" in (REPO / ".ci" / "run").read_text()
