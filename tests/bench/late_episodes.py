#!/usr/bin/python3
"""What ran on each CPU while messages were late (issue 4, p99 at a
fixed rate).

A late message rarely comes alone: the generator sends every 1/R s, so
whatever holds the path for a few milliseconds delays every message
sent meanwhile.  This groups the late messages of a run into episodes
(sends less than 2 ms apart) and, from a scheduler trace taken during
the run, adds up which tasks held each CPU during the episodes.

    run_bench.py --target conclave --scenarios chat-fixed-rate \\
        --rates 5000 --rate-duration 14 --late-ms 1.5 --out OUT &
    sleep 12; perf record -a -k CLOCK_MONOTONIC -e sched:sched_switch \\
        -o sched.data -- sleep 5
    perf script -i sched.data -F comm,tid,cpu,time,event,trace > sched.txt
    /usr/bin/python3 tests/bench/late_episodes.py \\
        OUT/late-conclave-tcp-chat-fixed-rate-5000-1.txt sched.txt

Both clocks are CLOCK_MONOTONIC (the loadgen's timestamps and perf's
-k), so the two line up.  Only episodes inside the trace count.  It
measures; it asserts nothing.
"""

import argparse
import bisect
import collections
import re

SWITCH = re.compile(r"\[(\d+)\]\s+(\d+\.\d+): sched:sched_switch: "
                    r"prev_comm=.*? prev_pid=\d+ .*next_comm=(.*?) "
                    r"next_pid=(\d+)")


def episodes(path, gap):
    late = []
    for line in open(path):
        f = line.split()
        if len(f) >= 2:
            late.append((int(f[0]) / 1e9, int(f[1]) / 1e9))
    late.sort()
    out = []                    # [first sent, last sent, last received, n]
    for sent, recv in late:
        if out and sent - out[-1][1] < gap:
            e = out[-1]
            e[1] = sent
            e[2] = max(e[2], recv)
            e[3] += 1
        else:
            out.append([sent, sent, recv, 1])
    return out


def segments(path):
    """{cpu: [(start, end, task)]} from the sched_switch lines."""
    seg = collections.defaultdict(list)
    cur = {}
    for line in open(path):
        m = SWITCH.search(line)
        if not m:
            continue
        cpu, t = int(m.group(1)), float(m.group(2))
        if cpu in cur:
            seg[cpu].append((cur[cpu][0], t, cur[cpu][1]))
        cur[cpu] = (t, re.sub(r"[/:].*", "", m.group(3)))
    return seg


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("late", help="a loadgen --late-log file")
    p.add_argument("sched", help="perf script of sched:sched_switch")
    p.add_argument("--gap", type=float, default=2.0,
                   help="ms between sends that splits episodes [2]")
    p.add_argument("--long", type=float, default=0.8,
                   help="ms: count a task's runs longer than this [0.8]")
    a = p.parse_args()

    seg = segments(a.sched)
    if not seg:
        raise SystemExit("no sched_switch lines in " + a.sched)
    lo = min(s[0][0] for s in seg.values())
    hi = max(s[-1][1] for s in seg.values())
    eps = [e for e in episodes(a.late, a.gap / 1e3)
           if e[0] > lo and e[2] < hi]
    if not eps:
        print("no late message inside the trace")
        return
    held = {cpu: collections.Counter() for cpu in seg}
    starts = {cpu: [s[0] for s in ss] for cpu, ss in seg.items()}
    long_runs = collections.Counter()
    span = 0.0
    for first, _, last, _ in eps:
        span += last - first
        for cpu, ss in seg.items():
            i = max(0, bisect.bisect_left(starts[cpu], first) - 1)
            while i < len(ss) and ss[i][0] < last:
                s, e, task = ss[i]
                ov = min(e, last) - max(s, first)
                if ov > 0:
                    held[cpu][task] += ov
                    if e - s > a.long / 1e3 and task != "swapper":
                        long_runs[(cpu, task)] += 1
                i += 1
    n = sum(e[3] for e in eps)
    print("%d episodes, %d late messages, %.1f ms in all (%.1f s traced)"
          % (len(eps), n, span * 1e3, hi - lo))
    for cpu in sorted(held):
        print("CPU %d during the episodes: %s" % (cpu, ", ".join(
            "%s %.0f%%" % (t, 100 * v / span)
            for t, v in held[cpu].most_common(6))))
    print("runs over %.1f ms inside episodes: %s" % (a.long, ", ".join(
        "%s on CPU %d: %d" % (t, c, v)
        for (c, t), v in long_runs.most_common(6)) or "none"))


if __name__ == "__main__":
    main()
