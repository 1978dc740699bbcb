"""uvkernel: Jupyter kernels in per-project uv venvs that inherit the host's GPU Python stack."""

__version__ = "0.1.0"


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Where `jupyter labextension develop` finds the prebuilt extension (a wheel installs it as shared data)."""
    return [{"src": "labextension", "dest": "jupyter-uvkernel"}]
