"""The demo's verdict: every event id once, in order, or it says what was not."""

from __future__ import annotations

from demo.consumer import KafkaRecord
from demo.report import match
from demo.session import Published
from emitter.publisher import PublisherStats

STATS = PublisherStats(queued=3, dropped=0, too_large=0, unsent=0, failed_to_encode=0)
PUBLISHED = [
    Published("order_event", "alice", {"orderid": "1"}, True),
    Published("order_event", "bob", {"orderid": "2"}, True),
    Published("order.failed", "bob", {"orderid": "3"}, False),
]


def record(offset: int, event_id: str, item: Published) -> KafkaRecord:
    user = item.user_id or "admin"
    return KafkaRecord(0, offset, user, event_id, item.event, user, item.data)


def records(*ids: str, items: list[Published] | None = None) -> list[KafkaRecord]:
    items = items or PUBLISHED
    return [record(n, event_id, items[n % len(items)]) for n, event_id in enumerate(ids)]


BROWSER = [("order_event", {"orderid": "1"}), ("order_event", {"orderid": "2"})]


def verdict(outcome) -> str:
    return outcome.summary(STATS, 1.0)[-1]


class TestMatch:
    def test_each_id_once_in_order_is_the_only_complete_outcome(self):
        outcome = match(PUBLISHED, records("a", "b", "c"), BROWSER)
        assert outcome.complete
        assert verdict(outcome).startswith("summary: every event id arrived once")
        assert "Kafka received 3 of 3 (3 distinct event ids, 0 repeated)" in " ".join(
            outcome.summary(STATS, 1.0)
        )

    def test_a_redelivered_id_is_a_repeat_not_a_match(self):
        """Before, a second record with the same id went unnoticed in the verdict."""
        doubled = [*records("a", "b", "c"), record(3, "b", PUBLISHED[1])]
        outcome = match(PUBLISHED, doubled, BROWSER)
        assert outcome.kafka_repeats == 1
        assert not outcome.complete
        assert "NOT everything arrived once" in verdict(outcome)
        assert "(3 distinct event ids, 1 repeated)" in " ".join(outcome.summary(STATS, 1.0))

    def test_the_same_payload_under_another_id_is_unexpected(self):
        """Two ids carrying one published event's payload: one pairs, the other is extra."""
        outcome = match(PUBLISHED, [*records("a", "b", "c"), record(3, "z", PUBLISHED[0])], BROWSER)
        assert outcome.kafka_extra == 1
        assert not outcome.complete

    def test_a_browser_event_twice_is_a_repeat(self):
        """Browsers see no id: an arrival equal to one already paired is a repeat."""
        outcome = match(PUBLISHED, records("a", "b", "c"), [*BROWSER, BROWSER[0]])
        assert (outcome.browser_repeats, outcome.browser_extra) == (1, 0)
        assert not outcome.complete

    def test_a_record_of_another_user_does_not_pair(self):
        wrong_user = Published("order_event", "mallory", {"orderid": "1"}, True)
        outcome = match(
            PUBLISHED, records("a", "b", "c", items=[wrong_user, *PUBLISHED[1:]]), BROWSER
        )
        assert outcome.missing == ["#1 order_event alice 1: not on Kafka"]
        assert not outcome.complete
