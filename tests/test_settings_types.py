"""The settings' declared types (what the type checker reads) agree with the table __init__ fills them from."""

from __future__ import annotations

from uvkernel.settings import BY_NAME, KIND_TYPES, SETTING_NAMES, UvKernelSettings


def test_every_setting_is_declared_with_its_kinds_type():
    declared = dict(UvKernelSettings.__annotations__)
    assert sorted(declared) == sorted(SETTING_NAMES)
    wrong = {name: (declared[name], KIND_TYPES[BY_NAME[name].kind]) for name in SETTING_NAMES
             if declared[name] != KIND_TYPES[BY_NAME[name].kind]}
    assert not wrong, wrong


def test_the_declarations_are_not_class_values():
    # the provisioner's traits share these names: a class value here would hide them
    assert not [name for name in SETTING_NAMES if name in vars(UvKernelSettings)]
