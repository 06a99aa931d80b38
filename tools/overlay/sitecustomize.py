# Child processes of the test suite import the working tree's overlay (see
# dask_overlay_dev.py). Python imports this file at start-up because conftest.py puts
# this folder on PYTHONPATH.
import dask_overlay_dev

dask_overlay_dev.install()
