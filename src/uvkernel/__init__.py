"""uvkernel: Jupyter kernels in per-project uv venvs that inherit the host's GPU Python stack."""

__version__ = "0.1.0"
