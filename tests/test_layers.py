"""The import graph keeps the stages apart: stage 2 (uvkernel/env) never imports the layers above it, nothing
outside it reaches a private name inside it, and no module silences the private-access lint."""

from __future__ import annotations

import ast
from pathlib import Path

import uvkernel

SRC = Path(uvkernel.__file__).parent
ABOVE_ENV = {"provisioner", "cli", "pipeline", "terminal", "project_edit", "unshadow"}


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(absolute module, [imported names]) for every import in the file, function-level ones included."""
    here = _module(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            module = ".".join(p for p in (base if node.level else "", node.module or "") if p)
            out.append((module, [alias.name for alias in node.names]))
    return out


def _sources() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def test_env_imports_only_downward():
    for path in (SRC / "env").glob("*.py"):
        for module, names in _imports(path):
            targets = {module} | {f"{module}.{n}" for n in names}
            above = {t for t in targets if t.startswith("uvkernel.") and t.split(".")[1] in ABOVE_ENV}
            assert not above, f"{path.name} imports {sorted(above)}"


def test_nothing_outside_env_reaches_a_private_name_in_it():
    for path in _sources():
        if path.parent == SRC / "env":
            continue
        for module, names in _imports(path):
            if module == "uvkernel.env" or module.startswith("uvkernel.env."):
                private = [n for n in names if n.startswith("_")] + [p for p in module.split(".") if p.startswith("_")]
                assert not private, f"{path.relative_to(SRC)} imports {private} from {module}"
        text = path.read_text()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                base = ast.unparse(node.value)
                assert base not in {"env", "stage2", "venv", "sync", "resolve", "install", "installed", "protection",
                                    "requirements", "companions", "declarations"}, \
                    f"{path.relative_to(SRC)}:{node.lineno} reaches {base}.{node.attr}"


def test_no_private_access_suppressions():
    for path in _sources():
        assert "SLF001" not in path.read_text(), f"{path.relative_to(SRC)} silences a private-name access"


def test_every_module_imports_on_this_python():
    """Run on each Python uvkernel supports (scripts/test-pythons.sh): a name newer than the oldest fails here."""
    import importlib

    skip = {"uvkernel.__main__", "uvkernel.kernel_magic_stub"}  # the CLI's entry, and a file IPython execs
    failed = {}
    for path in _sources():
        name = _module(path)
        if name not in skip:
            try:
                importlib.import_module(name)
            except Exception as exc:  # every failure, listed at once
                failed[name] = repr(exc)
    assert not failed, failed
