"""Dask's array expressions (``array.query-planning``), which the engine does not support yet.

With ``array.query-planning: True`` (set before ``dask.array`` is first imported),
``dask.array.Array`` is the expression-backed class of ``dask.array._array_expr``, not
``dask.array.core.Array``. The engine cannot work with it yet: array expressions do
not call the ``array_optimize`` hook through which the engine sees a compute, their
arrays lack attributes the engine reads (``npartitions``, ``nbytes``, a
``HighLevelGraph`` with the array's layer), and in Dask 2026.8 they lack operations
the engine's workloads use (``matmul``, ``cumsum``, ``qr``, ``median``, ``std`` and
``from_zarr``).

Until they are supported, this module makes each entry point say so plainly, and say
what to set, instead of failing with an unrelated ``TypeError`` or
``AttributeError``: the entry points that take an array raise
:class:`QueryPlanningNotSupportedError`, and what would silently do nothing
(:func:`~dask.array.adaptive_chunking.enable_adaptive_chunking`, auto-rechunk) warns
once. The public module only calls into here, one line per entry point.
"""

from __future__ import annotations

import sys
from typing import Any

import dask

__all__ = [
    "QueryPlanningNotSupportedError",
    "query_planning_enabled",
    "is_expression",
    "check_supported",
    "require_classic_arrays",
    "warn_unprofiled",
    "skip_auto_rechunk",
]

#: What to do about it, the same in every error and warning.
FIX = (
    "set array.query-planning to False before dask.array is first imported "
    "(dask.config.set({'array.query-planning': False}) before `import dask.array`), "
    "or unset the DASK_ARRAY__QUERY_PLANNING environment variable"
)

#: What every message starts with.
UNSUPPORTED = "adaptive chunking does not support array.query-planning (Dask's array " \
    "expressions) yet"

#: The one warning of a process in which nothing can be profiled.
WARNING = (
    f"{UNSUPPORTED}, and it is on in this process: no compute will be profiled and "
    f"auto-rechunk is skipped; {FIX}"
)

# The key under which the warning counts as given, in the set the engine's other
# warn-once fallbacks share (so that resetting that set resets this one too).
_WARNED_KIND = "query-planning"


# A RuntimeError, not a TypeError or a ValueError. The argument is a real Dask array,
# so TypeError (the argument has the wrong type) would be wrong, and so would be its
# advice to wrap the data with dask.array.from_array, which makes another expression.
# ValueError says that another value of the argument would do, which no array would;
# and the engine raises ValueError for the ordinary "nothing measured yet", which
# callers catch to fall back to their own chunks (and the Dataset path collects per
# variable), where an unsupported configuration would be swallowed. What is wrong is
# the state of the process, fixed only by a setting made before dask.array is
# imported: that is RuntimeError's category, and the base of NotImplementedError (not
# used in this project's shipped paths), so code that catches the conventional "not
# supported yet" error by its base catches this one too.
class QueryPlanningNotSupportedError(RuntimeError):
    """Adaptive chunking was given Dask's array expressions, which it does not support yet.

    Raised by the engine's entry points that take an array while
    ``array.query-planning`` is on, or when given an expression-backed array. The
    message says what to set.

    >>> issubclass(QueryPlanningNotSupportedError, RuntimeError)
    True
    """


def query_planning_enabled() -> bool:
    """Whether ``dask.array`` uses array expressions (``array.query-planning``) here.

    Dask reads the setting once, when ``dask.array`` is first imported, and keeps
    what it decided in ``dask.array.ARRAY_EXPR_ENABLED``; a later change of the
    setting has no effect, so that value is the answer. Before ``dask.array`` is
    imported, the setting is read as Dask will read it: only ``True`` turns array
    expressions on (``None``, the default, means off).

    Returns
    -------
    bool
        True while ``dask.array.Array`` is the expression-backed class.

    Examples
    --------
    >>> import dask.array
    >>> query_planning_enabled() == (dask.array.Array is not dask.array.core.Array)
    True
    """
    # Read what dask.array decided rather than calling its _array_expr_enabled(),
    # which warns (RuntimeWarning) when the setting was changed after the import.
    decided = getattr(sys.modules.get("dask.array"), "ARRAY_EXPR_ENABLED", None)
    if isinstance(decided, bool):
        return decided
    return dask.config.get("array.query-planning", None) is True


def is_expression(obj: Any) -> bool:
    """Whether ``obj`` is an expression-backed Dask array (``dask.array._array_expr``).

    Told by the class's module, so that nothing is imported to find out (no such
    array exists before that package is imported), and so that a Dask DataFrame, which
    is expression-backed too, is not mistaken for one.

    Examples
    --------
    >>> import dask.array as da
    >>> is_expression(da.ones(3, chunks=1)) == query_planning_enabled()
    True
    >>> is_expression([1, 2, 3])
    False
    """
    return type(obj).__module__.startswith("dask.array._array_expr")


def _backed_by_expressions(obj: Any) -> bool:
    """Whether ``obj`` is, or is an xarray object holding, an expression-backed array."""
    if is_expression(obj):
        return True
    data_vars = getattr(obj, "data_vars", None)  # an xarray Dataset
    if data_vars is not None:
        return any(is_expression(getattr(v, "data", None)) for v in data_vars.values())
    # An xarray DataArray: its .data is the Dask array (a NumPy array is no expression).
    return type(obj).__module__.startswith("xarray.") and is_expression(
        getattr(obj, "data", None))


def require_classic_arrays(what: str) -> None:
    """Raise :class:`QueryPlanningNotSupportedError` if query planning is on.

    For entry points that build their own arrays (the demo, the ``recommend``
    command), which would otherwise fail on the first attribute expressions lack.

    Parameters
    ----------
    what : str
        The entry point, named in the message (``"the demo"``).

    Examples
    --------
    >>> require_classic_arrays("the demo") if not query_planning_enabled() else None
    """
    if query_planning_enabled():
        raise QueryPlanningNotSupportedError(
            f"{what}: {UNSUPPORTED}, and it is on in this process; {FIX}"
        )


def check_supported(array: Any, what: str) -> None:
    """Raise :class:`QueryPlanningNotSupportedError` where ``array`` cannot be profiled.

    That is while query planning is on (whatever ``array`` is: the usual advice for
    data that is no Dask array, ``dask.array.from_array``, would make an expression
    too), or when ``array`` is, or an xarray object holds, an expression-backed array
    made some other way. Anything else is left to the entry point's own checks.

    Parameters
    ----------
    array : object
        The entry point's array argument (a Dask array, an xarray object, anything).
    what : str
        The entry point, named in the message (``"profile_array"``).

    Examples
    --------
    >>> import dask.array as da
    >>> x = da.ones((4, 4), chunks=2)
    >>> check_supported(x, "recommend") if not query_planning_enabled() else None
    """
    require_classic_arrays(what)
    if _backed_by_expressions(array):
        raise QueryPlanningNotSupportedError(
            f"{what}: {UNSUPPORTED}, and got an array made by them; make it with "
            f"dask.array while query planning is off: {FIX}"
        )


def _warn_once(stacklevel: int) -> None:
    from dask.array._adaptive_chunking.errors import warn_once

    warn_once(_WARNED_KIND, WARNING, stacklevel=stacklevel + 2)


def warn_unprofiled() -> None:
    """Warn once per process, while query planning is on, that nothing is profiled.

    Called by ``enable_adaptive_chunking()``: array expressions never call the
    ``array_optimize`` hook, so without this it would return an engine that silently
    profiles nothing. The warning points at the caller of
    ``enable_adaptive_chunking()``.

    Examples
    --------
    >>> warn_unprofiled() if not query_planning_enabled() else None
    """
    if query_planning_enabled():
        _warn_once(stacklevel=3)  # this function, enable_adaptive_chunking, its caller


def skip_auto_rechunk() -> bool:
    """Whether auto-rechunk must be skipped here (query planning is on); warns once.

    The recommendation behind auto-rechunk builds stand-in arrays of stored workloads
    with ``dask.array``, which would be expressions lacking what the engine reads; so
    auto-rechunk leaves ``array.chunk-size`` as it is, with the same one warning as
    :func:`warn_unprofiled` instead of an ``AttributeError`` each time.

    Returns
    -------
    bool
        True when the caller should leave ``array.chunk-size`` alone and return.

    Examples
    --------
    >>> skip_auto_rechunk() == query_planning_enabled()
    True
    """
    if not query_planning_enabled():
        return False
    _warn_once(stacklevel=3)
    return True
