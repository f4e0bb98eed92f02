"""Leader epoch -> start offset cache (Kafka's leader-epoch-checkpoint), for replication.

A follower asks "where did epoch E end?" to find the point where its log diverges from the
leader's; ``end_offset_for`` answers it. Entries are strictly increasing in both fields.
"""

from __future__ import annotations


class LeaderEpochCache:
    def __init__(self, entries: list[tuple[int, int]] | None = None) -> None:
        self._entries: list[tuple[int, int]] = []
        for epoch, start in entries or []:
            self.assign(epoch, start)

    @property
    def entries(self) -> list[tuple[int, int]]:
        return list(self._entries)

    @property
    def latest_epoch(self) -> int:
        return self._entries[-1][0] if self._entries else -1

    def assign(self, epoch: int, start_offset: int) -> bool:
        """Record that ``epoch`` starts at ``start_offset``; False if it changes nothing."""
        if self._entries:
            last_epoch = self._entries[-1][0]
            if epoch <= last_epoch:
                return False
            # older epochs that start at or after this one own no offsets: drop them (as Kafka does)
            while self._entries and self._entries[-1][1] >= start_offset:
                self._entries.pop()
        self._entries.append((epoch, start_offset))
        return True

    def end_offset_for(self, epoch: int, log_end_offset: int) -> tuple[int, int]:
        """(largest epoch <= ``epoch``, the offset where it ended); (-1, -1) if none is known."""
        best = None
        for i, (e, _start) in enumerate(self._entries):
            if e > epoch:
                break
            best = i
        if best is None:
            return (-1, -1)
        if best + 1 < len(self._entries):
            return (self._entries[best][0], self._entries[best + 1][1])
        return (self._entries[best][0], log_end_offset)

    def truncate_from_end(self, end_offset: int) -> None:
        """Forget epochs that start at or after ``end_offset`` (the log was truncated there)."""
        while self._entries and self._entries[-1][1] >= end_offset:
            self._entries.pop()

    def truncate_from_start(self, start_offset: int) -> None:
        """The log now starts at ``start_offset``: drop epochs wholly before it."""
        while len(self._entries) > 1 and self._entries[1][1] <= start_offset:
            self._entries.pop(0)
        if self._entries and self._entries[0][1] < start_offset:
            self._entries[0] = (self._entries[0][0], start_offset)
