"""Disk an env adds: bytes in its files that are not hard links into uv's cache.

uv installs wheels by hard-linking files out of its cache, so those cost nothing extra; files written in the
env itself (pyvenv.cfg, scripts, compiled bytecode, state files) have a link count of one.  Each inode is
counted once.
"""

from __future__ import annotations

from pathlib import Path


def env_bytes(env: Path) -> dict[str, int]:
    """The count ``uvkernel envs`` shows (one implementation: uvkernel.cache_envs.own_bytes)."""
    from uvkernel.cache_envs import own_bytes

    return own_bytes(env)
