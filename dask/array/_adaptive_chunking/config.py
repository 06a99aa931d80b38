"""Configuration of dask.array.adaptive_chunking: defaults, reading and validation.

The keys live under ``array.adaptive-chunking`` in Dask's config; their defaults and
descriptions are in the YAML files beside this module (same keys, same order). Every
value is read when it is used, so ``dask.config.set`` applies at once.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from dask.utils import parse_bytes

import dask

PREFIX = "array.adaptive-chunking"
PEAK_METHODS = ("auto", "high-water-mark", "sampler")
_CONFIG_DIR = Path(__file__).parent


KEYS: frozenset[str] = frozenset()  # the settings the defaults YAML defines


def register_defaults() -> None:
    """Add the defaults YAML to Dask's config (user and environment values win)."""
    import yaml

    global KEYS
    with open(_CONFIG_DIR / "adaptive-chunking.yaml") as f:
        defaults = yaml.safe_load(f)
    KEYS = frozenset(defaults["array"]["adaptive-chunking"])
    dask.config.update_defaults(defaults)


def check_keys() -> None:
    """Raise ValueError for a misspelled setting under ``array.adaptive-chunking``.

    A typo would otherwise be ignored silently, and its default used instead.
    """
    section = dask.config.config.get("array", {}).get("adaptive-chunking")
    if not isinstance(section, dict) or section.keys() <= KEYS:
        return
    import difflib

    unknown = sorted(section.keys() - KEYS)
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key.replace("_", "-"), sorted(KEYS), n=1)
        hints.append(f"'{PREFIX}.{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    raise ValueError(
        f"unknown setting {', '.join(hints)}; remove or rename it. Known settings: "
        f"{', '.join(sorted(KEYS))}"
    )


def number(key: str, value: Any, *, low: float, high: float, low_open=False, high_open=False):
    """Validate a numeric setting; ``key`` names the config key in messages."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise TypeError(
            f"{key} must be a number, got {value!r} of type {type(value).__name__}"
        )
    value = float(value)
    bad = (
        math.isnan(value)
        or value < low
        or value > high
        or (low_open and value == low)
        or (high_open and value == high)
    )
    if bad:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise ValueError(
            f"{key} must be in {lo}{low:g}, {high:g}{hi}, got {value!r}; "
            f"pass a value in that range or set '{PREFIX}.{key}'"
        )
    return value


def nbytes_setting(key: str, value: Any, *, allow_none: bool) -> int | None:
    """Validate a size in bytes given as an int or a string such as '2GiB'."""
    if value is None:
        if allow_none:
            return None
        raise TypeError(f"{key} must be a number of bytes, got None")
    if isinstance(value, str):
        try:
            value = parse_bytes(value)
        except (ValueError, TypeError) as e:
            raise ValueError(
                f"{key} must be bytes or a size string such as '512MiB', got {value!r}"
            ) from e
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(
            f"{key} must be a number of bytes or a size string such as '512MiB', "
            f"got {value!r} of type {type(value).__name__}"
        )
    if not math.isfinite(value) or value < 1 or value != int(value):
        raise ValueError(
            f"{key} must be a positive whole number of bytes, got {value!r}; "
            f"pass e.g. 2**20 or '1MiB', or set '{PREFIX}.{key}'"
        )
    return int(value)


def get(key: str, override: Any = None) -> Any:
    """Read ``array.adaptive-chunking.<key>`` now, unless ``override`` is given."""
    check_keys()
    return dask.config.get(f"{PREFIX}.{key}", override_with=override)


def flag(key: str, override: Any = None) -> bool:
    """Read a boolean setting; accepts the strings environment variables give."""
    value = get(key, override)
    if isinstance(value, str):
        value = value.strip().lower()
        if value in ("true", "1", "yes", "on"):
            return True
        if value in ("false", "0", "no", "off", ""):
            return False
    if not isinstance(value, (bool, int, np.bool_)):
        raise TypeError(
            f"'{PREFIX}.{key}' must be True or False, got {value!r}"
        )
    return bool(value)
