"""Make the tests import this working tree's ``dask.array.adaptive_chunking``.

The package is an overlay onto an installed Dask, so an editable install cannot
work; instead a meta-path finder (``tools/overlay``) resolves the overlay's modules
from the repository, in this process and, through ``PYTHONPATH``, in the child
processes that the processes scheduler and subprocess tests start.
"""

import os
import sys
from pathlib import Path

_OVERLAY = str(Path(__file__).parent / "tools" / "overlay")
sys.path.insert(0, _OVERLAY)
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (_OVERLAY, os.environ.get("PYTHONPATH")) if p
)

import dask_overlay_dev  # noqa: E402

dask_overlay_dev.install()

# Import the installed Dask before pytest (in importlib mode) meets ``dask/`` folders
# of this repository, which are not packages of their own.
import dask.array  # noqa: E402, F401


def pytest_configure(config):
    # History goes to a file of this session, never the user's cache (children too).
    import tempfile

    import dask

    path = os.path.join(tempfile.mkdtemp(prefix="adaptive-history-"), "h.sqlite3")
    os.environ["DASK_ARRAY__ADAPTIVE_CHUNKING__HISTORY_PATH"] = path
    dask.config.set({"array.adaptive-chunking.history-path": path})

    # An unexpected engine warning fails the test; expected ones use pytest.warns.
    config.addinivalue_line(
        "filterwarnings", "error::dask.array.adaptive_chunking.AdaptiveChunkingWarning"
    )
