#!/usr/bin/env python3
"""summarize.py — reads ranvier-bench JSON lines (from compare.sh) and prints, per
scenario case and figure, the median of each server over the rounds, the spread
(min..max) and the Ranvier/Synapse ratio of medians.

Usage: summarize.py RESULTS.jsonl [--baseline synapse] [--subject ranvier] [--markdown]

With --markdown it prints the headline figures as a Markdown table instead.
"""

import argparse
import json
import statistics
from collections import defaultdict

# Figures that describe the workload rather than measure it.
INFO = {"count", "deliveries_expected", "rooms_in_response", "deliveries_before_send_returned"}


def direction(figure):
    """'+' when higher is better, '-' when lower is better, '' when neither."""
    if figure in INFO or figure.endswith("_has_room"):
        return ""
    if figure.endswith("_per_sec") or figure == "deliveries_seen":
        return "+"
    if figure.endswith(("_ms", "secs", "_bytes", "bytes", "_kb", "gaps")):
        return "-"
    return ""


def load(path):
    """Returns ({(scenario, case): {figure: {label: [values]}}}, [error lines])."""
    table = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    errors = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            rec = json.loads(line)
            key = (rec.get("scenario", "?"), rec.get("case", "-"))
            if "error" in rec:
                errors.append(rec)
                continue
            for name, value in rec.get("figures", {}).items():
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    continue
                table[key][name][rec.get("label", "?")].append(value)
    return table, errors


def fmt(x):
    if x is None:
        return "-"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.3g}"


# Figures shown by --markdown, per scenario.
HEADLINES = {
    "idle": ["idle_rss_kb"],
    "register": ["registrations_per_sec", "p50_ms", "server_cpu_secs", "server_peak_rss_kb"],
    "login": ["logins_per_sec", "p50_ms", "server_cpu_secs", "server_peak_rss_kb"],
    "create_rooms": ["rooms_per_sec", "p50_ms", "p99_ms", "server_cpu_secs"],
    "send": ["events_per_sec", "p50_ms", "p99_ms", "server_cpu_secs"],
    "fanout": ["delivery_p50_ms", "delivery_p99_ms", "deliveries_seen", "server_cpu_secs", "server_peak_rss_kb"],
    "initial_sync": ["secs", "first_secs", "bytes", "server_cpu_secs"],
    "join_large": ["join_secs", "first_sync_lazy_secs", "first_sync_lazy_bytes", "first_sync_full_secs",
                   "first_sync_full_bytes"],
}


def spread(vals):
    return f"{fmt(statistics.median(vals))} ({fmt(min(vals))}..{fmt(max(vals))}, n={len(vals)})"


def markdown(table, a, b):
    order = list(HEADLINES)
    print(f"| scenario / case | figure | {a} median (min..max) | {b} median (min..max) | {a}/{b} |")
    print("| --- | --- | --- | --- | --- |")
    keys = sorted(table, key=lambda k: (order.index(k[0]) if k[0] in order else 99, k[1]))
    for scenario, case in keys:
        label = scenario if case == "-" else f"{scenario} / {case}"
        for figure in HEADLINES.get(scenario, []):
            vals = table[(scenario, case)].get(figure)
            if not vals:
                continue
            va, vb = vals.get(a), vals.get(b)
            ratio = f"{statistics.median(va) / statistics.median(vb):.2f}" if va and vb and statistics.median(vb) else ""
            print(f"| {label} | {figure} | {spread(va) if va else '-'} | {spread(vb) if vb else '-'} | {ratio} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--baseline", default="synapse")
    ap.add_argument("--subject", default="ranvier")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    table, errors = load(args.results)
    a, b = args.subject, args.baseline
    if args.markdown:
        markdown(table, a, b)
        return

    header = f"{'scenario/case':34} {'figure':30} {a + ' median':>16} {'(min..max)':>22} " \
             f"{b + ' median':>16} {'(min..max)':>22} {'ratio':>8}  better"
    print(header)
    print("-" * len(header))
    for (scenario, case) in sorted(table):
        label = scenario if case == "-" else f"{scenario}/{case}"
        for figure in sorted(table[(scenario, case)]):
            vals = table[(scenario, case)][figure]
            cells = []
            meds = {}
            for who in (a, b):
                v = vals.get(who)
                if v:
                    meds[who] = statistics.median(v)
                    cells.append(f"{fmt(meds[who]):>16} {'(' + fmt(min(v)) + '..' + fmt(max(v)) + ')':>22}")
                else:
                    cells.append(f"{'-':>16} {'':>22}")
            ratio = ""
            better = ""
            if a in meds and b in meds and meds[b]:
                r = meds[a] / meds[b]
                ratio = f"{r:.2f}"
                d = direction(figure)
                if d and r != 1:
                    better = a if (r > 1) == (d == "+") else b
            print(f"{label:34} {figure:30} {cells[0]} {cells[1]} {ratio:>8}  {better}")
    if errors:
        print()
        print("errors:")
        seen = set()
        for rec in errors:
            key = (rec.get("label"), rec.get("scenario"), rec.get("case"), rec.get("error"))
            if key in seen:
                continue
            seen.add(key)
            print(f"  {rec.get('label')}: {rec.get('scenario')}/{rec.get('case')}: {rec.get('error')}")


if __name__ == "__main__":
    main()
