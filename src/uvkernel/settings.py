"""Every uvkernel setting: one table (name, type, default, help), read by the CLI and by the provisioner.

They can come from a kernel spec (``metadata.kernel_provisioner.config``, which wins) or from a jupyter
config file (``c.UvKernelProvisioner.<name> = ...``).  The CLI builds a plain :class:`UvKernelSettings` from a
spec's config, checked here without traitlets (which costs ~0.1 s to import, more than the whole start of
``uvkernel --version``); the provisioner's configurable traits are made from the same table in
``settings_traits.py``.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import ProjectError, SpecError, UvkernelError


@dataclass(frozen=True)
class Setting:
    name: str
    kind: str  # str, bool, int, float, list (of str), enum (case-insensitive), enum_or_bool
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None


SETTINGS: tuple[Setting, ...] = (
    Setting("host_python", "str", "",
            "Absolute path of the host interpreter whose site-packages (torch, CUDA wheels) the env inherits. "
            "Empty: $UVKERNEL_HOST_PYTHON, then the interpreter running Jupyter."),
    Setting("uv_path", "str", "", "uv binary to use. Empty: the binary of the uv Python package, then uv on PATH."),
    Setting("require_cuda", "enum_or_bool", "auto",
            "auto: expect a GPU when the host torch is a CUDA build and the driver sees devices; "
            "true: fail unless CUDA works; false: never check CUDA.", choices=("auto", "true", "false")),
    Setting("required_packages", "list", ["torch"],
            "Packages that must import from the host (not shadowed by the env), e.g. add torchvision."),
    Setting("min_gpus", "int", 0, "Fail unless at least this many GPUs are visible.", minimum=0),
    Setting("preflight", "bool", True, "Verify the host stack before the kernel starts."),
    Setting("preflight_timeout", "float", 120.0,
            "Seconds the preflight probe may take (import torch, CUDA init) before it is killed.", minimum=1.0),
    Setting("preflight_cache_ttl", "float", 86400.0,
            "Seconds a successful deep preflight result is reused while nothing it depends on changed.",
            minimum=0.0),
    Setting("install_ipykernel", "bool", True, "Install ipykernel into the env when the host does not provide it."),
    Setting("project_dependencies", "bool", True,
            "Install the project's dependencies into the env, leaving host-provided packages to the host."),
    Setting("dependency_groups", "list", [],
            "Dependency groups (PEP 735) to install besides the defaults uv would install."),
    Setting("extras", "list", [], "Project extras to install."),
    Setting("allow_shadowing", "list", [],
            "Host packages the project may replace with its own copy on purpose (reported as shadowed): "
            "names or shell patterns, e.g. [\"torch\", \"nvidia-*\"]."),
    Setting("host_packages", "enum", "stack",
            "Which host packages are protected (never installed into the env, fixed at the host's versions): "
            "stack: torch, its GPU runtime (nvidia-*, cuda-*, triton) and what is built against it, plus "
            "required_packages and protected_packages; every other host package is used when its version "
            "satisfies the project, else the env gets its own copy. all: every host package is protected.",
            choices=("stack", "all")),
    Setting("protected_packages", "list", [],
            "More host packages to protect besides the GPU stack: names or shell patterns, e.g. [\"jax*\"]. "
            "allow_shadowing wins over it."),
    Setting("no_default_groups", "bool", False,
            "Leave out the dependency groups uv installs by default ([tool.uv] default-groups, else dev), as "
            "`uv sync --no-default-groups` does; dependency_groups still adds groups."),
    Setting("no_groups", "list", [],
            "Dependency groups to leave out, as `uv sync --no-group G` does (wins over the defaults and "
            "dependency_groups)."),
    Setting("allow_companion_mismatch", "list", [],
            "Torch companions (env packages built against torch, e.g. torchvision) the kernel may start with "
            "although they do not load on the host's torch build: names or shell patterns. They are not loaded "
            "by the preflight."),
    Setting("companion_index", "str", "",
            "Package index holding companion builds (torchvision, torchaudio, ...) made for the host's torch "
            "variant. Empty: the PyTorch index of the host torch's local version, e.g. "
            "https://download.pytorch.org/whl/cpu for 2.13.0+cpu, .../whl/cu128 for +cu128; none for a torch "
            "without a local version. Named in COMPANION_BUILD_MISMATCH's fix; used to install companions."),
    Setting("host_version_conflicts", "enum", "fail",
            "A project requirement the host's version does not meet (e.g. torch==2.9.1 with a host 2.13.0): "
            "fail refuses to start; warn uses the host's copy, resolves the rest against the host and lists "
            "every unmet pin in the report and the server log.", choices=("fail", "warn")),
    Setting("uv_timeout", "float", 900.0, "Seconds one uv command may take before it is killed.", minimum=1.0),
    Setting("lock_timeout", "float", 1800.0, "Seconds to wait for another start that is preparing the same env.",
            minimum=1.0),
    Setting("cache_dir", "str", "",
            "Per-user folder for envs of notebooks outside projects and the preflight cache. "
            "Empty: the platform's user cache folder (platformdirs) / uvkernel."),
    Setting("require_trust", "bool", False,
            "Build and install a project (which runs its build backend and any source distribution's build, as "
            "uv sync does) only after `uvkernel trust DIR`; asked again when its pyproject.toml, uv.lock or "
            "uv.toml change. Not allowed in [tool.uvkernel]: a project must not trust itself."),
    Setting("fallback_kernel", "enum", "restart",
            "When a start fails where Jupyter would lose the message (restart: restarts; always: every start), "
            "start a small kernel that shows the error in the notebook and runs no code.",
            choices=("restart", "always", "never")),
)
BY_NAME = {s.name: s for s in SETTINGS}
SETTING_NAMES = tuple(sorted(BY_NAME))


class Invalid(ValueError):
    """A value a setting does not accept."""


def _enum(setting: Setting, value: Any) -> str:
    if isinstance(value, str):
        for choice in setting.choices:
            if value.lower() == choice:
                return choice
    raise Invalid


def coerce(setting: Setting, value: Any) -> Any:
    """The value as the setting holds it (the rules traitlets applies to the provisioner's traits), or Invalid."""
    kind = setting.kind
    if kind == "str":
        if isinstance(value, str):
            return value
    elif kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
    elif kind in ("int", "float"):
        if kind == "int" and isinstance(value, int) or kind == "float" and isinstance(value, (int, float)):
            value = float(value) if kind == "float" else value
            # NaN passes every comparison (a NaN time limit would never expire), and an infinite one never ends
            if kind == "float" and not math.isfinite(value):
                raise Invalid
            if setting.minimum is not None and value < setting.minimum:
                raise Invalid
            return value
    elif kind == "list":
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return list(value)
    elif kind == "enum":
        return _enum(setting, value)
    elif kind == "enum_or_bool":
        if isinstance(value, bool):
            return value
        return _enum(setting, value)
    raise Invalid


def describe(setting: Setting) -> str:
    """What the setting accepts, in traitlets' words (the provisioner's traits say the same)."""
    choices = f"any of {list(setting.choices)} (case-insensitive)"
    return {"str": "a unicode string", "bool": "a boolean", "int": "an int", "float": "a finite float", "list": "a list",
            "enum": choices, "enum_or_bool": f"{choices} or a boolean"}[setting.kind]


# How each kind of setting is held, for the type checker's declarations below (test_settings_types checks that
# they agree with the table).
KIND_TYPES = {"str": "str", "bool": "bool", "int": "int", "float": "float", "list": "list[str]", "enum": "str",
              "enum_or_bool": "str | bool"}


class UvKernelSettings:
    """The settings as plain attributes (the CLI's); the provisioner is the same shape, made of traits."""

    # Set by __init__ from SETTINGS; declared (without class values, so the provisioner's traits stay traits) for
    # the type checker.
    host_python: str
    uv_path: str
    require_cuda: str | bool
    required_packages: list[str]
    min_gpus: int
    preflight: bool
    preflight_timeout: float
    preflight_cache_ttl: float
    install_ipykernel: bool
    project_dependencies: bool
    dependency_groups: list[str]
    extras: list[str]
    allow_shadowing: list[str]
    host_packages: str
    protected_packages: list[str]
    no_default_groups: bool
    no_groups: list[str]
    allow_companion_mismatch: list[str]
    companion_index: str
    host_version_conflicts: str
    uv_timeout: float
    lock_timeout: float
    cache_dir: str
    require_trust: bool
    fallback_kernel: str

    def __init__(self, **values: Any) -> None:
        unknown = sorted(set(values) - set(BY_NAME) - {"setting_sources"})
        if unknown:
            raise TypeError(f"unknown settings: {', '.join(unknown)}")
        for setting in SETTINGS:
            if setting.name in values:
                try:
                    value = coerce(setting, values[setting.name])
                except Invalid:
                    raise ValueError(f"{setting.name} = {values[setting.name]!r} is not valid: "
                                     f"{describe(setting)} expected") from None
            else:
                value = list(setting.default) if isinstance(setting.default, list) else setting.default
            setattr(self, setting.name, value)
        # where each setting came from (name -> "kernel spec …", "jupyter config", "command line",
        # "[tool.uvkernel] in …"); absent: the default.  Not a setting itself.
        self.setting_sources: dict[str, str] = dict(values.get("setting_sources") or {})

    @property
    def require_cuda_mode(self) -> str:
        return require_cuda_mode(self.require_cuda)


def require_cuda_mode(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).lower()


def validate_config(config: Mapping[str, Any], spec: str = "the kernel spec", *,
                    code: str = "CONFIG_INVALID", error: type[UvkernelError] = SpecError) -> None:
    """Reject unknown keys and wrong types with one clear message (jupyter_client only warns)."""
    problems = []
    for key, value in config.items():
        setting = BY_NAME.get(key)
        if setting is None:
            close = difflib.get_close_matches(str(key).replace("-", "_"), list(SETTING_NAMES), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(f"unknown setting {key!r}{hint}")
            continue
        try:
            coerce(setting, value)
        except Invalid:
            problems.append(f"{key} = {value!r} is not valid: {describe(setting)} expected")
    if problems:
        raise error(code, detail="\n".join(problems), spec=spec,
                    facts=[("valid settings", ", ".join(SETTING_NAMES))])


def from_config(config: Mapping[str, Any] | None = None, *, source: str = "the kernel spec",
                **overrides: Any) -> UvKernelSettings:
    values = dict(config or {})
    given = {k: v for k, v in overrides.items() if v is not None}
    values.update(given)
    validate_config(values)
    settings = UvKernelSettings(**values)
    settings.setting_sources = {**{k: source for k in config or {}}, **{k: "the command line" for k in given}}
    return settings


# --- [tool.uvkernel] in a project's pyproject.toml ---------------------------------------------------------
# Only what the project's dependencies need.  Never what runs a program or reaches outside the project
# (host_python, uv_path, cache_dir, timeouts...): a cloned repository must not choose binaries or folders.
PROJECT_KEYS = ("host_version_conflicts", "required_packages", "dependency_groups", "extras",
                "allow_companion_mismatch", "companion_index", "host_packages", "protected_packages",
                "no_default_groups", "no_groups")


def project_policy(pyproject: Mapping[str, Any], path: str) -> dict[str, Any]:
    """The validated ``[tool.uvkernel]`` table of a project ({} when there is none)."""
    table = (pyproject.get("tool") or {}).get("uvkernel")
    if table is None:
        return {}
    where = f"{path} [tool.uvkernel]"
    if not isinstance(table, dict):
        raise ProjectError("PROJECT_CONFIG_INVALID", spec=where, detail="[tool.uvkernel] must be a table",
                           facts=[("allowed keys", ", ".join(PROJECT_KEYS))])
    refused = sorted(k for k in table if k in SETTING_NAMES and k not in PROJECT_KEYS)
    if refused:
        raise ProjectError("PROJECT_SETTING_REFUSED", path=path, keys=", ".join(refused), first=refused[0],
                           facts=[("allowed in [tool.uvkernel]", ", ".join(PROJECT_KEYS))])
    validate_config(table, where, code="PROJECT_CONFIG_INVALID", error=ProjectError)
    return dict(table)


def with_project_policy(settings: UvKernelSettings, pyproject: Mapping[str, Any], path: str) -> UvKernelSettings:
    """``settings`` with the project's ``[tool.uvkernel]`` applied under them: a key set in the kernel spec,
    jupyter config or on the command line wins.  Returns ``settings`` itself when the project sets nothing."""
    policy = project_policy(pyproject, path)
    sources = dict(settings.setting_sources)
    applied = {k: v for k, v in policy.items() if k not in sources}
    if not applied:
        return settings
    values = {name: getattr(settings, name) for name in SETTING_NAMES}
    values.update(applied)
    sources.update({k: f"[tool.uvkernel] in {path}" for k in applied})
    effective = UvKernelSettings(**values)
    effective.setting_sources = sources
    return effective


def sources_of(settings: UvKernelSettings) -> dict[str, dict[str, Any]]:
    """name -> {value, from} for the report (only what the defaults do not say)."""
    out = {}
    for name in SETTING_NAMES:
        source = settings.setting_sources.get(name)
        if source:
            out[name] = {"value": getattr(settings, name), "from": source}
    return out
