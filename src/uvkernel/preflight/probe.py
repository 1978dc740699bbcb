"""The preflight probe: runs inside the env's python.  Standard library only, any Python 3.

Started as a script by path (never ``-c``), so sys.path[0] is this folder, not the notebook's: a stray
``torch.py`` next to the notebook cannot hijack it.  Prints one JSON object on its last line.
"""

import json
import os
import sys


def origin_of(path, env, host_dirs):
    real = os.path.realpath(path)
    if real.startswith(os.path.realpath(env) + os.sep):
        return "env"
    for d in host_dirs:
        if real.startswith(os.path.realpath(d) + os.sep):
            return "host"
    return "other"


def locate(name, env, host_dirs):
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None or not spec.origin:
        return {"origin": "missing", "location": None}
    location = os.path.dirname(spec.origin) if spec.submodule_search_locations else spec.origin
    return {"origin": origin_of(spec.origin, env, host_dirs), "location": location}


def main():
    config = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    env = config.get("env", sys.prefix)
    host_dirs = config.get("host_site_packages", [])
    packages = {name: locate(name, env, host_dirs) for name in config.get("packages", [])}
    print(json.dumps({"python": sys.executable, "prefix": sys.prefix, "packages": packages}))


if __name__ == "__main__":
    main()
