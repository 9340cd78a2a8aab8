"""Killed against survived mutants per module, from a finished `mutmut run` (make mutation).

    python scripts/mutation_report.py            # table of every mutated module
    python scripts/mutation_report.py --survivors distributed_adcs/coreset/budgets.py

Statuses follow mutmut 3 (mutmut/stats.py): exit code 1 or 3 killed, 0 survived, 33/5 no test
ran the mutant, 36 and the SIGXCPU codes timeout (counted as killed: the mutant hung the tests).
The kill rate is killed / (killed + survived + no tests - equivalent): a mutant no test runs is
not caught. "Equivalent on CPU" are survivors whose only change is where a tensor is made
(``device=...`` dropped or set to None, ``.to(x.device)`` made ``.to(None)``): on a machine with one
device, the CPU, they cannot change behaviour (on CUDA they would; scripts/gpu_check.sh is where
that shows). They are recognised from the mutant's diff (``mutmut show``).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KILLED, SURVIVED, UNTESTED, TIMEOUT = {1, 3}, {0}, {5, 33}, {36, 24, -24, 152, 255}


def _module(meta: Path) -> str:
    return meta.relative_to(ROOT / "mutants").as_posix().removesuffix(".meta")


def load() -> dict[str, dict[str, int | None]]:
    return {_module(m): json.loads(m.read_text())["exit_code_by_key"]
            for m in sorted((ROOT / "mutants" / "distributed_adcs").rglob("*.py.meta"))}


_DEVICE = re.compile(r"device=[\w.]+|\.to\((?:[\w.]+\.)?device\)")


def equivalent_on_cpu(key: str) -> bool:
    """The survivor only moves where a tensor is made (see the module docstring)."""
    diff = subprocess.run([str(ROOT / ".venv" / "bin" / "mutmut"), "show", key], cwd=ROOT, capture_output=True,
                          text=True).stdout
    minus = [line[1:] for line in diff.splitlines() if line.startswith("-") and not line.startswith("---")]
    plus = [line[1:] for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
    if len(minus) != 1 or len(plus) != 1:
        return False
    strip = lambda t: re.sub(r"[\s,]+\)", ")", _DEVICE.sub("", t.replace("device=None", "").replace(".to(None)", "")))  # noqa: E731
    return _DEVICE.search(minus[0]) is not None and strip(minus[0]) == strip(plus[0])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--survivors", metavar="MODULE", help="list the surviving mutant names of one module")
    ap.add_argument("--no-equivalents", action="store_true", help="skip recognising equivalent survivors (faster)")
    args = ap.parse_args()
    results = load()
    if not results:
        raise SystemExit("no mutmut results under mutants/: run `make mutation` first")
    if args.survivors:
        for key, code in sorted(results[args.survivors].items()):
            if code in SURVIVED or code in UNTESTED:
                print(key, "survived" if code in SURVIVED else "no tests")
        return 0
    print(f"{'module':46s} {'killed':>7s} {'survived':>9s} {'no test':>8s} {'equiv.':>7s} {'kill rate':>9s}")
    totals = Counter()
    for module, codes in results.items():
        if not codes:
            continue
        c = Counter("killed" if v in KILLED | TIMEOUT else "survived" if v in SURVIVED else
                    "untested" if v in UNTESTED else "other" for v in codes.values())
        if not args.no_equivalents:
            c["equivalent"] = sum(equivalent_on_cpu(k) for k, v in codes.items() if v in SURVIVED)
        totals.update(c)
        denom = c["killed"] + c["survived"] + c["untested"] - c["equivalent"]
        print(f"{module:46s} {c['killed']:7d} {c['survived']:9d} {c['untested']:8d} {c['equivalent']:7d} "
              f"{c['killed'] / max(denom, 1):9.1%}" + (f"  ({c['other']} not run)" if c["other"] else ""))
    denom = totals["killed"] + totals["survived"] + totals["untested"] - totals["equivalent"]
    print(f"{'all':46s} {totals['killed']:7d} {totals['survived']:9d} {totals['untested']:8d} "
          f"{totals['equivalent']:7d} {totals['killed'] / max(denom, 1):9.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
