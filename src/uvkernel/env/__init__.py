"""Stage 2: prepare the project's env so it inherits the host's packages and holds the project's own.

Interface used by the pipeline:

    env = await prepare(project, host, settings, uv=..., cache_root=..., log=...)
    env.path, env.python, env.site_packages, env.actions, env.plan, env.shadowing, env.to_json()

and by the terminal commands (``add``/``remove``, ``unshadow``, ``gc``) and the kernel's environment:

    async with locked(env_path, cache_root, timeout): ...   # the lock every start preparing that env takes
    lock_for(env_path, cache_root)                          # the lock itself, for a try-lock or a derived lock
    private_dir(path), site_packages_of(env_path, version), STATE_FILE, HOST_EXCLUDES, HOST_CONSTRAINTS
    host_distributions(host, cache_root), list_host_distributions(python, site_packages)
    resolve.plan(...), resolve.resolve(...)                 # requirements resolved against the host's packages
    declared(project, settings), locked_pins(project, uv, timeout)
    env_distributions(site_packages), shadowing(...), broken_requirements(...)
    variant(torch_version), index_for(setting, torch_version)  # the host torch's build, its companions' index
    read_lock(path)                                            # uv.lock's names: canonical name -> source, version
    refit_companions(project, env, host, settings, ...)        # companions that did not load: the newest that may
    companions.unavailable_error(records, failed)              # the refusal naming the variant's index

The modules, each importing only those listed before it (and uvkernel's top-level helpers, never the pipeline,
the provisioner or the CLI):

    protection    what the host provides: its distributions, placeholder wheels and excludes for uv
    requirements  requirement lines: names, exact versions, markers, uv's explanation's tail
    installed     what the env itself holds, what of it hides the host's, what the host's versions break
    resolve       ``uv pip compile`` against the host's packages; the direct check of the project's pins
    install       ``uv pip install`` of what the host does not provide; the files that guide the kernel's installers
    companions    torchvision and friends of the host torch's build
    declarations  what the project declares: requirements, uv.lock pins, ``[tool.uv]`` sources, indexes, members
    sync          the project installed as ``uv sync`` would, minus what the host provides
    venv          creating, reusing or repairing the env under its lock; the state file
"""

from __future__ import annotations

from ..shared import Log
from .companions import index_for, variant
from .declarations import declared, locked_pins
from .install import HOST_CONSTRAINTS, HOST_EXCLUDES
from .installed import broken_requirements, env_distributions, shadowing
from .protection import HostDist, host_distributions, list_host_distributions
from .resolve import InstallPlan
from . import companions, protection
from .sync import read_lock, refit_companions
from .venv import STATE_FILE, Env, lock_for, locked, prepare, private_dir, site_packages_of

__all__ = ["Env", "HOST_CONSTRAINTS", "HOST_EXCLUDES", "HostDist", "InstallPlan", "Log", "STATE_FILE",
           "broken_requirements", "declared", "env_distributions", "host_distributions", "index_for",
           "list_host_distributions", "lock_for", "locked", "locked_pins", "prepare", "private_dir", "read_lock",
           "shadowing", "site_packages_of", "variant", "companions", "protection", "refit_companions"]
