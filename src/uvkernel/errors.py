"""One family of exceptions, and every user-facing error and notice text in one place.

Each error has a stable ``code``, a one-line summary, facts (``name: value`` lines) and the command or
step that fixes it (:data:`MESSAGES`).  A notice is a line the report, ``uvkernel check``, ``%uvkernel`` and the
terminal commands show while the start goes on (:data:`NOTICES`, filled by :func:`notice`); a catalogue message
shown as a line rather than raised goes through :func:`note`.  Progress lines (the ``log`` parameter) and the labels
of reports and summaries are written where they are used.

Commands stand in backquotes: renderers keep them whole on one line (a command split over lines breaks when pasted
into a shell).  Texts avoid the percent sign: jupyter_server's REST layer doubles it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable, Mapping


@dataclass(frozen=True)
class Message:
    summary: str
    fix: str


# code -> (summary template, fix template).  Templates use str.format with the error's fields.
MESSAGES: dict[str, Message] = {
    # --- host interpreter ---------------------------------------------------------------------------
    "HOST_PYTHON_MISSING": Message(
        "the host interpreter {path} does not exist",
        "point uvkernel at the Python that holds your torch: `uvkernel install --user --host-python /path/to/python` "
        "(or set UVKERNEL_HOST_PYTHON)",
    ),
    "HOST_PYTHON_NOT_PYTHON": Message(
        "the host interpreter {path} is not a working Python ({detail})",
        "give the path of a python executable: `uvkernel install --user --host-python /path/to/python3`",
    ),
    "HOST_PYTHON_TOO_OLD": Message(
        "the host interpreter {path} is Python {version}; uvkernel needs {minimum} or newer",
        "choose a newer interpreter: `uvkernel install --user --host-python /path/to/python3.11`",
    ),
    # --- uv ----------------------------------------------------------------------------------------
    "UV_NOT_FOUND": Message(
        "no uv binary was found (looked at: {looked})",
        "install uv next to Jupyter: `python -m pip install uv` (or set uv_path in the kernel spec)",
    ),
    "UV_PATH_INVALID": Message(
        "the uv_path setting {path} is not an executable file",
        "point uv_path at the uv binary (python -m uv --version shows whether the uv package has one), or remove "
        "uv_path from {spec} to use the uv Python package",
    ),
    "UV_FAILED": Message(
        "uv failed while it {step} (exit status {returncode})",
        "{fix}",
    ),
    "UV_DID_NOTHING": Message(
        "{uv} exited with status 0 but did not create the env at {env}: it does not behave like uv",
        "check the binary (`{uv} --version` must print uv's version): point uv_path at a working uv, or remove "
        "uv_path to use the uv Python package (`python -m pip install uv`)",
    ),
    "UV_VERSION_REQUIRED": Message(
        "the project requires uv {required} (required-version in {path}), but uvkernel runs uv {version} ({uv})",
        "update that uv (`python -m pip install -U uv` beside Jupyter), or point uv_path at a uv that matches: "
        "`uvkernel install --user --set uv_path='\"/path/to/uv\"'`; the project's dependencies are not the problem",
    ),
    "UV_TIMEOUT": Message(
        "uv did not finish within {timeout} seconds while it {step}",
        "check network access to the package index, then start the kernel again (it resumes where it stopped)",
    ),
    # --- project ------------------------------------------------------------------------------------
    "PYPROJECT_INVALID": Message(
        "{path} cannot be used as the project's pyproject.toml (the problem is shown below)",
        "fix the file (uvkernel never edits it), then start the kernel again",
    ),
    "REQUIRES_PYTHON_EXCLUDES_HOST": Message(
        "the project at {root} requires Python {requires}, but the host interpreter {host} is Python {version}",
        "widen requires-python in {root}/pyproject.toml, or choose a matching host: `uvkernel install --user "
        "--host-python /path/to/python`",
    ),
    # --- env ----------------------------------------------------------------------------------------
    "ENV_IS_FILE": Message(
        "the environment path {env} is a file, not a folder",
        "move it away (`mv {env} {env}.bak`) or set UV_PROJECT_ENVIRONMENT to another folder",
    ),
    "ENV_BROKEN_LINK": Message(
        "the environment path {env} is a symbolic link to {target}, which does not exist",
        "recreate the target folder (`mkdir -p {target}`) or remove the link (`rm {env}`)",
    ),
    "ENV_NOT_A_VENV": Message(
        "{env} exists but is not a virtual environment (no pyvenv.cfg)",
        "move it away (`mv {env} {env}.bak`); uvkernel will create a new env there",
    ),
    "ENV_OTHER_INTERPRETER": Message(
        "{env} was made from another interpreter ({env_python}) than the host ({host_python})",
        "uvkernel does not delete envs. Keep it under another name and let uvkernel build a new one: "
        "`mv {env} {env}.old` (or choose that interpreter as host: `--host-python {env_python}`)",
    ),
    "ENV_NOT_READABLE": Message(
        "the environment {env} belongs to {owner} and cannot be read by you ({detail}); uvkernel neither uses "
        "nor changes another user's env",
        "use an env of your own for this project: `export UV_PROJECT_ENVIRONMENT=$HOME/.venvs/{name}` in the "
        "environment that starts Jupyter (or the terminal), then start the kernel again",
    ),
    "ENV_NOT_WRITABLE": Message(
        "cannot create the environment at {env}: {detail}",
        "make the folder writable, or set UV_PROJECT_ENVIRONMENT to a writable folder",
    ),
    "DISK_FULL": Message(
        "no space left on the device while uvkernel {step} ({env})",
        "free some space there (df -h shows the file system), or set UV_PROJECT_ENVIRONMENT to a folder on another "
        "disk; the next start resumes where this one stopped and keeps what is installed",
    ),
    "LOCK_TIMEOUT": Message(
        "another start has been preparing {env} for more than {timeout} seconds",
        "wait for it to finish, or remove a stale lock file: `rm {lock}`",
    ),
    "LOCK_UNSUPPORTED": Message(
        "the file system holding uvkernel's lock {lock} does not support file locks ({detail}); concurrent starts "
        "of {env} cannot be kept apart there",
        "keep uvkernel's cache on a local disk: set cache_dir in the kernel spec (`uvkernel install --user --set "
        "cache_dir=/path/on/local/disk`), or XDG_CACHE_HOME for the Jupyter server; the cache now is {folder}",
    ),
    # --- dependencies -------------------------------------------------------------------------------
    "DEPENDENCY_CONFLICT": Message(
        "the project needs {requirement}, but the host provides {provides}; nothing was installed",
        "choose one: (1) loosen the requirement in {root}/pyproject.toml so it accepts {host_version}; "
        "(2) use a host interpreter whose {name} matches: `uvkernel install --user --host-python /path/to/python`; "
        "(3) give the project its own {name} on purpose, shadowing the host's: `uvkernel install --user "
        "--set allow_shadowing={allow}` (or add it to allow_shadowing in the kernel spec's provisioner config); "
        "(4) use the host's {name} {host_version} anyway and list the unmet pin in the report: `uvkernel install "
        "--user --set host_version_conflicts='\"warn\"'`, or for every user of this project, "
        "host_version_conflicts = \"warn\" under [tool.uvkernel] in {root}/pyproject.toml",
    ),
    "DEPENDENCY_CONFLICT_TRANSITIVE": Message(
        "the project's dependencies need other versions of packages the host provides ({names}); "
        "nothing was installed",
        "choose one: (1) require versions that work with the host's (uv's explanation above names the package "
        "that pulls in the other version: pin it in {root}/pyproject.toml); (2) use a host interpreter with "
        "matching versions: `uvkernel install --user --host-python /path/to/python`; (3) give the project its own "
        "copy on purpose, shadowing the host's: `uvkernel install --user --set allow_shadowing={allow}`",
    ),
    "LOCK_CONFLICTS_WITH_HOST": Message(
        "{root}/uv.lock pins versions that do not work with the host's packages; nothing was installed",
        "lock against the host's versions: add constraint-dependencies = [{constraints}] under [tool.uv] in "
        "{root}/pyproject.toml and run `uv lock` there (uvkernel never edits either file)",
    ),
    "LOCK_INVALID": Message(
        "{path} cannot be read as a uv lock file ({detail})",
        "regenerate it with `uv lock` in its folder (uvkernel reads uv.lock but never writes it)",
    ),
    "SOURCE_NOT_FOUND": Message(
        "a source the project declares does not exist: {source}",
        "fix the source at {where} (or create the folder it names); uvkernel never edits pyproject.toml",
    ),
    "SOURCE_UNREACHABLE": Message(
        "uv could not reach a source or index the project declares{source_text}",
        "check the address and your network or credentials (uv's message above says what failed){where_text}; "
        "nothing was installed from it",
    ),
    "SOURCE_FOR_UNKNOWN_PACKAGE": Message(
        "{where} declares a workspace source for {name}, but the workspace at {root} has no member named {name}",
        "add the member to [tool.uv.workspace] members in {root}/pyproject.toml, or correct the source",
    ),
    "PACKAGE_NOT_AVAILABLE_OFFLINE": Message(
        "uv is offline and a package or source the project needs is not in uv's cache, the find-links folders or "
        "the local index (uv's message below names it); this is not a version conflict",
        "add its wheel to your wheelhouse (UV_FIND_LINKS), or run once with network access (without UV_OFFLINE or "
        "--offline) so uv's cache holds it",
    ),
    "UV_CONFIG_INVALID": Message(
        "uv refuses the project's {path}",
        "fix the file as uv's message below says (`uv sync --dry-run` in {root} shows the same error)",
    ),
    "COMPANION_BUILD_UNAVAILABLE": Message(
        "the env would get {names}, built for another torch than the host's {torch}, and builds for +{variant} "
        "could not be had from {index}; the kernel was not started",
        "provide the +{variant} builds: declare the index for them in pyproject.toml ([[tool.uv.index]] with "
        "explicit = true and {first} = {{ index = \"...\" }} under [tool.uv.sources]), or put the wheels in a "
        "find-links folder (UV_FIND_LINKS) and set companion_index to it (`uvkernel install --user --set "
        "companion_index='\"/path/to/wheels\"'`); the builds needed: {pins}",
    ),
    "BUILD_FAILED": Message(
        "uv could not build {package} from source for the env (uv's reason is below); this is not a version "
        "conflict with the host",
        "read uv's message: a build usually needs a system library or compiler, or a release of {package} that "
        "ships a wheel for this Python; `uv pip install {package}` in any venv shows the same failure",
    ),
    "DEPENDENCIES_UNRESOLVABLE": Message(
        "uv could not resolve the project's dependencies (with or without the host's packages)",
        "fix the requirements in {root}/pyproject.toml (uv's message above names the conflict)",
    ),
    "DEPENDENCY_TABLE_INVALID": Message(
        "{path}: {detail}",
        "fix that table (uvkernel never edits pyproject.toml), then start the kernel again",
    ),
    "REQUIREMENT_INVALID": Message(
        "the project at {root} lists a requirement that is not valid: {requirement}",
        "fix it in {root}/pyproject.toml (PEP 508 syntax, e.g. numpy>=1.26)",
    ),
    "DEPENDENCY_SELECTION_MISSING": Message(
        "the project at {root} has no {kind} named {name} (it has: {available})",
        "correct {setting} in the kernel spec's provisioner config (`uvkernel install --user --set {setting}=...`)",
    ),
    # --- uvkernel unshadow (not errors: what the command did) ----------------------------------------------
    "UNSHADOW_NONE": Message(
        "no package in {env} hides a host package",
        "nothing to do",
    ),
    "UNSHADOW_DRY_RUN": Message(
        "{count} package(s) in {env} hide host packages; dry run, nothing removed",
        "remove them: `uvkernel unshadow {project}`",
    ),
    "UNSHADOW_DONE": Message(
        "removed {count} package(s) from {env}; the host's copies are used again",
        "verify: `uvkernel check {project}`",
    ),
    "UNSHADOW_NO_ENV": Message(
        "there is no env at {env} yet",
        "nothing to do: a kernel start (or `uvkernel check {project}`) creates it without shadowing copies",
    ),
    "UNSHADOW_BROKEN": Message(
        "some env packages require versions other than the host's now-visible copies",
        "reinstall them at versions that fit the host, e.g. from the notebook: `!uv pip install 'PACKAGE'` "
        "(the kernel's uv keeps host packages out), or add the host package to allow_shadowing",
    ),
    "UNSHADOW_FAILED": Message(
        "uv could not remove the shadowing packages from {env} (exit status {returncode})",
        "read uv's message above; the env is unchanged where uv failed",
    ),
    # --- from a terminal: uvkernel sync / run / add / remove (terminal.py, project_edit.py) ----------------
    "PROJECT_DIR_MISSING": Message(
        "the folder {path} does not exist",
        "give an existing folder: `uvkernel {command} --project /path/to/project`",
    ),
    "NOT_A_PROJECT": Message(
        "{path} is not in a uv project (no pyproject.toml with a [project] table there or in a folder above)",
        "make it one with `uv init --bare {path}`, or give the project's folder: "
        "`uvkernel {command} --project /path/to/project`",
    ),
    "RUN_NO_COMMAND": Message(
        "uvkernel run needs the command to run",
        "give it after --, e.g. `uvkernel run -- python train.py`",
    ),
    "RUN_COMMAND_FAILED": Message(
        "the command {command} could not be started: {detail}",
        "check its name (it is looked up on PATH: {env}/bin first, then the host's bin folder, then the rest)",
    ),
    "INTERRUPTED": Message(
        "interrupted (Ctrl-C) while uvkernel was preparing the env for {project}",
        "nothing is lost: run `uvkernel sync --project {project}` again (or start the kernel); it resumes where "
        "this run stopped",
    ),
    "PACKAGE_NOT_FOUND": Message(
        "the package index has no package named {names}; nothing was recorded",
        "check the spelling (the names pip and uv take, as listed on https://pypi.org), then run "
        "`uvkernel add` again",
    ),
    "REMOVE_UNINSTALL_FAILED": Message(
        "uv recorded the removal, but could not uninstall {names} from the env {env} (exit status {returncode}); "
        "pyproject.toml and uv.lock no longer name them",
        "read uv's message above, then uninstall them yourself: `uv pip uninstall --python {python} {names}`",
    ),
    "CHANGE_FAILED": Message(
        "uv refused to record the change (`uv {verb}` exited with status {returncode}); nothing was recorded",
        "read uv's message above; pyproject.toml and uv.lock are as they were before",
    ),
    "FOREIGN_UVKERNEL": Message(
        "warning: another distribution ({names}) owns the uvkernel package and command in {prefix}, beside "
        "jupyter-uvkernel (this project); whichever was installed last overwrote the other's files",
        "remove it and reinstall this one: `{python} -m pip uninstall -y {uninstall}` and then "
        "`{python} -m pip install --force-reinstall jupyter-uvkernel`",
    ),
    # --- kernel spec --------------------------------------------------------------------------------
    "KERNEL_NAME_INVALID": Message(
        "{name!r} is not a valid kernel name: use lowercase letters, digits, '.', '_' and '-' (not dots alone)",
        "choose another name: `uvkernel install --name my-kernel`",
    ),
    "KERNEL_ENV_INVALID": Message(
        "--env {key!r} {value!r} cannot be an environment variable of the kernel: {problem}; every start of "
        "the kernel would fail",
        "give the name and the value as two words: `uvkernel install --user --env NAME VALUE` (e.g. --env "
        "CUDA_VISIBLE_DEVICES 0)",
    ),
    "CONNECTION_FILE_INVALID": Message(
        "the connection file {path} cannot be used: {problem}",
        "let Jupyter start the kernel (it writes the connection file), or give a file it wrote: `uvkernel kernel "
        "-f /path/to/kernel-1234.json` (a path that does not exist yet gets a new connection file)",
    ),
    "KERNEL_NOT_FOUND": Message(
        "no kernel spec named {name} was found{where}",
        "list the installed ones with: `uvkernel list`",
    ),
    "KERNEL_SPEC_INVALID": Message(
        "{spec} cannot be read as a kernel spec: {detail}",
        "fix the file, or write it again: `uvkernel install --user --name {name}`",
    ),
    "PROJECT_CONFIG_INVALID": Message(
        "{spec} is invalid (the problems are listed below)",
        "correct [tool.uvkernel] in that pyproject.toml (same names and types as the kernel spec's settings)",
    ),
    "PROJECT_SETTING_REFUSED": Message(
        "[tool.uvkernel] in {path} sets {keys}, which a project may not set (a cloned repository must not "
        "choose programs, folders or time limits)",
        "remove {keys} from [tool.uvkernel] in {path}; to set it for yourself, use the kernel spec: "
        "`uvkernel install --user --set {first}=...`",
    ),
    "CONFIG_INVALID": Message(
        "the provisioner config in {spec} is invalid (the problems are listed below)",
        "edit {spec} (metadata.kernel_provisioner.config), or reinstall it: `uvkernel install --user`",
    ),
    "JUPYTER_CONFIG_INVALID": Message(
        "the uvkernel settings in the Jupyter configuration (c.{section}.*) are invalid (the problems are listed "
        "below); they were ignored",
        "correct c.{section}.<setting> in your jupyter_server_config.py (`jupyter --paths` lists the config "
        "folders), then restart the Jupyter server",
    ),
    # --- preflight (codes from preflight/policy.py and preflight/runner.py) ---------------------------
    "TORCH_NOT_FOUND": Message(
        "{package} is not importable from the host interpreter {host_python}{elsewhere}",
        "install it into the host: `{host_python} -m pip install {package}` (or remove {package} from "
        "required_packages in the kernel spec)",
    ),
    "TORCH_SHADOWED": Message(
        "{package} in the kernel would come from {found} ({origin}), which hides the host's copy {host}",
        "{remedy}",
    ),
    "LOCAL_MODULE_SHADOWS": Message(
        "{path} in the notebook's folder would be imported instead of the host's {package} (the kernel puts "
        "its working folder first on sys.path)",
        "rename it so it no longer uses that name, e.g.: `mv {path} {folder}/my_{package}_notes` (and delete "
        "{folder}/__pycache__ if it holds a {package} entry)",
    ),
    "NVIDIA_SHADOWED": Message(
        "the env has its own, different copies of NVIDIA libraries the host's torch loads: {names}",
        "remove the env's copies and keep the host's: `uvkernel unshadow {project}`",
    ),
    "TORCH_NOT_CUDA_BUILD": Message(
        "the host's torch {version} is a {build}, but CUDA is required ({why})",
        "install a CUDA build of torch into the host (`{host_python} -m pip install --force-reinstall torch "
        "--index-url https://download.pytorch.org/whl/cu128`), or set require_cuda to auto in the kernel spec",
    ),
    "NO_DRIVER": Message(
        "no NVIDIA driver is reachable from the kernel: {detail_line}",
        "run on a machine or container with the NVIDIA driver (`nvidia-smi` must work there; containers: "
        "`docker run --gpus all`, or the NVIDIA container toolkit), or set require_cuda to false",
    ),
    "NO_DEVICE_FILES": Message(
        "the NVIDIA device files are not usable: {problem}",
        "give the kernel access to {dev}/nvidia* (containers: `docker run --gpus all`; on a host: add the user "
        "to the group that owns them, e.g. `sudo usermod -aG video $USER`, then log in again)",
    ),
    "DRIVER_TOO_OLD": Message(
        "the NVIDIA driver {driver} supports CUDA up to {driver_cuda}, but torch was built for CUDA {torch_cuda}",
        "upgrade the NVIDIA driver to one that supports CUDA {torch_cuda}, or install a torch built for CUDA "
        "{driver_cuda} or older into the host (https://download.pytorch.org/whl/ lists the builds)",
    ),
    "DRIVER_MISMATCH": Message(
        "the NVIDIA kernel module and the user-space driver library do not match ({nvml_error})",
        "this follows a driver upgrade without a reboot: reboot the machine (or reload the nvidia kernel "
        "modules); nvidia-smi shows the same error until then",
    ),
    "NO_GPU": Message(
        "the NVIDIA driver {driver} is loaded but reports no GPU",
        "check the machine's GPUs with `nvidia-smi` (a container needs --gpus all), or set require_cuda to false",
    ),
    "NO_VISIBLE_DEVICES": Message(
        "the driver sees {driver_devices} GPU(s), but CUDA_VISIBLE_DEVICES={cvd} hides every one from the kernel",
        "unset CUDA_VISIBLE_DEVICES, or set it to valid indices (e.g. 0) or UUIDs (e.g. {first_uuid}) in the "
        "kernel spec's env (`uvkernel install --env CUDA_VISIBLE_DEVICES 0`) or the server's environment",
    ),
    "TOO_FEW_GPUS": Message(
        "the kernel sees {visible} GPU(s), but min_gpus is {min_gpus}",
        "run on a machine with more GPUs, widen CUDA_VISIBLE_DEVICES, or lower min_gpus in the kernel spec "
        "(`uvkernel install --set min_gpus={visible}`)",
    ),
    "ARCH_UNSUPPORTED": Message(
        "GPU {device} has compute capability {capability}, which this torch build has no kernels for "
        "(built for: {arch_list})",
        "install a torch build that supports compute capability {capability} into the host (usually a newer CUDA "
        "build: https://download.pytorch.org/whl/ lists them)",
    ),
    "TORCH_IMPORT_FAILED": Message(
        "import {package} failed in the kernel's environment: {error}",
        "check the libraries {package} loads (LD_LIBRARY_PATH, nvidia-* wheels in the env); the full report "
        "lists them: `uvkernel check {project} --recheck`",
    ),
    "CUDA_INIT_FAILED": Message(
        "torch could not initialise CUDA: {error}",
        "run `nvidia-smi` to check the driver; after a suspend, reload nvidia_uvm (`sudo rmmod nvidia_uvm && "
        "sudo modprobe nvidia_uvm`) or reboot",
    ),
    "PROBE_TIMEOUT": Message(
        "the preflight check did not finish within {timeout} seconds and was stopped (it was at: {stage})",
        "check for a hung GPU or driver (nvidia-smi), or raise preflight_timeout in the kernel spec "
        "(`uvkernel install --set preflight_timeout=300`)",
    ),
    "PROBE_FAILED": Message(
        "the preflight check could not run in the kernel's environment: {detail_line}",
        "run `uvkernel check {project} --recheck` to see the full report",
    ),
    "COMPANION_BUILD_MISMATCH": Message(
        "{package} {version} in the env ({build}) cannot load on the host's torch {torch_version} ({torch_build}): "
        "{error}",
        "install the {package} build made for the host's torch{index_phrase}: `{command}`{sources_hint}; "
        "or start anyway without it working: `uvkernel install --user --set allow_companion_mismatch='[\"{package}\"]'` "
        "(or allow_companion_mismatch = [\"{package}\"] under [tool.uvkernel] in the project's pyproject.toml)",
    ),
    "KERNEL_NOT_STARTED": Message(
        "this cell was not run: the kernel could not be started",
        "fix the problem above (if none is shown, the server log has it), then restart the kernel "
        "(in JupyterLab: Kernel menu, Restart Kernel)",
    ),
    # --- the last line of defence: an exception uvkernel did not expect ------------------------------
    "INTERNAL_ERROR": Message(
        "an unexpected error inside uvkernel while it {doing}: {error}",
        "this is a bug in uvkernel, not a problem with your project. The full traceback is in {log}; report it "
        "to the uvkernel maintainers (the project's issue tracker) with that traceback and the output of "
        "`uvkernel --version`. To show tracebacks here, set UVKERNEL_DEBUG=1 (for the CLI: `uvkernel --debug`)",
    ),
    "IPYKERNEL_MISSING": Message(
        "ipykernel is not importable from the kernel's environment",
        "let uvkernel install it (install_ipykernel = true), or install it into the host: "
        "`{host_python} -m pip install ipykernel`",
    ),
    # --- the per-user cache (uvkernel envs / gc) --------------------------------------------------------
    "GC_OLDER_THAN_INVALID": Message(
        "--older-than {value!r} is not a number of days",
        "give a number of days, e.g. `uvkernel gc --older-than 30` (or `--older-than 0.5` for twelve hours)",
    ),
    "NO_STALE_SPECS": Message(
        "no uvkernel kernel spec has a missing host interpreter",
        "nothing to remove; `uvkernel list` shows the installed specs",
    ),
    # --- what uvkernel writes, reads and removes stays where it belongs ---------------------------------
    "CACHE_DIR_UNSAFE": Message(
        "uvkernel's private folder {path} cannot be used: {problem}; another user could change what the kernel "
        "runs, so nothing was started from it",
        "make it a folder only you own and enter: `{fix_command}` (check what is inside first), or keep the cache "
        "elsewhere: `uvkernel install --user --set cache_dir=/path/only/you/use`",
    ),
    "CACHE_DIR_NOT_FOLDER": Message(
        "uvkernel's cache folder {path} is {kind}, not a folder; nothing was created or changed there",
        "set cache_dir to a folder only you use: `uvkernel install --user --set cache_dir='\"/path/only/you/use\"'` "
        "(or remove cache_dir to use the default)",
    ),
    "CACHE_ENV_LINK": Message(
        "the cache env {env} is a symbolic link (to {target}); uvkernel uses only envs it created itself",
        "remove the link (`rm {env}`, the folder it leads to is kept); the next start creates the env there",
    ),
    "ENV_LINK_OUTSIDE": Message(
        "the env is a link to {target}, outside the project {root} ({env} leads there)",
        "if you did not make that link, remove it (`rm {env}`) and start again; uvkernel then creates the env "
        "inside the project",
    ),
    "PROJECT_FILE_NOT_REGULAR": Message(
        "{path} is {kind}, not a regular file; uvkernel reads project files only when they are regular files",
        "replace it with a regular file, or remove it (`rm {path}`), then start the kernel again",
    ),
    "PROJECT_FILE_TOO_LARGE": Message(
        "{path} is too large for a project file ({size} bytes; uvkernel reads at most {limit})",
        "check the file (`ls -l {path}`): a real pyproject.toml, uv.toml or uv.lock is far smaller; replace it, "
        "then start the kernel again",
    ),
    "PROJECT_SCAN_TIMEOUT": Message(
        "uvkernel did not finish {what} within {timeout} seconds; the start was stopped so the server keeps "
        "answering",
        "check the project folder's file system (`ls -la` in it; a hung network mount or a huge workspace glob "
        "in [tool.uv.workspace] members), then start the kernel again",
    ),
    "TRUST_REQUIRED": Message(
        "the project {root} is not trusted yet{changed}; with require_trust = true, uvkernel builds and installs a "
        "project (which runs its build backend and any source distribution's build) only after you trust it",
        "read its dependency files ({files}), then trust them: `uvkernel trust {root}`",
    ),
    "TRUST_RECORDED": Message(
        "trusted {root} as its dependency files are now ({files})",
        "a change to any of them asks again; take the trust back with `uvkernel trust --revoke {root}`",
    ),
    "TRUST_REVOKED": Message(
        "{root} is no longer trusted",
        "trust it again with `uvkernel trust {root}`",
    ),
    "TRUST_NOT_RECORDED": Message(
        "{root} was not trusted; nothing to revoke",
        "trust it with `uvkernel trust {root}`",
    ),
    "HOST_PACKAGE_COPIED": Message(
        "the host's {name} {version} requires {requirement}, which the env's {dep} {dep_version} (the project's) "
        "does not meet: the env has its own {name}",
        "nothing to do: the host's copy is untouched and serves every other env",
    ),
    "HOST_PACKAGE_BROKEN_BY_ENV": Message(
        "the host's {name} {version} requires {requirement}, but the env holds {dep} {dep_version} for the "
        "project, and no release of {name} in the host's major version accepts it with the rest of the env as it "
        "is (or uv could not say in time, or it did not install): importing {name} in this kernel may fail",
        "if the notebook needs {name}, `uvkernel add '{requirement}'` makes the project take a {dep} that {name} "
        "accepts (uv says so if the project cannot), or add {name} to the project so that uv resolves both",
    ),
    "EDIT_NOT_RESTORED": Message(
        "{path} changed while uvkernel {verb} ran (not by uv): it was left as it is now, not put back",
        "compare it with the copy from before the command, `diff {backup} {path}`, and keep what you want "
        "(`cp {backup} {path}` puts the old one back)",
    ),
    "EDIT_STILL_RUNNING": Message(
        "uv (pid {pid}), started by an interrupted `uvkernel {verb}` in {root}, was still writing pyproject.toml "
        "and uv.lock after {timeout} seconds; uvkernel puts back what it wrote once it ends",
        "wait for it to end, or stop it (`kill {pid}`), then run the command again",
    ),
    "EDIT_RECOVERED": Message(
        "an earlier `uvkernel {verb}` in {root} was interrupted; {outcome}",
        "check the project's files (`git diff` in {root}); the copies from before that command are in {backup}",
    ),
}


# code -> a notice's template (str.format with its fields), one line each.  A notice is no failure: it is shown
# without its code, and says itself what the user may do about it.
NOTICES: dict[str, str] = {
    # --- the preflight: the kernel starts, with these said about the host stack --------------------------
    "PREFLIGHT_DISABLED": "preflight disabled (preflight = false)",
    "PREFLIGHT_CACHE_UNWRITABLE": "the preflight cache could not be written: {error}",
    "SHADOWING_ALLOWED": "{name} comes from {location} ({origin}), not the host: allowed by allow_shadowing",
    "NVIDIA_SAME_VERSION_COPY": "the env has its own copy of {names} (same version as the host's)",
    "CUDA_NOT_CHECKED": "CUDA is not checked (require_cuda = false)",
    "TORCH_WITHOUT_CUDA": "torch {version} is a {build}: the kernel runs without CUDA (require_cuda = auto)",
    "CUDA_BUILD_WITHOUT_GPU": "torch {version} is a CUDA {cuda} build, but {reason}: the kernel runs without a GPU "
                              "(require_cuda = auto; set it to true to make this an error)",
    "NVIDIA_UVM_MISSING": "{dev}/nvidia-uvm does not exist yet (CUDA creates it on first use through "
                          "nvidia-modprobe; if CUDA then fails, load the nvidia_uvm module)",
    "CUDA_MINOR_VERSION_COMPATIBILITY": "torch was built for CUDA {torch_cuda}, the driver {driver} supports CUDA "
                                        "{driver_cuda}: this works through CUDA minor version compatibility, but code "
                                        "compiled at run time (PTX) may fail; a newer driver avoids it",
    "MIG_MODE": "GPU {index} ({name}) is in MIG mode: CUDA uses one MIG instance at a time; choose one with "
                "CUDA_VISIBLE_DEVICES=MIG-... (instances: {uuids})",
    "COMPANION_MISMATCH_ALLOWED": "{name} {version} was not loaded: allowed by allow_companion_mismatch (it may not "
                                  "work on the host's torch)",
    "PROBE_SECTION_UNREAD": "the probe could not read {section}: {error}",
    "COMPANION_SYSTEM_LIBRARIES_MISSING": "{name} {version}: some of its optional native modules need {libraries}, "
                                          "which this system lacks (a system library, not a mismatch with torch); "
                                          "install it with the system's package manager if you use that feature",
    # --- the project and its env -----------------------------------------------------------------------------
    "MEMBER_VENV_UNUSED": "{member_env} is left from before: uv (and uvkernel) use the workspace's env at "
                          "{workspace_env}; the member's own .venv is not used and not deleted",
    "LOCK_OUT_OF_DATE": "{lock} is out of date with pyproject.toml: resolved again, preferring its versions as "
                        "`uv lock` would; run `uv lock` in {where} to update it (uvkernel never writes it)",
    "DYNAMIC_DEPENDENCIES": "[project].dependencies is dynamic: uvkernel installs only what pyproject.toml lists",
    "PROJECT_NOT_MANAGED": "{pyproject} sets managed = false under [tool.uv]: its dependencies are yours to install "
                           "(pip's install magic in the kernel keeps the host's packages)",
    "NO_LOCK_RESOLVED": "no uv.lock: resolved against the host (kept in uvkernel's cache, not in the project)",
    "UNMET_PIN": "the project requires {requirement}, the host provides {name} {host_version}: the host's copy is "
                 "used (host_version_conflicts = warn)",
    "ENV_HIDES_HOST_PACKAGES": "warning: the env has its own copies of host packages ({names}); remove them with "
                               "`uvkernel unshadow {folder}`",
    # --- uvkernel add / remove -----------------------------------------------------------------------------
    "EDIT_FILES_RESTORED": "pyproject.toml and uv.lock are back as they were before this command (byte for byte)",
    "EDIT_NOTHING_RECORDED": "nothing was recorded: pyproject.toml and uv.lock are unchanged",
    "EDIT_WAITING_FOR_UV": "an earlier `uvkernel {verb}` in {root} was interrupted while uv (pid {pid}) still ran: "
                           "waiting for it to end (at most {timeout} s) before putting the files back",
    "EDIT_ROLLED_BACK": "its changes were rolled back (pyproject.toml and uv.lock are as before it)",
    "EDIT_PARTLY_ROLLED_BACK": "what uv wrote was rolled back where the file still held it",
    # --- the listing commands (uvkernel list / envs) ---------------------------------------------------------
    "NO_SPECS_INSTALLED": "No uvkernel kernel specs installed. Install one with: uvkernel install --user",
    "STALE_SPECS_LISTED": "Stale specs cannot start a kernel; remove them with: uvkernel uninstall --stale",
    "GONE_FOLDERS_LISTED": "Remove the envs of folders that are gone with: uvkernel gc",
    # --- settings --------------------------------------------------------------------------------------------
    "SETTINGS_VAR_NOT_OBJECT": "warning: ${var} is not a JSON object; using the default settings",
}


def notice(code: str, **fields: Any) -> str:
    """A notice from the catalogue, filled with its fields."""
    return fill(NOTICES[code], fields)


def note(code: str, **fields: Any) -> str:
    """A catalogue message as one line of text, for notices that are not errors (reports, terminal output)."""
    message = MESSAGES[code]
    return f"{fill(message.summary, fields)} [{code}]. {fill(message.fix, fields)}"


class UvkernelError(Exception):
    """Base of every error uvkernel reports to a user.

    ``facts`` are shown as indented ``name: value`` lines; ``detail`` is extra text such as a tool's output.
    """

    def __init__(
        self,
        code: str,
        *,
        facts: Mapping[str, Any] | Iterable[tuple[str, Any]] = (),
        detail: str = "",
        **fields: Any,
    ) -> None:
        self.code = code
        self.fields = fields
        self.facts = list(facts.items()) if isinstance(facts, Mapping) else list(facts)
        self.detail = detail
        message = MESSAGES.get(code)
        if message is None:  # a programming error, still say something useful
            message = Message(code.replace("_", " ").lower(), "see the server log")
        if "{detail}" in message.summary + message.fix:
            # short details go into the summary itself rather than a block below it
            self.detail = ""
            fields = {**fields, "detail": detail}
        self.summary = fill(message.summary, fields)
        self.fix = fill(message.fix, fields)
        super().__init__(self.render())

    def render(self) -> str:
        lines = [f"uvkernel: {self.summary} [{self.code}]"]
        for name, value in self.facts:
            lines.append(f"  {name}: {value}")
        if self.detail:
            lines.append("")
            lines.extend("  " + line for line in self.detail.rstrip().splitlines())
        lines.append("")
        lines.append(f"How to fix: {self.fix}")
        return "\n".join(lines).replace("%", " percent")

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "summary": self.summary,
            "facts": {str(k): v for k, v in self.facts},
            "detail": self.detail,
            "fix": self.fix,
        }


class HostError(UvkernelError):
    """The host interpreter cannot be used."""


class ProjectError(UvkernelError):
    """The notebook's project cannot be read."""


class EnvError(UvkernelError):
    """The env cannot be created, reused or repaired."""


class UvError(UvkernelError):
    """uv is missing or failed."""


class DependencyError(UvkernelError):
    """The project's dependencies cannot be installed without breaking the host stack."""


class PreflightError(UvkernelError):
    """The host stack is not usable from the env; carries the preflight result."""

    def __init__(self, code: str, *, result: Any = None, **kwargs: Any) -> None:
        self.result = result
        super().__init__(code, **kwargs)


class SpecError(UvkernelError):
    """A kernel spec or its config is wrong."""


class InternalError(UvkernelError):
    """An exception uvkernel did not expect, wrapped so that users get a code, where the traceback is, and
    how to report it, instead of a bare traceback (or, in JupyterLab, a bare exception text)."""


DEBUG_ENV = "UVKERNEL_DEBUG"


def debug_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """UVKERNEL_DEBUG=1 (any value but empty, 0, false, no, off): show tracebacks where users see messages."""
    value = (os.environ if environ is None else environ).get(DEBUG_ENV, "")
    return value.strip().lower() not in ("", "0", "false", "no", "off")


def internal_error(exc: BaseException, *, doing: str, log: str, traceback_text: str = "") -> InternalError:
    """The INTERNAL_ERROR for ``exc``; ``traceback_text`` (the caller's, in debug mode) is part of the message.
    The caller formats it: the traceback module costs every CLI start ~15 ms to import."""
    text = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
    if len(text) > 300:
        text = text[:297] + "..."
    error = InternalError("INTERNAL_ERROR", doing=doing, error=text.replace("\n", " "), log=log,
                          detail=traceback_text)
    error.__cause__ = exc
    return error


class CacheError(UvkernelError):
    """The per-user cache cannot be listed or cleaned as asked."""


class _Defaulting(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def fill(template: str, fields: Mapping[str, Any]) -> str:
    try:
        return template.format_map(_Defaulting(fields))
    except (ValueError, IndexError, KeyError, AttributeError):
        return template
