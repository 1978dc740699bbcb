"""Every uvkernel setting, as configurable traits.

They can come from a kernel spec (``metadata.kernel_provisioner.config``, which wins) or from a jupyter
config file (``c.UvKernelProvisioner.<name> = ...``).  The CLI builds the same object from a spec's config.
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Mapping

from traitlets import Bool, CaselessStrEnum, Dict, Float, Int, List, TraitError, Unicode, Union
from traitlets.config import LoggingConfigurable

from .errors import ProjectError, SpecError, UvkernelError


class FiniteFloat(Float):
    """A Float that is a real number: NaN passes every min/max comparison (a NaN time limit would never
    expire, or expire at once), and an infinite one never ends a hung probe."""

    def validate(self, obj: Any, value: Any) -> float:
        value = super().validate(obj, value)
        if not math.isfinite(value):
            self.error(obj, value)
        return value

    def info(self) -> str:
        return "a finite " + super().info().removeprefix("a ")


class UvKernelSettings(LoggingConfigurable):
    host_python: str = Unicode(
        "", config=True,
        help="Absolute path of the host interpreter whose site-packages (torch, CUDA wheels) the env inherits. "
             "Empty: $UVKERNEL_HOST_PYTHON, then the interpreter running Jupyter.",
    )  # type: ignore[assignment]
    uv_path: str = Unicode(
        "", config=True,
        help="uv binary to use. Empty: the binary of the uv Python package, then uv on PATH.",
    )  # type: ignore[assignment]
    require_cuda: Any = Union(
        [CaselessStrEnum(["auto", "true", "false"]), Bool()], default_value="auto", config=True,
        help="auto: expect a GPU when the host torch is a CUDA build and the driver sees devices; "
             "true: fail unless CUDA works; false: never check CUDA.",
    )
    required_packages: list = List(
        Unicode(), default_value=["torch"], config=True,
        help="Packages that must import from the host (not shadowed by the env), e.g. add torchvision.",
    )  # type: ignore[assignment]
    min_gpus: int = Int(0, min=0, config=True, help="Fail unless at least this many GPUs are visible.")  # type: ignore[assignment]
    preflight: bool = Bool(True, config=True, help="Verify the host stack before the kernel starts.")  # type: ignore[assignment]
    preflight_timeout: float = FiniteFloat(
        120.0, min=1.0, config=True,
        help="Seconds the preflight probe may take (import torch, CUDA init) before it is killed.",
    )  # type: ignore[assignment]
    preflight_cache_ttl: float = FiniteFloat(
        86400.0, min=0.0, config=True,
        help="Seconds a successful deep preflight result is reused while nothing it depends on changed.",
    )  # type: ignore[assignment]
    install_ipykernel: bool = Bool(
        True, config=True,
        help="Install ipykernel into the env when the host does not provide it.",
    )  # type: ignore[assignment]
    project_dependencies: bool = Bool(
        True, config=True,
        help="Install the project's dependencies into the env, leaving host-provided packages to the host.",
    )  # type: ignore[assignment]
    dependency_groups: list = List(
        Unicode(), default_value=[], config=True,
        help="Dependency groups (PEP 735) to install besides the defaults uv would install.",
    )  # type: ignore[assignment]
    extras: list = List(Unicode(), default_value=[], config=True, help="Project extras to install.")  # type: ignore[assignment]
    allow_shadowing: list = List(
        Unicode(), default_value=[], config=True,
        help="Host packages the project may replace with its own copy on purpose (reported as shadowed): "
             "names or shell patterns, e.g. [\"torch\", \"nvidia-*\"].",
    )  # type: ignore[assignment]
    host_packages: str = CaselessStrEnum(
        ["stack", "all"], default_value="stack", config=True,
        help="Which host packages are protected (never installed into the env, fixed at the host's versions): "
             "stack: torch, its GPU runtime (nvidia-*, cuda-*, triton) and what is built against it, plus "
             "required_packages and protected_packages; every other host package is used when its version "
             "satisfies the project, else the env gets its own copy. all: every host package is protected.",
    )  # type: ignore[assignment]
    protected_packages: list = List(
        Unicode(), default_value=[], config=True,
        help="More host packages to protect besides the GPU stack: names or shell patterns, e.g. [\"jax*\"]. "
             "allow_shadowing wins over it.",
    )  # type: ignore[assignment]
    no_default_groups: bool = Bool(
        False, config=True,
        help="Leave out the dependency groups uv installs by default ([tool.uv] default-groups, else dev), as "
             "`uv sync --no-default-groups` does; dependency_groups still adds groups.",
    )  # type: ignore[assignment]
    no_groups: list = List(
        Unicode(), default_value=[], config=True,
        help="Dependency groups to leave out, as `uv sync --no-group G` does (wins over the defaults and "
             "dependency_groups).",
    )  # type: ignore[assignment]
    allow_companion_mismatch: list = List(
        Unicode(), default_value=[], config=True,
        help="Torch companions (env packages built against torch, e.g. torchvision) the kernel may start with "
             "although they do not load on the host's torch build: names or shell patterns. They are not loaded "
             "by the preflight.",
    )  # type: ignore[assignment]
    companion_index: str = Unicode(
        "", config=True,
        help="Package index holding companion builds (torchvision, torchaudio, ...) made for the host's torch "
             "variant. Empty: the PyTorch index of the host torch's local version, e.g. "
             "https://download.pytorch.org/whl/cpu for 2.13.0+cpu, .../whl/cu128 for +cu128; none for a torch "
             "without a local version. Named in COMPANION_BUILD_MISMATCH's fix; used to install companions.",
    )  # type: ignore[assignment]
    host_version_conflicts: str = CaselessStrEnum(
        ["fail", "warn"], default_value="fail", config=True,
        help="A project requirement the host's version does not meet (e.g. torch==2.9.1 with a host 2.13.0): "
             "fail refuses to start; warn uses the host's copy, resolves the rest against the host and lists "
             "every unmet pin in the report and the server log.",
    )  # type: ignore[assignment]
    uv_timeout: float = FiniteFloat(
        900.0, min=1.0, config=True, help="Seconds one uv command may take before it is killed.",
    )  # type: ignore[assignment]
    lock_timeout: float = FiniteFloat(
        1800.0, min=1.0, config=True,
        help="Seconds to wait for another start that is preparing the same env.",
    )  # type: ignore[assignment]
    cache_dir: str = Unicode(
        "", config=True,
        help="Per-user folder for envs of notebooks outside projects and the preflight cache. "
             "Empty: the platform's user cache folder (platformdirs) / uvkernel.",
    )  # type: ignore[assignment]
    require_trust: bool = Bool(
        False, config=True,
        help="Build and install a project (which runs its build backend and any source distribution's build, as "
             "uv sync does) only after `uvkernel trust DIR`; asked again when its pyproject.toml, uv.lock or "
             "uv.toml change. Not allowed in [tool.uvkernel]: a project must not trust itself.",
    )  # type: ignore[assignment]
    fallback_kernel: str = CaselessStrEnum(
        ["restart", "always", "never"], default_value="restart", config=True,
        help="When a start fails where Jupyter would lose the message (restart: restarts; always: every start), "
             "start a small kernel that shows the error in the notebook and runs no code.",
    )  # type: ignore[assignment]

    # where each setting came from (name -> "kernel spec …", "jupyter config", "command line",
    # "[tool.uvkernel] in …"); absent: the default.  Not configurable itself.
    setting_sources: dict = Dict()  # type: ignore[assignment]

    @property
    def require_cuda_mode(self) -> str:
        value = self.require_cuda
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value).lower()


SETTING_NAMES = tuple(
    name for name, trait in UvKernelSettings.class_traits(config=True).items()
)


def validate_config(config: Mapping[str, Any], spec: str = "the kernel spec", *,
                    code: str = "CONFIG_INVALID", error: type[UvkernelError] = SpecError) -> None:
    """Reject unknown keys and wrong types with one clear message (jupyter_client only warns)."""
    problems = []
    traits = UvKernelSettings.class_traits(config=True)
    scratch = UvKernelSettings()  # container traits (List) validate their elements against an instance
    for key, value in config.items():
        if key not in traits:
            close = difflib.get_close_matches(str(key).replace("-", "_"), list(traits), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(f"unknown setting {key!r}{hint}")
            continue
        try:
            traits[key].validate(scratch, value)
        except TraitError:
            problems.append(f"{key} = {value!r} is not valid: {traits[key].info()} expected")
    if problems:
        raise error(code, detail="\n".join(problems), spec=spec,
                    facts=[("valid settings", ", ".join(sorted(traits)))])


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
