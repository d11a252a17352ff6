"""shared.kafka: the producer's partitioner puts every keyed record where kafka-python's (and the Java
client's) default partitioner would, so keys keep their partitions whoever produced them."""

from __future__ import annotations

import random

import pytest
from kafka.partitioner.default import DefaultPartitioner
from kafka.partitioner.default import murmur2 as kafka_murmur2

from shared.kafka import KeyPartitioner, murmur2


def signed(value: int) -> int:
    return value - (1 << 32) if value >= 1 << 31 else value


@pytest.mark.parametrize(
    ("data", "expected"),
    # The Java client's own test vectors (org.apache.kafka.common.utils.UtilsTest#testMurmur2).
    [
        (b"21", -973932308),
        (b"foobar", -790332482),
        (b"a-little-bit-long-string", -985981536),
        (b"a-little-bit-longer-string", -1486304829),
        (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        (b"abc", 479470107),
    ],
)
def test_murmur2_matches_the_java_client(data: bytes, expected: int) -> None:
    assert signed(murmur2(data)) == expected


def test_murmur2_matches_kafka_python_for_every_length() -> None:
    rng = random.Random(7)
    for length in range(0, 130):
        for _ in range(20):
            data = rng.randbytes(length)
            assert murmur2(data) == kafka_murmur2(data), (length, data.hex())


class Cluster:
    """What a partitioner reads of `kafka.cluster.ClusterMetadata`: one topic with `n` partitions, all
    with a leader."""

    def __init__(self, n: int) -> None:
        self.n = n

    def topics(self, exclude_internal_topics: bool = True) -> set[str]:
        return {"orders"}

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return set(range(self.n)) if topic == "orders" else None

    def available_partitions_for_topic(self, topic: str) -> set[int] | None:
        return self.partitions_for_topic(topic)


@pytest.mark.parametrize("partitions", [1, 3, 6, 12])
def test_keyed_records_go_where_the_default_partitioner_sends_them(partitions: int) -> None:
    cluster, ours, theirs = Cluster(partitions), KeyPartitioner(), DefaultPartitioner()
    rng = random.Random(partitions)
    for _ in range(2000):
        key = f"{rng.getrandbits(128):032x}:{rng.getrandbits(64):x}".encode()
        assert ours.partition("orders", None, key, None, b"{}", cluster) == theirs.partition(
            "orders", None, key, None, b"{}", cluster
        )


def test_unkeyed_records_go_to_some_partition_and_unknown_topics_are_refused() -> None:
    cluster = Cluster(6)
    assert {
        KeyPartitioner().partition("orders", None, None, None, b"{}", cluster) for _ in range(200)
    } == set(range(6))
    with pytest.raises(ValueError, match="not found"):
        KeyPartitioner().partition("elsewhere", None, b"k", None, b"{}", cluster)
