"""Private implementation package of :mod:`dask.array.adaptive_chunking`.

``model`` holds the pure memory/time model, ``instrument`` the measurement, and
``demo`` the ``python -m dask.array.adaptive_chunking`` program. Import the public
module, not these.
"""
