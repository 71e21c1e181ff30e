#!/usr/bin/env python3
"""chart.py — draws a PNG bar chart of Ranvier vs Synapse from ranvier-bench JSON lines
(the results file written by compare.sh): one panel per scenario case with its headline
figure, bars at the median over the rounds and whiskers from the minimum to the maximum.

Usage: chart.py RESULTS.jsonl [MORE.jsonl ...] -o chart.png [--title TEXT]
Results of several files (for example SQLite and PostgreSQL runs) are drawn side by side,
grouped by their "db" field.
"""

import argparse
import json
import statistics
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# (scenario, case prefix) -> (figure, axis label). The first matching entry is drawn.
HEADLINE = [
    ("register", "", "registrations_per_sec", "registrations/s (higher is better)"),
    ("login", "", "logins_per_sec", "logins/s (higher is better)"),
    ("create_rooms", "", "rooms_per_sec", "rooms/s (higher is better)"),
    ("send", "", "events_per_sec", "events/s (higher is better)"),
    ("fanout", "", "delivery_p99_ms", "delivery p99 ms (lower is better)"),
    ("initial_sync", "", "secs", "seconds (lower is better)"),
    ("join_large", "", "join_secs", "join seconds (lower is better)"),
    ("idle", "", "idle_rss_kb", "idle RSS kB (lower is better)"),
]
SERVERS = [("ranvier", "#2a7ab9"), ("synapse", "#e0812f")]


def headline(scenario, case):
    for s, prefix, figure, axis in HEADLINE:
        if s == scenario and case.startswith(prefix):
            return figure, axis
    return None, None


def load(paths):
    """{(scenario, case): {(db, label): [values]}} of each case's headline figure."""
    data = defaultdict(lambda: defaultdict(list))
    for path in paths:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                rec = json.loads(line)
                if "error" in rec:
                    continue
                scenario, case = rec.get("scenario"), rec.get("case", "-")
                figure, _ = headline(scenario, case)
                value = rec.get("figures", {}).get(figure)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    data[(scenario, case)][(rec.get("db", "?"), rec.get("label"))].append(value)
    return data


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results", nargs="+")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--title", default="Ranvier vs Synapse (median over rounds, whiskers min..max)")
    args = ap.parse_args()
    data = load(args.results)
    if not data:
        raise SystemExit("no figures to draw")
    order = [s for s, _, _, _ in HEADLINE]
    keys = sorted(data, key=lambda k: (order.index(k[0]) if k[0] in order else 99, k[1]))
    dbs = sorted({db for k in keys for db, _ in data[k]})

    cols = 4
    rows = (len(keys) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    width = 0.8 / len(SERVERS)
    for ax, key in zip(axes.flat, keys):
        scenario, case = key
        _, axis = headline(scenario, case)
        for i, (server, colour) in enumerate(SERVERS):
            xs, meds, lo, hi = [], [], [], []
            for j, db in enumerate(dbs):
                vals = data[key].get((db, server))
                if not vals:
                    continue
                m = statistics.median(vals)
                xs.append(j + (i - (len(SERVERS) - 1) / 2) * width)
                meds.append(m)
                lo.append(m - min(vals))
                hi.append(max(vals) - m)
            if xs:
                ax.bar(xs, meds, width, color=colour, label=server, yerr=[lo, hi], capsize=4)
                for x, m in zip(xs, meds):
                    ax.annotate(f"{m:.3g}", (x, m), ha="center", va="bottom", fontsize=7,
                                xytext=(0, 2), textcoords="offset points")
        ax.set_xticks(range(len(dbs)))
        ax.set_xticklabels(dbs)
        ax.set_title(scenario if case == "-" else f"{scenario} / {case}", fontsize=10)
        ax.set_ylabel(axis, fontsize=8)
        ax.tick_params(labelsize=8)
        ax.margins(y=0.15)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right")
    fig.suptitle(args.title)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(args.output, dpi=110)
    print(args.output)


if __name__ == "__main__":
    main()
