#!/usr/bin/python3
"""Who holds the CPU while a Conclave thread waits to run (issue 4,
p99 at 5,000 messages/s).

Reads the text of `perf sched timehist` (one line per context switch:
time, CPU, task, wait time, scheduling delay, run time) and prints, for
the nginx event loops (task name "nginx") and the audit sync threads
("conclave-sync"), the distribution of their scheduling delay (woken ->
running) and, for the delays over a threshold, which tasks ran on the
CPU meanwhile, by class: the other event loops, conclave-sync,
conclave-ship, mariadbd, and everything else.  On a shared machine give
--pids (nginx's master and workers, and the appliance's mariadbd): only
their threads are classed as ours, other engineers' nginx and mariadbd
count as "other".

    perf sched record -C 0 -o sched.data -- sleep 6   # during a run
    perf sched timehist -i sched.data > sched.txt
    /usr/bin/python3 tests/bench/sched_delay.py sched.txt \
        [--pids 1234,1235,1236,1240] [--over 0.5]

It measures; it asserts nothing.
"""

import argparse
import bisect
import collections
import re

LINE = re.compile(r"^\s*(\d+\.\d+)\s+\[(\d+)\]\s+(\S+)\s+"
                  r"([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*$")


OURS = None      # set of pids, or None: every task by its name


def klass(task, pid=None):
    if OURS is not None and pid not in OURS:
        return "other"
    if task == "nginx":
        return "nginx event loops"
    if task in ("conclave-sync", "conclave-ship", "mariadbd"):
        return task
    return "other"


def parse(path):
    out = []
    for line in open(path):
        m = LINE.match(line)
        if not m:
            continue
        t, cpu, name, _, delay, run = m.groups()
        task = re.sub(r"\[.*", "", name)
        ids = re.findall(r"\d+", name[len(task):])
        pid = int(ids[-1]) if ids else None
        out.append((float(t), int(cpu), task, float(delay), float(run),
                    pid))
    return out


def quantile(vals, q):
    return vals[min(len(vals) - 1, int(q * len(vals)))]


def report(switches, who, over):
    mine = [s for s in switches
            if s[2] == who and (OURS is None or s[5] in OURS)]
    if not mine:
        print("%s: no switches" % who)
        return
    delays = sorted(s[3] for s in mine)
    print("%s: %d runs, scheduling delay ms p50 %.3f p90 %.3f p99 %.3f "
          "max %.3f" % (who, len(delays), quantile(delays, 0.5),
                        quantile(delays, 0.9), quantile(delays, 0.99),
                        delays[-1]))
    for limit in (0.25, 0.5, 1.0, 2.0):
        n = sum(1 for d in delays if d > limit)
        print("  over %.2f ms: %d (%.2f%%)" % (limit, n,
                                               100.0 * n / len(delays)))
    # per CPU, the switches sorted by their end: what ran in a window
    by_cpu = collections.defaultdict(list)
    for s in switches:
        by_cpu[s[1]].append(s)
    ends = {c: [s[0] for s in v] for c, v in by_cpu.items()}
    held = collections.Counter()
    for t, cpu, _, delay, run, _ in mine:
        if delay <= over:
            continue
        start = t - run / 1000.0
        woken = start - delay / 1000.0
        lst = by_cpu[cpu]
        i = bisect.bisect_right(ends[cpu], woken)
        while i < len(lst) and lst[i][0] - lst[i][4] / 1000.0 < start:
            s = lst[i]
            lo = max(s[0] - s[4] / 1000.0, woken)
            hi = min(s[0], start)
            if hi > lo:
                held[klass(s[2], s[5])] += hi - lo
            i += 1
    total = sum(held.values())
    if total:
        print("  while delayed over %.2f ms the CPU ran: %s" % (
            over, ", ".join("%s %.0f%%" % (k, 100.0 * v / total)
                            for k, v in held.most_common())))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("timehist", help="output of perf sched timehist")
    p.add_argument("--over", type=float, default=0.5,
                   help="delays (ms) whose CPU holders are counted")
    p.add_argument("--pids", default="",
                   help="comma list: the processes counted as ours")
    args = p.parse_args()
    global OURS
    if args.pids:
        OURS = {int(x) for x in args.pids.split(",") if x}
    switches = parse(args.timehist)
    busy = collections.Counter()
    for s in switches:
        busy[klass(s[2], s[5])] += s[4]
    total = sum(busy.values()) or 1
    print("CPU time in the capture: " + ", ".join(
        "%s %.0f%%" % (k, 100.0 * v / total) for k, v in busy.most_common()))
    for who in ("nginx", "conclave-sync"):
        report(switches, who, args.over)


if __name__ == "__main__":
    main()
