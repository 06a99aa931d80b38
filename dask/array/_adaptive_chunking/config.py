"""Configuration of dask.array.adaptive_chunking: defaults, reading and validation.

The keys live under ``array.adaptive-chunking`` in Dask's config; their defaults and
descriptions are in the YAML files beside this module (same keys, same order). Every
value is read when it is used, so ``dask.config.set`` applies at once.
"""

from __future__ import annotations

import math
import os
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
    if not KEYS:  # imported on its own (a doctest, a tool): the defaults say the keys
        register_defaults()
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
    snapshot()


class Settings:
    """Every setting of ``array.adaptive-chunking``, validated, at one moment.

    Taken once per operation (:func:`snapshot`) and passed down as plain values, so
    one compute or one recommendation sees one configuration and checks it once.
    Attribute names are the keys with ``-`` as ``_``. In a lenient snapshot an
    invalid setting raises its ValueError or TypeError where it is read, as a
    setting read at its use would: a compute is still profiled with a bad
    ``memory-limit``, and only what needs the limit fails (and warns).
    """

    __slots__ = (
        "enabled", "profile", "auto_rechunk", "target_memory_percent", "min_chunk_bytes",
        "max_chunk_bytes", "safety_factor", "memory_limit", "overhead_target",
        "pressure_threshold", "max_records", "max_profiles", "max_memory", "peak_method",
        "sample_interval", "history", "history_path", "history_max_rows", "_errors",
    )

    def __init__(self, values: dict[str, Any], errors: dict[str, Exception]) -> None:
        for name, value in values.items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "_errors", errors)

    def __getattr__(self, name: str) -> Any:  # only for a setting that did not validate
        errors = object.__getattribute__(self, "_errors")
        if name in errors:
            e = errors[name]
            raise type(e)(*e.args)
        raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("settings are a snapshot: use dask.config.set")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Settings) and all(
            _slot(self, n) == _slot(other, n) for n in self.__slots__)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={_slot(self, n)!r}" for n in self.__slots__[:-1])
        return f"Settings({shown})"


def _slot(settings: Settings, name: str) -> Any:
    try:
        return object.__getattribute__(settings, name)
    except AttributeError:
        return object.__getattribute__(settings, "_errors").get(name)


def snapshot(strict: bool = True) -> Settings:
    """The settings now, each validated.

    ``strict``: a ValueError or TypeError names the first bad setting now. Lenient
    (``strict=False``, what a compute takes): a bad setting raises where it is read.
    A misspelled key raises either way.

    >>> snapshot().max_records >= 0
    True
    """
    state = _state()
    cached = _snapshots.get(strict)
    try:
        if cached is not None and cached[0] == state:
            return cached[1]
    except Exception:  # a value that does not compare (an array): validate again
        pass
    check_keys()
    values, errors = {}, {}
    for key, rule in RULES.items():
        name = key.replace("-", "_")
        try:
            values[name] = rule(key, dask.config.get(f"{PREFIX}.{key}"))
        except (TypeError, ValueError) as e:
            if strict:
                raise
            errors[name] = e
    settings = Settings(values, errors)
    _snapshots[strict] = (state, settings)
    return settings


#: The last snapshot of each kind, with the configuration it was taken from: every
#: compute takes one, and validating every setting again took 44 us.
_snapshots: dict[bool, tuple] = {}


def _state() -> tuple:
    """What a snapshot depends on: the section's values as given (under either
    spelling), the defaults' keys and the home directory (paths expand ``~``)."""
    array = dask.config.config.get("array")
    given = tuple(
        # With each value's type: 1 == True, but only True is a valid flag.
        (name, tuple((k, type(v), v) for k, v in section.items()))
        for name, section in array.items()
        if name.replace("_", "-") == "adaptive-chunking" and isinstance(section, dict)
    ) if isinstance(array, dict) else ()
    return given, len(KEYS), os.environ.get("HOME")


