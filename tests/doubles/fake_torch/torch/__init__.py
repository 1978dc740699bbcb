"""TEST DOUBLE of torch (uvkernel's test suite): not PyTorch.

Installed with a real dist-info by tests/doubles/fake_torch.py.  Its build facts live in version.py (written
at install time, read as text by the probe's cheap layer, like the real one); its run-time behaviour comes
from the UVKERNEL_FAKE_TORCH environment variable, a JSON object (see tests/doubles/README.md):

  import_log     file that gets one line per import ("import <pid>")
  import_error   raise ImportError with this text on import
  import_crash   die with SIGSEGV on import
  hang           "import" | "init": sleep there; a child process is started first and its pid written to
                 hang_pid_file, so a test can check the whole process group was killed
  init_error     torch.cuda.init() raises RuntimeError with this text
  devices        [{"name", "capability": "8.0", "total_memory", "multi_processor_count", "uuid"}]
                 what torch.cuda shows (after CUDA_VISIBLE_DEVICES)
  arch_list      torch.cuda.get_arch_list()
  cudnn          torch.backends.cudnn.version()
  kernel_error   the first CUDA operation raises RuntimeError with this text
"""

import json as _json
import os as _os

_CONFIG = _json.loads(_os.environ.get("UVKERNEL_FAKE_TORCH") or "{}")


def _log(event):
    path = _CONFIG.get("import_log")
    if path:
        with open(path, "a") as fh:
            fh.write("%s %d\n" % (event, _os.getpid()))


def _maybe_hang(where):
    if _CONFIG.get("hang") != where:
        return
    import subprocess
    import time

    child = subprocess.Popen(["sleep", "600"])
    if _CONFIG.get("hang_pid_file"):
        with open(_CONFIG["hang_pid_file"], "w") as fh:
            fh.write(str(child.pid))
    time.sleep(600)


_log("import")
_maybe_hang("import")
if _CONFIG.get("import_crash"):
    import signal as _signal

    _os.kill(_os.getpid(), _signal.SIGSEGV)
if _CONFIG.get("import_error"):
    raise ImportError(_CONFIG["import_error"])

from . import version  # noqa: E402,F401
from .version import __version__  # noqa: E402,F401
from . import backends, cuda  # noqa: E402,F401


class _Tensor(object):
    def __init__(self, values, device):
        self.values = list(values)
        self.device = device

    def __mul__(self, other):
        return _Tensor([v * other for v in self.values], self.device)

    def sum(self):
        return _Tensor([sum(self.values)], self.device)

    def item(self):
        return self.values[0]


def ones(n, device="cpu"):
    device = str(device)
    if device.startswith("cuda"):
        cuda._use(device)
    return _Tensor([1.0] * n, device)
