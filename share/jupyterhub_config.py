# JupyterHub with uvkernel: every user's notebooks run in uv envs that live with the user's projects (or in
# the user's own cache), and all of them inherit one shared host stack (torch + CUDA) instead of copying it.
#
# Once, as root, in the environment that runs the hub and the single-user servers (docs/jupyterhub.md):
#
#     python -m pip install jupyterhub jupyterlab jupyter-uvkernel
#     npm install -g configurable-http-proxy
#     # the kernel spec, system-wide, pointing at the interpreter that holds torch/CUDA:
#     uvkernel install --sys-prefix --host-python /opt/stack/bin/python3
#
# The host interpreter must be readable and executable by every user; nothing else is shared.
# Run:  jupyterhub -f /etc/jupyterhub/jupyterhub_config.py
#
# The tests load this file and override only what a test needs (ports, a dummy login, throwaway users).

import os
import sys

c = get_config()  # noqa: F821 (provided by JupyterHub when it loads this file)

# Local Unix users; each single-user server runs as its user (PAM login by default).
c.JupyterHub.spawner_class = "jupyterhub.spawner.LocalProcessSpawner"

# The single-user server from the environment that holds jupyterhub, jupyterlab and uvkernel (the spawner's
# PATH is not a login shell's, so name it by absolute path).
c.Spawner.cmd = [os.path.join(os.path.dirname(sys.executable), "jupyterhub-singleuser")]
c.Spawner.default_url = "/lab"
c.Spawner.notebook_dir = "~"

# JupyterHub passes almost nothing from its own environment to a user's server (env_keep defaults to
# JUPYTERHUB_SINGLEUSER_APP only), and kernels inherit the server's environment.  Keep what uv and the GPU
# stack need; variables that are not set in the hub's environment are simply skipped.
c.Spawner.env_keep = [
    "JUPYTERHUB_SINGLEUSER_APP",
    "PATH",
    "LANG",
    "LC_ALL",
    # uv reaching the package index (certificates and proxies of this site)
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "UV_DEFAULT_INDEX",
    "UV_INDEX",
    "UV_INDEX_URL",
    "UV_EXTRA_INDEX_URL",
    "PIP_INDEX_URL",
    # the GPU stack
    "LD_LIBRARY_PATH",
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
    "CUDA_HOME",
    # where torch lives, when the kernel spec does not name it (uvkernel install --host-python does)
    "UVKERNEL_HOST_PYTHON",
]

# Never let uv download interpreters behind the admin's back: envs are built on the host interpreter.
c.Spawner.environment = {"UV_PYTHON_DOWNLOADS": "never"}

# A cold first start builds the user's env (and may install the project's dependencies) before the
# kernel runs; the server itself starts quickly, these only bound a stuck spawn.
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
