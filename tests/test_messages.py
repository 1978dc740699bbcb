"""Every error code the code raises has its text in errors.MESSAGES, every notice the code shows is in
errors.NOTICES (none is written where it is shown), and texts follow the house rules."""

from __future__ import annotations

import ast
import re

from helpers import REPO

from uvkernel.errors import MESSAGES, NOTICES, UvkernelError, notice

_USES = re.compile(r"""(?:Error|Failure|\bnote)\(\s*["']([A-Z][A-Z0-9_]+)["']|MESSAGES\[["']([A-Z][A-Z0-9_]+)["']\]""")
_NOTICES = re.compile(r"""\bnotice\(\s*["']([A-Z][A-Z0-9_]+)["']""")
# run in other interpreters, standard library only: they print no user text of their own
_OTHER_INTERPRETERS = {"preflight/probe.py", "kernel_magic_stub.py"}


def _sources():
    for path in sorted((REPO / "src" / "uvkernel").rglob("*.py")):
        if path.relative_to(REPO / "src" / "uvkernel").as_posix() not in _OTHER_INTERPRETERS:
            yield path


def test_every_raised_code_has_a_message():
    used = set()
    for path in _sources():
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


def test_every_notice_shown_is_in_the_catalogue_and_every_one_there_is_shown():
    used = {code for path in _sources() for code in _NOTICES.findall(path.read_text())}
    assert used, "the pattern found no notices at all"
    assert sorted(used - set(NOTICES)) == [], "notices shown but missing from errors.NOTICES"
    assert sorted(set(NOTICES) - used) == [], "texts in errors.NOTICES nothing shows"
    assert not set(NOTICES) & set(MESSAGES), "a code names both an error and a notice"
    for code, text in NOTICES.items():
        assert "%" not in text and text.count("`") % 2 == 0, code
        assert "\n" not in text and not text.endswith("."), f"{code}: a notice is one line"


def _is_text(node: ast.AST) -> bool:
    """A string literal, an f-string, or text glued together from them."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.JoinedStr):
        return True
    return isinstance(node, ast.BinOp) and (_is_text(node.left) or _is_text(node.right))


def _holds_text(node: ast.AST) -> bool:
    return (_is_text(node) or isinstance(node, ast.List) and any(_is_text(e) for e in node.elts)
            or isinstance(node, ast.ListComp) and _is_text(node.elt))


def test_no_notice_is_written_where_it_is_shown():
    """``notices.append(f"...")``, ``notes.append("...")``, ``notices=["..."]``: the text comes from the catalogue."""
    written = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("append", "insert", "extend")
                    and re.search(r"(notices|notes)$", ast.unparse(node.func.value))
                    and any(_holds_text(a) for a in node.args)):
                written.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)[:100]}")
            elif isinstance(node, ast.keyword) and node.arg in ("notices", "notes") and _holds_text(node.value):
                written.append(f"{path.relative_to(REPO)}:{node.value.lineno}: {node.arg}={ast.unparse(node.value)}")
    assert written == []


def test_a_notice_is_filled_like_an_error():
    text = notice("UNMET_PIN", requirement="torch==2.9.1", name="torch", host_version="2.13.0+cpu")
    assert text == ("the project requires torch==2.9.1, the host provides torch 2.13.0+cpu: the host's copy is "
                    "used (host_version_conflicts = warn)")
    assert notice("MIG_MODE", index=0, name="A100").startswith("GPU 0 (A100) is in MIG mode")
