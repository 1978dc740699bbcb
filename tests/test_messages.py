"""Every error code the code raises has its text in errors.MESSAGES, and texts follow the house rules."""

from __future__ import annotations

import re

from helpers import REPO

from uvkernel.errors import MESSAGES, UvkernelError

_USES = re.compile(r"""(?:Error|Failure)\(\s*["']([A-Z][A-Z0-9_]+)["']|MESSAGES\[["']([A-Z][A-Z0-9_]+)["']\]""")


def test_every_raised_code_has_a_message():
    used = set()
    for path in (REPO / "src" / "uvkernel").rglob("*.py"):
        for a, b in _USES.findall(path.read_text()):
            used.add(a or b)
    assert used, "the pattern found no codes at all"
    assert sorted(used - set(MESSAGES)) == []


def test_texts_avoid_percent_and_keep_commands_quoted():
    for code, message in MESSAGES.items():
        assert "%" not in message.summary + message.fix, code  # jupyter_server doubles it
        assert message.fix.count("`") % 2 == 0, f"{code}: unbalanced backquotes"


def test_render_has_summary_code_and_fix():
    text = str(UvkernelError("ENV_IS_FILE", env="/p/.venv"))
    assert text.splitlines()[0] == "uvkernel: the environment path /p/.venv is a file, not a folder [ENV_IS_FILE]"
    assert "How to fix: move it away (`mv /p/.venv /p/.venv.bak`)" in text
