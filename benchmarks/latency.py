"""Produce -> consume latency in one process: how long after ``producer.send`` starts does a
consumer's ``poll`` hand the record to the application?

    PYTHONPATH=src python benchmarks/latency.py                       # 20 000 samples per cell
    PYTHONPATH=src python benchmarks/latency.py --rates 1000,10000 --modes blocking --json out.json
    PYTHONPATH=src python benchmarks/latency.py --quick               # CI smoke: a few hundred samples

One store (``logstore.open`` with its defaults), one topic of one partition, standard records
(16-byte key, 100-byte value), one idempotent producer with ``linger_ms=0`` sending one record
at a time at a paced rate (a sleep to the next slot of a fixed schedule; when a sleep overshoots,
the schedule lets the next send go at once but never builds a backlog of more than one slot),
and one consumer. latency = ``time.perf_counter_ns()`` right after the consumer's ``poll``
returned the record - the same clock right before ``send`` was called. Modes:

- ``blocking``: the consumer is a thread blocked in ``poll(timeout=1.0)``; the append wakes it
  through the store's ``AppendNotifier`` (a condition variable). What an application gets.
- ``busy``: the consumer thread calls ``poll(timeout=0)`` in a loop: no condition variable, but
  the two threads still hand the GIL to each other (a spinning Python thread holds the GIL, so
  ``sys.setswitchinterval`` is lowered for this mode to let the producer in: ``--switch-interval``).
- ``same-thread``: ``send`` then ``poll(timeout=0)`` in one thread: the send + read path alone,
  no thread handoff at all (a floor for the other two).
- ``condition-floor`` (no logstore): the main thread bumps a counter and ``notify_all()``s a
  ``threading.Condition`` at the same pace; a thread blocked in ``wait(1.0)`` notes when it runs
  again. What any in-process Python consumer thread woken by a condition variable pays on this
  machine, whatever it reads.

The first ``--warmup`` records of each cell are not counted. Every record is then read back and
compared byte for byte. Issue 3's target: p99 <= 100 us (blocking).

``--breakdown`` splits the blocking mode's latency in three, with two more clock reads: *send*
(``send`` called -> returned, in the producer thread), *wake-up* (``send`` returned -> the
consumer's wait on the store's notifier returned, i.e. the consumer thread runs again and holds
the GIL) and *read* (that -> ``poll`` returned the record: the consumer's fetch). It wraps the
consumer's notifier in a Python object that notes when ``wait`` returns (a diagnostic reaching
into ``Consumer._notifier``; it adds ~0.3 us to the read part). Records that were already there
when ``poll`` was called (the consumer was behind) have no wake-up and are left out of it. The
condition floor's is in two: *notify* (``with cond: notify_all()``) and *wake-up*.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import logstore
from logstore import TopicPartition

try:  # imported as benchmarks.latency (test_consumer.py)
    from .workload import KEY_BYTES, VALUE_BYTES, Workload, machine_info, machine_markdown
except ImportError:  # run as a script: python benchmarks/latency.py
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from workload import (  # type: ignore[import-not-found,no-redef]
        KEY_BYTES,
        VALUE_BYTES,
        Workload,
        machine_info,
        machine_markdown,
    )

MODES = ("blocking", "busy", "same-thread")
FLOOR_MODE = "condition-floor"
TARGET_P99_US = 100.0
TOPIC = "latency"
POLL_TIMEOUT_S = 1.0
BUSY_SWITCH_INTERVAL_S = 50e-6


@dataclass
class LatencyResult:
    """One cell: a mode at a rate. Latencies in microseconds."""

    mode: str
    rate: float                   # records/s asked for
    achieved_rate: float          # records/s actually sent over the counted samples
    samples: int
    p50_us: float
    p90_us: float
    p99_us: float
    p999_us: float
    max_us: float
    mean_us: float
    over_target: int              # samples above TARGET_P99_US
    records_per_poll: float       # mean records per non-empty poll (> 1: the consumer fell behind)
    switch_interval_s: float
    topic_config: dict[str, Any] = field(default_factory=dict)
    worst: list[tuple[float, float]] = field(default_factory=list)  # (seconds into the run, latency us)
    breakdown: dict[str, dict[str, float]] = field(default_factory=dict)  # part -> {p50, p90, p99, p999}

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def row(self) -> str:
        return (f"| {self.mode} | {self.rate:,.0f} | {self.achieved_rate:,.0f} | {self.samples:,} | "
                f"{self.p50_us:.1f} | {self.p90_us:.1f} | {self.p99_us:.1f} | {self.p999_us:.1f} | "
                f"{self.max_us:,.0f} | {self.records_per_poll:.2f} |")


TABLE_HEAD = ("| mode | rate asked (rec/s) | rate achieved | samples | p50 us | p90 us | p99 us | p99.9 us | max us "
              "| records/poll |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 1]) of an ascending list."""
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


class TimedNotifier:
    """Stands in for a consumer's AppendNotifier and notes when each ``wait`` returns (--breakdown)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.woke = 0

    @property
    def current_version(self) -> int:
        return int(self.inner.current_version)

    def wait(self, seen_version: int, timeout: float) -> int:
        version = int(self.inner.wait(seen_version, timeout))
        self.woke = time.perf_counter_ns()
        return version

    def wake(self) -> None:
        self.inner.wake()


def quantiles_us(values_ns: list[int]) -> dict[str, float]:
    ordered = sorted(v / 1e3 for v in values_ns)
    if not ordered:
        return {}
    return {"p50": percentile(ordered, 0.5), "p90": percentile(ordered, 0.9), "p99": percentile(ordered, 0.99),
            "p999": percentile(ordered, 0.999), "samples": float(len(ordered))}


class Pacer:
    """Sleeps to the next slot of a schedule of ``rate`` slots per second. A late start (the
    sleep overshot, the machine was busy) sends at once but is not made up further: the
    schedule restarts from now when it falls more than one slot behind."""

    def __init__(self, rate: float) -> None:
        self.interval_ns = int(1e9 / rate)
        self.next_ns = time.perf_counter_ns()

    def wait(self) -> None:
        now = time.perf_counter_ns()
        if self.next_ns > now:
            time.sleep((self.next_ns - now) / 1e9)
        elif now - self.next_ns > self.interval_ns:
            self.next_ns = now
        self.next_ns += self.interval_ns


def measure(mode: str, rate: float, samples: int, warmup: int, directory: str, *,
            switch_interval: float = BUSY_SWITCH_INTERVAL_S, topic_config: dict[str, Any] | None = None,
            poll_timeout: float = POLL_TIMEOUT_S, breakdown: bool = False) -> LatencyResult:
    """Run one cell in a fresh store under ``directory`` (deleted afterwards)."""
    if mode == FLOOR_MODE:
        return measure_floor(rate, samples, warmup, breakdown=breakdown)
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: expected one of {MODES + (FLOOR_MODE,)}")
    if breakdown and mode != "blocking":
        raise ValueError("the breakdown is of the blocking consumer's (or the condition floor's) wake-up")
    total = warmup + samples
    wl = Workload(total, seed=5)
    sent = [0] * total
    received = [0] * total
    sent_end = [0] * total  # --breakdown: send returned
    woke = [0] * total      # --breakdown: the consumer's wait returned before the poll that got it
    polls = [0, 0]  # non-empty polls, records they returned
    path = os.path.join(directory, f"latency-{mode}-{int(rate)}")
    old_switch = sys.getswitchinterval()
    store = logstore.open(path)
    try:
        store.create_topic(TOPIC, 1, config=topic_config)
        producer = store.producer()
        consumer = store.consumer(auto_offset_reset="earliest")
        tp = TopicPartition(TOPIC, 0)
        consumer.assign([tp])
        assert consumer.position(tp) == 0
        timed = TimedNotifier(consumer._notifier) if breakdown else None
        if timed is not None:
            consumer._notifier = timed  # type: ignore[assignment]  # duck-typed stand-in
        pacer = Pacer(rate)
        clock = time.perf_counter_ns
        send = producer.send
        values, keys = wl.values, wl.keys
        if mode == "same-thread":
            poll = consumer.poll
            for i in range(total):
                pacer.wait()
                sent[i] = clock()
                send(TOPIC, values[i], keys[i])
                records = poll(0.0)
                now = clock()
                for r in records:
                    received[r.offset] = now
                polls[0] += 1
                polls[1] += len(records)
        else:
            if mode == "busy":
                sys.setswitchinterval(switch_interval)
            timeout = poll_timeout if mode == "blocking" else 0.0
            stop = threading.Event()
            failure: list[BaseException] = []

            def consume() -> None:
                poll = consumer.poll
                got = 0
                try:
                    while got < total and not stop.is_set():
                        if timed is not None:
                            timed.woke = 0
                        records = poll(timeout)
                        now = clock()
                        if records:
                            for r in records:
                                received[r.offset] = now
                            if timed is not None:
                                for r in records:
                                    woke[r.offset] = timed.woke
                            got += len(records)
                            polls[0] += 1
                            polls[1] += len(records)
                except BaseException as e:  # reported by the main thread
                    failure.append(e)

            thread = threading.Thread(target=consume, name="latency-consumer", daemon=True)
            thread.start()
            try:
                time.sleep(0.05)  # let the consumer reach its first poll
                for i in range(total):
                    pacer.wait()
                    sent[i] = clock()
                    send(TOPIC, values[i], keys[i])
                    sent_end[i] = clock()
                thread.join(30)
            finally:
                stop.set()
                consumer.wakeup()
                thread.join(10)
            if failure:
                raise failure[0]
            assert not thread.is_alive(), "the consumer thread did not finish"
        sys.setswitchinterval(old_switch)
        check_topic(store, wl, total, sent, received)
        parts: dict[str, dict[str, float]] = {}
        if breakdown:
            woken = [i for i in range(warmup, total) if woke[i]]
            parts = {"send": quantiles_us([sent_end[i] - sent[i] for i in range(warmup, total)]),
                     "wake-up": quantiles_us([woke[i] - sent_end[i] for i in woken]),
                     "read": quantiles_us([received[i] - woke[i] for i in woken])}
        producer.close()
        consumer.close()
    finally:
        sys.setswitchinterval(old_switch)
        store.close()
        shutil.rmtree(path, ignore_errors=True)

    return summarize(mode, rate, samples, warmup, sent, received, polls,
                     switch_interval if mode == "busy" else old_switch, topic_config, breakdown=parts)


def summarize(mode: str, rate: float, samples: int, warmup: int, sent: list[int], received: list[int],
              polls: list[int], switch_interval: float, topic_config: dict[str, Any] | None,
              breakdown: dict[str, dict[str, float]] | None = None) -> LatencyResult:
    total = warmup + samples
    start = sent[warmup]
    lat = [(received[i] - sent[i]) / 1e3 for i in range(warmup, total)]
    ordered = sorted(lat)
    worst_idx = sorted(range(len(lat)), key=lat.__getitem__)[-10:]
    span = (sent[total - 1] - start) / 1e9
    return LatencyResult(
        mode=mode, rate=rate, achieved_rate=(samples - 1) / span if span > 0 else float("nan"), samples=samples,
        p50_us=percentile(ordered, 0.50), p90_us=percentile(ordered, 0.90), p99_us=percentile(ordered, 0.99),
        p999_us=percentile(ordered, 0.999), max_us=ordered[-1], mean_us=statistics.fmean(lat),
        over_target=sum(1 for v in lat if v > TARGET_P99_US),
        records_per_poll=polls[1] / polls[0] if polls[0] else 0.0, switch_interval_s=switch_interval,
        topic_config=dict(topic_config or {}),
        worst=[((sent[warmup + j] - start) / 1e9, lat[j]) for j in sorted(worst_idx)], breakdown=breakdown or {})


def measure_floor(rate: float, samples: int, warmup: int, breakdown: bool = False) -> LatencyResult:
    """The condition-floor mode: a paced notify_all() and a thread blocked in Condition.wait.
    ``breakdown``: *notify* (the notifier's ``with cond: notify_all()``) and *wake-up* (its end
    -> the waiter runs)."""
    total = warmup + samples
    sent = [0] * total
    notified = [0] * total
    received = [0] * total
    polls = [0, 0]  # wake-ups that found something, records they found
    cond = threading.Condition(threading.Lock())
    version = [0]
    clock = time.perf_counter_ns

    def wait_loop() -> None:
        seen = 0
        while seen < total:
            with cond:
                while version[0] == seen:
                    if not cond.wait(POLL_TIMEOUT_S) and version[0] == seen:
                        return  # nothing for a second: the sender died; reported below
                current = version[0]
            now = clock()
            for i in range(seen, current):
                received[i] = now
            polls[0] += 1
            polls[1] += current - seen
            seen = current

    thread = threading.Thread(target=wait_loop, name="latency-floor-waiter", daemon=True)
    thread.start()
    time.sleep(0.05)
    pacer = Pacer(rate)
    for i in range(total):
        pacer.wait()
        sent[i] = clock()
        with cond:
            version[0] += 1
            cond.notify_all()
        notified[i] = clock()
    thread.join(30)
    assert not thread.is_alive() and all(received), "the waiter did not see every notification"
    parts: dict[str, dict[str, float]] = {}
    if breakdown:
        counted = range(warmup, total)
        parts = {"notify": quantiles_us([notified[i] - sent[i] for i in counted]),
                 "wake-up": quantiles_us([received[i] - notified[i] for i in counted])}
    return summarize(FLOOR_MODE, rate, samples, warmup, sent, received, polls, sys.getswitchinterval(), None,
                     breakdown=parts)


def check_topic(store: logstore.Store, wl: Workload, total: int, sent: list[int], received: list[int]) -> None:
    """Every record was received after it was sent, and the partition holds exactly the records
    sent, in order, byte for byte."""
    missing = [i for i in range(total) if received[i] == 0]
    assert not missing, f"{len(missing)} records never received (first: {missing[:5]})"
    early = [i for i in range(total) if received[i] < sent[i]]
    assert not early, f"records received before they were sent: {early[:5]}"
    log = store.partition_log((TOPIC, 0))
    assert log.log_end_offset == total
    offset = 0
    while offset < total:
        view = log.read(offset)
        for r in view:
            assert (r.offset, r.key, r.value) == (offset, wl.keys[offset], wl.values[offset])
            offset += 1
    assert offset == total


# -- command line ---------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=None, help="counted samples per cell (default 20000; quick: 300)")
    ap.add_argument("--warmup", type=int, default=None, help="records sent first and not counted (default 1000)")
    ap.add_argument("--rates", default=None, help="comma-separated send rates in records/s (default 1000,10000)")
    ap.add_argument("--modes", default=",".join(MODES + (FLOOR_MODE,)),
                    help=f"comma-separated subset of {','.join(MODES + (FLOOR_MODE,))} (default: all)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of every cell, taken round robin (default 1)")
    ap.add_argument("--switch-interval", type=float, default=BUSY_SWITCH_INTERVAL_S,
                    help="sys.setswitchinterval for the busy mode, seconds (default 50e-6)")
    ap.add_argument("--topic-config", action="append", default=[], metavar="KEY=VALUE",
                    help="topic config for the latency topic, e.g. flush=never (repeatable)")
    ap.add_argument("--breakdown", action="store_true",
                    help="blocking mode: split each latency into send / wake-up / read (see the docstring)")
    ap.add_argument("--quick", action="store_true", help="smoke run for CI: 300 samples at 5000/s, every mode")
    ap.add_argument("--dir", default=None, help="where the stores are written (default: the temp dir)")
    ap.add_argument("--json", default=None, metavar="FILE", help="write all results to FILE")
    args = ap.parse_args(argv)
    samples = args.samples or (300 if args.quick else 20_000)
    warmup = args.warmup if args.warmup is not None else (50 if args.quick else 1000)
    rates = [float(r) for r in (args.rates or ("5000" if args.quick else "1000,10000")).split(",") if r.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES + (FLOOR_MODE,)]
    if bad or samples < 1 or warmup < 0 or args.repeat < 1 or not rates or min(rates) <= 0:
        ap.error(f"bad arguments (modes must be among {MODES}; samples, repeat and rates positive)")
    config: dict[str, Any] = {}
    for item in args.topic_config:
        key, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--topic-config {item!r}: expected KEY=VALUE")
        config[key] = int(value) if value.lstrip("-").isdigit() else value

    base = args.dir or tempfile.gettempdir()
    work = tempfile.mkdtemp(prefix="latency-", dir=base)
    info = machine_info(base)
    load_before = os.getloadavg()
    print(f"samples={samples} warmup={warmup} rates={rates} modes={modes} repeat={args.repeat} "
          f"key={KEY_BYTES}B value={VALUE_BYTES}B topic_config={config or 'defaults'}", flush=True)
    results: list[LatencyResult] = []
    try:
        for r in range(args.repeat):
            for rate in rates:
                for mode in modes:
                    res = measure(mode, rate, samples, warmup, work, switch_interval=args.switch_interval,
                                  topic_config=config or None,
                                  breakdown=args.breakdown and mode in ("blocking", FLOOR_MODE))
                    results.append(res)
                    print(f"  run {r + 1}/{args.repeat} {mode:15s} {rate:8,.0f}/s: p50 {res.p50_us:7.1f} us  "
                          f"p99 {res.p99_us:8.1f} us  p99.9 {res.p999_us:8.1f} us  max {res.max_us:9,.0f} us  "
                          f"(sent at {res.achieved_rate:,.0f}/s, {res.records_per_poll:.2f} records/poll)",
                          flush=True)
                    for part, q in res.breakdown.items():
                        if q:
                            print(f"      {part:8s} p50 {q['p50']:7.1f} us  p90 {q['p90']:7.1f} us  "
                                  f"p99 {q['p99']:8.1f} us  p99.9 {q['p999']:8.1f} us  ({q['samples']:,.0f} samples)",
                                  flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()

    print()
    print(TABLE_HEAD)
    for res in results:
        print(res.row())
    print()
    for rate in rates:
        for mode in modes:
            cell = [x for x in results if x.mode == mode and x.rate == rate]
            if len(cell) > 1:
                p99s = [x.p99_us for x in cell]
                print(f"{mode} at {rate:,.0f}/s: median p99 {statistics.median(p99s):.1f} us "
                      f"(runs {min(p99s):.1f} - {max(p99s):.1f})")
    blocking = [x for x in results if x.mode == "blocking"]
    if blocking:
        worst = max(x.p99_us for x in blocking)
        verdict = "pass" if worst <= TARGET_P99_US else "MISS"
        print(f"target: blocking p99 <= {TARGET_P99_US:.0f} us: {verdict} (worst cell p99 {worst:.1f} us)")
    info["load_avg_before"] = " ".join(f"{x:.2f}" for x in load_before)
    info["load_avg_after"] = " ".join(f"{x:.2f}" for x in load_after)
    print()
    print(machine_markdown(info))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"samples": samples, "warmup": warmup, "rates": rates, "modes": modes, "repeat": args.repeat,
                       "topic_config": config, "machine": info, "target_p99_us": TARGET_P99_US,
                       "results": [x.to_json() for x in results]}, f, indent=2)
        print(f"\nwritten to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
