"""One family of exceptions, and every user-facing error text in one place.

Each error has a stable ``code``, a one-line summary, facts (``name: value`` lines) and the command or
step that fixes it.  Commands stand in backquotes: renderers keep them whole on one line (a command split
over lines breaks when pasted into a shell).  Texts avoid the percent sign: jupyter_server's REST layer doubles it.
"""

from __future__ import annotations

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
    # --- dependencies -------------------------------------------------------------------------------
    "DEPENDENCY_CONFLICT": Message(
        "the project needs {requirement}, but the host provides {name} {host_version}; nothing was installed",
        "choose one: (1) loosen the requirement in {root}/pyproject.toml so it accepts {host_version}; "
        "(2) use a host interpreter whose {name} matches: `uvkernel install --user --host-python /path/to/python`; "
        "(3) give the project its own {name} on purpose, shadowing the host's: `uvkernel install --user "
        "--set allow_shadowing={allow}` (or add it to allow_shadowing in the kernel spec's provisioner config)",
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
    # --- kernel spec --------------------------------------------------------------------------------
    "KERNEL_NAME_INVALID": Message(
        "{name!r} is not a valid kernel name: use lowercase letters, digits, '.', '_' and '-'",
        "choose another name: `uvkernel install --name my-kernel`",
    ),
    "KERNEL_NOT_FOUND": Message(
        "no kernel spec named {name} was found{where}",
        "list the installed ones with: `uvkernel list`",
    ),
    "CONFIG_INVALID": Message(
        "the provisioner config in {spec} is invalid (the problems are listed below)",
        "edit {spec} (metadata.kernel_provisioner.config), or reinstall it: `uvkernel install --user`",
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
    "KERNEL_NOT_STARTED": Message(
        "this cell was not run: the kernel could not be started",
        "fix the problem above (if none is shown, the server log has it), then restart the kernel "
        "(in JupyterLab: Kernel menu, Restart Kernel)",
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
}


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
        self.summary = _fill(message.summary, fields)
        self.fix = _fill(message.fix, fields)
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


class CacheError(UvkernelError):
    """The per-user cache cannot be listed or cleaned as asked."""


class _Defaulting(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _fill(template: str, fields: Mapping[str, Any]) -> str:
    try:
        return template.format_map(_Defaulting(fields))
    except (ValueError, IndexError, KeyError, AttributeError):
        return template
