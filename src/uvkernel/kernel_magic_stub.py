# Run by the kernel at start (``--IPKernelApp.exec_files``) in the user's namespace, in the env's python where
# uvkernel is not installed: it registers ``%uvkernel`` as a stub that loads kernel_extension.py (next to this
# file) on first use.  An exec'd file, not an ``exec_lines`` cell: IPython runs a cell through its whole cell
# machinery, 5 ms of every start here, a file in 0.3 ms.  It defines no names (IPython restores ``__file__``).
get_ipython().register_magic_function(  # noqa: F821 (IPython's builtin while this runs)
    (lambda path: lambda line="": __import__("runpy").run_path(path)["uvkernel_magic"](line))(
        __import__("os").path.join(__import__("os").path.dirname(__file__), "kernel_extension.py")),
    magic_kind="line", magic_name="uvkernel")
