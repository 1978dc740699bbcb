"""Which build of torch a version names, and where companions of that build live: one rule for the install step
(stage 2) and the preflight's advice (stage 3).

Both read the version from torch's dist-info: PyPI's CUDA torch says ``2.14.1+cu130`` in ``torch.__version__`` but
``2.14.1`` in its dist-info, and PyPI's companions (torchvision, torchaudio) are built for it, so no other index is
named for it.
"""

from __future__ import annotations

import re

from packaging.version import InvalidVersion, Version

PYTORCH_INDEX = "https://download.pytorch.org/whl/"
OFF = "none"


def variant(version: str) -> str:
    """The local part of a version: 'cpu' for 2.13.0+cpu, '' for a PyPI build."""
    try:
        return Version(version).local or ""
    except InvalidVersion:
        return ""


def index_for(setting: str, torch_version: str) -> str:
    """The index for companions of this torch: the setting, else the PyTorch index of its variant, else ''."""
    if setting:
        return "" if setting.strip().lower() == OFF else setting
    local = variant(torch_version)
    return PYTORCH_INDEX + local if re.fullmatch(r"cpu|cu\d+|rocm[\d.]+|xpu", local) else ""
