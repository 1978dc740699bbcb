"""What the host provides: its installed distributions, read in the host interpreter.

uv cannot see inherited packages, so uvkernel tells it: host-provided names go into an ``--excludes``
file (uv then neither installs nor traverses them) and their versions are checked against what the
project asks for with ``packaging``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from . import process

# Runs in the host (stdlib only).  Reads the site-packages folders passed as arguments, nothing else, so a
# user-site or PYTHONPATH copy is never mistaken for the host's.
_LIST_DISTS = r"""
import json, sys
try:
    from importlib import metadata
except ImportError:
    print("{}"); raise SystemExit
out = {}
for d in metadata.distributions(path=sys.argv[1:]):
    name = d.metadata["Name"]
    if not name:
        continue
    key = name.lower().replace("_", "-").replace(".", "-")
    while "--" in key:
        key = key.replace("--", "-")
    if key in out:
        continue
    try:
        loc = str(d.locate_file(""))
    except Exception:
        loc = ""
    reqs = d.requires or []
    out[key] = {"name": name, "version": d.version, "location": loc, "requires": reqs}
print(json.dumps(out))
"""

# The torch stack: never installed into an env unless the user allows it, whatever else happens.
_STACK = re.compile(r"^(torch|triton|pytorch-triton(-.*)?|nvidia-.*|cuda-.*|cupy-cuda.*|jax-cuda.*)$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def is_stack_package(name: str) -> bool:
    return bool(_STACK.match(canonical(name)))


@dataclass
class HostDist:
    name: str
    version: str
    location: str
    requires: list[str]


async def list_host_distributions(python: str, site_packages: list[str], timeout: float = 60) -> dict[str, HostDist]:
    done = await process.run([python, "-I", "-c", _LIST_DISTS, *site_packages], timeout=timeout)
    if done.returncode != 0 or done.timed_out:
        return {}
    try:
        data = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {}
    return {key: HostDist(v["name"], v["version"], v["location"], v.get("requires") or []) for key, v in data.items()}
