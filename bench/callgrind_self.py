#!/usr/bin/env python3
"""Functions by the instructions they execute themselves, from a callgrind dump.

Usage: callgrind_self.py DUMP REQUESTS TOP

callgrind_annotate attributes everything to `clone` for tollgate's binary (its line tables are
only partly readable by valgrind 3.19), so this reads the dump's own cost lines: a line after
`calls=` is the call's inclusive cost and is skipped; every other cost line counts for the
function named by the latest `fn=`.
"""
import collections
import re
import sys


def main() -> None:
    dump, requests, top = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    names: dict[str, str] = {}
    own: collections.Counter[str] = collections.Counter()
    current = None
    after_call = False
    name_line = re.compile(r"c?fn=\((\d+)\)(?: (.*))?")
    with open(dump, errors="replace") as f:
        for line in f:
            m = name_line.match(line)
            if m:
                if m.group(2):
                    names[m.group(1)] = m.group(2).strip()
                if line.startswith("fn="):
                    current = m.group(1)
                continue
            if line.startswith("calls="):
                after_call = True
                continue
            if line[:1].isdigit() or line[:1] in "+-*":
                if after_call:
                    after_call = False
                    continue
                parts = line.split()
                if current is not None and len(parts) >= 2 and parts[1].isdigit():
                    own[current] += int(parts[1])
    total = sum(own.values()) or 1
    for fid, n in own.most_common(top):
        print(f"{n * 100 / total:5.1f} % {n // requests:8d}  {names.get(fid, fid)[:140]}")


if __name__ == "__main__":
    main()
