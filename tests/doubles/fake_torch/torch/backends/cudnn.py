"""TEST DOUBLE of torch.backends.cudnn."""

import torch as _torch


def version():
    if _torch.version.cuda is None:
        return None
    return _torch._CONFIG.get("cudnn")
