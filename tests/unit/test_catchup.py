"""The catch-up rule behind /readyz: every partition at or past its end offset at start."""

from __future__ import annotations

from aiokafka import TopicPartition

from shared.messaging.catchup import CatchUp, reached

A, B = TopicPartition("t", 0), TopicPartition("t", 1)


def test_every_partition_must_reach_its_end_offset() -> None:
    assert reached({A: 5, B: 3}, {A: 5, B: 3})
    assert reached({A: 5, B: 3}, {A: 9, B: 4})  # past the end: records that came later
    assert not reached({A: 5, B: 3}, {A: 5, B: 2})  # one behind on one partition
    assert not reached({A: 5, B: 3}, {A: 5})  # a partition nobody has committed on yet


def test_an_empty_topic_or_empty_partitions_are_caught_up_at_once() -> None:
    assert reached({}, {})
    assert reached({A: 0, B: 0}, {})
    empty = CatchUp()
    empty.begin({A: 0, B: 0})
    assert empty.done


def test_not_caught_up_before_the_end_offsets_are_known() -> None:
    progress = CatchUp()
    assert not progress.observe({A: 100})
    assert not progress.done


def test_once_caught_up_it_stays_so_whatever_lag_comes_later() -> None:
    progress = CatchUp()
    progress.begin({A: 2, B: 1})
    assert not progress.observe({A: 2})
    assert progress.observe({A: 2, B: 1})
    assert progress.observe({})  # later progress reads lower (a rebalance, a new broker)
    progress.begin({A: 50, B: 50})  # a reconnect sees a longer topic: still caught up
    assert progress.done and progress.targets == {A: 2, B: 1}


def test_a_reconnect_before_catching_up_takes_the_end_offsets_afresh() -> None:
    progress = CatchUp()
    progress.begin({A: 40})
    assert not progress.observe({A: 10})
    progress.begin({A: 3})  # the broker came back with less (memory storage)
    assert progress.observe({A: 3})
