"""Fixtures the attack tests share."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess

import pytest


@pytest.fixture
def other_user():
    """A second Unix user, made for the test and removed after it (CI runs as root, as the attacks need)."""
    missing = [tool for tool in ("useradd", "userdel", "setpriv") if shutil.which(tool) is None]
    if os.geteuid() != 0 or missing:
        pytest.fail(f"the attack tests need root and {', '.join(missing) or 'useradd'} to make a second user",
                    pytrace=False)
    name = f"uvk{os.getpid() % 100000}"
    subprocess.run(["useradd", "--no-create-home", name], check=True, capture_output=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], capture_output=True)
