"""Topic names (Kafka's rules) and per-topic config: every key, its aliases, types, ranges, defaults."""

from __future__ import annotations

import string

import pytest

from logstore import PartitionLog
from logstore.broker.topics import (
    CONFIG_KEYS,
    KAFKA_NAMES,
    MAX_PARTITIONS,
    TopicConfig,
    check_collision,
    collision_name,
    is_internal,
    partition_dir_name,
    validate_partition_count,
    validate_topic_name,
)
from logstore.errors import ConfigError, InvalidPartitionsError, InvalidTopicError
from logstore.log.config import LogConfig

DAY_MS = 24 * 3600 * 1000

# -- names ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [
    "orders", "a", "A", "0", "-", "_", "a.b", "a_b", "a-b", "...", "..a", "a..", "__consumer_offsets",
    "Orders.v2_EU-west-1", string.ascii_letters + string.digits + "._-", "x" * 249,
])
def test_legal_names_are_returned_unchanged(name):
    assert validate_topic_name(name) == name


@pytest.mark.parametrize("name, rule", [
    ("", "empty"),
    (".", "cannot be '.'"),
    ("..", "cannot be '..'"),
    ("x" * 250, "250 characters long; the limit is 249"),
    ("x" * 1000, "the limit is 249"),
    ("a b", "illegal character(s) ' '"),
    ("a/b", "'/'"),
    ("a\\b", "'\\\\'"),
    ("a:b", "':'"),
    ("a,b", "','"),
    ("a+b", "'+'"),
    ("a\nb", "'\\n'"),
    ("a\x00b", "'\\x00'"),
    ("caf\u00e9", "'\u00e9'"),  # a letter, but not an ASCII one
    ("\u0661\u0662", "illegal"),  # Arabic-Indic digits: isdigit() but not ASCII
    ("t\u200bt", "illegal"),
])
def test_illegal_names_name_the_rule(name, rule):
    with pytest.raises(InvalidTopicError) as info:
        validate_topic_name(name)
    assert rule in str(info.value)
    # InvalidTopicError is a ValueError for callers that catch the builtin
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("name", [None, 1, b"orders", ["orders"], 1.5])
def test_non_str_names_are_rejected(name):
    with pytest.raises(InvalidTopicError, match="must be a str"):
        validate_topic_name(name)


def test_every_illegal_ascii_character_is_rejected():
    legal = set(string.ascii_letters + string.digits + "._-")
    for code in range(128):
        c = chr(code)
        if c in legal:
            assert validate_topic_name(f"t{c}t") == f"t{c}t"
        else:
            with pytest.raises(InvalidTopicError):
                validate_topic_name(f"t{c}t")


def test_internal_topics_start_with_two_underscores():
    assert is_internal("__consumer_offsets")
    assert is_internal("__x")
    assert not is_internal("_x")
    assert not is_internal("orders")
    assert not is_internal("a__b")


def test_collision_name_maps_dots_to_underscores():
    assert collision_name("a.b.c") == "a_b_c"
    assert collision_name("a_b") == "a_b"
    assert collision_name("a-b") == "a-b"


def test_collision_between_dot_and_underscore_is_rejected():
    with pytest.raises(InvalidTopicError, match="'a_b'.*collides.*'a.b'"):
        check_collision("a_b", ["x", "a.b"])
    with pytest.raises(InvalidTopicError, match="collides"):
        check_collision("a.b", {"a_b"})
    with pytest.raises(InvalidTopicError, match="collides"):
        check_collision("a.b_c", iter(["a_b.c"]))


def test_no_collision_for_the_same_name_or_unrelated_names():
    check_collision("a.b", ["a.b"])  # the same topic is not a collision (TopicExists is another error)
    check_collision("a.b", ["a-b", "ab", "a..b", "a.b.c"])
    check_collision("a_b", [])


def test_partition_dir_name():
    assert partition_dir_name("orders", 0) == "orders-0"
    assert partition_dir_name("a-1", 12) == "a-1-12"
    # the longest name with the largest partition still fits one file name
    assert len(partition_dir_name("x" * 249, MAX_PARTITIONS - 1)) == 255


@pytest.mark.parametrize("count", [1, 2, MAX_PARTITIONS])
def test_legal_partition_counts(count):
    assert validate_partition_count(count) == count


@pytest.mark.parametrize("count, message", [
    (0, "in \\[1, 100000\\]"), (-1, "in \\[1"), (MAX_PARTITIONS + 1, "not 100001"),
    (True, "must be an int"), (1.0, "must be an int"), ("3", "must be an int"), (None, "must be an int"),
])
def test_illegal_partition_counts(count, message):
    with pytest.raises(InvalidPartitionsError, match=message):
        validate_partition_count(count)


# -- config: defaults -------------------------------------------------------------------------------

KAFKA_DEFAULTS = {
    "segment_bytes": 1 << 30,
    "segment_ms": 7 * DAY_MS,
    "retention_ms": 7 * DAY_MS,
    "retention_bytes": -1,
    "cleanup_policy": "delete",
    "max_message_bytes": 1048588,
    "index_interval_bytes": 4096,
    "flush": "interval",
    "flush_interval_ms": 1000,
    "message_timestamp_type": "create_time",
    "delete_retention_ms": DAY_MS,
    "min_compaction_lag_ms": 0,
    "min_cleanable_dirty_ratio": 0.5,
    "max_index_bytes": 10 * 1024 * 1024,
}


def test_defaults_are_kafkas():
    assert TopicConfig().to_dict() == KAFKA_DEFAULTS
    assert TopicConfig.from_dict({}).to_dict() == KAFKA_DEFAULTS
    assert TopicConfig.from_dict(None).to_dict() == KAFKA_DEFAULTS
    assert set(CONFIG_KEYS) == set(KAFKA_DEFAULTS)
    assert TopicConfig().overrides() == {}


def test_config_is_frozen():
    cfg = TopicConfig()
    with pytest.raises(AttributeError):
        cfg.retention_ms = 5  # type: ignore[misc]


# -- config: every key, valid values, aliases -------------------------------------------------------

# key -> (Kafka name, list of (given value, normalised value))
VALID = {
    "segment_bytes": ("segment.bytes", [(128, 128), (4096, 4096), (2**31 - 1, 2**31 - 1), ("1024", 1024)]),
    "segment_ms": ("segment.ms", [(1, 1), (60_000, 60_000), (2**63 - 1, 2**63 - 1)]),
    "retention_ms": ("retention.ms", [(0, 0), (1, 1), (-1, -1), (None, -1), ("-1", -1), (2**63 - 1, 2**63 - 1)]),
    "retention_bytes": ("retention.bytes", [(0, 0), (1 << 40, 1 << 40), (-1, -1), (None, -1)]),
    "cleanup_policy": ("cleanup.policy", [
        ("delete", "delete"), ("compact", "compact"), ("compact,delete", "compact,delete"),
        ("delete,compact", "compact,delete"), ("delete, compact", "compact,delete"),
        (["delete", "compact"], "compact,delete"), (("compact",), "compact"), (["delete"], "delete"),
        ("delete,delete", "delete"),
    ]),
    "max_message_bytes": ("max.message.bytes", [(128, 128), (10 << 20, 10 << 20), (2**31 - 1, 2**31 - 1)]),
    "index_interval_bytes": ("index.interval.bytes", [(0, 0), (1, 1), (2**31 - 1, 2**31 - 1)]),
    "flush": ("flush", [("never", "never"), ("interval", "interval"), ("always", "always")]),
    "flush_interval_ms": ("flush.interval.ms", [(1, 1), (250, 250), (DAY_MS, DAY_MS)]),
    "message_timestamp_type": ("message.timestamp.type", [
        ("create_time", "create_time"), ("log_append_time", "log_append_time"),
        ("CreateTime", "create_time"), ("LogAppendTime", "log_append_time"),
    ]),
    "delete_retention_ms": ("delete.retention.ms", [(0, 0), (3600_000, 3600_000), (2**63 - 1, 2**63 - 1)]),
    "min_compaction_lag_ms": ("min.compaction.lag.ms", [(0, 0), (5, 5), (2**63 - 1, 2**63 - 1)]),
    "min_cleanable_dirty_ratio": ("min.cleanable.dirty.ratio", [
        (0, 0.0), (1, 1.0), (0.0, 0.0), (0.25, 0.25), (1.0, 1.0), ("0.75", 0.75),
    ]),
    "max_index_bytes": ("segment.index.bytes", [(64, 64), (1 << 20, 1 << 20), (2**31 - 1, 2**31 - 1)]),
}


def test_every_key_has_valid_cases():
    assert set(VALID) == set(CONFIG_KEYS)
    assert {key: kafka for key, (kafka, _) in VALID.items()} == KAFKA_NAMES


@pytest.mark.parametrize("key, given, expected",
                         [(k, g, e) for k, (_, cases) in VALID.items() for g, e in cases])
def test_valid_value_by_snake_and_kafka_name(key, given, expected):
    for name in (key, KAFKA_NAMES[key]):
        cfg = TopicConfig.from_dict({name: given})
        assert getattr(cfg, key) == expected
        assert type(getattr(cfg, key)) is type(expected)
        # every other key keeps its default
        assert {k: v for k, v in cfg.to_dict().items() if k != key} == \
            {k: v for k, v in KAFKA_DEFAULTS.items() if k != key}
        assert cfg.overrides() == ({} if expected == KAFKA_DEFAULTS[key] else {key: expected})


def test_plain_dotted_name_of_max_index_bytes_is_accepted_too():
    assert TopicConfig.from_dict({"max.index.bytes": 4096}).max_index_bytes == 4096


def test_constructor_validates_and_normalises_like_from_dict():
    cfg = TopicConfig(cleanup_policy="delete,compact", message_timestamp_type="LogAppendTime", retention_ms=None)
    assert (cfg.cleanup_policy, cfg.message_timestamp_type, cfg.retention_ms) == \
        ("compact,delete", "log_append_time", -1)
    with pytest.raises(ConfigError, match="segment_bytes"):
        TopicConfig(segment_bytes=1)


# -- config: invalid types and ranges ------------------------------------------------------------

INT_RANGES = {
    "segment_bytes": (128, 2**31 - 1),
    "segment_ms": (1, 2**63 - 1),
    "retention_ms": (-1, 2**63 - 1),
    "retention_bytes": (-1, 2**63 - 1),
    "max_message_bytes": (128, 2**31 - 1),
    "index_interval_bytes": (0, 2**31 - 1),
    "flush_interval_ms": (1, DAY_MS),
    "delete_retention_ms": (0, 2**63 - 1),
    "min_compaction_lag_ms": (0, 2**63 - 1),
    "max_index_bytes": (64, 2**31 - 1),
}


@pytest.mark.parametrize("key", sorted(INT_RANGES))
def test_int_keys_reject_out_of_range_values(key):
    low, high = INT_RANGES[key]
    for bad in (low - 1, high + 1, -(2**70)):
        for name in (key, KAFKA_NAMES[key]):
            with pytest.raises(ConfigError) as info:
                TopicConfig.from_dict({name: bad})
            message = str(info.value)
            assert name in message and "out of range" in message and f"[{low}, {high}]" in message


@pytest.mark.parametrize("key", sorted(INT_RANGES))
def test_int_keys_reject_other_types(key):
    for bad in (True, False, 1.0, 1.5, "1.5", "abc", "", "1_000", b"100", [100], {}, float("nan")):
        with pytest.raises(ConfigError) as info:
            TopicConfig.from_dict({KAFKA_NAMES[key]: bad})
        assert KAFKA_NAMES[key] in str(info.value) and "must be an int" in str(info.value)


@pytest.mark.parametrize("key", sorted(set(INT_RANGES) - {"retention_ms", "retention_bytes"})
                         + ["cleanup_policy", "flush", "message_timestamp_type", "min_cleanable_dirty_ratio"])
def test_none_is_only_unlimited_for_retention(key):
    with pytest.raises(ConfigError, match=f"{key} needs a value"):
        TopicConfig.from_dict({key: None})


@pytest.mark.parametrize("bad", [-0.01, 1.01, 2, -1, float("nan"), float("inf"), "1.5", "nan", "half"])
def test_dirty_ratio_range(bad):
    with pytest.raises(ConfigError, match="min.cleanable.dirty.ratio"):
        TopicConfig.from_dict({"min.cleanable.dirty.ratio": bad})


@pytest.mark.parametrize("bad", [True, None, [0.5], b"0.5"])
def test_dirty_ratio_type(bad):
    with pytest.raises(ConfigError, match="min_cleanable_dirty_ratio"):
        TopicConfig(min_cleanable_dirty_ratio=bad)


@pytest.mark.parametrize("bad", ["", "Delete", "compacted", "delete;compact", ",", "delete,", [], ["delete", 1],
                                 1, None, b"delete", {"delete": 1}])
def test_cleanup_policy_rejects(bad):
    with pytest.raises(ConfigError) as info:
        TopicConfig(cleanup_policy=bad)
    assert "cleanup_policy" in str(info.value) and "'compact,delete'" in str(info.value)


@pytest.mark.parametrize("key, bad", [
    ("flush", "sometimes"), ("flush", "Always"), ("flush", 1), ("flush", True),
    ("message_timestamp_type", "now"), ("message_timestamp_type", 0), ("message_timestamp_type", "create-time"),
])
def test_choice_keys_reject(key, bad):
    with pytest.raises(ConfigError) as info:
        TopicConfig.from_dict({key: bad})
    assert key in str(info.value) and "expected one of" in str(info.value)


def test_unknown_key_lists_the_known_ones():
    for bad in ("retention", "retention.MS", "max_record_bytes", "timestamp_type", "", "verify_crc"):
        with pytest.raises(ConfigError) as info:
            TopicConfig.from_dict({bad: 1})
        message = str(info.value)
        assert repr(bad) in message
        assert all(key in message for key in CONFIG_KEYS)
    with pytest.raises(ConfigError, match="unknown topic config 7"):
        TopicConfig.from_dict({7: 1})  # type: ignore[dict-item]


def test_two_spellings_of_one_key_are_an_error():
    with pytest.raises(ConfigError, match="retention_ms is given twice"):
        TopicConfig.from_dict({"retention_ms": 1, "retention.ms": 2})
    with pytest.raises(ConfigError, match="given twice"):
        TopicConfig().with_overrides({"segment.index.bytes": 4096, "max_index_bytes": 4096})


def test_overrides_must_be_a_mapping():
    with pytest.raises(ConfigError, match="mapping"):
        TopicConfig.from_dict([("retention_ms", 1)])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="mapping"):
        TopicConfig.from_dict({}, defaults=[("retention_ms", 1)])  # type: ignore[arg-type]


def test_a_bad_value_anywhere_fails_the_whole_config():
    with pytest.raises(ConfigError, match="flush"):
        TopicConfig.from_dict({"retention_ms": 1000, "flush": "bad", "segment_bytes": 4096})


# -- config: defaults, overrides, alter ------------------------------------------------------------


def test_store_defaults_are_the_base_of_overrides():
    store_defaults = {"retention.ms": -1, "segment_bytes": 1 << 20}
    cfg = TopicConfig.from_dict({"cleanup.policy": "compact"}, defaults=store_defaults)
    assert cfg.retention_ms == -1 and cfg.segment_bytes == 1 << 20 and cfg.cleanup_policy == "compact"
    assert cfg.overrides() == {"cleanup_policy": "compact"}
    # the overrides, re-applied to the same defaults, give the same config back (what a reopen does)
    assert TopicConfig.from_dict(cfg.overrides(), defaults=store_defaults) == cfg
    # defaults given as a TopicConfig work the same
    assert TopicConfig.from_dict({"cleanup.policy": "compact"}, defaults=TopicConfig.from_dict(store_defaults)) == cfg


def test_bad_store_defaults_are_config_errors():
    with pytest.raises(ConfigError, match="segment_bytes"):
        TopicConfig.from_dict({}, defaults={"segment_bytes": 1})


def test_with_overrides_changes_and_resets():
    store_defaults = {"retention_ms": 3600_000}
    cfg = TopicConfig.from_dict({"retention_ms": 60_000, "segment_bytes": 4096}, defaults=store_defaults)
    altered = cfg.with_overrides({"retention.ms": -1, "flush": "always"})
    assert (altered.retention_ms, altered.flush, altered.segment_bytes) == (-1, "always", 4096)
    assert altered.overrides() == {"retention_ms": -1, "flush": "always", "segment_bytes": 4096}
    assert cfg.retention_ms == 60_000  # the original is unchanged

    # None resets to the store's default, not Kafka's
    reset = altered.with_overrides({"retention_ms": None, "segment.bytes": None})
    assert reset.retention_ms == 3600_000 and reset.segment_bytes == 1 << 30
    assert reset.overrides() == {"flush": "always"}
    # without store defaults, None resets to Kafka's default
    assert TopicConfig(flush="never").with_overrides({"flush": None}).flush == "interval"
    assert TopicConfig.from_dict({"min_cleanable_dirty_ratio": 0.1}).with_overrides(
        {"min.cleanable.dirty.ratio": None}).min_cleanable_dirty_ratio == 0.5


def test_with_overrides_validates():
    cfg = TopicConfig()
    with pytest.raises(ConfigError, match="segment.bytes"):
        cfg.with_overrides({"segment.bytes": 0})
    with pytest.raises(ConfigError, match="unknown"):
        cfg.with_overrides({"nope": 1})
    with pytest.raises(ConfigError, match="mapping"):
        cfg.with_overrides(None)  # type: ignore[arg-type]


def test_equality_ignores_the_defaults_a_config_came_from():
    a = TopicConfig.from_dict({"retention_ms": -1})
    b = TopicConfig.from_dict({}, defaults={"retention_ms": -1})
    assert a == b and hash(a) == hash(b)
    assert a.overrides() == {"retention_ms": -1} and b.overrides() == {}


def test_compaction_and_retention_flags():
    assert TopicConfig().retention_enabled and not TopicConfig().compaction_enabled
    compact = TopicConfig(cleanup_policy="compact")
    assert compact.compaction_enabled and not compact.retention_enabled
    both = TopicConfig(cleanup_policy=["compact", "delete"])
    assert both.compaction_enabled and both.retention_enabled
    assert compact.cleaner_settings() == {"cleanup_policy": "compact", "delete_retention_ms": DAY_MS,
                                          "min_compaction_lag_ms": 0, "min_cleanable_dirty_ratio": 0.5}


# -- config: log_kwargs opens real partition logs --------------------------------------------------


def test_log_kwargs_maps_names_and_leaves_cleaner_keys_out():
    cfg = TopicConfig.from_dict({
        "segment.bytes": 4096, "segment.ms": 60_000, "retention.ms": 120_000, "retention.bytes": 1 << 20,
        "max.message.bytes": 2048, "index.interval.bytes": 128, "flush": "always", "flush.interval.ms": 50,
        "message.timestamp.type": "LogAppendTime", "segment.index.bytes": 8192,
        "cleanup.policy": "delete,compact", "delete.retention.ms": 5, "min.compaction.lag.ms": 6,
        "min.cleanable.dirty.ratio": 0.9,
    })
    assert cfg.log_kwargs() == {
        "segment_bytes": 4096, "segment_ms": 60_000, "retention_ms": 120_000, "retention_bytes": 1 << 20,
        "max_record_bytes": 2048, "index_interval_bytes": 128, "flush": "always", "flush_interval_ms": 50,
        "timestamp_type": "log_append_time", "max_index_bytes": 8192,
    }
    # every kwarg is a LogConfig field: nothing the log does not know
    LogConfig.from_kwargs(**cfg.log_kwargs())


def test_log_kwargs_unlimited_retention_is_none():
    kwargs = TopicConfig(retention_ms=-1, retention_bytes=-1).log_kwargs()
    assert kwargs["retention_ms"] is None and kwargs["retention_bytes"] is None
    assert TopicConfig().log_kwargs()["retention_ms"] == 7 * DAY_MS


def test_compact_only_topics_have_no_retention_in_the_log():
    kwargs = TopicConfig(cleanup_policy="compact", retention_ms=1000, retention_bytes=4096).log_kwargs()
    assert kwargs["retention_ms"] is None and kwargs["retention_bytes"] is None
    kwargs = TopicConfig(cleanup_policy="compact,delete", retention_ms=1000, retention_bytes=4096).log_kwargs()
    assert kwargs["retention_ms"] == 1000 and kwargs["retention_bytes"] == 4096


@pytest.mark.parametrize("overrides", [
    {},
    {"segment.bytes": 1024, "index.interval.bytes": 0, "segment.index.bytes": 4096, "flush": "never"},
    {"retention_ms": None, "retention_bytes": 2048, "message_timestamp_type": "LogAppendTime", "flush": "always"},
    {"cleanup_policy": "compact", "max_message_bytes": 512, "segment_ms": 1},
])
def test_log_kwargs_open_a_real_partition_log(tmp_path, overrides):
    cfg = TopicConfig.from_dict(overrides)
    with PartitionLog.open(tmp_path / partition_dir_name("t", 0), **cfg.log_kwargs()) as log:
        assert log.config.segment_bytes == cfg.segment_bytes
        assert log.config.max_record_bytes == cfg.max_message_bytes
        assert log.config.timestamp_type == cfg.message_timestamp_type
        assert log.config.max_index_bytes == cfg.max_index_bytes
        assert log.config.retention_ms == (cfg.retention_ms if cfg.retention_ms != -1 and cfg.retention_enabled
                                           else None)
        first = log.append(b"v", key=b"k", timestamp=1)
        assert log.read(first)[0].value == b"v"


def test_log_append_time_reaches_the_log(tmp_path):
    cfg = TopicConfig.from_dict({"message.timestamp.type": "LogAppendTime"})
    with PartitionLog.open(tmp_path / "t-0", **cfg.log_kwargs()) as log:
        log.append(b"v", timestamp=1)
        assert log.read(0)[0].timestamp != 1  # the log stamped its own time


def test_max_message_bytes_reaches_the_log(tmp_path):
    cfg = TopicConfig.from_dict({"max.message.bytes": 256})
    with PartitionLog.open(tmp_path / "t-0", **cfg.log_kwargs()) as log:
        log.append(b"x" * 100)
        with pytest.raises(ValueError):  # RecordTooLargeError
            log.append(b"x" * 1000)
