"""Execute a notebook through a kernel with nbclient and print each cell's text output.

Usage: python scripts/run_notebook.py NOTEBOOK [--kernel NAME] [--save OUT.ipynb]
"""

import argparse
import sys

import nbformat
from nbclient import NotebookClient


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("notebook")
    parser.add_argument("--kernel", default="uvkernel")
    parser.add_argument("--save", default=None)
    args = parser.parse_args()
    nb = nbformat.read(args.notebook, as_version=4)
    from pathlib import Path

    folder = str(Path(args.notebook).resolve().parent)
    NotebookClient(nb, kernel_name=args.kernel, timeout=600, resources={"metadata": {"path": folder}}).execute()
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        print(f"In: {cell.source.splitlines()[0] if cell.source else ''}")
        for out in cell.outputs:
            if out.output_type == "stream":
                print(out.text, end="")
            elif "data" in out and "text/plain" in out["data"]:
                print(out["data"]["text/plain"])
        print()
    if args.save:
        nbformat.write(nb, args.save)
    return 0


if __name__ == "__main__":
    sys.exit(main())
