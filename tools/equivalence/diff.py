"""Step 3: python diff.py out_old.json out_new.json -- floats with rel tol 1e-9, the rest exactly."""
import json, math, sys

old, new = (json.load(open(p)) for p in sys.argv[1:3])


def diffs(a, b, path=""):
    if isinstance(a, bool) or isinstance(b, bool):
        return [] if a is b or a == b and type(a) is type(b) else [(path, a, b)]
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if isinstance(a, int) and isinstance(b, int):
            return [] if a == b else [(path, a, b)]
        return [] if math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0) else [(path, a, b)]
    if type(a) is not type(b):
        return [(path, a, b)]
    if isinstance(a, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out.append((f"{path}.{k}", a.get(k, "<absent>"), b.get(k, "<absent>")))
            else:
                out += diffs(a[k], b[k], f"{path}.{k}")
        return out
    if isinstance(a, list):
        if len(a) != len(b):
            return [(path + ".len", len(a), len(b))]
        out = []
        for i, (x, y) in enumerate(zip(a, b)):
            out += diffs(x, y, f"{path}[{i}]")
        return out
    return [] if a == b else [(path, a, b)]


oc, nc = {r["case"]: r for r in old}, {r["case"]: r for r in new}
assert len(oc) == len(old) and len(nc) == len(new), "duplicate case names"
only = sorted(set(oc) ^ set(nc))
common = [c for c in oc if c in nc]
exact = close = 0
different = []
for c in common:
    if oc[c] == nc[c]:
        exact += 1
        continue
    d = diffs(oc[c], nc[c])
    if d:
        different.append((c, d))
    else:
        close += 1
print(f"cases: old {len(old)}, new {len(new)}, common {len(common)}, only in one: {len(only)}")
print(f"identical (bit-exact): {exact}; equal within rel 1e-9: {close}; different: {len(different)}")
for c in only:
    print("ONLY IN", "old" if c in oc else "new", c)
for c, d in different:
    print("DIFF", c)
    for path, a, b in d:
        print(f"    {path}: old={a!r} new={b!r}")
