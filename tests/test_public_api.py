"""The public surface changes only on purpose: this test names it exactly."""

import logstore
import logstore.errors


def test_package_all_is_exact():
    assert sorted(logstore.__all__) == sorted([
        # the partition log
        "LogConfig", "PartitionLog", "Record", "RecordBatchView", "RecoveryReport",
        # the embedded broker and its clients
        "open", "Store", "TopicConfig", "TopicDescription", "PartitionDescription", "TopicPartition",
        "Producer", "RecordMetadata", "FutureRecordMetadata", "Consumer", "ConsumerRecord",
        "AsyncProducer", "AsyncConsumer",
        # consumer groups
        "OffsetAndMetadata", "ConsumerRebalanceListener", "PartitionAssignor",
        # errors
        "ConfigError", "CorruptRecordError", "InvalidArgumentError", "InvalidRecordError",
        "LogClosedError", "LogstoreError", "OffsetOutOfRangeError", "RecordTooLargeError",
        "UnsupportedCodecError", "TopicError", "InvalidTopicError", "TopicExistsError", "UnknownTopicError",
        "InvalidPartitionsError", "ProducerError", "OutOfOrderSequenceError", "ProducerFencedError",
        "ConsumerError", "NoOffsetForPartitionError", "IllegalStateError", "LogstoreTimeoutError",
        "GroupError", "CommitFailedError", "FencedInstanceIdError", "UnknownGroupError", "GroupNotEmptyError",
        "__version__", "errors",
    ])
    for name in logstore.__all__:
        assert hasattr(logstore, name), name


def test_every_error_is_a_logstore_error():
    for name in logstore.errors.__all__:
        cls = getattr(logstore.errors, name)
        assert issubclass(cls, logstore.errors.LogstoreError), name


def test_argument_errors_are_value_and_type_errors():
    # callers catching the builtin they expect keep working
    for cls in (logstore.InvalidArgumentError, logstore.InvalidRecordError, logstore.RecordTooLargeError):
        assert issubclass(cls, ValueError) and issubclass(cls, TypeError)
    assert issubclass(logstore.OffsetOutOfRangeError, IndexError)
    assert issubclass(logstore.ConfigError, ValueError)
    assert issubclass(logstore.UnknownTopicError, KeyError)
    assert issubclass(logstore.LogstoreTimeoutError, TimeoutError)
    assert issubclass(logstore.InvalidTopicError, ValueError)


def test_py_typed_marker_ships():
    import importlib.resources

    assert importlib.resources.files("logstore").joinpath("py.typed").is_file()


def test_groups_all_is_exact():
    import logstore.groups

    assert sorted(logstore.groups.__all__) == sorted([
        "ConsumerRebalanceListener", "OffsetAndMetadata", "PartitionAssignor", "MemberMetadata",
        "RangeAssignor", "RoundRobinAssignor", "StickyAssignor", "CooperativeStickyAssignor",
        "GroupDescription", "GroupListing", "MemberDescription", "PartitionLag",
    ])
    for name in logstore.groups.__all__:
        assert hasattr(logstore.groups, name), name
