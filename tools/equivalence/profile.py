"""Step 1 (NEW tree only): profile the workloads once, export the history as JSON lines."""
import os, sys, tempfile
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dask
import dask.array.adaptive_chunking as ac
from workloads import WORKLOADS, MEMORY_LIMITS, base

print("module:", ac.__file__)
out = sys.argv[1]
tmp = tempfile.mkdtemp(prefix="equiv-prof-")
with dask.config.set({"array.adaptive-chunking.history-path": os.path.join(tmp, "h.sqlite3"),
                      "scheduler": "threads"}):
    engine = ac.AdaptiveChunkingEngine()
    for limit in MEMORY_LIMITS:
        with dask.config.set({"array.adaptive-chunking.memory-limit": limit}):
            for name, (shape, chunkings, expr, dtype) in WORKLOADS.items():
                for c in chunkings:
                    x = base(shape, c, dtype)
                    pid = engine.profile_array(x)
                    expr(x).compute(scheduler="threads")
                    p = engine.get_profile(pid)
                    print(limit, name, c, p["status"], p["computes"], p["recommended_chunks"])
                    engine.remove_profile(pid)
    n = engine.export_history(out)
    print("exported rows:", n)
    rows = engine.load_history()
    import collections
    print("signatures:", collections.Counter((r["signature"], tuple(r["shape"]), r["dtype"]) for r in rows))
    engine.close()
