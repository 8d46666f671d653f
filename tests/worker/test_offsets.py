"""Offset tracking: what may be committed, per partition and epoch, with no servers."""

from __future__ import annotations

import threading

from hypothesis import given
from hypothesis import strategies as st

from worker.offsets import OffsetTracker, TopicPartition

TP = TopicPartition("articles", 0)
OTHER = TopicPartition("articles", 1)


def tracker_with(*partitions: TopicPartition) -> OffsetTracker:
    tracker = OffsetTracker()
    tracker.assign(partitions or (TP,))
    return tracker


def test_the_watermark_stops_below_the_lowest_unacknowledged_offset() -> None:
    tracker = tracker_with()
    epoch = tracker.register(TP, 10)
    assert epoch is not None
    for offset in (11, 12, 13):
        tracker.register(TP, offset)
    tracker.ack(TP, epoch, 12)
    tracker.ack(TP, epoch, 13)
    assert tracker.committable() == {TP: 10}
    tracker.ack(TP, epoch, 10)
    assert tracker.committable() == {TP: 11}
    tracker.ack(TP, epoch, 11)
    assert tracker.committable() == {TP: 14}


def test_a_committed_watermark_is_not_offered_again() -> None:
    tracker = tracker_with()
    epoch = tracker.register(TP, 0)
    assert epoch is not None
    tracker.ack(TP, epoch, 0)
    tracker.committed(tracker.committable())
    assert tracker.committable() == {}


def test_nothing_is_committable_before_anything_was_registered() -> None:
    assert tracker_with().committable() == {}


def test_gaps_in_offsets_do_not_hold_the_watermark_back() -> None:
    tracker = tracker_with()
    epoch = tracker.register(TP, 5)
    assert epoch is not None
    tracker.register(TP, 9)  # 6-8 were transaction markers or compacted away
    tracker.ack(TP, epoch, 5)
    tracker.ack(TP, epoch, 9)
    assert tracker.committable() == {TP: 10}


def test_an_ack_from_an_older_epoch_is_ignored() -> None:
    tracker = tracker_with()
    old = tracker.register(TP, 0)
    assert old is not None
    tracker.drop([TP])
    tracker.assign([TP])
    new = tracker.register(TP, 0)
    assert new is not None and new != old
    assert not tracker.ack(TP, old, 0)
    assert tracker.committable() == {TP: 0}
    assert tracker.ack(TP, new, 0)


def test_a_failed_publish_ends_the_epoch_and_asks_for_a_rewind_to_the_watermark() -> None:
    tracker = tracker_with()
    epoch = tracker.register(TP, 0)
    assert epoch is not None
    for offset in (1, 2, 3):
        tracker.register(TP, offset)
    tracker.ack(TP, epoch, 0)
    tracker.fail(TP, epoch)
    tracker.ack(TP, epoch, 2)  # late acks of the failed epoch change nothing
    assert not tracker.is_current(TP, epoch)
    assert tracker.register(TP, 4) is None  # polled before the seek: dropped
    assert tracker.committable() == {}
    assert tracker.rewinds() == {TP: 1}
    tracker.restart(TP, 1)
    assert tracker.rewinds() == {}
    fresh = tracker.register(TP, 1)
    assert fresh is not None
    tracker.ack(TP, fresh, 1)
    assert tracker.committable() == {TP: 2}


def test_drop_returns_where_each_partition_must_resume() -> None:
    tracker = tracker_with(TP, OTHER)
    epoch = tracker.register(TP, 3)
    tracker.register(TP, 4)
    assert epoch is not None
    tracker.ack(TP, epoch, 3)
    assert tracker.drop([TP, OTHER]) == {TP: 4}
    assert tracker.partitions() == set()


def test_wait_drained_returns_when_the_last_outstanding_offset_is_acked() -> None:
    tracker = tracker_with(TP, OTHER)
    epoch = tracker.register(TP, 0)
    assert epoch is not None
    other = tracker.register(OTHER, 0)
    assert other is not None
    assert not tracker.wait_drained([TP], timeout_s=0.01)
    threading.Timer(0.05, tracker.ack, (TP, epoch, 0)).start()
    assert tracker.wait_drained([TP], timeout_s=5)
    assert tracker.outstanding() == 1


@given(st.permutations(list(range(30))), st.integers(min_value=0, max_value=30))
def test_the_watermark_never_passes_an_unacknowledged_offset(order: list[int], acks: int) -> None:
    tracker = tracker_with()
    epochs = [tracker.register(TP, offset) for offset in range(30)]
    acked = set(order[:acks])
    for offset in order[:acks]:
        tracker.ack(TP, epochs[offset] or 0, offset)
    mark = tracker.committable().get(TP, 0)
    assert all(offset in acked for offset in range(mark))
    assert mark == 30 or mark not in acked


def test_a_revocation_waits_for_a_commit_in_flight_and_then_resumes_past_it() -> None:
    tracker = tracker_with()
    epoch = tracker.register(TP, 0)
    assert epoch is not None
    assert tracker.begin_commit({(TP, epoch)})

    def committed() -> None:
        tracker.ack(TP, epoch, 0)
        tracker.end_commit([TP], {TP: 1})

    threading.Timer(0.05, committed).start()
    assert tracker.revoke([TP], timeout_s=10, resume=True) == {TP: 1}


def commit_outlasting_the_revocation() -> tuple[OffsetTracker, int]:
    """TP (offsets 0-1) revoked while its commit of offset 0 is in flight, then given back
    (OTHER, nothing in flight, is revoked with a watermark)."""
    tracker = tracker_with(TP, OTHER)
    epoch = tracker.register(TP, 0)
    tracker.register(TP, 1)
    other = tracker.register(OTHER, 7)
    assert epoch is not None and other is not None
    assert tracker.begin_commit({(TP, epoch)})
    assert tracker.revoke([TP, OTHER], timeout_s=0.05, resume=True) == {OTHER: 7}
    assert tracker.partitions() == set()
    tracker.assign([TP])
    assert tracker.register(TP, 1) is None, "records are discarded while the outcome is unknown"
    assert tracker.rewinds() == {}
    return tracker, epoch


def test_a_partition_given_back_while_its_commit_is_undecided_resumes_past_a_commit() -> None:
    tracker, epoch = commit_outlasting_the_revocation()
    tracker.end_commit([TP], {TP: 1})
    assert not tracker.ack(TP, epoch, 0)  # the old epoch's acknowledgement is stale
    assert tracker.rewinds() == {TP: 1}


def test_a_partition_given_back_while_its_commit_is_undecided_resumes_at_an_abort() -> None:
    tracker, _ = commit_outlasting_the_revocation()
    tracker.end_commit([TP], {})
    assert tracker.rewinds() == {TP: 0}


def test_an_outcome_that_comes_before_the_partition_is_given_back_is_where_it_starts() -> None:
    tracker = tracker_with()
    epoch = tracker.register(TP, 4)
    assert epoch is not None
    assert tracker.begin_commit({(TP, epoch)})
    assert tracker.revoke([TP], timeout_s=0, resume=True) == {}
    tracker.end_commit([TP], {TP: 5})
    tracker.assign([TP])
    assert tracker.rewinds() == {TP: 5}
    tracker.assign([])  # a later rebalance: nothing of it is kept
    tracker.drop([TP])
    tracker.assign([TP])
    assert tracker.rewinds() == {} and tracker.register(TP, 9) is not None


def test_without_resume_a_partition_still_committing_is_only_dropped() -> None:
    """Cooperative rebalancing: kafka-python restarts it from the committed offset."""
    tracker = tracker_with()
    epoch = tracker.register(TP, 4)
    assert epoch is not None
    assert tracker.begin_commit({(TP, epoch)})
    assert tracker.revoke([TP], timeout_s=0, resume=False) == {}
    tracker.end_commit([TP], {TP: 5})
    tracker.assign([TP])
    assert tracker.register(TP, 3) is not None


def test_a_commit_cannot_begin_for_a_partition_that_was_dropped_or_rewound() -> None:
    tracker = tracker_with(TP, OTHER)
    epoch = tracker.register(TP, 0)
    other = tracker.register(OTHER, 0)
    assert epoch is not None and other is not None
    tracker.fail(OTHER, other)
    assert not tracker.begin_commit({(TP, epoch), (OTHER, other)})
    tracker.drop([TP])
    assert not tracker.begin_commit({(TP, epoch)})
