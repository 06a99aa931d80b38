"""Configuration of dask.array.adaptive_chunking: defaults, reading and validation.

The keys live under ``array.adaptive-chunking`` in Dask's config; their defaults and
descriptions are in the YAML files beside this module (same keys, same order). Every
value is read when it is used, so ``dask.config.set`` applies at once.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
from dask.utils import parse_bytes

import dask

PREFIX = "array.adaptive-chunking"
PEAK_METHODS = ("auto", "high-water-mark", "sampler")
_CONFIG_DIR = Path(__file__).parent


KEYS: frozenset[str] = frozenset()  # the settings the defaults YAML defines


def defaults() -> dict[str, Any]:
    """The settings of the defaults YAML, by key."""
    import yaml

    with open(_CONFIG_DIR / "adaptive-chunking.yaml") as f:
        return dict(yaml.safe_load(f)["array"]["adaptive-chunking"])


def register_defaults() -> None:
    """Add the defaults YAML to Dask's config (user and environment values win)."""
    global KEYS
    values = defaults()
    KEYS = frozenset(values)
    dask.config.update_defaults({"array": {"adaptive-chunking": values}})


def _canonical(key: Any) -> str:
    return str(key).replace("_", "-").lower()


def _section(data: Any) -> list[str]:
    """The keys of ``array.adaptive-chunking`` in a nested config dict (``_`` read as ``-``)."""
    node = data
    for part in PREFIX.split("."):
        if not isinstance(node, dict):
            return []
        node = next((v for k, v in node.items() if _canonical(k) == part), None)
    return [_canonical(k) for k in node] if isinstance(node, dict) else []


def sources() -> dict[str, str]:
    """Where each setting was given outside code, by key: the environment variable,
    or else the last YAML file of Dask's config paths that sets it (as Dask reads
    them: environment over files, later files over earlier). Keys given nowhere
    are absent.

    >>> sources().get("no-such-key") is None
    True
    """
    import dask.config

    out: dict[str, str] = {}
    for path, data in dask.config.collect_yaml(dask.config.paths, return_paths=True):
        for key in _section(data):
            out[key] = f"file {path}"
    # As Dask reads the environment: DASK_ARRAY__ADAPTIVE_CHUNKING__MAX_RECORDS, or
    # a variable holding a whole section (DASK_ARRAY__ADAPTIVE_CHUNKING='{...}')
    prefix = "DASK_" + PREFIX.upper().replace(".", "__").replace("-", "_") + "__"
    for key in _section(dask.config.collect_env()):
        name = prefix + key.upper().replace("-", "_")
        out[key] = f"environment {name}" if name in os.environ else "environment"
    return out


def check_keys() -> None:
    """Raise ValueError for a misspelled setting under ``array.adaptive-chunking``.

    A typo would otherwise be ignored silently, and its default used instead.
    """
    array = dask.config.config.get("array")
    if not isinstance(array, dict):
        return
    # Dask reads "_" and "-" alike: YAML files and environment variables may use either
    given = {
        key for name, section in array.items()
        if name.replace("_", "-") == "adaptive-chunking" and isinstance(section, dict)
        for key in section
    }
    unknown = sorted(k for k in given if k.replace("_", "-") not in KEYS)
    if not unknown:
        return
    import difflib

    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key.replace("_", "-"), sorted(KEYS), n=1)
        hints.append(f"'{PREFIX}.{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    raise ValueError(
        f"unknown setting {', '.join(hints)}; remove or rename it. Known settings: "
        f"{', '.join(sorted(KEYS))}"
    )


def _or_set(key: str) -> str:
    return f", or set '{PREFIX}.{key}'" if key in KEYS else ""


def number(key: str, value: Any, *, low: float, high: float, low_open=False, high_open=False):
    """Validate a numeric setting; ``key`` names the config key in messages."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise TypeError(
            f"{key} must be a number, got {value!r} of type {type(value).__name__}"
        )
    try:
        number = float(value)
    except OverflowError:  # an int beyond any float
        number = math.inf if value > 0 else -math.inf
    bad = (
        math.isnan(number)
        or number < low
        or number > high
        or (low_open and number == low)
        or (high_open and number == high)
    )
    if bad:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise ValueError(
            f"{key} must be in {lo}{low:g}, {high:g}{hi}, got {value!r}; "
            f"pass a value in that range{_or_set(key)}"
        )
    return number


def count(key: str, value: Any, *, low: int) -> int:
    """Validate a whole-number setting (a count) of at least ``low``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise TypeError(
            f"{key} must be a whole number, got {value!r} of type {type(value).__name__}"
        )
    if isinstance(value, (float, np.floating)) and not (
        math.isfinite(value) and float(value).is_integer()
    ):
        raise ValueError(
            f"{key} must be a whole number >= {low}, got {value!r}; "
            f"pass a whole number >= {low}{_or_set(key)}"
        )
    if int(value) < low:
        raise ValueError(
            f"{key} must be a whole number >= {low}, got {value!r}; "
            f"pass a whole number >= {low}{_or_set(key)}"
        )
    return int(value)


def nbytes_setting(key: str, value: Any, *, allow_none: bool) -> int | None:
    """Validate a size in bytes given as an int or a string such as '2GiB'."""
    if value is None:
        if allow_none:
            return None
        raise TypeError(f"{key} must be a number of bytes, got None")
    if isinstance(value, str):
        try:
            if not value.strip():  # Dask's parse_bytes reads '' as 1 byte
                raise ValueError("an empty size")
            value = parse_bytes(value)
        except (ValueError, TypeError, OverflowError) as e:
            raise ValueError(
                f"{key} must be bytes or a size string such as '512MiB', got {value!r}"
            ) from e
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(
            f"{key} must be a number of bytes or a size string such as '512MiB', "
            f"got {value!r} of type {type(value).__name__}"
        )
    finite = isinstance(value, (int, np.integer)) or math.isfinite(value)
    if not finite or value < 1 or value != int(value) or value >= 2**63:
        raise ValueError(
            f"{key} must be a positive whole number of bytes below 2**63, got {value!r}; "
            f"pass e.g. 2**20 or '1MiB'{_or_set(key)}"
        )
    return int(value)


def flag_value(key: str, value: Any) -> bool:
    """Validate a boolean setting; accepts the strings environment variables give."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off", ""):
            return False
    if not isinstance(value, (bool, np.bool_)) and not (  # 0/1 as an env var gives them
        isinstance(value, (int, np.integer)) and value in (0, 1)
    ):
        raise TypeError(
            f"'{PREFIX}.{key}' must be True or False, got {value!r}"
        )
    return bool(value)


def duration(key: str, value: Any) -> float:
    """Validate a finite duration >= 0: seconds, or a string such as '10ms'."""
    from dask.utils import parse_timedelta

    try:
        seconds = parse_timedelta(value, default="s")
    except (KeyError, IndexError, ValueError, TypeError, AttributeError, OverflowError) as e:
        raise ValueError(
            f"'{PREFIX}.{key}' must be a duration such as '10ms' or a number of seconds, "
            f"got {value!r}"
        ) from e
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not (
        0 <= seconds < math.inf
    ):
        raise ValueError(
            f"'{PREFIX}.{key}' must be a finite duration >= 0 such as '10ms', "
            f"got {value!r}"
        )
    return float(seconds)


def path_setting(key: str, value: Any) -> str | None:
    """A file path (``~`` expanded), or None for the default."""
    if value is None:
        return None
    if not isinstance(value, (str, Path)) or not str(value).strip():
        raise TypeError(f"'{PREFIX}.{key}' must be a file path or null, got {value!r}")
    return str(Path(value).expanduser())


def choice(key: str, value: Any, options: tuple[str, ...]) -> str:
    if value not in options:
        raise ValueError(f"'{PREFIX}.{key}' must be one of {options}, got {value!r}")
    return value


#: How each setting is validated: one place, used wherever a setting is read.
RULES = {
    "enabled": flag_value,
    "profile": flag_value,
    "auto-rechunk": flag_value,
    "target-memory-percent": lambda k, v: number(k, v, low=0, high=100, low_open=True),
    "min-chunk-bytes": lambda k, v: nbytes_setting(k, v, allow_none=False),
    "max-chunk-bytes": lambda k, v: nbytes_setting(k, v, allow_none=True),
    "safety-factor": lambda k, v: number(k, v, low=0, high=1, low_open=True),
    "memory-limit": lambda k, v: nbytes_setting(k, v, allow_none=True),
    "overhead-target": lambda k, v: number(
        k, v, low=0, high=1, low_open=True, high_open=True
    ),
    "pressure-threshold": lambda k, v: number(k, v, low=0, high=100),
    "max-records": lambda k, v: count(k, v, low=0),
    "max-profiles": lambda k, v: count(k, v, low=1),
    "max-memory": lambda k, v: nbytes_setting(k, v, allow_none=True),
    "peak-method": lambda k, v: choice(k, v, PEAK_METHODS),
    "sample-interval": duration,
    "history": flag_value,
    "history-path": lambda k, v: path_setting(k, v),
    "history-max-rows": lambda k, v: count(k, v, low=1),
}


def get(key: str, override: Any = None) -> Any:
    """Read ``array.adaptive-chunking.<key>`` now, unless ``override`` is given."""
    check_keys()
    return dask.config.get(f"{PREFIX}.{key}", override_with=override)


def setting(key: str, override: Any = None) -> Any:
    """The validated value of ``array.adaptive-chunking.<key>`` (or of ``override``)."""
    return RULES[key](key, get(key, override))


def flag(key: str, override: Any = None) -> bool:
    """Read a boolean setting; accepts the strings environment variables give."""
    return flag_value(key, get(key, override))


def validate() -> None:
    """Raise ValueError or TypeError for any unknown or invalid setting, naming it."""
    check_keys()
    for key in RULES:
        setting(key)


_ABSENT = object()


class ChunkSizeOverride:
    """Dask's ``array.chunk-size`` while auto-rechunk sets it, and the value to give back.

    :meth:`apply` writes a byte target; :meth:`restore` gives back exactly what was
    there before (the same value, or no key where there was none). It writes only
    over its own value: one set by the user meanwhile (in code or by a
    ``dask.config.set`` block) is left alone, and is not overwritten on restore.
    Each change is logged at INFO with its reason.

    >>> override = ChunkSizeOverride()
    >>> before = dask.config.get("array.chunk-size")
    >>> override.apply(2**20, "an example")
    True
    >>> dask.config.get("array.chunk-size")
    1048576
    >>> override.restore("the example is over")
    True
    >>> dask.config.get("array.chunk-size") == before
    True
    """

    def __init__(self) -> None:
        self.saved: Any = _ABSENT  # what was there before the first apply
        self.applied: int | None = None  # what apply wrote last, while in effect
        self.yielded = False  # the user's value is in place of ours
        self.lock = threading.Lock()

    @staticmethod
    def _current() -> Any:
        section = dask.config.config.get("array")
        return section.get("chunk-size", _ABSENT) if isinstance(section, dict) else _ABSENT

    def apply(self, nbytes: int, reason: str) -> bool:
        """Set ``array.chunk-size`` to ``nbytes``; False if left as it is."""
        from dask.utils import format_bytes

        with self.lock:
            current = self._current()
            if self.applied is None:
                self.saved = current
            elif current != self.applied:
                if not self.yielded:
                    self.yielded = True
                    _log.info("adaptive chunking: array.chunk-size is %r, set outside the "
                              "engine; auto-rechunk leaves it", current)
                return False
            elif current == nbytes:
                return False
            dask.config.set({"array.chunk-size": int(nbytes)})
            self.applied, self.yielded = int(nbytes), False
            _log.info("adaptive chunking: auto-rechunk set array.chunk-size to %s (was %s): %s",
                      format_bytes(nbytes), _shown(current), reason)
            return True

    def restore(self, reason: str) -> bool:
        """Give back the value :meth:`apply` replaced; False if there is nothing to do.

        While a value set outside the engine is in place it stays, and the engine's
        value is given back by a later call once it is there again (a
        ``dask.config.set`` block that ends puts it back).
        """
        with self.lock:
            if self.applied is None:
                return False
            current, saved = self._current(), self.saved
            if current != self.applied:
                if not self.yielded:
                    self.yielded = True
                    _log.info("adaptive chunking: auto-rechunk is off (%s); array.chunk-size "
                              "%r was set outside the engine and stays", reason, current)
                return False
            self.applied, self.saved, self.yielded = None, _ABSENT, False
            if saved is _ABSENT:
                dask.config.config.get("array", {}).pop("chunk-size", None)
            else:
                dask.config.set({"array.chunk-size": saved})
            _log.info("adaptive chunking: auto-rechunk is off (%s); array.chunk-size is %s "
                      "again", reason, _shown(saved))
            return True


def _shown(value: Any) -> str:
    from dask.utils import format_bytes

    if value is _ABSENT:
        return "unset"
    return format_bytes(value) if isinstance(value, int) else repr(value)


_log = logging.getLogger("dask.array.adaptive_chunking")
