"""Every sdist and wheel carries the prebuilt JupyterLab extension: building one without it fails loudly.

The extension is built by scripts/setup.sh (npm); an sdist carries the built files, so a wheel built from the
sdist needs no Node.js.  A wheel installs them where Jupyter looks for prebuilt extensions
(share/jupyter/labextensions/jupyter-uvkernel).  An editable install does not: the dev env links that folder to
the build folder instead (scripts/setup.sh), and an installer would otherwise write and delete through the link.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

BUILT = Path("src/uvkernel/labextension")
DEST = "share/jupyter/labextensions/jupyter-uvkernel"


class LabExtension(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        built = Path(self.root) / BUILT
        if not (built / "package.json").is_file():
            raise RuntimeError(f"{BUILT} is missing: run scripts/setup.sh, which builds the JupyterLab extension "
                               "(npm), before building the distribution")
        if self.target_name != "wheel" or version == "editable":
            return
        for path in sorted(built.rglob("*")):
            if path.is_file():
                build_data["shared_data"][str(path)] = f"{DEST}/{path.relative_to(built).as_posix()}"
