"""What the pipelined group consumer may commit (`kafka.group.Offsets`): never past a message
still being handled, whatever order messages finish in (at-least-once)."""

from __future__ import annotations

from aiokafka import TopicPartition

from authbus_shared.kafka.group import Offsets

P0, P1 = TopicPartition("t", 0), TopicPartition("t", 1)


def test_nothing_fetched_nothing_to_commit() -> None:
    assert Offsets().committable(P0) is None
    assert Offsets().all_committable() == {}


def test_commits_stop_at_the_lowest_message_still_in_hand() -> None:
    offsets = Offsets()
    for o in (10, 11, 12, 13):
        offsets.fetched(P0, o)

    offsets.done(P0, 12)
    offsets.done(P0, 13)
    assert offsets.committable(P0) == 10  # 10 and 11 are still being handled

    offsets.done(P0, 10)
    assert offsets.committable(P0) == 11

    offsets.done(P0, 11)
    assert offsets.committable(P0) == 14  # all handled: the next offset to read


def test_partitions_progress_independently_and_can_be_forgotten() -> None:
    offsets = Offsets()
    offsets.fetched(P0, 5)
    offsets.fetched(P1, 7)
    offsets.done(P1, 7)

    assert offsets.all_committable() == {P0: 5, P1: 8}

    offsets.forget([P0])
    offsets.done(P0, 5)  # a message of a revoked partition finishing late changes nothing
    assert offsets.all_committable() == {P1: 8}
