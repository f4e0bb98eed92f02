"""Memory of one partition log while appending and while reading a large log: RSS stays O(index).

    PYTHONPATH=src python benchmarks/memory.py [--bytes 4GiB] [--dir DIR] [--json out.json]
    PYTHONPATH=src python benchmarks/memory.py --quick          # CI smoke: a 96 MiB log

Size: ``--bytes`` (suffixes KiB/MiB/GiB), else LOGSTORE_BENCH_MEM_BYTES, else 512 MiB (~10 s).

Two fresh child processes, so each one's peak is its own: ``write`` opens a new log (defaults
but ``flush="never"``: 1 GiB segments, an index entry per 4 KiB) and appends the standard
workload (16-byte keys, 100-byte values, 1000 records per ``append_many``, or with ``--single``
one ``append`` per record) until the log holds the requested bytes, then closes it; ``read``
reopens it and reads it front to back with ``read(offset)`` (1 MiB views), touching every
record's ``.key`` and ``.value``. Each child samples its own ``/proc/self/status`` 8 times along
the way:

- RssAnon: heap, Python objects, write buffers: should not grow with the log;
- RssFile: file pages mapped into the process: the shared libraries and the touched pages of the
  mmapped ``.index``/``.timeindex`` files, whose entries (8 + 12 bytes) come at most once per
  batch and per 4 KiB of log: at most 5 MiB per GiB, ~0.1 MiB per GiB with 1000-record batches;
- VmHWM: peak RSS (reset through ``/proc/self/clear_refs`` after the baseline where the kernel
  allows, so it is the peak of the phase), and ``ru_maxrss`` (peak of the whole process).

The log's own bytes go through pread/pwrite into the page cache, which is not the process's
RSS; "page cache" below is the machine's ``Cached`` from /proc/meminfo, shared with everything
else running, shown as context only. The run fails (exit 1) if a phase's peak RSS grows by more
than ``16 MiB + 2 x the index bytes`` over its baseline: memory that grows with the log (its
data, or anything kept per segment) exceeds that at the sizes this runner is meant for.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from workload import BATCH, KEY_BYTES, VALUE_BYTES, machine_info, machine_markdown  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30
DEFAULT_BYTES = 512 * MiB
QUICK_BYTES = 96 * MiB
SAMPLES = 8
SLACK_BYTES = 16 * MiB


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 4GiB, 512MiB, 1000000)")
    scale = {"": 1, "K": 1 << 10, "M": MiB, "G": GiB, "T": 1 << 40}[m.group(2).upper()]
    return int(float(m.group(1)) * scale)


def fmt_mib(n: float) -> str:
    """Bytes as KiB below 1 MiB, else MiB (RSS and index sizes)."""
    return f"{n / 1024:,.0f} KiB" if abs(n) < MiB else f"{n / MiB:,.1f} MiB"


def fmt_size(n: float) -> str:
    """Log sizes: MiB below 1 GiB, else GiB."""
    return f"{n / MiB:,.0f} MiB" if n < GiB else f"{n / GiB:.2f} GiB"


# -- measuring one's own process -----------------------------------------------------------------

STATUS_FIELDS = ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM")


def status() -> dict[str, int]:
    """This process's memory from /proc/self/status, in bytes, plus ru_maxrss and the machine's
    page cache (Cached)."""
    out: dict[str, int] = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in STATUS_FIELDS:
                out[key] = int(rest.split()[0]) * 1024
    out["ru_maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("Cached:"):
                out["page_cache"] = int(line.split()[1]) * 1024
    return out


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def index_bytes(path: str) -> tuple[int, int]:
    """(allocated bytes, apparent size) of the log's .index and .timeindex files."""
    allocated = apparent = 0
    for name in os.listdir(path):
        if name.endswith((".index", ".timeindex")):
            st = os.stat(os.path.join(path, name))
            allocated += st.st_blocks * 512
            apparent += st.st_size
    return allocated, apparent


def emit(kind: str, **fields: Any) -> None:
    print(json.dumps({"kind": kind, **fields}), flush=True)


def child_write(path: str, target: int, segment_bytes: int, single: bool) -> None:
    import logstore
    from logstore import PartitionLog
    from workload import Workload

    wl = Workload(10 * BATCH, BATCH, seed=11)  # 10 distinct batches, appended over and over
    log = PartitionLog.open(path, flush="never", segment_bytes=segment_bytes)
    base = status()
    peak_reset = reset_peak()
    emit("start", phase="write", logstore=logstore.__file__, peak_reset=peak_reset, **base)
    step = max(target // SAMPLES, 1)
    next_sample = step
    append_many, append, batches = log.append_many, log.append, wl.batches
    t0 = time.perf_counter()
    i = 0
    size = 0
    while size < target:
        values, keys = batches[i % len(batches)]
        if single:
            for value, key in zip(values, keys):
                append(value, key)
        else:
            append_many(values, keys)
        i += 1
        if i % 64 == 0 or size + 2 * BATCH * (KEY_BYTES + VALUE_BYTES) >= target:
            size = log.size_bytes
            if size >= next_sample:
                emit("sample", phase="write", log_bytes=size, done_bytes=size, seconds=time.perf_counter() - t0,
                     segments=len(log.segments()), index=index_bytes(path), **status())
                while next_sample <= size:
                    next_sample += step
    seconds = time.perf_counter() - t0
    records = log.log_end_offset
    idx = index_bytes(path)
    final = status()
    t1 = time.perf_counter()
    log.close()
    emit("end", phase="write", log_bytes=size, records=records, seconds=seconds, close_seconds=time.perf_counter() - t1,
         segments=len([n for n in os.listdir(path) if n.endswith(".log")]), index=idx, **final)


def child_read(path: str) -> None:
    import logstore
    from logstore import PartitionLog

    t_open = time.perf_counter()
    log = PartitionLog.open(path, flush="never")
    open_seconds = time.perf_counter() - t_open
    total = log.size_bytes
    base = status()
    peak_reset = reset_peak()
    emit("start", phase="read", logstore=logstore.__file__, peak_reset=peak_reset, log_bytes=total,
         open_seconds=open_seconds, **base)
    step = max(total // SAMPLES, 1)
    next_sample = step
    read = log.read
    offset, end = log.log_start_offset, log.log_end_offset
    n = done = 0
    key = value = None
    t0 = time.perf_counter()
    while offset < end:
        view = read(offset)
        for record in view:
            key = record.key
            value = record.value
            n += 1
        done += view.size_bytes
        offset = view.next_offset
        if done >= next_sample:
            emit("sample", phase="read", log_bytes=total, done_bytes=done, seconds=time.perf_counter() - t0,
                 index=index_bytes(path), **status())
            while next_sample <= done:
                next_sample += step
    seconds = time.perf_counter() - t0
    if n != log.log_end_offset - log.log_start_offset or done != total:
        raise AssertionError(f"read {n} records / {done} bytes of {end} records / {total} bytes")
    assert key is not None and len(key) == KEY_BYTES and value is not None and len(value) == VALUE_BYTES
    final = status()
    idx = index_bytes(path)
    log.close()
    emit("end", phase="read", log_bytes=total, done_bytes=done, records=n, seconds=seconds, index=idx, **final)


# -- the runner -----------------------------------------------------------------------------------

def run_child(phase: str, args: list[str]) -> list[dict[str, Any]]:
    env = dict(os.environ)
    cmd = [sys.executable, os.path.abspath(__file__), "--child", phase, *args]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{phase} child failed with exit code {proc.returncode}; output:\n{proc.stdout}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def phase_summary(events: list[dict[str, Any]]) -> dict[str, Any]:
    start = next(e for e in events if e["kind"] == "start")
    end = next(e for e in events if e["kind"] == "end")
    samples = [e for e in events if e["kind"] == "sample"]
    peak = max([end["VmHWM"]] + [s["VmHWM"] for s in samples])
    index_alloc = max([end["index"][0]] + [s["index"][0] for s in samples])
    growth = peak - start["VmRSS"]
    bound = SLACK_BYTES + 2 * index_alloc
    return {
        "baseline_rss": start["VmRSS"], "baseline_anon": start["RssAnon"], "baseline_file": start["RssFile"],
        "peak_rss": peak, "peak_growth": growth, "peak_reset": start["peak_reset"],
        "anon_growth": max(s["RssAnon"] for s in samples + [end]) - start["RssAnon"],
        "file_growth": max(s["RssFile"] for s in samples + [end]) - start["RssFile"],
        "ru_maxrss": end["ru_maxrss"], "index_allocated": index_alloc, "log_bytes": end["log_bytes"],
        "records": end["records"], "seconds": end["seconds"],
        "bound": bound, "within_bound": growth <= bound,
        "page_cache_growth": end["page_cache"] - start["page_cache"],
    }


def samples_table(events: list[dict[str, Any]], what: str) -> str:
    start = next(e for e in events if e["kind"] == "start")
    rows = [e for e in events if e["kind"] == "sample"]
    lines = [f"| {what} | RSS | RssAnon | RssFile | peak RSS (VmHWM) | index files (allocated) "
             "| page cache (machine) |",
             "|---:|---:|---:|---:|---:|---:|---:|",
             f"| 0 (after open) | {fmt_mib(start['VmRSS'])} | {fmt_mib(start['RssAnon'])} "
             f"| {fmt_mib(start['RssFile'])} | {fmt_mib(start['VmHWM'])} | - | {start['page_cache'] / GiB:.2f} GiB |"]
    for e in rows:
        lines.append(f"| {fmt_size(e['done_bytes'])} | {fmt_mib(e['VmRSS'])} | {fmt_mib(e['RssAnon'])} "
                     f"| {fmt_mib(e['RssFile'])} | {fmt_mib(e['VmHWM'])} | {fmt_mib(e['index'][0])} "
                     f"| {e['page_cache'] / GiB:.2f} GiB |")
    return "\n".join(lines)


def summary_table(summaries: dict[str, dict[str, Any]]) -> str:
    lines = ["| phase | log | records/s | baseline RSS | peak RSS | peak growth | RssAnon growth | RssFile growth "
             "| index files | growth / log size | bound (16 MiB + 2 x index) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for phase, s in summaries.items():
        lines.append(
            f"| {phase} | {fmt_size(s['log_bytes'])} | {s['records'] / s['seconds'] / 1e6:.2f} M/s "
            f"| {fmt_mib(s['baseline_rss'])} | {fmt_mib(s['peak_rss'])} | {fmt_mib(s['peak_growth'])} "
            f"| {fmt_mib(s['anon_growth'])} | {fmt_mib(s['file_growth'])} | {fmt_mib(s['index_allocated'])} "
            f"| {s['peak_growth'] / s['log_bytes'] * 100:.3f}% "
            f"| {'ok' if s['within_bound'] else 'EXCEEDED'} ({fmt_mib(s['bound'])}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bytes", type=parse_size, default=None,
                    help="log size (default: LOGSTORE_BENCH_MEM_BYTES or 512MiB; --quick: 96MiB)")
    ap.add_argument("--quick", action="store_true", help="CI smoke: a 96 MiB log")
    ap.add_argument("--segment-bytes", type=parse_size, default=GiB,
                    help="segment_bytes of the log (default 1GiB, logstore's default)")
    ap.add_argument("--single", action="store_true",
                    help="append one record per append() call instead of 1000 per append_many()")
    ap.add_argument("--dir", default=None, help="where the log is written (default: the temp dir)")
    ap.add_argument("--json", default=None, metavar="FILE", help="write all samples to FILE")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        phase, path, *rest = args.child
        if phase == "write":
            child_write(path, int(rest[0]), int(rest[1]), rest[2] == "single")
        elif phase == "read":
            child_read(path)
        else:
            ap.error(f"unknown child phase {phase}")
        return 0

    env_size = os.environ.get("LOGSTORE_BENCH_MEM_BYTES")
    target = (args.bytes if args.bytes is not None else QUICK_BYTES if args.quick
              else parse_size(env_size) if env_size else DEFAULT_BYTES)
    base = args.dir or tempfile.gettempdir()
    free = shutil.disk_usage(base).free
    if free < target + 256 * MiB:
        print(f"not enough space in {base}: {free / GiB:.1f} GiB free for a {target / GiB:.1f} GiB log")
        return 2
    workdir = tempfile.mkdtemp(prefix="logstore-mem-", dir=base)
    path = os.path.join(workdir, "log")
    info = machine_info(base)
    load_before = os.getloadavg()
    how = "1 per append()" if args.single else f"{BATCH} per append_many()"
    print(f"log of {fmt_size(target)} in {path}: 16-byte keys, 100-byte values, {how}, "
          f"segment_bytes {fmt_size(args.segment_bytes)}", flush=True)
    try:
        write = run_child("write", [path, str(target), str(args.segment_bytes),
                                    "single" if args.single else "batched"])
        read = run_child("read", [path])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    load_after = os.getloadavg()
    info["load_avg_before"] = " ".join(f"{x:.2f}" for x in load_before)
    info["load_avg_after"] = " ".join(f"{x:.2f}" for x in load_after)

    summaries = {"append": phase_summary(write), "read (reopened, every record)": phase_summary(read)}
    read_start = next(e for e in read if e["kind"] == "start")
    print()
    print("Appending (RSS of the writing process vs log size so far):\n")
    print(samples_table(write, "log size"))
    print()
    print(f"Reading (a new process; open took {read_start['open_seconds'] * 1e3:.1f} ms; RSS vs bytes read):\n")
    print(samples_table(read, "bytes read"))
    print()
    print(summary_table(summaries))
    print()
    if not all(s["peak_reset"] for s in summaries.values()):
        print("note: /proc/self/clear_refs could not reset VmHWM: peaks include the process start")
    print(machine_markdown(info))
    if max(load_before[0], load_after[0]) > 1.5:
        print("\nnote: other processes were busy on this machine (load average above); RSS does not depend "
              "on it, the records/s do")
    ok = all(s["within_bound"] for s in summaries.values())
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"log_bytes_target": target, "segment_bytes": args.segment_bytes, "single": args.single,
                       "machine": info, "summary": summaries,
                       "write_events": write, "read_events": read}, f, indent=2)
        print(f"\nwritten to {args.json}")
    if not ok:
        print("\nFAILED: peak RSS grew beyond 16 MiB + 2 x the index bytes: the process's memory grows with "
              "the log (see the samples above)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
