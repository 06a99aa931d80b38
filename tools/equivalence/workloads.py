"""Workloads shared by the profiling and the replay scripts (same code in both trees)."""
import dask.array as da


def _smooth(b):
    return b * 0.5 + 1.0


def base(shape, chunks, dtype="f8"):
    x = da.random.default_rng(0).random(shape, chunks=chunks)
    if dtype != "f8":
        x = x.astype(dtype)
    return x


# name -> (stored shape, [chunkings profiled], expression, dtype)
WORKLOADS = {
    "add_T_mean": ((1000, 1000), [(100, 100), (250, 250)], lambda x: (x + x.T).mean(axis=0), "f8"),
    "matmul": ((800, 800), [(200, 200), (400, 400)], lambda x: x @ x, "f8"),
    "dot_T": ((800, 800), [(200, 200)], lambda x: x.dot(x.T), "f8"),
    "rechunk_rows_sum": ((1000, 1000), [(100, 100), (250, 250)],
                         lambda x: x.rechunk({0: "auto", 1: -1}).sum(axis=1), "f8"),
    "map_overlap": ((1000, 1000), [(100, 100), (250, 250)],
                    lambda x: da.map_overlap(_smooth, x, depth=1, boundary="reflect").sum(), "f8"),
    "std": ((1000, 1000), [(100, 100), (250, 250)], lambda x: x.std(axis=0), "f8"),
    "cumsum_1d": ((1_000_000,), [(100_000,), (250_000,)], lambda x: x.cumsum(axis=0), "f8"),
    "f4_sum": ((1000, 1000), [(250, 250)], lambda x: (x * 2).sum(axis=1), "f4"),
}

MEMORY_LIMITS = [None, "4GiB", "1GiB"]
