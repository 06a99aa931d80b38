import sys, time, pickle
sys.path.insert(0, "/work/main/tools/overlay")
import dask_overlay_dev; dask_overlay_dev.install()
import dask, dask.array as da
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer
from distributed import Client, LocalCluster
from distributed.diagnostics.plugin import SchedulerPlugin

class Collect(SchedulerPlugin):
    name = "proto-collect"
    def __init__(self):
        self.records = []
    def start(self, scheduler):
        self.scheduler = scheduler
    def transition(self, key, start, finish, *args, **kwargs):
        if start == "processing" and finish == "memory":
            ts = self.scheduler.tasks.get(key)
            ann = dict(ts.annotations) if ts is not None and ts.annotations else {}
            ss = kwargs.get("startstops") or []
            comp = [s for s in ss if s.get("action") == "compute"]
            self.records.append((key, ann.get("adaptive_chunking"), comp[0]["stop"] - comp[0]["start"] if comp else None,
                                 kwargs.get("nbytes"), kwargs.get("worker"), kwargs.get("thread")))

calls = []
class Opt:
    def __init__(self, snapshot=None):
        self.snapshot = snapshot
    def __call__(self, dsk, keys, **kw):
        import os, threading
        from dask.array.optimization import optimize
        calls.append((os.getpid(), threading.current_thread().name, type(dsk).__name__, self.snapshot))
        out = optimize(dsk, keys, **kw)
        if self.snapshot is None:
            return out
        return HighLevelGraph({"opt": MaterializedLayer(dict(out), annotations={"adaptive_chunking": self.snapshot})}, {"opt": set()})
    def __reduce__(self):
        return (Opt, ({"cid": "c1", "pickled_at": time.time()},))

if __name__ == "__main__":
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, Client(cluster) as client:
        plugin = Collect()
        client.register_plugin(plugin)
        with dask.config.set(array_optimize=Opt()):
            x = da.random.random((2000, 2000), chunks=500)
            r = (x + 1).sum().compute()
        recs = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.plugins["proto-collect"].records)
        print("records", len(recs), recs[:3])
        print("calls (client side)", calls)
        info = client.scheduler_info()
        print({w: (i["nthreads"], i["memory_limit"]) for w, i in info["workers"].items()})
