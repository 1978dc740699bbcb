"""The provisioner's settings as configurable traits, made from ``settings.SETTINGS`` (one table for both): so a
jupyter config file (``c.UvKernelProvisioner.<name>``, ``c.UvKernelSettings.<name>``) and a kernel spec's config
reach them.  Only the provisioner imports this module (and with it traitlets)."""

from __future__ import annotations

from typing import Any

from traitlets import Bool, CaselessStrEnum, Dict, Float, Int, List, TraitType, Unicode, Union
from traitlets.config import LoggingConfigurable

from .settings import SETTINGS, Setting, require_cuda_mode


def _trait(setting: Setting) -> TraitType:
    kind, default, text = setting.kind, setting.default, setting.help
    if kind == "str":
        return Unicode(default, config=True, help=text)
    if kind == "bool":
        return Bool(default, config=True, help=text)
    if kind == "int":
        return Int(default, min=setting.minimum, config=True, help=text)
    if kind == "float":
        return Float(default, min=setting.minimum, config=True, help=text)
    if kind == "list":
        return List(Unicode(), default_value=list(default), config=True, help=text)
    if kind == "enum":
        return CaselessStrEnum(list(setting.choices), default_value=default, config=True, help=text)
    if kind == "enum_or_bool":
        return Union([CaselessStrEnum(list(setting.choices)), Bool()], default_value=default, config=True, help=text)
    raise ValueError(f"no trait for a {kind} setting")


def _require_cuda_mode(self: Any) -> str:
    return require_cuda_mode(self.require_cuda)


# named as before, so c.UvKernelSettings.<name> in a jupyter config file keeps reaching the provisioner
UvKernelSettings = type("UvKernelSettings", (LoggingConfigurable,), {
    **{s.name: _trait(s) for s in SETTINGS},
    # where each setting came from; not configurable itself
    "setting_sources": Dict(),
    "require_cuda_mode": property(_require_cuda_mode),
    "__module__": __name__,
    "__doc__": "uvkernel's settings as configurable traits (the provisioner's base).",
})
