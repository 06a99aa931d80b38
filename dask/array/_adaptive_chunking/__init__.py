"""Private implementation package of :mod:`dask.array.adaptive_chunking`.

Import the public module, not these. Imports go one way: the public module imports
this package, and nothing here imports the public module (the command line and the
demo, loaded lazily, use it as users do). ``docs/design.md`` has a table of the
modules and the path of one compute through them.
"""
