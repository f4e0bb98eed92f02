"""Child process of test_group_crash: consumes topic ``t`` in group ``G`` and commits after every
batch, until it is killed (SIGKILL).

Usage: ``python group_crash_child.py <data dir> <seed> <flush>`` (``flush``: the store's default
flush policy, which the offsets topic follows). Two members poll in turns from this one thread,
and every few rounds one of them is closed and replaced, so the kill can land in a rebalance too.
It writes one JSON object per line to stdout, each once what it reports has happened:

- ``{"read": [[partition, first offset, next offset], ...]}`` after a poll returned records;
- ``{"committed": {partition: offset}}`` once ``commit`` of those offsets returned;
- ``{"refused": {partition: offset}}`` if a commit was refused (CommitFailedError).
"""

from __future__ import annotations

import json
import random
import sys
from typing import Any

import logstore
from logstore.errors import CommitFailedError

TOPIC = "t"
GROUP = "G"


def report(obj: object) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def new_member(store: logstore.Store) -> logstore.Consumer:
    return store.consumer(TOPIC, group_id=GROUP, auto_offset_reset="earliest", enable_auto_commit=False,
                          session_timeout_ms=30_000, heartbeat_interval_ms=1_000)


def main() -> None:
    path, seed, flush = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    rng = random.Random(seed)
    store = logstore.open(path, cleaner=False, topic_defaults={"flush": flush})
    members = [new_member(store), new_member(store)]
    rounds = 0
    while True:
        rounds += 1
        for c in members:
            records: list[Any] = c.poll(0.05, max_records=rng.randint(1, 25))
            if not records:
                continue
            spans: dict[int, list[int]] = {}
            for r in records:
                span = spans.setdefault(r.partition, [r.offset, r.offset])
                span[1] = r.offset
            report({"read": [[p, first, last + 1] for p, (first, last) in sorted(spans.items())]})
            offsets = {tp: c.position(tp) for tp in sorted(c.assignment())}
            shown = {str(tp.partition): o for tp, o in offsets.items()}
            try:
                c.commit({tp: offset for tp, offset in offsets.items()})
            except CommitFailedError:
                report({"refused": shown})
            else:
                report({"committed": shown})
        if rounds % 7 == 0:
            leaving = rng.randrange(2)
            members[leaving].close()
            members[leaving] = new_member(store)


if __name__ == "__main__":
    main()
