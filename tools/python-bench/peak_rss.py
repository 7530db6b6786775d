#!/usr/bin/env python3
"""Runs a command and reports its wall time and the peak of the summed RSS of every
process that belongs to it: its descendants, and processes whose command line contains
one of the --match patterns (Flower's local SuperLink, SuperExec and Ray daemons are
detached from `flwr run`, so they are found by name). Sampled every 50 ms.

    peak_rss.py [--match PATTERN]... -- COMMAND...
"""

import os
import subprocess
import sys
import time

PAGE = os.sysconf("SC_PAGE_SIZE")


def processes():
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/statm") as f:
                rss = int(f.read().split()[1]) * PAGE
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        yield int(pid), ppid, cmd, rss


def main(argv):
    patterns = []
    while argv and argv[0] == "--match":
        patterns.append(argv[1])
        argv = argv[2:]
    if not argv or argv[0] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    command = argv[1:]
    start = time.monotonic()
    child = subprocess.Popen(command)
    peak = 0
    while child.poll() is None:
        procs = list(processes())
        ours = {child.pid}
        grew = True
        while grew:
            grew = False
            for pid, ppid, _, _ in procs:
                if ppid in ours and pid not in ours:
                    ours.add(pid)
                    grew = True
        total = sum(
            rss for pid, _, cmd, rss in procs
            if pid in ours or any(p in cmd for p in patterns)
        )
        peak = max(peak, total)
        time.sleep(0.05)
    wall = time.monotonic() - start
    print(f"wall {wall:.2f} s, peak RSS {peak / 1e6:.0f} MB, exit {child.returncode}",
          file=sys.stderr)
    return child.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
