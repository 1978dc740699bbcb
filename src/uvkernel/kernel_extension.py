"""The preflight report as text and HTML, and the ``%uvkernel`` magic.

The kernel loads this file at start (``runpy.run_path`` from ``--IPKernelApp.exec_lines``) in the env's
python, where uvkernel is not installed: so it is standard library + IPython only, and it runs in a private
namespace so nothing but the magic appears in the user's.  The CLI imports the same renderers for ``uvkernel check``.
"""

import html
import json
import os

_GOOD, _BAD, _NOTE = "ok", "FAIL", "note"


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
        for layer in env.get("host_layer") or []:
            rows.append(("env", "host layer", layer, ""))
        for item in env.get("shadowing") or []:
            # an env copy that hides the host's: wanted (allow_shadowing) or to be removed (uvkernel unshadow)
            rows.append(("env", "hides host", "%s %s in the env hides the host's %s%s" % (
                item.get("name"), item.get("env_version"), item.get("host_version"),
                " (on purpose)" if item.get("on_purpose") else "; remove with: uvkernel unshadow"),
                _NOTE if item.get("on_purpose") else _BAD))
    for name, info in sorted((facts.get("packages") or {}).items()):
        status = _GOOD if info.get("origin") == "host" else (_BAD if info.get("origin") in ("missing", "env", "user") else _NOTE)
        value = "%s  [%s]" % (info.get("location") or "not found", info.get("origin"))
        if info.get("version"):
            value = "%s %s" % (info.get("version"), value)
        rows.append(("packages", name, value, status))
    torch = facts.get("torch") or {}
    if torch.get("build"):
        rows.append(("torch", "build", torch.get("build"), ""))
    cuda = facts.get("cuda") or {}
    for key in ("driver_version", "driver_cuda", "visible_devices", "available"):
        if key in cuda:
            rows.append(("cuda", key.replace("_", " "), str(cuda[key]), ""))
    for device in cuda.get("devices") or []:
        rows.append(("cuda", "device %s" % device.get("index"), "%s (capability %s)" % (device.get("name"), device.get("capability")), ""))
    for notice in pre.get("notices") or []:
        rows.append(("preflight", "notice", notice, _NOTE))
    for failure in pre.get("failures") or []:
        rows.append(("preflight", failure.get("code"), failure.get("summary"), _BAD))
    if pre:
        rows.append(("preflight", "result", "passed" if pre.get("ok") else "failed"
                     + (" (deep checks from cache)" if pre.get("cached") else ""), _GOOD if pre.get("ok") else _BAD))
    if report.get("error"):
        rows.append(("error", report["error"].get("code"), report["error"].get("summary"), _BAD))
    return rows


def render_text(report, color=False):
    colors = {_GOOD: "\033[32m", _BAD: "\033[31m", _NOTE: "\033[33m"}
    lines = ["uvkernel %s report" % report.get("uvkernel", "")]
    section = None
    for sec, name, value, status in _rows(report):
        if sec != section:
            lines.append("")
            lines.append(sec)
            section = sec
        mark = ("[%s] " % status) if status else ""
        if color and status:
            mark = colors[status] + mark + "\033[0m"
        lines.append("  %-18s %s%s" % (name, mark, value))
    if report.get("message"):
        lines.append("")
        lines.append(report["message"])
    return "\n".join(lines)


def render_html(report):
    colors = {_GOOD: "#1a7f37", _BAD: "#cf222e", _NOTE: "#9a6700"}
    out = ["<table class='uvkernel-report'><caption>uvkernel %s report</caption>" % html.escape(str(report.get("uvkernel", "")))]
    for sec, name, value, status in _rows(report):
        style = " style='color:%s'" % colors[status] if status else ""
        out.append("<tr><th>%s</th><td>%s</td><td%s>%s</td></tr>" % (
            html.escape(sec), html.escape(str(name)), style, html.escape(str(value))))
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


def _register(ip):
    def uvkernel(line=""):
        """Show how this kernel was prepared: host, env, where torch comes from, CUDA."""
        report = load_report()
        if "--json" in line.split():
            print(json.dumps(report, indent=1))
            return None
        return _Report(report)

    ip.register_magic_function(uvkernel, magic_kind="line", magic_name="uvkernel")

