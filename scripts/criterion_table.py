#!/usr/bin/env python3
"""Prints a markdown table of criterion results: one row per benchmark, one
column per engine, with each peer's ratio to kvs (peer time / kvs time, so
above 1 means kvs is faster).

Usage: scripts/criterion_table.py GROUP_PREFIX [ENGINE ...]
"""
import json
import os
import sys

root = "target/criterion"
prefix = sys.argv[1]
engines = sys.argv[2:] or ["kvs", "sled", "redb"]


def est(path):
    with open(path) as f:
        return json.load(f)["median"]["point_estimate"]


def fmt(ns):
    return f"{ns / 1000:.2f} µs" if ns >= 1000 else f"{ns:.0f} ns"


rows = []
for group in sorted(os.listdir(root)):
    if not group.startswith(prefix.replace("/", "_")):
        continue
    gdir = os.path.join(root, group)
    for bench in sorted(os.listdir(gdir)):
        bdir = os.path.join(gdir, bench)
        if not os.path.isdir(bdir) or bench == "report":
            continue
        times = {}
        for e in engines:
            p = os.path.join(bdir, e, "new", "estimates.json")
            if os.path.exists(p):
                times[e] = est(p)
        if times:
            rows.append((group, bench, times))

base = engines[0]
head = ["workload", "op"] + [f"{e} (median)" for e in engines] + [f"{e} / {base}" for e in engines[1:]]
print("| " + " | ".join(head) + " |")
print("|" + "---|" * len(head))
for group, bench, t in rows:
    cells = [group.replace(prefix.replace("/", "_"), "").strip("_"), bench]
    cells += [fmt(t[e]) if e in t else "-" for e in engines]
    cells += [f"{t[e] / t[base]:.2f}x" if e in t and base in t else "-" for e in engines[1:]]
    print("| " + " | ".join(cells) + " |")
