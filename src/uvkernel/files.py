"""uvkernel's own files and folders, and the project files it reads, handled so that nobody else's can be hit.

* Writing: whole or not at all (a concurrent start reads the old file or the new one, never half of one), through
  a temporary file created exclusively beside the target (never an existing name, never through a link), renamed
  over the target only when the target is not a link.  A mode is set on that new file's descriptor, so a chmod
  never reaches a file uvkernel did not just create.  A cloned repository may ship a ``.venv`` whose fixed names
  are links to the user's files; none of them is written through.
* Private folders (the cache root and the folders in it): real folders, owned by the user, mode 0700, or refused
  with the command that fixes them.  Never chmod-ed quietly: a folder another user made first (a shared cache
  disk) stays theirs, and uvkernel refuses to use it.
* Reading project input (pyproject.toml, uv.toml, uv.lock, .python-version, kernel.json): regular files only,
  with a size cap; a FIFO or a device (``/dev/zero``) is refused with a coded error instead of blocking or
  exhausting the server.
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable, TypeVar

# Larger than any real pyproject.toml or uv.lock (a 1000-package lock is a few MiB), small enough to read at once.
INPUT_LIMIT = 32 * 1024 * 1024

T = TypeVar("T")

# The folders of the cache root uvkernel keeps to itself (envs, liveness markers, logs, kept resolutions, locks,
# add/remove backups and journals, built editables that are installed into envs, the projects the user trusts).
# Its bin/ (the kernel's `uvkernel` command) may be readable by others.
CACHE_FOLDERS = ("envs", "running", "logs", "resolutions", "locks", "edits", "editables", "trust")


def write_atomic(path: Path, text: str | bytes, *, private: bool = False, make_parent: bool = False,
                 mode: int | None = None, durable: bool = False) -> None:
    """Write ``text`` to a new temporary file beside ``path``, then rename it over ``path``.

    ``private``: readable by its owner only (the per-user cache); ``mode``: the new file's mode (an executable
    script); ``make_parent``: create the folder first, as a private folder (:func:`private_dir`); ``durable``: on
    disk before this returns, the file and its new name both (a power loss leaves the old file or the new one, as
    a journal needs), at the cost of two fsyncs.  Raises
    OSError, ELOOP when ``path`` is a symbolic link (callers decide whether a failed write matters)."""
    if make_parent:
        private_dir(path.parent)
    _refuse_link(path)
    # mkstemp: O_CREAT|O_EXCL with a random name, so no planted name (or link) is ever opened
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".uvkernel-tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(text.encode() if isinstance(text, str) else text)
            if mode is not None:
                os.fchmod(fh.fileno(), mode)
            elif not private:
                os.fchmod(fh.fileno(), 0o666 & ~_umask())  # mkstemp makes 0600; other files keep the usual mode
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        _refuse_link(path)  # a link planted while the file was written
        os.replace(tmp, path)
        if durable:
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _refuse_link(path: Path) -> None:
    if os.path.islink(path):
        raise OSError(errno.ELOOP, f"{path} is a symbolic link; uvkernel does not write through links "
                                   f"(remove it: rm {path})", str(path))


_UMASK: int | None = None


def _umask() -> int:
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0o022)
        os.umask(_UMASK)
    return _UMASK


# --- private folders ---------------------------------------------------------------------------------------------

def private_dir(path: Path, *, readable: bool = False) -> None:
    """Make sure ``path`` is a real folder owned by this user with mode 0700, creating it (and its missing
    parents, each 0700) when absent.  Raises :class:`errors.EnvError` CACHE_DIR_UNSAFE otherwise: a link, a
    file, a folder of another user or one others may enter is never chmod-ed into shape, it is refused with the
    fix.  ``readable``: others may read and enter it, never write (a folder of commands on the kernel's PATH)."""
    from .errors import EnvError

    try:
        missing = []
        folder = Path(os.path.abspath(path))
        while not os.path.lexists(folder) and folder != folder.parent:
            missing.append(folder)
            folder = folder.parent
        st = os.lstat(folder)
        if not stat.S_ISDIR(st.st_mode) and not stat.S_ISLNK(st.st_mode):
            # a file or a device (cache_dir = "/dev/null"): nothing to fix by moving it, the setting is wrong
            raise EnvError("CACHE_DIR_NOT_FOLDER", path=str(folder), kind=_kind(st.st_mode))
        for folder in reversed(missing):  # os.makedirs gives the parents it creates the default mode
            try:
                os.mkdir(folder, 0o700)
            except FileExistsError:
                pass  # made at the same time by a concurrent start; checked below
    except OSError as exc:
        raise EnvError("CACHE_DIR_UNSAFE", path=str(path), problem=f"it cannot be created ({exc.strerror or exc})",
                       fix_command=f"mkdir -m 700 -p {path}") from None
    problem = unsafe_reason(path, readable=readable)
    if problem:
        raise EnvError("CACHE_DIR_UNSAFE", path=str(path), problem=problem, fix_command=_fix_for(path, problem))


def unsafe_reason(path: Path, *, readable: bool = False) -> str:
    """Why ``path`` is not a private folder of this user ('' when it is one)."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        return f"it cannot be read ({exc.strerror or exc})"
    if stat.S_ISLNK(st.st_mode):
        return f"it is a symbolic link to {os.readlink(path)}"
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a folder"
    if st.st_uid != os.getuid():
        return f"it belongs to another user (uid {st.st_uid})"
    if stat.S_IMODE(st.st_mode) & (0o022 if readable else 0o077):
        return f"others may read or enter it (mode {stat.S_IMODE(st.st_mode):o}, uvkernel needs 700)"
    return ""


def _fix_for(path: Path, problem: str) -> str:
    if problem.startswith("others may"):
        return f"chmod 700 {path}"
    return f"mv {path} {path}.unsafe && mkdir -m 700 {path}"


def check_private_dirs(root: Path, names: tuple[str, ...]) -> None:
    """:func:`private_dir` for ``root``, and a check of each of its folders ``names`` that exists already."""
    private_dir(root)
    from .errors import EnvError

    for name in names:
        folder = root / name
        if os.path.lexists(folder):
            problem = unsafe_reason(folder)
            if problem:
                raise EnvError("CACHE_DIR_UNSAFE", path=str(folder), problem=problem,
                               fix_command=_fix_for(folder, problem))


def chmod_created(path: Path, mode: int = 0o700) -> None:
    """chmod a folder uvkernel itself just created (an env `uv venv` made): never through a link, never a folder
    of another user."""
    if os.path.islink(path):
        return  # a project .venv the user linked elsewhere: its folder is theirs, left as it is
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        if os.fstat(fd).st_uid == os.getuid():
            os.fchmod(fd, mode)
    finally:
        os.close(fd)


# --- reading project input ---------------------------------------------------------------------------------------

def read_input(path: Path, limit: int = INPUT_LIMIT) -> bytes:
    """The bytes of a project file uvkernel reads, as a regular file of at most ``limit`` bytes.

    Raises FileNotFoundError (and other OSErrors) as reading does, and :class:`errors.ProjectError`
    PROJECT_FILE_NOT_REGULAR / PROJECT_FILE_TOO_LARGE for a FIFO, a device, a socket or a huge file: opening
    a FIFO would wait for a writer, reading ``/dev/zero`` would never end."""
    from .errors import ProjectError

    st = os.stat(path)  # lstat's answer for a plain file; a link is judged by what it leads to
    if not stat.S_ISREG(st.st_mode):
        raise ProjectError("PROJECT_FILE_NOT_REGULAR", path=str(path), kind=_kind(st.st_mode))
    if st.st_size > limit:
        raise ProjectError("PROJECT_FILE_TOO_LARGE", path=str(path), size=st.st_size, limit=limit)
    # O_NONBLOCK: a file swapped for a FIFO between the stat and the open does not block the open
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ProjectError("PROJECT_FILE_NOT_REGULAR", path=str(path), kind=_kind(st.st_mode))
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            total += len(chunk)
            if total > limit:
                raise ProjectError("PROJECT_FILE_TOO_LARGE", path=str(path), size=f"more than {limit}", limit=limit)
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "not a regular file"


def is_regular(path: Path) -> bool:
    """Is ``path`` (or what its link leads to) a regular file?  Never opens it."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


# --- blocking work off the event loop ----------------------------------------------------------------------------

# Finding the project and hashing its files: far below a second on any real project.
SCAN_TIMEOUT = 60.0


async def off_loop(what: str, func: Callable[..., T], *args: Any, timeout: float = SCAN_TIMEOUT, **kwargs: Any) -> T:
    """Run blocking file work (reading project files, matching workspace globs) in a thread, so the server's
    event loop keeps answering; raise ProjectError PROJECT_SCAN_TIMEOUT when it takes longer than ``timeout``."""
    from .errors import ProjectError

    try:
        return await asyncio.wait_for(asyncio.to_thread(func, *args, **kwargs), timeout)
    except asyncio.TimeoutError:
        raise ProjectError("PROJECT_SCAN_TIMEOUT", what=what, timeout=int(timeout)) from None
