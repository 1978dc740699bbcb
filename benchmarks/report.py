"""results.json -> results.md (tables) and chart.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any

LABELS = {
    "baseline": "plain ipykernel (host), start",
    "baseline_restart": "plain ipykernel (host), restart",
    "baseline_env": "plain ipykernel (the project env's python)",
    "uvkernel_warm": "uvkernel warm",
    "baseline_env_large": "plain ipykernel (the ~100-distribution env's python)",
    "uvkernel_warm_large": "uvkernel warm, ~100-distribution env",
    "uvkernel_restart": "uvkernel restart",
    "uvkernel_cold": "uvkernel cold (no env yet)",
    "neighbour_warm": "pyproject-local-kernel warm",
    "neighbour_cold": "pyproject-local-kernel cold",
}


def _s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _ratio(entry: dict[str, Any]) -> str:
    if entry.get("ratio_median") is None:
        return "n/a"
    return f"{entry['ratio_median']:.2f}x ({entry['ratio_min']:.2f}x)"


def _targets_table(result: dict[str, Any]) -> list[str]:
    lines = ["| target | value | limit | met |", "|---|---|---|---|"]
    for name, t in result["targets"].items():
        value = "n/a" if t["value"] is None else f"{t['value']:.3f}"
        lines.append(f"| {name} | {value} | {t['target']} | {'yes' if t['met'] else 'NO'} |")
    return lines


def markdown(result: dict[str, Any]) -> str:
    k = result["kernels"]
    lines = [
        "# uvkernel benchmark",
        "",
        f"{result['date']}; {result['machine']['cpus']} CPUs; host `{result['host']}`; "
        f"{result['runs']} runs per variant (min / median seconds); the project depends on "
        f"{', '.join(result['project_dependencies'])}. Ratios: median / baseline median (min / baseline min); "
        "restarts are compared with the baseline's restart.",
        "",
        "Versions: " + ", ".join(f"{n} {v}" for n, v in result["versions"].items()) + ".",
        "",
        "| variant | first kernel_info (min / median) | ratio | torch-ready (min / median) | ratio | note |",
        "|---|---|---|---|---|---|",
    ]
    for key, label in LABELS.items():
        e = k[key]
        note = "; ".join(e["errors"])[:120].replace("|", "/")
        lines.append(f"| {label} | {_s(e['info']['min'])} / {_s(e['info']['median'])} | {_ratio(e['info'])} | "
                     f"{_s(e['torch']['min'])} / {_s(e['torch']['median'])} | {_ratio(e['torch'])} | {note} |")
    d = result["disk"]
    mb = 1024 * 1024
    lines += ["", "## Disk the env adds (bytes not hard-linked with uv's cache)", "",
              "| env | own MB | hard-linked MB | files |", "|---|---|---|---|"]
    names = {"uvkernel_host_ipykernel": "uvkernel, host provides ipykernel",
             "uvkernel_installs_ipykernel": "uvkernel, ipykernel installed into the env",
             "neighbour": "pyproject-local-kernel (.venv of uv run --with ipykernel)"}
    for key, label in names.items():
        e = d.get(key)
        if not e:
            continue
        if "error" in e:
            lines.append(f"| {label} | error | | |")
            continue
        lines.append(f"| {label} | {e['own_bytes'] / mb:.2f} | {e['hardlinked_bytes'] / mb:.2f} | {e['files']} |")
    s = result["status"]
    lines += ["", "## `GET /api/status` latency while a kernel starts through jupyter_server", "",
              "| while starting | requests | p50 ms | p99 ms | max ms | start seconds (median) |",
              "|---|---|---|---|---|---|"]
    for key, label in (("baseline", "plain ipykernel"), ("uvkernel_cold", "uvkernel cold")):
        e = s.get(key)
        if e:
            lines.append(f"| {label} | {e['requests']} | {e['p50_ms']:.1f} | {e['p99_ms']:.1f} | {e['max_ms']:.1f} | "
                         f"{_s(e['start_seconds']['median'])} |")
    lines += ["", "## Targets", "", *_targets_table(result)]
    return "\n".join(lines) + "\n"


WARM = ("baseline", "baseline_env", "uvkernel_warm", "baseline_env_large", "uvkernel_warm_large")


def _env_ratio(entry: dict[str, Any]) -> str:
    if entry.get("env_ratio_median") is None or entry.get("env_ratio_paired_median") is None:
        return " | "
    return (f"**{entry['env_ratio_paired_median']:.3f}x** | {entry['env_ratio_median']:.3f}x "
            f"({entry['env_ratio_min']:.3f}x)")


def warm_markdown(result: dict[str, Any]) -> str:
    """The --only warm run: warm starts against the host's and the same env's plain ipykernel."""
    k = result["kernels"]
    large = result.get("large_env") or {}
    lines = [
        "# uvkernel benchmark: warm starts", "",
        f"{result['date']}; {result['machine']['cpus']} CPUs; host `{result['host']}`; {result['runs']} interleaved "
        f"rounds; seconds from start_kernel to the first kernel_info reply (min / median). "
        f"Small project: {', '.join(result['project_dependencies'])}; large project: "
        f"{large.get('distributions', '?')} distributions in its env ({', '.join(large.get('dependencies') or [])}).",
        "",
        "Each round starts the host's plain ipykernel once, then, for each env, its plain ipykernel (A) and "
        "uvkernel (B) as A B B A (B A A B in odd rounds); the round's ratio is B's two starts over A's two.",
        "Ratio to the host baseline: median / median (min / min). Ratio to the same env's ipykernel: the median "
        "of the rounds' ratios (the target's figure), and the pooled medians' ratio (min / min).", "",
        "| variant | first kernel_info (min / median) | ratio to host baseline | same env's ipykernel: "
        "median of the rounds' ratios | pooled: median / median (min / min) |",
        "|---|---|---|---|---|",
    ]
    for key in WARM:
        e = k[key]
        lines.append(f"| {LABELS[key]} | {_s(e['info']['min'])} / {_s(e['info']['median'])} | {_ratio(e['info'])} "
                     f"| {_env_ratio(e['info'])} |")
    for key in ("uvkernel_warm", "uvkernel_warm_large"):
        rounds = k[key]["info"].get("env_ratio_rounds") or []
        if rounds:
            lines.append(f"\n{LABELS[key]}, the rounds' ratios in order: " + ", ".join(f"{r:.3f}" for r in rounds))
    lines += ["", "uvkernel's own work per warm start (pipeline timings from its report: find the project, check the env, "
              "the preflight), min / median ms, and what the cheap preflight layer did:", ""]
    for key in ("uvkernel_warm", "uvkernel_warm_large"):
        work = k[key].get("uvkernel_work") or {}
        if work.get("median") is not None:
            lines.append(f"- {LABELS[key]}: {work['min'] * 1000:.1f} / {work['median'] * 1000:.1f} ms; cheap layer: "
                         f"{', '.join(k[key].get('cheap_probe') or [])}")
    lines += ["", *_targets_table(result)]
    return "\n".join(lines) + "\n"


def chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = result["kernels"]
    keys = list(LABELS)
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2), sharey=True)
    for ax, figure, title in ((axes[0], "info", "start -> first kernel_info reply"),
                              (axes[1], "torch", "start -> torch-ready")):
        medians = [k[key][figure]["median"] or 0 for key in keys]
        minima = [k[key][figure]["min"] or 0 for key in keys]
        colors = ["#888888" if key.startswith("baseline") else "#2b7bb9" if key.startswith("uvkernel")
                  else "#d98b2b" for key in keys]
        ys = range(len(keys))
        ax.barh(ys, medians, color=colors, alpha=0.85, label="median")
        ax.scatter(minima, ys, color="black", marker="|", s=200, label="min", zorder=3)
        for y, key, value in zip(ys, keys, medians):
            ax.text(value, y, " n/a" if not k[key][figure]["median"] else f" {value:.2f}s", va="center", fontsize=8)
        ax.set_title(title)
        ax.set_xlabel("seconds")
        ax.invert_yaxis()
    axes[0].set_yticks(range(len(keys)))
    axes[0].set_yticklabels([LABELS[key] for key in keys], fontsize=8)
    axes[1].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"uvkernel vs plain ipykernel vs pyproject-local-kernel ({result['runs']} runs, "
                 f"{result['machine']['cpus']} CPUs, {result['date'][:10]})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
