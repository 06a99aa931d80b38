"""Import this repository's overlay modules instead of any installed copy.

The wheel adds ``dask/array/adaptive_chunking.py`` and ``dask/array/_adaptive_chunking/``
to an installed Dask. An editable install cannot overlay a regular package, so tests
import the working tree through this meta-path finder: it resolves exactly those two
names from the repository and leaves every other ``dask`` module to the installed
package. ``conftest.py`` installs it in the test process, and ``sitecustomize.py``
beside this file installs it in child processes (the processes scheduler, subprocess
tests) through ``PYTHONPATH``.
"""

from __future__ import annotations

import importlib.machinery
import sys
from pathlib import Path

ARRAY_DIR = str(Path(__file__).resolve().parents[2] / "dask" / "array")
NAMES = ("dask.array.adaptive_chunking", "dask.array._adaptive_chunking")


class OverlayFinder:
    """Find the overlay's top-level modules in the working tree."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name in NAMES:
            return importlib.machinery.PathFinder.find_spec(name, [ARRAY_DIR])
        return None


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (idempotent)."""
    if not any(f is OverlayFinder for f in sys.meta_path):
        sys.meta_path.insert(0, OverlayFinder)
    for name in list(sys.modules):
        if name in NAMES or name.startswith(NAMES[1] + "."):
            module = sys.modules[name]
            if not str(getattr(module, "__file__", "")).startswith(ARRAY_DIR):
                raise RuntimeError(
                    f"{name} was imported from {module.__file__} before the overlay "
                    "finder was installed"
                )
