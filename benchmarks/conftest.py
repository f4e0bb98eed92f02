"""pytest-benchmark plumbing for the logstore benchmarks (kept out of the default test run).

    PYTHONPATH=src python -m pytest benchmarks -p no:cacheprovider                 # measure
    PYTHONPATH=src python -m pytest benchmarks --benchmark-disable -q              # smoke (seconds)
    PYTHONPATH=src python -m pytest benchmarks -p no:cacheprovider --run-slow      # + 1 GiB reopen

Every benchmark reports records/s (or latency) against its target in a markdown table printed at
the end of the session (``--bench-md FILE`` also writes it, for benchmarks/README.md). Targets
are reported, never asserted: a miss is a number to look at, not a test failure. What is asserted
is that each benchmark did the work it claims (counts, offsets, bytes read back).
"""

from __future__ import annotations

import itertools
import os
import shutil
from dataclasses import dataclass
from typing import Any

import pytest

from logstore import PartitionLog

from .report import Row, ScalingRow, load_text, results_markdown, scaling_markdown
from .workload import machine_info, machine_markdown


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("logstore benchmarks")
    group.addoption("--run-slow", action="store_true", default=False,
                    help="also run the slow benchmarks (reopen of a 1 GiB log after kill -9); "
                         "same as LOGSTORE_BENCH_BIG=1. Size: LOGSTORE_BENCH_BIG_BYTES (default 1 GiB).")
    group.addoption("--bench-md", default=None, metavar="FILE",
                    help="write the results table (markdown) to FILE")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "big: slow benchmark; needs --run-slow or LOGSTORE_BENCH_BIG=1")
    config.stash[ROWS] = []
    config.stash[SCALING] = []
    config.stash[LOAD] = os.getloadavg()


def run_slow(config: pytest.Config) -> bool:
    return bool(config.getoption("--run-slow")) or env_flag("LOGSTORE_BENCH_BIG")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if run_slow(config):
        return
    skip = pytest.mark.skip(reason="slow benchmark: pass --run-slow or set LOGSTORE_BENCH_BIG=1")
    for item in items:
        if "big" in item.keywords:
            item.add_marker(skip)


# -- sizes ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sizes:
    quick: bool            # --benchmark-disable: every benchmark body runs once, on small inputs
    append_records: int    # records per timed round of the append benchmarks
    append_rounds: int
    read_records: int      # records in the log the read benchmarks scan (whole log per round)
    read_rounds: int
    lookups: int           # random position_of calls per round
    random_reads: int      # random read(o, 1) calls per round
    lookup_rounds: int
    durable_batches: int   # batches of 1000 per round with flush="always" (per thread for 4 threads)
    durable_rounds: int


FULL = Sizes(False, 100_000, 30, 1_000_000, 10, 10_000, 2_000, 30, 20, 30)
QUICK = Sizes(True, 5_000, 1, 20_000, 1, 500, 100, 1, 2, 1)


@pytest.fixture(scope="session")
def sizes(request: pytest.FixtureRequest) -> Sizes:
    disabled = bool(request.config.getoption("benchmark_disable", False))
    return QUICK if disabled else FULL


# -- logs -----------------------------------------------------------------------------------------

@pytest.fixture
def fresh_log(tmp_path) -> Any:
    """``fresh_log(**config)`` opens a new, empty log in its own directory; the previous one is
    closed (fsynced: its writeback never overlaps a later timed round) and deleted. All are
    closed at teardown. ``fresh_log.current`` is the newest."""
    counter = itertools.count()

    class Factory:
        current: PartitionLog | None = None

        def __call__(self, **config: Any) -> PartitionLog:
            self.dispose()
            path = tmp_path / f"log-{next(counter)}"
            self.current = PartitionLog.open(path, **config)
            return self.current

        def dispose(self) -> None:
            if self.current is not None:
                log, self.current = self.current, None
                log.close()
                shutil.rmtree(log.path, ignore_errors=True)

    factory = Factory()
    yield factory
    if factory.current is not None:
        factory.current.close()


# -- results --------------------------------------------------------------------------------------

ROWS = pytest.StashKey[list]()
SCALING = pytest.StashKey[list]()
LOAD = pytest.StashKey[tuple]()


class Reporter:
    """Turns the benchmark's per-round times into records/s (or latency) rows and extra_info."""

    def __init__(self, rows: list[Row], benchmark: Any) -> None:
        self.rows = rows
        self.benchmark = benchmark

    def add(self, row: Row) -> None:
        row.runs = [row.value]
        self.rows.append(row)
        # in --benchmark-json too, so that report.py can merge several sessions
        self.benchmark.extra_info.setdefault("rows", []).append(row.to_json())

    @property
    def stats(self) -> Any:
        return self.benchmark.stats.stats if self.benchmark.stats is not None else None

    def rate(self, name: str, records: int, *, nbytes: int | None = None, log_bytes: int | None = None,
             target_mrps: float | None = None, gbps_target: float | None = None, note: str = "") -> None:
        """``records`` (and ``nbytes`` payload, ``log_bytes`` of batches) per timed round."""
        st = self.stats
        if st is None:  # --benchmark-disable: nothing was timed
            return
        med, best = st.median, st.min
        info = self.benchmark.extra_info
        info["records_per_round"] = records
        info["records_per_s"] = records / med
        info["records_per_s_best"] = records / best
        if nbytes is not None:
            info["payload_bytes_per_s"] = nbytes / med
        if log_bytes is not None:
            info["log_bytes_per_s"] = log_bytes / med
        if gbps_target is not None:
            assert log_bytes is not None
            self.add(Row(name + " [GB/s of batch bytes]", log_bytes / med / 1e9, log_bytes / best / 1e9,
                         "GB/s", gbps_target, True, note))
            note = ""
        self.add(Row(name, records / med / 1e6, records / best / 1e6, "M rec/s", target_mrps, True, note))

    def latency(self, name: str, calls: int, *, target_us: float | None = None, note: str = "") -> None:
        """``calls`` operations per timed round; reports the mean per call of the median round."""
        st = self.stats
        if st is None:
            return
        per, best = st.median / calls, st.min / calls
        self.benchmark.extra_info.update(calls_per_round=calls, latency_us=per * 1e6,
                                         latency_us_best=best * 1e6, ops_per_s=1 / per)
        self.add(Row(name, per * 1e6, best * 1e6, "us", target_us, False, note))

    def seconds(self, name: str, *, target_s: float | None = None, note: str = "") -> None:
        st = self.stats
        if st is None:
            return
        self.add(Row(name, st.median, st.min, "s", target_s, False, note))


@pytest.fixture
def report(request: pytest.FixtureRequest, benchmark: Any) -> Reporter:
    return Reporter(request.config.stash[ROWS], benchmark)


@pytest.fixture
def scaling_report(request: pytest.FixtureRequest, benchmark: Any) -> Any:
    """``scaling_report(group, case, records=, payload_bytes=, log_bytes=)`` per timed round: a
    row of the scaling table (not of the targets table) and ``extra_info`` for --benchmark-json."""
    rows: list[ScalingRow] = request.config.stash[SCALING]

    def add(group: str, case: str, *, records: int, payload_bytes: int, log_bytes: int) -> None:
        st = benchmark.stats.stats if benchmark.stats is not None else None
        if st is None:  # --benchmark-disable: nothing was timed
            return
        row = ScalingRow(group, case, records, payload_bytes, log_bytes, st.median, st.min, [st.median])
        rows.append(row)
        info = benchmark.extra_info
        info.update(records_per_round=records, records_per_s=records / st.median,
                    payload_mb_per_s=payload_bytes / st.median / 1e6, log_mb_per_s=log_bytes / st.median / 1e6)
        info.setdefault("scaling", []).append(row.to_json())

    return add


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    rows: list[Row] = config.stash.get(ROWS, [])
    scaling: list[ScalingRow] = config.stash.get(SCALING, [])
    if not rows and not scaling:
        return
    import tempfile
    text = ("Machine:\n\n" + machine_markdown(machine_info(tempfile.gettempdir())) + "\n\n"
            + load_text(config.stash[LOAD], os.getloadavg()) + "\n\n")
    if rows:
        text += results_markdown(rows) + "\n"
    if scaling:
        text += ("\n" if rows else "") + "Scaling (test_scaling.py):\n\n" + scaling_markdown(scaling) + "\n"
    terminalreporter.write_sep("=", "logstore benchmark results (markdown)")
    terminalreporter.write_line(text)
    path = config.getoption("--bench-md")
    if path:
        with open(path, "w") as f:
            f.write(text)
        terminalreporter.write_line(f"written to {path}")

