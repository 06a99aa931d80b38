"""Private implementation package of :mod:`dask.array.adaptive_chunking`.

``config`` reads and validates the settings, ``instrument`` measures, ``model`` holds
the pure memory/time model, and ``demo`` is ``python -m dask.array.adaptive_chunking``.
Import the public module, not these.
"""
