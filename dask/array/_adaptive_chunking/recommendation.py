"""What a recommendation is: the chunks, the numbers behind them and why, in words.

:class:`Recommendation` is what ``engine.recommend`` returns for one array and
:class:`DatasetRecommendation` what it returns for an xarray Dataset; both show as
one line in a terminal and as a table in a notebook (``views``). The planner
(``planning.plan``) makes them; this module only holds and explains them.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from dask.utils import format_bytes

from dask.array._adaptive_chunking import model as _model
from dask.array._adaptive_chunking import saturation as _saturation

__all__ = [
    "SATURATION_KEY", "REASONS", "Recommendation", "DatasetRecommendation",
    "scheduler_config", "saturation_reason",
]

MiB = 2**20
#: The distributed setting that bounds the root tasks a worker holds at a time.
SATURATION_KEY = "distributed.scheduler.worker-saturation"


@dataclass(frozen=True)
class Recommendation:
    """A recommended chunking and the reasoning behind it.

    ``binding`` is the constraint that decided the size (see
    ``dask.array._adaptive_chunking.model.Choice``; ``"shape"`` when the shape rules
    moved it) and ``reason`` says it in a sentence; sizes are in bytes and times
    in seconds. ``array_chunk_size`` is the byte target to give Dask's own
    ``"auto"`` chunking (``array.chunk-size``) so that a rechunk to ``"auto"``
    inside the workload agrees with the recommendation.
    """

    chunks: tuple[int, ...]
    chunk_bytes: int
    binding: str
    fits_budget: bool
    memory_budget_bytes: int
    memory_limit_bytes: int
    predicted_peak_bytes: float
    predicted_seconds: float
    predicted_tasks: int
    concurrency: int
    model: _model.WorkloadModel | None  # None: an empty array, nothing measured
    reason: str = ""
    overhead_fraction: float = 0.0
    downstream: tuple[str, ...] = ()
    storage_chunks: tuple[int, ...] | None = None
    saturation: _saturation.Saturation | None = None
    scheduler_reason: str = ""
    shape: tuple[int, ...] = ()  # the array it is for
    current_chunks: tuple[int, ...] | None = None  # its chunk shape now, if known
    dims: tuple | None = None  # dimension names, for an xarray object
    probes: tuple = ()  # the probe.ProbeRun of each probe run for it
    probe_note: str = ""  # why probing stopped (empty: not asked to probe)
    carried: str = ""  # what was measured on other hardware and planned for here

    @property
    def distance(self) -> float:
        """How many times larger or smaller the chunks are than the nearest chunk
        size measured (1: within the measured sizes; ``inf``: nothing measured)."""
        return math.inf if self.model is None else self.model.distance(self.chunk_bytes)

    @property
    def uncertainty(self) -> float:
        """The relative uncertainty of ``predicted_seconds`` (it grows with
        :attr:`distance`)."""
        return 1.0 if self.model is None else self.model.uncertainty(self.chunk_bytes)

    @property
    def evidence(self) -> str:
        """How sure the recommendation is, in words: what its chunks rest on."""
        d = self.distance
        sizes = () if self.model is None else self.model.measured_bytes
        if not sizes:
            return "no chunk size measured"
        # Sizes are averages of whole chunks: 799.99 bytes is 800.
        where = (", ".join(format_bytes(round(c)) for c in sizes[:4])
                 + (" and more" if len(sizes) > 4 else ""))
        near = self.model.nearest(self.chunk_bytes)
        if near <= 1.1:  # sizes are realized in whole elements: near enough is measured
            how = "at a chunk size measured"
        elif d <= 1.0 + 1e-6:
            how = f"between the chunk sizes measured, {near:.1f}x from the nearest"
        else:
            where = f"measured at {where}"
            how = f"{d:.1f}x {'beyond' if self.chunk_bytes > sizes[-1] else 'below'} " \
                  "the nearest chunk size measured"
        probed = f", {len(self.probes)} probe{'s' * (len(self.probes) != 1)}" \
            if self.probes else ""
        return f"{how} ({where}{probed}); time +/-{self.uncertainty:.0%}"

    @property
    def chunks_by_dim(self) -> dict | None:
        """The chunks keyed by dimension name (what ``DataArray.chunk`` takes), for a
        recommendation made for an xarray object; None for a Dask array."""
        return None if self.dims is None else dict(zip(self.dims, self.chunks))

    def __repr__(self) -> str:
        from dask.array._adaptive_chunking.views import recommendation_text

        return recommendation_text(self)

    def _repr_html_(self) -> str:
        from dask.array._adaptive_chunking.views import recommendation_html

        return recommendation_html(self)

    @property
    def scheduler_config(self) -> dict[str, float | str]:
        """Settings for a ``dask.distributed`` scheduler running these chunks.

        Empty unless the profile came from a cluster. ``"inf"`` (as distributed
        spells it in config) turns root-task queuing off.
        """
        return scheduler_config(self.saturation)

    @property
    def array_chunk_size(self) -> int:
        """Bytes for ``array.chunk-size``: Dask's auto-chunking then picks this size."""
        return max(1, int(self.chunk_bytes))

    def to_dict(self) -> dict[str, Any]:
        """Plain-value summary (sizes in MiB) for profiles and telemetry."""
        return {
            "chunks": self.chunks,
            "chunks_by_dim": None if self.dims is None else {  # JSON keys are text
                str(d): n for d, n in self.chunks_by_dim.items()},
            "chunk_size_mb": self.chunk_bytes / MiB,
            "binding_constraint": self.binding,
            "reason": self.reason,
            "fits_budget": self.fits_budget,
            "memory_budget_mb": self.memory_budget_bytes / MiB,
            "memory_limit_mb": self.memory_limit_bytes / MiB,
            "predicted_peak_memory_mb": self.predicted_peak_bytes / MiB,
            "predicted_time_s": self.predicted_seconds,
            "predicted_tasks": self.predicted_tasks,
            "predicted_overhead_fraction": self.overhead_fraction,
            "concurrency": self.concurrency,
            "amplification": self.model.amplification if self.model else 0.0,
            "held_fraction": self.model.held_fraction if self.model else 0.0,
            "overhead_per_task_ms": self.model.overhead_seconds * 1e3 if self.model else 0.0,
            "array_chunk_size": self.array_chunk_size,
            "downstream_ops": list(self.downstream),
            "storage_chunks": self.storage_chunks,
            "scheduler_config": self.scheduler_config,
            "scheduler_reason": self.scheduler_reason,
            "measured_chunk_sizes_mb": [c / MiB for c in self.model.measured_bytes]
            if self.model else [],
            "distance_from_measured": None if math.isinf(self.distance) else self.distance,
            "uncertainty": self.uncertainty,
            "evidence": self.evidence,
            "probes": [r.to_dict() for r in self.probes],
            "probe_note": self.probe_note,
            "carried_over": self.carried,
        }


#: The reason for each binding constraint (``model.Choice.binding``, or ``shape``),
#: filled in by ``planning._reason`` with this recommendation's own numbers.
REASONS = {
    "speed": "the fastest chunk size predicted ({seconds}); smaller chunks {smaller}, "
             "larger ones {larger}",
    "memory": "the largest chunk size whose predicted peak ({peak}) fits the memory "
              "budget ({budget}); larger chunks would be faster but would not fit",
    "over_budget": "no chunk size is predicted to fit the memory budget ({budget}); this "
                   "one's predicted peak ({peak}) is within {tolerance} of the smallest "
                   "({least}), and it is the fastest of those",
    "overhead": "the smallest chunk size that keeps per-task overhead under {target} of "
                "the time ({fraction} predicted); larger chunks are predicted no faster",
    "parallelism": "{blocks} for {conc} threads: larger chunks would leave threads idle",
    "min_chunk_bytes": "the smallest chunk size min-chunk-bytes allows ({low})",
    "max_chunk_bytes": "the largest chunk size max-chunk-bytes allows ({high})",
    "array": "the whole array ({size}) fits in one chunk",
    "shape": "the dimensions that should stay whole do not fit the chunk-size bounds "
             "whole; this is the nearest shape within them",
    "storage": "one task per storage chunk: larger chunks are predicted no faster, "
               "and smaller ones would read each stored chunk more than once",
    "reach": "the fastest size within {reach:.3g}x of the chunk sizes measured ({measured}); "
             "chunks further out are predicted faster but have not been run: compute at "
             "these chunks, or recommend with probe=True, to go further",
    "default": "Dask's \"auto\" chunks (array.chunk-size): predicted {gain} faster than "
               "{other}, the best chunking near the sizes measured, which is more than "
               "the model's uncertainty (+/-{uncertainty:.0%})",
    "measured": "the fastest chunk size measured ({seconds}); the best chunking predicted, "
                "{other}, is {gain}, which is within the model's uncertainty there "
                "(+/-{uncertainty:.0%})",
    "step": "a step toward {other}, the best chunking predicted, whose gain is within "
            "the model's uncertainty that far from the sizes measured (+/-{far:.0%}): "
            "these chunks are predicted {gain} than {held}, more than the uncertainty "
            "here (+/-{uncertainty:.0%}); a compute at them will refine the answer",
    "current": "keeps the current chunks: the best other chunking, {other}, is "
               "predicted {gain}; a change must gain more than the model's uncertainty "
               "there (+/-{uncertainty:.0%})",
}


def scheduler_config(saturation: _saturation.Saturation | None) -> dict[str, float | str]:
    """Distributed config for a saturation choice (``"inf"`` as distributed spells it).

    >>> scheduler_config(None)
    {}
    """
    if saturation is None:
        return {}
    value = saturation.value
    return {SATURATION_KEY: "inf" if math.isinf(value) else round(value, 3)}



def saturation_reason(sat: _saturation.Saturation, budget: float, current) -> str:
    """Why a worker saturation was chosen, in a sentence."""
    value = "inf" if math.isinf(sat.value) else f"{sat.value:g}"
    if sat.reason == "nothing-waits":
        out = (f"worker-saturation {value}: no chunk waits for tasks on other workers, "
               "so queuing root tasks would only add round trips")
    elif sat.reason == "fits":
        out = (f"worker-saturation {value}: even if a worker created all its chunks "
               f"first it would stay within the budget ({format_bytes(sat.peak_bytes)} "
               f"of {format_bytes(budget)} predicted)")
    else:
        out = (f"worker-saturation {value}: with queuing off a worker could hold up to "
               f"{format_bytes(sat.unqueued_peak_bytes)} of chunks waiting for other "
               f"workers, over the budget of {format_bytes(budget)}; this keeps it at "
               f"{format_bytes(sat.peak_bytes)}")
    if current is not None:
        now = "inf" if math.isinf(current) else f"{current:g}"
        out += f" (the scheduler runs with {now})"
    return out


@dataclass(frozen=True)
class DatasetRecommendation:
    """Recommended chunks for a Dataset: one size per dimension, and why.

    ``chunks`` is what ``Dataset.chunk`` takes (:func:`merged_chunks` of the
    variables' recommendations); ``variables`` holds each variable's own
    :class:`~dask.array.adaptive_chunking.Recommendation` (its ``chunks_by_dim``),
    and ``unavailable`` the variables that got none, with the reason.
    """

    chunks: dict[Hashable, int]
    variables: dict[Hashable, Any]
    unavailable: dict[Hashable, str] = field(default_factory=dict)

    @property
    def fits_budget(self) -> bool:
        """Whether every variable's recommended chunks are predicted to fit."""
        return all(r.fits_budget for r in self.variables.values())

    def to_dict(self) -> dict[str, Any]:
        """Plain values: the chunks by dimension, each variable's summary, what is missing."""
        return {
            "chunks": dict(self.chunks),
            "fits_budget": self.fits_budget,
            "variables": {name: r.to_dict() for name, r in self.variables.items()},
            "unavailable": dict(self.unavailable),
        }

    def __repr__(self) -> str:
        from dask.array._adaptive_chunking.views import dataset_text

        return dataset_text(self)

    def _repr_html_(self) -> str:
        from dask.array._adaptive_chunking.views import dataset_html

        return dataset_html(self)
