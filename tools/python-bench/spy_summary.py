#!/usr/bin/env python3
"""Summarises `py-spy record --subprocesses --format raw` output per bridge process kind:
samples (CPU time, py-spy leaves idle out), and the frames where the time goes, each with
its inclusive share (itself and what it calls) and its own share (leaf samples).

    spy_summary.py RAW_FILE [TOP]
"""

import collections
import re
import sys

RATE_NOTE = "share of the kind's samples"


def kind_of(stack):
    for frame in stack:
        m = re.match(r'process \d+:".*floret_bridge (\w+)', frame)
        if m:
            return m.group(1)
    return "other"


def name_of(frame):
    """`function (file:line)` -> `function (file)`: lines of one function add up."""
    return re.sub(r":\d+\)$", ")", frame)


def main(argv):
    path = argv[0]
    top = int(argv[1]) if len(argv) > 1 else 25
    total = collections.Counter()
    inclusive = collections.defaultdict(collections.Counter)
    own = collections.defaultdict(collections.Counter)
    with open(path) as f:
        for line in f:
            stack_text, _, count = line.rstrip("\n").rpartition(" ")
            if not stack_text:
                continue
            n = int(count)
            stack = stack_text.split(";")
            kind = kind_of(stack)
            frames = [name_of(s) for s in stack if not s.startswith("process ")]
            total[kind] += n
            for frame in set(frames):
                inclusive[kind][frame] += n
            if frames:
                own[kind][frames[-1]] += n
    for kind, n in total.most_common():
        print(f"== {kind}: {n} samples")
        print(f"   inclusive ({RATE_NOTE}):")
        for frame, c in inclusive[kind].most_common(top):
            print(f"   {100 * c / n:5.1f}%  {frame}")
        print("   own:")
        for frame, c in own[kind].most_common(top // 2):
            print(f"   {100 * c / n:5.1f}%  {frame}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
