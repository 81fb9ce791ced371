"""Sort mutmut's surviving mutants into "equivalent" classes (with the reason) and "open" ones.

    (cd WORKDIR && mutmut results) > survivors.txt
    (cd WORKDIR && for n in $(sed 's/:.*//' survivors.txt); do echo "=== $n"; mutmut show $n | grep -E '^[-+][^-+]'; done) > diffs.txt
    .venv/bin/python benchmarks/mutation_survivors.py diffs.txt > table.md

A class applies only when *every* changed line of the mutant matches it. The rules are conservative
text rules; what none of them covers is listed as "open", to be killed by a test or explained by hand
(``MANUAL`` below, one reason per mutant).
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict

#: (class, reason, predicate(old_line, new_line) -> bool)
RULES = [
    ("device", "device placement only (`.to(None)`, `device=None`, `dev = None`): a no-op when every tensor "
     "is on one device; the tests run on the CPU",
     lambda o, n: bool(re.search(r"\.to\(None\)|device=None|dev = None|\bdevice=[^,)]*[,)]", n + o))
     and _strip(o, r"\.to\([^()]*\)|,? ?device=[^,)]*|dev = [^\n]*") == _strip(n, r"\.to\([^()]*\)|,? ?device=[^,)]*|dev = [^\n]*")),
    ("dtype", "dtype argument dropped or None where the value already has that dtype, or float64 instead of "
     "float32 for integer-valued data: same values",
     lambda o, n: _strip(o, r"np\.(float32|float64|int64|uint8)|torch\.(float32|long)|dtype=[^,)]*|\bNone\b|\bbool\b|f32")
     == _strip(n, r"np\.(float32|float64|int64|uint8)|torch\.(float32|long)|dtype=[^,)]*|\bNone\b|\bbool\b|f32")),
    ("message", "the text of an error or log message only (no test asserts the wording of these)",
     lambda o, n: ("raise " in o or "log." in o or "warning(" in o or o.strip().startswith(("f\"", "\"", "name,")))
     and _strip(o, r"\"[^\"]*\"|f\"[^\"]*\"|\(None\)|\bNone\b|\w+\(exc\)|type\(\w+\)\.__name__|\[:\d\]")
     == _strip(n, r"\"[^\"]*\"|f\"[^\"]*\"|\(None\)|\bNone\b|\w+\(exc\)|type\(\w+\)\.__name__|\[:\d\]")),
    ("inplace", "`nn.ReLU(inplace=...)`: in-place or not, the same numbers",
     lambda o, n: _strip(o, r"inplace=\w+") == _strip(n, r"inplace=\w+")),
    ("default_kw", "a keyword argument dropped or set to a value that equals the callee's default "
     "(grid_sample's mode 'bilinear' / padding 'zeros', interpolate's align_corners False, min_overlap 0.7)",
     lambda o, n: _strip(o, r",? ?(mode=\"bilinear\"|padding_mode=\"zeros\"|align_corners=(False|None)|0\.7)")
     == _strip(n, r",? ?(mode=\"bilinear\"|padding_mode=\"zeros\"|align_corners=(False|None)|0\.7)")),
]


def _strip(s: str, pat: str) -> str:
    return re.sub(r"\s+", "", re.sub(pat, "", s))


#: per-mutant reasons for the survivors no rule covers (filled in by hand after reading each diff)
MANUAL: dict[str, str] = {}


def parse(path):
    muts, cur = {}, None
    for line in open(path, encoding="utf-8"):
        line = line.rstrip("\n")
        if line.startswith("=== "):
            cur = line[4:].strip()
            muts[cur] = ([], [])
        elif cur and line.startswith("-"):
            muts[cur][0].append(line[1:])
        elif cur and line.startswith("+"):
            muts[cur][1].append(line[1:])
    return muts


def classify(old, new):
    if not old and not new:
        return None
    o, n = " ".join(old), " ".join(new)
    for name, _, pred in RULES:
        try:
            if pred(o, n):
                return name
        except re.error:
            continue
    return None


def main():
    muts = parse(sys.argv[1])
    by = defaultdict(list)
    for name, (old, new) in muts.items():
        cls = classify(old, new)
        if cls is None and name in MANUAL:
            cls = "manual"
        by[cls or "open"].append(name)
    reasons = {name: reason for name, reason, _ in RULES}
    print(f"{len(muts)} survivors\n")
    print("| class | mutants | why equivalent |\n| --- | --- | --- |")
    for cls in [r[0] for r in RULES] + ["manual", "open"]:
        if by.get(cls):
            print(f"| {cls} | {len(by[cls])} | {reasons.get(cls, 'see the per-mutant list' if cls == 'manual' else 'not equivalent by any rule: see below')} |")
    for cls, names in sorted(by.items()):
        print(f"\n### {cls} ({len(names)})\n")
        for name in sorted(names):
            old, new = muts[name]
            extra = f" — {MANUAL[name]}" if name in MANUAL else ""
            print(f"- `{name.replace('objguided.models.', '')}`: `{' '.join(s.strip() for s in new)[:110]}`{extra}")


if __name__ == "__main__":
    main()
