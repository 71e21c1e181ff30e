#!/usr/bin/env python3
"""summarize.py — reads ranvier-bench JSON lines (from compare.sh) and prints, per
scenario case and figure, the median of each server over the rounds, the spread
(min..max) and the Ranvier/Synapse ratio of medians.

Usage: summarize.py RESULTS.jsonl [--baseline synapse] [--subject ranvier] [--markdown | --targets]

With --markdown it prints the headline figures as a Markdown table instead; with --targets,
each benchmark goal per case with the measured ratio and whether it is met.
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
    if figure.endswith(("_ms", "secs", "_bytes", "bytes", "_kb", "gaps", "_per_event", "_per_delivery")):
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
    "create_rooms": ["rooms_per_sec", "p50_ms", "p99_ms", "server_cpu_secs", "server_peak_rss_kb"],
    "send": ["events_per_sec", "p50_ms", "p99_ms", "server_cpu_ms_per_event", "server_peak_rss_kb"],
    "fanout": ["delivery_p50_ms", "delivery_p99_ms", "deliveries_seen", "server_cpu_ms_per_delivery",
               "server_peak_rss_kb"],
    "initial_sync": ["secs", "first_secs", "bytes", "server_cpu_secs", "server_peak_rss_kb"],
    "join_large": ["join_secs", "first_sync_lazy_secs", "first_sync_lazy_bytes", "first_sync_full_secs",
                   "first_sync_full_bytes", "server_peak_rss_kb"],
}

# The goals, as (scenario, figure, kind, bound, wording). kind "ratio_max": the median ratio
# subject/baseline must be at most bound; "ratio_min": at least bound; "abs_max": the
# subject's median must be at most bound. Every case of the scenario is checked; scenario
# "*" means every case that has the figure.
TARGETS = [
    ("send", "events_per_sec", "ratio_min", 30, "send throughput >= 30x"),
    ("fanout", "delivery_p99_ms", "ratio_max", 0.1, "fan-out p99 <= 1/10"),
    ("initial_sync", "secs", "ratio_max", 0.1, "initial sync >= 10x faster"),
    ("send", "server_cpu_ms_per_event", "ratio_max", 0.05, "server CPU per event <= 1/20"),
    ("fanout", "server_cpu_ms_per_delivery", "ratio_max", 0.05, "server CPU per delivered event <= 1/20"),
    ("idle", "idle_rss_kb", "abs_max", 20 * 1024, "idle RSS <= 20 MB"),
    ("*", "server_peak_rss_kb", "ratio_max", 0.1, "peak RSS <= 1/10"),
]


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


def targets(table, a, b):
    """Prints each goal per case: the measured value, the bound, and met or missed."""
    print("| goal | scenario / case | measured | bound | verdict |")
    print("| --- | --- | --- | --- | --- |")
    order = list(HEADLINES)
    keys = sorted(table, key=lambda k: (order.index(k[0]) if k[0] in order else 99, k[1]))
    for scenario, figure, kind, bound, wording in TARGETS:
        for key in keys:
            if scenario not in ("*", key[0]):
                continue
            vals = table[key].get(figure)
            if not vals or a not in vals or (kind != "abs_max" and b not in vals):
                continue
            label = key[0] if key[1] == "-" else f"{key[0]} / {key[1]}"
            ma = statistics.median(vals[a])
            if kind == "abs_max":
                measured, met = f"{fmt(ma)} kB", ma <= bound
                shown = f"{fmt(bound)} kB"
            else:
                mb = statistics.median(vals[b])
                if not mb:
                    continue
                r = ma / mb
                measured = f"{r:.3g}x ({fmt(ma)} vs {fmt(mb)})"
                met = r >= bound if kind == "ratio_min" else r <= bound
                shown = f"{'>=' if kind == 'ratio_min' else '<='} {bound:g}x"
            print(f"| {wording} | {label} | {measured} | {shown} | {'met' if met else 'missed'} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--baseline", default="synapse")
    ap.add_argument("--subject", default="ranvier")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--targets", action="store_true", help="print the goals as a Markdown table")
    args = ap.parse_args()
    table, errors = load(args.results)
    a, b = args.subject, args.baseline
    if args.markdown:
        markdown(table, a, b)
        return
    if args.targets:
        targets(table, a, b)
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
