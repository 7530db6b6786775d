#!/usr/bin/env python3
"""Runs a command and reports its wall time and the peak of the summed RSS of every
process that belongs to it: its descendants, and processes whose command line contains
one of the --match patterns (Flower's local SuperLink, SuperExec and Ray daemons are
detached from `flwr run`, so they are found by name). Sampled every 50 ms.

With --cpu it also reports the CPU seconds (user + system) each of those processes had
used when last seen, grouped by kind (the Floret bridge's ServerApp and ClientApp
workers, `flwr`, others by program name): where a run's time goes, per process.

    peak_rss.py [--cpu] [--match PATTERN]... -- COMMAND...
"""

import os
import subprocess
import sys
import time

PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")


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
        fields = stat.rsplit(")", 1)[1].split()
        ppid = int(fields[1])
        cpu = (int(fields[11]) + int(fields[12])) / TICK
        yield int(pid), ppid, cmd, rss, cpu


def kind(cmd):
    """A short name for what a process is."""
    words = cmd.split()
    if "floret_bridge" in words:
        at = words.index("floret_bridge")
        return f"python {words[at + 1]}" if at + 1 < len(words) else "python bridge"
    if not words:
        return "?"
    name = os.path.basename(words[0])
    if name.startswith("python") and len(words) > 1:
        return f"{name} {os.path.basename(words[1])}"
    return name


def main(argv):
    patterns = []
    cpu_report = False
    while argv and argv[0] in ("--match", "--cpu"):
        if argv[0] == "--cpu":
            cpu_report = True
            argv = argv[1:]
            continue
        patterns.append(argv[1])
        argv = argv[2:]
    if not argv or argv[0] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    command = argv[1:]
    start = time.monotonic()
    child = subprocess.Popen(command)
    peak = 0
    cpu = {}
    while True:
        # Sampled before the exit check: the last sample follows the command's end.
        done = child.poll() is not None
        procs = list(processes())
        ours = {child.pid}
        grew = True
        while grew:
            grew = False
            for pid, ppid, _, _, _ in procs:
                if ppid in ours and pid not in ours:
                    ours.add(pid)
                    grew = True
        mine = [p for p in procs if p[0] in ours or any(m in p[2] for m in patterns)]
        peak = max(peak, sum(rss for _, _, _, rss, _ in mine))
        cmds = {pid: cmd for pid, _, cmd, _, _ in procs}
        for pid, ppid, cmd, _, used in mine:
            # A process that has exited but is not yet reaped shows no command line:
            # it keeps the kind it was first seen with.
            seen = cpu.get(pid, ("", 0))[0]
            name = seen if seen and (not cmd or seen.endswith("(forked)")) else kind(cmd)
            if cmd and cmds.get(ppid) == cmd:
                # Forked from its parent (the bridge's ClientApp workers from the
                # ServerApp's process): the same command line.
                if not name.endswith("(forked)"):
                    name = "python clientapp (forked)" if "serverapp" in name else f"{name} (forked)"
            cpu[pid] = (name, used)
        if done:
            break
        time.sleep(0.05)
    wall = time.monotonic() - start
    print(f"wall {wall:.2f} s, peak RSS {peak / 1e6:.0f} MB, exit {child.returncode}",
          file=sys.stderr)
    if cpu_report:
        by_kind = {}
        for name, used in cpu.values():
            n, total = by_kind.get(name, (0, 0.0))
            by_kind[name] = (n + 1, total + used)
        parts = [
            f"{name} {total:.2f}" + (f" ({n} processes)" if n > 1 else "")
            for name, (n, total) in sorted(by_kind.items(), key=lambda kv: -kv[1][1])
        ]
        print("CPU seconds (as last sampled): " + ", ".join(parts), file=sys.stderr)
    return child.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
