"""Every uvkernel setting, as configurable traits.

They can come from a kernel spec (``metadata.kernel_provisioner.config``, which wins) or from a jupyter
config file (``c.UvKernelProvisioner.<name> = ...``).  The CLI builds the same object from a spec's config.
"""

from __future__ import annotations

import difflib
from typing import Any, Mapping

from traitlets import Bool, CaselessStrEnum, Float, Int, List, TraitError, Unicode, Union
from traitlets.config import LoggingConfigurable

from .errors import SpecError


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
    preflight_timeout: float = Float(
        120.0, min=1.0, config=True,
        help="Seconds the preflight probe may take (import torch, CUDA init) before it is killed.",
    )  # type: ignore[assignment]
    preflight_cache_ttl: float = Float(
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
        help="Host packages the project may replace with its own copy on purpose (reported as shadowed).",
    )  # type: ignore[assignment]
    uv_timeout: float = Float(
        900.0, min=1.0, config=True, help="Seconds one uv command may take before it is killed.",
    )  # type: ignore[assignment]
    lock_timeout: float = Float(
        1800.0, min=1.0, config=True,
        help="Seconds to wait for another start that is preparing the same env.",
    )  # type: ignore[assignment]
    cache_dir: str = Unicode(
        "", config=True,
        help="Per-user folder for envs of notebooks outside projects and the preflight cache. "
             "Empty: the platform's user cache folder (platformdirs) / uvkernel.",
    )  # type: ignore[assignment]
    fallback_kernel: str = CaselessStrEnum(
        ["restart", "always", "never"], default_value="restart", config=True,
        help="When a start fails where Jupyter would lose the message (restart: restarts; always: every start), "
             "start a small kernel that shows the error in the notebook and runs no code.",
    )  # type: ignore[assignment]

    @property
    def require_cuda_mode(self) -> str:
        value = self.require_cuda
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value).lower()


SETTING_NAMES = tuple(
    name for name, trait in UvKernelSettings.class_traits(config=True).items()
)


def validate_config(config: Mapping[str, Any], spec: str = "the kernel spec") -> None:
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
        raise SpecError("CONFIG_INVALID", detail="\n".join(problems), spec=spec,
                        facts=[("valid settings", ", ".join(sorted(traits)))])


def from_config(config: Mapping[str, Any] | None = None, **overrides: Any) -> UvKernelSettings:
    values = dict(config or {})
    values.update({k: v for k, v in overrides.items() if v is not None})
    validate_config(values)
    return UvKernelSettings(**values)
