"""``uvkernel`` / ``jupyter uvkernel``: install, uninstall, list, check, unshadow, the kernel launcher, and the
terminal commands sync, run, add and remove (terminal.py, project_edit.py)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any, Sequence

# Every start pays for what is imported here (`uvkernel --version` in ~50 ms, `check` to its first progress line
# in ~0.1 s): the rest (asyncio, json, the pipeline, jupyter_client through kernelspec) is imported by the
# commands that use it, at the top of their function.
from . import distribution
from .errors import DEBUG_ENV, ProjectError, SpecError, UvkernelError, debug_enabled, internal_error, notice
from .shared import DEFAULT_DISPLAY_NAME, DEFAULT_NAME

DESCRIPTION = ("Jupyter kernels in per-project uv environments that use the host's torch and CUDA. "
               "From a terminal, use uvkernel sync / run / add / remove instead of uv sync / uv run / uv add: "
               "uv's own commands cannot see the host's packages and would install torch a second time.")


def _location(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--user", action="store_true", help="the user's Jupyter data folder (the default)")
    group.add_argument("--sys-prefix", action="store_true", help="the prefix of the Python running this command")
    group.add_argument("--prefix", metavar="DIR", help="DIR/share/jupyter/kernels")


def _prefix(args: argparse.Namespace) -> tuple[bool, str | None]:
    if args.sys_prefix:
        return False, sys.prefix
    if args.prefix:
        return False, os.path.abspath(os.path.expanduser(args.prefix))
    return True, None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="uvkernel", description=DESCRIPTION)
    parser.add_argument("--version", action="version", help="show the version and exit",
                        version=f"uvkernel {distribution.version()} ({distribution.DIST_NAME})")
    parser.add_argument("--debug", action="store_true",
                        help=f"show the traceback of an unexpected error (same as {DEBUG_ENV}=1)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("install", help="write a kernel spec that uses the uvkernel provisioner")
    _location(p)
    p.add_argument("--name", default=DEFAULT_NAME, help="kernel name (default: %(default)s)")
    p.add_argument("--display-name", default=None, help=f"shown in the picker (default: {DEFAULT_DISPLAY_NAME})")
    p.add_argument("--host-python", default=None, metavar="PATH", help="the interpreter that holds torch/CUDA")
    p.add_argument("--env", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                   help="environment variable for the kernel (repeatable)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=JSON",
                   help="a provisioner setting, e.g. --set require_cuda='\"true\"' or --set min_gpus=1")

    p = sub.add_parser("uninstall", help="remove a kernel spec")
    _location(p)
    p.add_argument("name", nargs="?", help="the spec to remove (or --stale)")
    p.add_argument("--stale", action="store_true", help="remove every uvkernel spec whose host interpreter is gone")

    p = sub.add_parser("list", help="list the installed uvkernel kernel specs")
    p.add_argument("--json", action="store_true", help="print the list as JSON")

    _terminal_parsers(sub)

    p = sub.add_parser("check", help="prepare the env for a folder as a kernel start would, and print the full report")
    p.add_argument("dir", nargs="?", default=".", help="the notebook's folder (default: the current folder)")
    p.add_argument("--host-python", default=None, metavar="PATH", help=HOST_HELP)
    p.add_argument("--kernel", default=None, metavar="NAME", help=KERNEL_HELP)
    p.add_argument("--require-cuda", action="store_true", help="fail unless CUDA works")
    p.add_argument("--recheck", action="store_true", help="ignore the preflight cache")
    p.add_argument("--json", action="store_true", help="print every fact as JSON")
    _group_flags(p)

    p = sub.add_parser("kernel", help="start a kernel directly (the spec's argv, for clients without provisioners)")
    p.add_argument("-f", dest="connection_file", required=True, metavar="FILE",
                   help="the connection file Jupyter gives the kernel")
    p.add_argument("--kernel", default=DEFAULT_NAME, metavar="NAME",
                   help="the kernel spec whose settings to use (default: %(default)s)")

    p = sub.add_parser("unshadow", help="remove env copies of packages the host provides (asks nothing else)")
    p.add_argument("dir", nargs="?", default=".", help="the notebook's folder (default: the current folder)")
    p.add_argument("--host-python", default=None, metavar="PATH", help=HOST_HELP)
    p.add_argument("--kernel", default=None, metavar="NAME", help=KERNEL_HELP)
    p.add_argument("--dry-run", action="store_true", help="only list what would be removed")

    # --- the per-user cache's envs (cache_envs.py) ---
    p = sub.add_parser("envs", help="list the envs uvkernel made in its per-user cache, and project envs seen")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p = sub.add_parser("gc", help="remove cache envs whose folder is gone (or, with --older-than, unused ones)")
    p.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    p.add_argument("--older-than", default=None, metavar="DAYS", help="also remove envs not started for DAYS days")
    p.add_argument("--json", action="store_true", help="print what was (or would be) removed as JSON")
    p = sub.add_parser("trust", help="let kernel starts build and install a project (with require_trust = true), "
                                     "as its dependency files are now")
    p.add_argument("dir", nargs="?", default=None, metavar="DIR", help=PROJECT_HELP)
    p.add_argument("--project", default=None, metavar="DIR", help="the same as DIR")
    p.add_argument("--revoke", action="store_true", help="take the trust back")
    p.add_argument("--kernel", default=None, metavar="NAME", help=KERNEL_HELP)
    return parser


def _settings_for(kernel: str | None, host_python: str | None, **overrides: Any):
    # settings without traitlets; the kernel spec (jupyter_client) only when one is named
    from .launch import SETTINGS_VAR
    from .settings import from_config, validate_config

    config: dict[str, Any] = {}
    env: dict[str, str] = {}
    path = ""
    if kernel:
        from . import kernelspec  # jupyter_client's kernel-spec machinery: only for a named spec

        config, env, path = kernelspec.load_config(kernel)
        validate_config(config, spec=path)  # a wrong value is reported with the file it is in
    elif os.environ.get(SETTINGS_VAR):
        # run inside a uvkernel kernel (`!uvkernel add X`) or `uvkernel run`: the settings that started it
        config = _context_settings(os.environ[SETTINGS_VAR])
    if host_python:
        overrides["host_python"] = os.path.abspath(os.path.expanduser(host_python))
    source = f"the kernel spec {path}" if path else f"the kernel spec {kernel}"
    return from_config(config, source=source, **overrides), {**os.environ, **{str(k): str(v) for k, v in env.items()}}


def cmd_install(args: argparse.Namespace) -> int:
    import json  # this command's own imports: see the note at the top

    from . import kernelspec

    user, prefix = _prefix(args)
    config: dict[str, Any] = {}
    for item in args.set:
        key, _, raw = item.partition("=")
        try:
            config[key] = json.loads(raw)
        except ValueError:
            config[key] = raw
    folder = kernelspec.install(name=args.name, display_name=args.display_name, host_python=args.host_python,
                                env=dict(args.env), config=config, user=user, prefix=prefix)
    print(f"Installed kernel spec {args.name} in {folder}")
    return 0


def cmd_uninstall(args: argparse.Namespace) -> int:
    from . import kernelspec  # this command's own import: see the note at the top

    user, prefix = _prefix(args)
    if args.stale:
        if args.name:
            raise SpecError("KERNEL_NOT_FOUND", name=args.name, where=" (give a name or --stale, not both)")
        removed = kernelspec.remove_stale(user=bool(args.user) and user, prefix=prefix)
        if not removed:
            raise SpecError("NO_STALE_SPECS")
        for spec in removed:
            print(f"Removed kernel spec {spec['name']} from {spec['resource_dir']} ({spec['stale']})")
        return 0
    if not args.name:
        raise SpecError("KERNEL_NOT_FOUND", name="(none given)", where="")
    explicit = args.user or args.sys_prefix or args.prefix
    folder = kernelspec.uninstall(args.name, user=bool(explicit) and user, prefix=prefix)
    print(f"Removed kernel spec {args.name} from {folder}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    import json  # this command's own imports: see the note at the top

    from . import kernelspec

    specs = kernelspec.find_specs()
    if args.json:
        print(json.dumps({"kernelspecs": specs}, indent=1))
        return 0
    if not specs:
        print(notice("NO_SPECS_INSTALLED"))
        return 0
    width = max(len(s["name"]) for s in specs)
    for s in specs:
        mark = f"  STALE: {s['stale']}" if s["stale"] else ""
        print(f"{s['name']:<{width}}  {s['resource_dir']}  host: {s['host_python']}{mark}")
    if any(s["stale"] for s in specs):
        print(notice("STALE_SPECS_LISTED"))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    overrides = {"require_cuda": "true"} if args.require_cuda else {}
    overrides.update(_group_overrides(args))
    import asyncio  # this command's own imports: see the note at the top
    import json

    from . import cache_envs, pipeline
    # imported by the one command that uses it, so every other command starts without it
    from .kernel_extension import render_text

    liveness = cache_envs.Liveness()
    try:
        settings, environ = _settings_for(args.kernel, args.host_python, **overrides)
        _recover_edits(settings, os.path.abspath(args.dir))
        prepared = asyncio.run(pipeline.prepare(settings, cwd=os.path.abspath(args.dir), environ=environ,
                                                recheck=args.recheck, log=_stderr_log(args.json),
                                                liveness=liveness))
        report = prepared.report()
        code = 0
    except UvkernelError as exc:
        report = _failure_report(exc)
        code = 1
    except Exception as exc:  # the last line of defence: a coded report, the traceback in a log file
        report = _failure_report(unexpected(exc, f"checked {os.path.abspath(args.dir)}", args))
        code = 1
    finally:
        liveness.clear()
    # every distribution's file list is read after the work, so it never delays the first progress line
    warning = distribution.foreign_warning(deep=True)
    if warning:
        print(warning, file=sys.stderr)
    if args.json:
        print(json.dumps(report, indent=1, default=str))
    else:
        print(render_text(report, color=use_color(sys.stdout)))
    return code


def use_color(stream) -> bool:
    """Colour only on a terminal, never with NO_COLOR set (no-color.org) or TERM=dumb."""
    return stream.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def _failure_report(exc: UvkernelError) -> dict[str, Any]:
    from . import pipeline  # the report's shape: see the note at the top

    report = getattr(exc, "report", None)
    if report is not None:
        return report
    return pipeline.report_dict(error=exc, result=getattr(exc, "result", None))


def _stderr_log(quiet: bool):
    """The preparation's lines on stderr (none with ``quiet``), as a progress reporter the stages take as ``log``."""
    from .progress import LINE, Reporter  # standard library only: check's first progress line stays early

    def show(step) -> None:
        if step.kind == LINE and not quiet:
            print(f"uvkernel: {step.text}", file=sys.stderr)
    return Reporter(show)


PORTS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")


def connection_file_problem(path: str) -> str:
    """What makes ``path`` unusable as a kernel's connection file ('' when it is usable or does not exist yet:
    ipykernel then writes a new one).  Checked before anything starts: ipykernel and zmq would answer a bad
    one with their own tracebacks, and the fallback kernel needs the same file."""
    import json  # this command's own imports: see the note at the top

    from .files import read_input

    if not os.path.lexists(path):
        return ""
    try:
        data = json.loads(read_input(Path(path), 1 << 20))
    except UvkernelError as exc:
        return exc.summary
    except OSError as exc:
        return f"it cannot be read ({exc.strerror or exc})"
    except ValueError:
        return "it is not JSON"
    if not isinstance(data, dict):
        return "it is not a JSON object"
    for name in PORTS:
        port = data.get(name, 0)
        if type(port) is not int or not 0 <= port <= 65535:
            return f"{name} is {port!r}, not a port number"
    if data.get("transport", "tcp") not in ("tcp", "ipc"):
        return f"transport is {data.get('transport')!r}, not tcp or ipc"
    for name in ("ip", "key", "signature_scheme"):
        if name in data and not isinstance(data[name], str):
            return f"{name} is {data[name]!r}, not a string"
    ip = data.get("ip", "127.0.0.1")
    if data.get("transport", "tcp") == "tcp" and ip not in ("localhost", "*"):
        import ipaddress

        try:
            ipaddress.ip_address(ip)
        except ValueError:
            return f"ip is {ip!r}, not an IP address"
    if not str(data.get("signature_scheme", "hmac-sha256")).startswith("hmac-"):
        return f"signature_scheme is {data.get('signature_scheme')!r}, not hmac-<hash>"
    return ""


def cmd_kernel(args: argparse.Namespace) -> int:
    """Prepare, then become the env's ipykernel (exec), so signals reach it directly."""
    import asyncio  # this command's own imports: see the note at the top

    from . import cache_envs, pipeline
    from .launch import KERNEL_VAR
    problem = connection_file_problem(args.connection_file)
    if problem:
        raise SpecError("CONNECTION_FILE_INVALID", path=args.connection_file, problem=problem)
    try:
        try:
            settings, environ = _settings_for(args.kernel, None)
            # this process becomes the kernel (exec keeps its pid and start time): uvkernel gc sees it running
            prepared = asyncio.run(pipeline.prepare(settings, cwd=os.getcwd(), environ=environ,
                                                    log=_stderr_log(False),
                                                    liveness=cache_envs.Liveness(phase="running")))
        except UvkernelError:
            raise
        except Exception as exc:  # the last line of defence: the fallback kernel shows it
            raise unexpected(exc, "prepared the kernel's environment", args) from None
    except UvkernelError as exc:
        print(str(exc), file=sys.stderr)
        # imported by the one command that uses it, so every other command starts without it
        from . import fallback_kernel

        cmd, env, _path = fallback_kernel.prepare(exc, args.connection_file, dict(os.environ))
        os.execve(cmd[0], cmd, env)
    cmd = prepared.command(args.connection_file)
    os.execve(cmd[0], cmd, prepared.environment_for(environ, context={KERNEL_VAR: args.kernel}))
    return 0  # not reached


def cmd_unshadow(args: argparse.Namespace) -> int:
    import asyncio  # this command's own imports: see the note at the top

    # imported by the one command that uses it, so every other command starts without it
    from . import unshadow

    settings, environ = _settings_for(args.kernel, args.host_python)
    return asyncio.run(unshadow.main(settings, os.path.abspath(args.dir), environ, dry_run=args.dry_run))


# --- from a terminal: sync, run, add, remove (logic in terminal.py and project_edit.py) ----------------------

HOST_HELP = "the interpreter that holds torch/CUDA (default: the kernel spec's, else the rule in the README)"
KERNEL_HELP = ("use this kernel spec's settings (default: the kernel this runs in, from $UVKERNEL_KERNEL, "
               "else the defaults)")
PROJECT_HELP = "the project's folder, or any folder in it (default: the current folder)"


def _terminal_parsers(sub: Any) -> None:
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--project", default=None, metavar="DIR", help=PROJECT_HELP)
        p.add_argument("--kernel", default=None, metavar="NAME", help=KERNEL_HELP)
        p.add_argument("--host-python", default=None, metavar="PATH", help=HOST_HELP)

    p = sub.add_parser("sync", help="prepare the env as a kernel start would (use instead of uv sync)")
    common(p)
    _group_flags(p)
    p = sub.add_parser("run", help="prepare the env, then run a command in it (use instead of uv run)")
    common(p)
    _group_flags(p)
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ARGS",
                   help="the command and its arguments, e.g. -- python train.py")
    for verb, what, text in (("add", "PKG", "record packages with uv and install them, keeping the host's "
                                            "(use instead of uv add)"),
                             ("remove", "PKG", "remove packages from pyproject.toml and uv.lock with uv "
                                               "(use instead of uv remove)")):
        p = sub.add_parser(verb, help=text)
        p.add_argument("packages", nargs="+", metavar=what, help="package names or requirements, e.g. pandas "
                                                                  "or 'numpy>=2'")
        where = p.add_mutually_exclusive_group()
        where.add_argument("--group", default=None, metavar="GROUP", help="in this dependency group")
        where.add_argument("--dev", action="store_true", help="in the dev dependency group")
        where.add_argument("--optional", default=None, metavar="EXTRA", help="in this optional extra")
        common(p)


def _group_flags(p: argparse.ArgumentParser) -> None:
    """The dependency-group flags of `uv sync`, for the commands that prepare an env."""
    p.add_argument("--group", dest="groups", action="append", default=[], metavar="GROUP",
                   help="also install this dependency group (repeatable; the setting dependency_groups)")
    p.add_argument("--no-group", dest="no_groups", action="append", default=[], metavar="GROUP",
                   help="leave this dependency group out, as uv sync --no-group does (repeatable)")
    p.add_argument("--no-default-groups", action="store_true",
                   help="leave out the groups uv installs by default, as uv sync --no-default-groups does")


def _group_overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if getattr(args, "groups", None):
        out["dependency_groups"] = list(args.groups)
    if getattr(args, "no_groups", None):
        out["no_groups"] = list(args.no_groups)
    if getattr(args, "no_default_groups", False):
        out["no_default_groups"] = True
    return out


def _context_settings(raw: str) -> dict[str, Any]:
    import json  # only a uvkernel kernel's own context has settings to read

    from .launch import SETTINGS_VAR

    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        print("uvkernel: " + notice("SETTINGS_VAR_NOT_OBJECT", var=SETTINGS_VAR), file=sys.stderr)
        return {}
    return data


def _kernel_name(args: argparse.Namespace) -> str | None:
    from .launch import KERNEL_VAR, SETTINGS_VAR  # the names of the kernel's context variables

    if args.kernel or os.environ.get(SETTINGS_VAR):
        return args.kernel
    return os.environ.get(KERNEL_VAR) or None


def cmd_sync(args: argparse.Namespace) -> int:
    # imported by the one command that uses it, so every other command starts without it
    from . import terminal

    folder = terminal.project_folder(args.project, "sync")
    settings, environ = _settings_for(_kernel_name(args), args.host_python, **_group_overrides(args))
    progress = terminal.Progress()
    try:
        _recover_edits(settings, folder)
        prepared = terminal.prepare(settings, folder, environ, progress)
    except UvkernelError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(terminal.summary(prepared, progress.elapsed))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    # imported by the one command that uses it, so every other command starts without it
    from . import terminal

    argv = terminal.strip_separator(args.cmd)
    folder = terminal.project_folder(args.project, "run")
    settings, environ = _settings_for(_kernel_name(args), args.host_python, **_group_overrides(args))
    try:
        _recover_edits(settings, folder)
        prepared = terminal.prepare(settings, folder, environ, terminal.Progress())
    except UvkernelError as exc:
        print(str(exc), file=sys.stderr)  # the text a kernel start shows; the command is not run
        return 1
    terminal.exec_command(prepared, argv)
    return 0  # not reached


def _recover_edits(settings: Any, folder: str) -> None:
    """An earlier ``uvkernel add``/``remove`` of this project that was killed half-way is rolled back first."""
    from . import project_edit

    def tell(text: str) -> None:
        print("uvkernel: " + text, file=sys.stderr, flush=True)

    for text in project_edit.recover_for_folder(settings, folder, log=tell):
        tell(text)


def cmd_change(args: argparse.Namespace) -> int:
    # imported by the one command that uses it, so every other command starts without it
    from . import project_edit, terminal

    folder = terminal.project_folder(args.project, args.command)
    settings, environ = _settings_for(_kernel_name(args), args.host_python)
    change = project_edit.Change(args.command, list(args.packages), group=args.group, dev=args.dev,
                                 optional=args.optional)
    progress = terminal.Progress()
    progress.line(f"uvkernel {args.command} {' '.join(args.packages)} in {folder}")
    # SIGTERM (a closed terminal's session, `kill`, a job scheduler) would end the process where it stands, with
    # uv's half of the change in pyproject.toml and uv.lock: it takes Ctrl-C's way, which puts them back
    signal.signal(signal.SIGTERM, lambda _sig, _frame: os.kill(os.getpid(), signal.SIGINT))
    try:
        outcome = terminal.run_blocking(
            lambda: project_edit.apply(change, settings, folder, environ, progress.log), progress, folder)
    except UvkernelError as exc:
        print(str(exc), file=sys.stderr)
        left = getattr(exc, "left", [])
        for text in left:  # files the user changed while the command ran: left as they are now
            print("uvkernel: " + text, file=sys.stderr)
        if not left and not getattr(exc, "recorded", False):
            print("uvkernel: " + (notice("EDIT_FILES_RESTORED") if getattr(exc, "restored", False)
                                  else notice("EDIT_NOTHING_RECORDED")), file=sys.stderr)
        return 1
    print(project_edit.summary(change, outcome, progress.elapsed))
    return 0


# --- the per-user cache's envs ---
def _cache_root() -> "Any":
    from . import pipeline  # the cache folder's rule: see the note at the top

    settings, _environ = _settings_for(None, None)
    return pipeline.cache_root(settings)


def cmd_envs(args: argparse.Namespace) -> int:
    import json  # this command's own imports: see the note at the top

    from . import cache_envs

    root = _cache_root()
    envs, others = cache_envs.list_envs(root)
    projects = cache_envs.list_projects(root)
    if args.json:
        print(json.dumps({"cache": str(root / "envs"), "envs": [e.to_json() for e in envs], "projects": projects,
                          "not_uvkernels": others}, indent=1))
        return 0
    print(f"Envs uvkernel made in {root / 'envs'} ({len(envs)}):")
    for e in envs:
        state = {"exists": "", "gone": "  FOLDER GONE", "unreachable": "  folder unreachable",
                 "unknown": "  folder not recorded"}[e.folder_state]
        busy = f"  in use (pid {', '.join(map(str, e.running))})" if e.running else (
            "  being prepared" if e.preparing else "")
        print(f"  {e.folder or '?'}{state}{busy}\n    env {e.path}  {cache_envs.human_size(e.own_bytes)}"
              f"  last start {cache_envs.iso_time(e.last_start) or '?'}")
    if not envs:
        print("  (none)")
    if projects:
        print("Project envs seen (the projects' own; uvkernel gc never removes them):")
        for p in projects:
            print(f"  {p['project']}\n    env {p['env']}{'' if p['exists'] else '  (gone)'}  last start "
                  f"{p.get('last_start_iso') or '?'}")
    for other in others:
        print(f"Not made by uvkernel, left alone: {other}")
    if any(e.folder_state == "gone" for e in envs):
        print(notice("GONE_FOLDERS_LISTED"))
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    import json  # this command's own imports: see the note at the top

    from . import cache_envs

    older = cache_envs.parse_days(args.older_than) if args.older_than is not None else None
    root = _cache_root()
    decisions, others = cache_envs.collect(root, older_than=older, dry_run=args.dry_run)
    if args.json:
        print(json.dumps({"cache": str(root / "envs"), "dry_run": args.dry_run, "older_than_days": older,
                          "decisions": [d.to_json() for d in decisions], "not_uvkernels": others}, indent=1))
        return 0
    for d in decisions:
        size = f" ({cache_envs.human_size(d.env.own_bytes)})" if d.action != "kept" else ""
        print(f"{d.action}: {d.env.path}{size}\n  serves {d.env.folder or '?'}: {d.reason}")
    for other in others:
        print(f"left alone (not made by uvkernel): {other}")
    verb = "would free" if args.dry_run else "freed"
    action = "would remove" if args.dry_run else "removed"
    count = sum(1 for d in decisions if d.action == action)
    print(f"{count} env(s) {action}; {verb} {cache_envs.human_size(cache_envs.total(decisions, action))}")
    return 0


def cmd_trust(args: argparse.Namespace) -> int:
    import asyncio  # this command's own imports: see the note at the top

    from . import pipeline, terminal, trust

    settings, environ = _settings_for(_kernel_name(args), None)
    given = args.project or args.dir
    if args.revoke and not os.path.isdir(os.path.abspath(os.path.expanduser(given or "."))):
        # a project folder deleted since: its trust can still be taken back by its path
        print("uvkernel: " + trust.revoke(Path(os.path.abspath(os.path.expanduser(given or "."))),
                                          pipeline.cache_root(settings)))
        return 0
    folder = terminal.project_folder(given, "trust")
    _host, project, root = asyncio.run(pipeline.locate(settings, folder, environ))
    if project.root is None:
        raise ProjectError("NOT_A_PROJECT", path=folder, command="trust")
    print("uvkernel: " + (trust.revoke(project.root, root) if args.revoke else trust.grant(project, root)))
    return 0


COMMANDS = {"install": cmd_install, "uninstall": cmd_uninstall, "list": cmd_list, "check": cmd_check,
            "kernel": cmd_kernel, "unshadow": cmd_unshadow,
            "sync": cmd_sync, "run": cmd_run, "add": cmd_change, "remove": cmd_change,
            "envs": cmd_envs, "gc": cmd_gc, "trust": cmd_trust}


def _traceback_log(text: str) -> str:
    """Write a traceback to a file in the per-user cache; returns where it went ('' when nothing could be written)."""
    try:
        # only this command needs the cache folder's default: the others start without importing it
        import time

        import platformdirs

        folder = os.path.join(platformdirs.user_cache_dir("uvkernel", appauthor=False), "logs")
        from pathlib import Path

        from .files import private_dir

        private_dir(Path(folder))  # a log folder others could enter or swap for a link is not written into
        path = os.path.join(folder, time.strftime("error-%Y%m%d-%H%M%S") + f"-{os.getpid()}.log")
        with open(path, "w") as fh:
            fh.write(f"uvkernel {distribution.version()}, argv {sys.argv!r}\n{text}")
        return path
    except Exception:  # noqa: BLE001 - a log file that cannot be written must not hide the error itself
        return ""


def unexpected(exc: Exception, doing: str, args: argparse.Namespace | None = None) -> UvkernelError:
    """An exception uvkernel did not expect, as an INTERNAL_ERROR; the traceback goes to a log file (or, with
    --debug / UVKERNEL_DEBUG=1 or when no file can be written, to stderr and into the message)."""
    import traceback  # only an unexpected error formats one

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    debug = bool(getattr(args, "debug", False)) or debug_enabled()
    where = "" if debug else _traceback_log(text)
    if not where:
        debug = True
        where = "the traceback printed above"
        print(text, file=sys.stderr)
    return internal_error(exc, doing=doing, log=where)  # not the traceback again: stderr has it


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command not in ("kernel", "check"):  # check reads every file list after its work
        warning = distribution.foreign_warning()
        if warning:
            print(warning, file=sys.stderr)
    try:
        return COMMANDS[args.command](args)
    except UvkernelError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except Exception as exc:  # the last line of defence: never a bare traceback
        print(str(unexpected(exc, f"ran `uvkernel {args.command}`", args)), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
