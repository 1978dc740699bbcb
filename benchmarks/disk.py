"""Disk an env adds: bytes in its files that are not hard links into uv's cache.

uv installs wheels by hard-linking files out of its cache, so those cost nothing extra; files written in the
env itself (pyvenv.cfg, scripts, compiled bytecode, state files) have a link count of one.  Each inode is
counted once.
"""

from __future__ import annotations

import os
from pathlib import Path


def env_bytes(env: Path) -> dict[str, int]:
    own = linked = files = 0
    seen: set[tuple[int, int]] = set()
    for folder, _dirs, names in os.walk(env):
        for name in names:
            try:
                st = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            if not os.path.isfile(os.path.join(folder, name)) or os.path.islink(os.path.join(folder, name)):
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            files += 1
            if st.st_nlink > 1:
                linked += st.st_size
            else:
                own += st.st_size
    return {"own_bytes": own, "hardlinked_bytes": linked, "files": files}
