#!/usr/bin/env python3
"""code_order.py — the functions of one binary that a profile saw run, for the linker's
symbol ordering file (see scripts/bench/code-order.sh).

  code_order.py phases BINARY RUN...         functions of BINARY, the code every run ran
                                             before each run's own, each part by the phase
                                             that first ran them, then by self cost; each RUN is a
                                             comma-separated list of the callgrind dumps of one
                                             run, one dump per phase, in phase order
  code_order.py faults BINARY ORDER < SCRIPT functions of BINARY whose code took a page fault
                                             (`perf script -F ip,addr,sym,dso --no-demangle`
                                             of `perf record -e page-faults -d`), less those
                                             ORDER already lists

Names are printed as the symbol table holds them (mangled), one a line.
"""

import collections
import re
import sys

# `fn=(12) name` defines a compressed name, `fn=(12)` uses it; `ob=`, `cob=` and `cfn=` alike.
NAME = re.compile(r"^(ob|fn|cob|cfn)=(?:\((\d+)\))?\s*(.*)$")


def callgrind_functions(binary, paths):
    """Self cost of every function of `binary` in the callgrind outputs `paths`."""
    cost = collections.Counter()
    for path in paths:
        names = {"ob": {}, "fn": {}}
        ob = fn = None
        after_call = False
        with open(path, errors="replace") as out:
            for line in out:
                match = NAME.match(line.rstrip("\n"))
                if match:
                    kind, ident, name = match.groups()
                    table = names["ob" if kind.endswith("ob") else "fn"]
                    if ident is not None and name:
                        table[ident] = name
                    resolved = table.get(ident, name) if ident is not None else name
                    if kind == "ob":
                        ob = resolved
                    elif kind == "fn":
                        fn, after_call = resolved, False
                    continue
                if line.startswith("calls="):
                    # The cost line after `calls=` is the callee's inclusive cost.
                    after_call = True
                    continue
                if line[:1].isdigit() or line[:1] in "+-*":
                    if after_call:
                        after_call = False
                        continue
                    parts = line.split()
                    if ob == binary and fn and len(parts) >= 2 and parts[1].isdigit():
                        cost[fn] += int(parts[1])
    return cost


def clean(name):
    """`name` without callgrind's recursion mark (`f'2`), or None for an address."""
    name = re.sub(r"'\d+$", "", name)
    return None if name.startswith("0x") or name.startswith("(") else name


def phase_order(binary, runs):
    """The functions of `binary` that ran in `runs` (each a list of per-phase dumps): the code
    every run ran, then each run's own, each part ordered by the first phase that ran them,
    then by total self cost, most expensive first.

    The server's resident code grows phase by phase (start-up, then each scenario in turn),
    so code laid out in that order keeps what has not run yet out of memory: the kernel maps
    code in blocks around each page that runs (whole cached folios, up to megabytes, on recent
    kernels), and a block that holds a single function of a later phase is mapped as a whole.
    """
    first, total, ran = {}, collections.Counter(), collections.defaultdict(set)
    for run, dumps in enumerate(runs):
        for phase, path in enumerate(dumps):
            for name, cost in callgrind_functions(binary, [path]).items():
                name = clean(name)
                if name and cost > 0:
                    total[name] += cost
                    first[name] = min(first.get(name, phase), phase)
                    ran[name].add(run)

    # The code every run ran comes first, then each run's own (one database's driver and
    # queries), so that a server on one database maps none of the other's: placed phase by
    # phase among the shared code, the other database's blocks shared folios with code that
    # runs and were mapped with them.
    def group(name):
        return 0 if len(ran[name]) == len(runs) else 1 + min(ran[name])

    return sorted(total, key=lambda name: (group(name), first[name], -total[name], name))


def main():
    if len(sys.argv) >= 4 and sys.argv[1] == "phases":
        for name in phase_order(sys.argv[2], [run.split(",") for run in sys.argv[3:]]):
            print(name)
    elif len(sys.argv) == 4 and sys.argv[1] == "faults":
        binary = sys.argv[2]
        with open(sys.argv[3]) as order:
            listed = {line.strip() for line in order}
        seen = set()
        for line in sys.stdin:
            # `ADDR ADDRSYM (DSO) IP IPSYM (DSO)`: a fault on code has IP == ADDR.
            parts = line.split()
            if len(parts) >= 6 and parts[0] == parts[3] and parts[5] == f"({binary})":
                name = parts[4]
                if name not in listed and name not in seen and name != "[unknown]":
                    seen.add(name)
                    print(name)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
