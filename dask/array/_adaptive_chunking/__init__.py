"""Private implementation package of :mod:`dask.array.adaptive_chunking`.

``config`` reads and validates the settings, ``instrument`` measures, ``model`` holds
the pure memory/time model, ``recording`` folds what a compute measured into the
engine's profiles, ``learning`` connects the engine to its history, ``graph`` reads
high-level graphs, ``cluster`` is the ``dask.distributed`` side, and ``cli``,
``demo``, ``views``, ``progress``, ``plots`` and ``xarray`` are what users meet.
Import the public module, not these.
"""

from __future__ import annotations

__all__ = ["public"]


class _Public:
    """The public module's names, looked up when used.

    The engine's parts that live in this package (``recording``, ``learning``) need
    names the public module defines (``_Profile``, ``memory_limit``...), and the
    public module imports them first; so they read those names through this, at
    call time, which also sees a name a test replaced.
    """

    __slots__ = ()

    def __getattr__(self, name: str):
        from dask.array import adaptive_chunking

        return getattr(adaptive_chunking, name)


public = _Public()
