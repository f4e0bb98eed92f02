"""The partition log: segments, roll, recovery, retention, checkpoints."""

from logstore.log.config import LogConfig
from logstore.log.partition import PartitionLog
from logstore.log.recovery import RecoveryReport

__all__ = ["LogConfig", "PartitionLog", "RecoveryReport"]
