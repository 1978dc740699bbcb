"""TEST DOUBLE of torch.cuda, driven by UVKERNEL_FAKE_TORCH (see torch/__init__.py)."""

import warnings as _warnings

import torch as _torch

_CONFIG = _torch._CONFIG
_initialized = False


def _is_compiled():
    return _torch.version.cuda is not None


def init():
    global _initialized
    if not _is_compiled():
        raise AssertionError("Torch not compiled with CUDA enabled")
    _torch._maybe_hang("init")
    if _CONFIG.get("init_error"):
        raise RuntimeError(_CONFIG["init_error"])
    _initialized = True


def is_available():
    if not _is_compiled():
        return False
    try:
        init()
    except Exception as exc:  # like the real one: the reason becomes a warning
        _warnings.warn("CUDA initialization: %s" % exc)
        return False
    return device_count() > 0


def device_count():
    return len(_CONFIG.get("devices") or []) if _is_compiled() else 0


class _Properties(object):
    def __init__(self, spec):
        self.name = spec.get("name", "Fake GPU")
        self.major, self.minor = (int(x) for x in spec.get("capability", "8.0").split("."))
        self.total_memory = int(spec.get("total_memory", 80 * 2 ** 30))
        self.multi_processor_count = int(spec.get("multi_processor_count", 108))
        self.uuid = spec.get("uuid", "")


def get_device_properties(index):
    init()
    devices = _CONFIG.get("devices") or []
    if not 0 <= index < len(devices):
        raise AssertionError("Invalid device id")
    return _Properties(devices[index])


def get_device_capability(index=0):
    props = get_device_properties(index)
    return props.major, props.minor


def get_arch_list():
    return list(_CONFIG.get("arch_list") or []) if _is_compiled() else []


def _use(device):
    init()
    index = int(device.partition(":")[2] or 0)
    get_device_properties(index)
    if _CONFIG.get("kernel_error"):
        raise RuntimeError(_CONFIG["kernel_error"])
