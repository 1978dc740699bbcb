"""The preflight report as text and HTML, and the ``%uvkernel`` magic.

The kernel registers ``%uvkernel`` at start (kernel_magic_stub.py) and loads this file with
``runpy.run_path`` at the magic's first use, in the env's python, where uvkernel is not installed: so it is
standard library + IPython only, and it runs in a private namespace so nothing but the magic appears in the
user's.  The CLI imports the same renderers for ``uvkernel check``.
"""

import html
import json
import os

_GOOD, _BAD, _NOTE = "ok", "FAIL", "note"


def _gib(value):
    try:
        return "%.1f GiB" % (float(value) / 2 ** 30)
    except (TypeError, ValueError):
        return "?"


def _package_rows(facts):
    rows = []
    for name, info in sorted((facts.get("packages") or {}).items()):
        info = info or {}
        origin = info.get("origin")
        status = _GOOD if origin == "host" else (_BAD if origin in ("missing", "error") else _NOTE)
        if name == "ipykernel" and origin == "env":
            status = _GOOD  # installed into the env on purpose when the host lacks it
        value = "%s  [%s]" % (info.get("location") or "not found", origin)
        if info.get("version"):
            value = "%s  %s" % (info.get("version"), value)
        rows.append(("packages", name, value, status))
        for copy in info.get("copies") or []:
            if copy.get("location") != info.get("location"):
                rows.append(("packages", "  other copy", "%s  %s  [%s, hidden]" % (
                    copy.get("version") or "", copy.get("location"), copy.get("origin")), _NOTE))
    for shadow in facts.get("local_shadows") or []:
        rows.append(("packages", shadow.get("package"), "%s would be imported first (notebook folder)"
                     % shadow.get("path"), _BAD))
    return rows


def _torch_rows(facts):
    rows = []
    build = facts.get("torch") or {}
    deep = (facts.get("deep") or {})
    dtorch = deep.get("torch") or {}
    if build:
        kind = build.get("build")
        label = {"cuda": "CUDA %s build" % build.get("cuda"), "cpu": "CPU-only build",
                 "rocm": "ROCm %s build" % build.get("hip")}.get(str(kind), "%s build" % kind)
        rows.append(("torch", "version", "%s (%s, read from version.py)" % (build.get("version"), label), ""))
    for name, info in sorted((deep.get("imports") or {}).items()):
        if info.get("ok"):
            rows.append(("torch", "import %s" % name, "imported in %s ms (version %s)" % (info.get("ms"), info.get("version") or "?"), _GOOD))
        else:
            rows.append(("torch", "import %s" % name, (info.get("error") or "failed").strip().splitlines()[-1], _BAD))
    if "cudnn" in dtorch or "cudnn_error" in dtorch:
        rows.append(("torch", "cuDNN", dtorch.get("cudnn_error") or str(dtorch.get("cudnn")), ""))
    if dtorch.get("arch_list") is not None:
        rows.append(("torch", "built for", " ".join(dtorch.get("arch_list") or []) or "(empty)", ""))
    if dtorch.get("cuda_init"):
        rows.append(("torch", "torch.cuda.init()", dtorch.get("cuda_init_error") or "ok",
                     _GOOD if dtorch.get("cuda_init") == "ok" else _BAD))
    if "device_count" in dtorch:
        rows.append(("torch", "device count", str(dtorch.get("device_count")), ""))
    for device in dtorch.get("devices") or []:
        value = "%s (capability %s, %s)" % (device.get("name"), device.get("capability"),
                                            _gib(device.get("total_memory")))
        smoke = device.get("smoke")
        if smoke:
            value += ", first operation: %s" % str(smoke).strip().splitlines()[-1]
        rows.append(("torch", "cuda:%s" % device.get("index"), value,
                     _GOOD if smoke in (None, "ok") else _BAD))
    return rows


def _companion_rows(facts):
    """Env packages built against torch (torchvision & co.): version, build, requirement on torch, loaded?"""
    rows = []
    loaded = (facts.get("deep") or {}).get("companions") or {}
    for c in facts.get("companions") or []:
        name = c.get("name")
        value = "%s, wheel %s, requires %s%s" % (
            c.get("version"), ", ".join(c.get("wheel_tags") or []) or "?", c.get("requires_torch") or "no torch",
            ", links libtorch" if c.get("links_torch") else "")
        result = loaded.get(name)
        if result is None:
            value += "; loaded: not checked"
            status = _NOTE
        elif result.get("ok"):
            value += "; loaded: yes"
            status = _GOOD
        else:
            value += "; loaded: NO (%s)" % str(result.get("error") or "?").strip().splitlines()[-1]
            status = _BAD
        rows.append(("companions", name, value, status))
    return rows


def _gpu_rows(facts):
    rows = []
    nvml = facts.get("nvml") or {}
    if nvml:
        if not nvml.get("loaded"):
            rows.append(("driver", "NVML", "not found (%s)" % nvml.get("error"), _NOTE))
        elif nvml.get("init_error"):
            rows.append(("driver", "NVML", "%s failed to start: %s" % (nvml.get("library"), nvml.get("init_error_text")),
                         _BAD))
        else:
            rows.append(("driver", "version", "%s (supports CUDA %s)" % (nvml.get("driver_version"),
                                                                       nvml.get("cuda_driver_version")), ""))
            rows.append(("driver", "library", nvml.get("library") or "?", ""))
            for d in nvml.get("devices") or []:
                value = "%s, capability %s, %s, %s" % (d.get("name"), d.get("capability"), _gib(d.get("memory_total")),
                                                       d.get("uuid"))
                if d.get("mig"):
                    value += ", MIG on (%s)" % ", ".join(m.get("uuid") or "?" for m in d.get("mig_devices") or [])
                rows.append(("driver", "GPU %s" % d.get("index"), value, ""))
    visible = facts.get("visible") or {}
    if visible:
        raw = visible.get("CUDA_VISIBLE_DEVICES")
        rows.append(("driver", "CUDA_VISIBLE_DEVICES", "(unset)" if raw is None else repr(raw), ""))
        if nvml.get("devices"):
            rows.append(("driver", "visible to CUDA", "%s: %s" % (visible.get("count"), visible.get("devices")),
                         _GOOD if visible.get("count") else _BAD))
    files = facts.get("device_files") or {}
    if files:
        present = files.get("present") or []
        value = ", ".join(present) if present else "none in %s" % files.get("dir")
        if files.get("inaccessible"):
            value += "; not accessible: %s" % ", ".join(files["inaccessible"])
        rows.append(("driver", "device files", value, _BAD if files.get("inaccessible") else ""))
    env_libs = [d for d in facts.get("nvidia_distributions") or [] if d.get("origin") != "host"]
    host_libs = [d for d in facts.get("nvidia_distributions") or [] if d.get("origin") == "host"]
    if env_libs or host_libs:
        rows.append(("driver", "nvidia-* wheels", "%d from the host, %d elsewhere%s" % (
            len(host_libs), len(env_libs),
            (": " + ", ".join("%s %s [%s]" % (d.get("name"), d.get("version"), d.get("origin")) for d in env_libs))
            if env_libs else ""), _NOTE if env_libs else ""))
    return rows


def _rows(report):
    """(section, name, value, status) rows shared by the text and HTML renderers."""
    rows = []
    host = report.get("host") or {}
    project = report.get("project") or {}
    env = report.get("env") or {}
    pre = report.get("preflight") or {}
    facts = pre.get("facts") or {}
    if host:
        rows.append(("host", "interpreter", "%s (Python %s)" % (host.get("executable"), host.get("version")), ""))
        rows.append(("host", "chosen because", host.get("reason", ""), ""))
        if host.get("is_venv"):
            rows.append(("host", "kind", "venv host, layered below the env", _NOTE))
    if project:
        rows.append(("project", "folder", project.get("root") or "(none: notebook outside a project)", ""))
        rows.append(("project", "env", "%s (%s)" % (project.get("env"), project.get("env_reason")), ""))
        if project.get("workspace_root") and project.get("workspace_root") != project.get("root"):
            rows.append(("project", "workspace", project["workspace_root"], ""))
        for note in project.get("notices") or []:
            rows.append(("project", "note", note, _NOTE))
    if env:
        rows.append(("env", "ipykernel from", env.get("ipykernel_from") or "?", ""))
        if env.get("actions"):
            rows.append(("env", "this start", "; ".join(env["actions"]), _NOTE))
        deps = env.get("dependencies") or {}
        if deps.get("from_host"):
            rows.append(("env", "left to the host", ", ".join("%s %s" % kv for kv in sorted(deps["from_host"].items())), ""))
        if deps.get("shadowed_on_purpose"):
            rows.append(("env", "shadowed on purpose", ", ".join(sorted(deps["shadowed_on_purpose"])), _NOTE))
        if deps.get("installed"):
            rows.append(("env", "installed", ", ".join(deps["installed"]), ""))
        if deps.get("how"):
            rows.append(("env", "dependencies from", deps["how"], ""))
        if deps.get("skipped_for_host"):
            rows.append(("env", "not installed (host's closure)", ", ".join(deps["skipped_for_host"]), ""))
        for name, version in sorted((deps.get("own_code_shadows_host") or {}).items()):
            rows.append(("env", "project's own code", "%s (a path/git/url source) hides the host's %s %s" % (
                name, name, version), _NOTE))
        for item in deps.get("lock_deviations") or []:
            rows.append(("env", "differs from uv.lock", "%s %s instead of %s (%s)" % (
                item.get("name"), item.get("installed"), item.get("locked"), item.get("why")), _NOTE))
        for item in deps.get("companion_builds") or []:
            rows.append(("env", "companion build", "%s %s replaced by %s from %s (the host torch's build)" % (
                item.get("name"), item.get("from"), item.get("to"), item.get("index")), _NOTE))
        # the env's own copies of host packages are listed once, as "own copy" rows below
        own_copies = set("%s %s in the env over the host's %s" % (
            item.get("name"), item.get("env_version"), item.get("host_version"))
            for item in env.get("shadowing") or [] if item.get("protected") is False)
        for note in deps.get("notes") or []:
            if note not in own_copies:
                rows.append(("env", "note", note, _NOTE))
        for pin in deps.get("unmet_pins") or []:
            rows.append(("env", "unmet pin", "%s: the host's %s %s is used (host_version_conflicts = warn)" % (
                pin.get("requirement"), pin.get("name"), pin.get("host_version")), _NOTE))
        for layer in env.get("host_layer") or []:
            rows.append(("env", "host layer", layer, ""))
        for item in env.get("shadowing") or []:
            if item.get("protected") is False:
                # a host package outside the stack at a version the project does not accept: the env's own copy
                rows.append(("env", "own copy", "%s %s in the env over the host's %s" % (
                    item.get("name"), item.get("env_version"), item.get("host_version")), _NOTE))
                continue
            # an env copy that hides the host's: wanted (allow_shadowing) or to be removed (uvkernel unshadow)
            rows.append(("env", "hides host", "%s %s in the env hides the host's %s%s" % (
                item.get("name"), item.get("env_version"), item.get("host_version"),
                " (on purpose)" if item.get("on_purpose") else "; remove with: uvkernel unshadow"),
                _NOTE if item.get("on_purpose") else _BAD))
    cfg = facts.get("pyvenv_cfg") or {}
    if cfg:
        rows.append(("env", "pyvenv.cfg", "home = %s, include-system-site-packages = %s" % (
            cfg.get("home"), cfg.get("include-system-site-packages")), ""))
    for name, item in sorted((report.get("settings") or {}).items()):
        rows.append(("settings", name, "%s  (from %s)" % (json.dumps(item.get("value")), item.get("from")), ""))
    rows += _package_rows(facts)
    rows += _torch_rows(facts)
    rows += _companion_rows(facts)
    rows += _gpu_rows(facts)
    if pre:
        if pre.get("skipped"):
            rows.append(("preflight", "checks", "skipped", _NOTE))
        else:
            rows.append(("preflight", "GPU expected", "%s (%s)" % ("yes" if pre.get("gpu_expected") else "no",
                                                                   pre.get("gpu_reason") or "-"), ""))
            deep = pre.get("deep") or ""
            cache = pre.get("cache") or {}
            if deep == "cached":
                deep = "from the cache (%s s old; torch not imported this start; --recheck runs them again)" % cache.get("age_s")
            rows.append(("preflight", "deep checks", deep, ""))
        timings = pre.get("timings") or {}
        cheap_ms = (facts.get("timings") or {}).get("cheap_ms")
        if timings:
            rows.append(("preflight", "time", ", ".join("%s %s s" % (k[:-2], v) for k, v in sorted(timings.items()))
                         + ("; cheap layer inside the probe %s ms" % cheap_ms if cheap_ms is not None else ""), ""))
    for notice in pre.get("notices") or []:
        rows.append(("preflight", "notice", notice, _NOTE))
    for failure in pre.get("failures") or []:
        rows.append(("preflight", failure.get("code"), failure.get("summary"), _BAD))
    if pre:
        rows.append(("preflight", "result", "passed" if pre.get("ok") else "failed", _GOOD if pre.get("ok") else _BAD))
    if report.get("error") and not pre.get("failures"):
        rows.append(("error", report["error"].get("code"), report["error"].get("summary"), _BAD))
    return rows


def render_text(report, color=False):
    colors = {_GOOD: "\033[32m", _BAD: "\033[31m", _NOTE: "\033[33m"}
    rows = _rows(report)
    width = min(max([len(str(r[1])) for r in rows] + [10]), 26)
    title = "uvkernel %s report" % report.get("uvkernel", "")
    lines = [("\033[1m%s\033[0m" % title) if color else title]
    section = None
    for sec, name, value, status in rows:
        if sec != section:
            lines.append("")
            lines.append(("\033[1m%s\033[0m" % sec) if color else sec)
            section = sec
        mark = ("[%s] " % status) if status else ""
        if color and status:
            mark = colors[status] + mark + "\033[0m"
        lines.append("  %-*s %s%s" % (width, name, mark, value))
    if report.get("message"):
        lines.append("")
        lines.append(report["message"])
    return "\n".join(lines)


def render_html(report):
    colors = {_GOOD: "#1a7f37", _BAD: "#cf222e", _NOTE: "#9a6700"}
    out = ["<table class='uvkernel-report' style='text-align:left'>",
           "<caption style='text-align:left;font-weight:bold'>uvkernel %s report</caption>"
           % html.escape(str(report.get("uvkernel", "")))]
    section = None
    for sec, name, value, status in _rows(report):
        if sec != section:
            out.append("<tr><th colspan='3' style='text-align:left;padding-top:0.5em'>%s</th></tr>" % html.escape(sec))
            section = sec
        badge = ("<span style='color:%s;font-weight:bold'>[%s]</span> " % (colors[status], status)) if status else ""
        out.append("<tr><td></td><td style='text-align:left'>%s</td><td style='text-align:left'>%s%s</td></tr>" % (
            html.escape(str(name)), badge, html.escape(str(value))))
    out.append("</table>")
    if report.get("message"):
        out.append("<pre>%s</pre>" % html.escape(report["message"]))
    return "\n".join(out)


def load_report(path=None):
    path = path or os.environ.get("UVKERNEL_REPORT", "")
    if not path:
        return {"message": "no uvkernel report: this kernel was not started by uvkernel"}
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError) as exc:
        return {"message": "cannot read the uvkernel report %s: %s" % (path, exc)}


class _Report(object):
    """Shows as an HTML table in a notebook and as text in a terminal."""

    def __init__(self, report):
        self.report = report

    def _repr_html_(self):
        return render_html(self.report)

    def __repr__(self):
        return render_text(self.report)


def uvkernel_magic(line=""):
    """%uvkernel [--json]: show how this kernel was prepared: host, env, where torch comes from, CUDA."""
    report = load_report()
    if "--json" in line.split():
        print(json.dumps(report, indent=1))
        return None
    return _Report(report)

