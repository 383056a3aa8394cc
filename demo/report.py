"""Pair what was published with what Kafka and the browser received, and print it side by side.

Kafka records carry the event id: each published event is paired with one event id whose record
holds its event, user and payload, and every further record with an id already seen is counted
as a repeat. Browser payloads carry no id, so the browser's arrivals are paired by payload, in
order, and an arrival equal to one already paired is counted as a repeat. The verdict says "every
event id arrived once" only when nothing is missing, repeated, unexpected or out of order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from demo.consumer import KafkaRecord
from demo.session import Published
from emitter.contract import SYSTEM_KEY
from emitter.publisher import PublisherStats

__all__ = ["Outcome", "match"]

_RULE = " │ "


@dataclass(frozen=True)
class Outcome:
    """Per published event, the Kafka record and the browser arrival that match it (or None)."""

    published: Sequence[Published]
    kafka: Sequence[KafkaRecord | None]
    browser: Sequence[int | None]
    """Position among the browser's arrivals; None when missing or not meant for the browser."""
    kafka_extra: int
    """Event ids on Kafka that no published event accounts for."""
    browser_extra: int
    kafka_repeats: int = 0
    """Records whose event id an earlier record already had (a redelivery)."""
    browser_repeats: int = 0
    """Arrivals equal to an event the browser already got (browsers see no event id)."""

    @property
    def browser_expected(self) -> int:
        return sum(item.browser for item in self.published)

    @property
    def missing(self) -> list[str]:
        """One line per event that did not arrive where it should have."""
        lines = []
        for number, (item, record, arrival) in enumerate(
            zip(self.published, self.kafka, self.browser, strict=True), start=1
        ):
            label = f"#{number} {item.event} {item.user_id or SYSTEM_KEY} {_order_id(item.data)}"
            if record is None:
                lines.append(f"{label}: not on Kafka")
            if item.browser and arrival is None:
                lines.append(f"{label}: not in the browser")
        return lines

    @property
    def in_order(self) -> bool:
        """Each user's Kafka records, and the browser's events, in the order they were published."""
        arrivals = [arrival for arrival in self.browser if arrival is not None]
        last: dict[str, tuple[int, int]] = {}
        for record in self.kafka:
            if record is None:
                continue
            place = (record.partition, record.offset)
            if record.key in last and place <= last[record.key]:
                return False
            last[record.key] = place
        return arrivals == sorted(arrivals)

    @property
    def complete(self) -> bool:
        return (
            not self.missing
            and self.in_order
            and not (self.kafka_extra or self.browser_extra)
            and not (self.kafka_repeats or self.browser_repeats)
        )

    def table(self) -> list[str]:
        """One row per published event: Kafka's record on the left, the browser's on the right."""
        rows = [("#", "event id", "event", "user", "order id", "event", "order id")]
        for number, (item, record, arrival) in enumerate(
            zip(self.published, self.kafka, self.browser, strict=True), start=1
        ):
            user = item.user_id or SYSTEM_KEY
            left = (
                ("MISSING", item.event, user, _order_id(item.data))
                if record is None
                else (
                    _short(record.event_id),
                    record.event_type,
                    record.user_id,
                    _order_id(record.data),
                )
            )
            if not item.browser:
                right: tuple[str, str] = ("(Kafka only: browser=False)", "")
            elif arrival is None:
                right = ("MISSING", _order_id(item.data))
            else:
                right = (item.event, _order_id(item.data))
            rows.append((str(number), *left, *right))
        widths = [max(len(row[column]) for row in rows) for column in range(7)]
        lines = []
        for row in rows:
            cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
            lines.append((" ".join(cells[:5]) + _RULE + " ".join(cells[5:])).rstrip())
        left_width = sum(widths[:5]) + 4
        title = "Kafka consumer".ljust(left_width) + _RULE + "Socket.IO client (the browser) on /"
        return [title, *lines]

    def summary(self, stats: PublisherStats, elapsed_s: float) -> list[str]:
        """What went in, what came out, and the verdict; the last line is the one to grep."""
        kafka = sum(record is not None for record in self.kafka)
        browser = sum(arrival is not None for arrival in self.browser)
        distinct = len({record.event_id for record in self.kafka if record is not None})
        lines = [
            f"published {len(self.published)} events "
            f"(emitter: {stats.queued} queued, {stats.dropped} dropped)",
            f"Kafka received {kafka} of {len(self.published)} ({distinct} distinct event ids"
            f", {self.kafka_repeats} repeated)"
            + (f", plus {self.kafka_extra} unexpected" if self.kafka_extra else ""),
            f"browser received {browser} of {self.browser_expected} "
            f"({len(self.published) - self.browser_expected} for Kafka only"
            f", {self.browser_repeats} repeated)"
            + (f", plus {self.browser_extra} unexpected" if self.browser_extra else ""),
            *self.missing,
        ]
        if not self.in_order:
            lines.append("events arrived out of the order they were published")
        verdict = (
            "every event id arrived once, in the order published"
            if self.complete
            else "NOT everything arrived once, as published"
        )
        lines.append(f"{verdict}; took {elapsed_s:.1f} s")
        return [f"summary: {line}" for line in lines]


def match(
    published: Sequence[Published],
    records: Sequence[KafkaRecord],
    arrivals: Sequence[tuple[str, Any]],
) -> Outcome:
    """Pair each published event with one Kafka event id and one browser arrival equal to it;
    count what repeats an id (or, in the browser, a payload) and what nothing accounts for."""
    first_by_id: dict[str, KafkaRecord] = {}
    for record in records:
        first_by_id.setdefault(record.event_id, record)
    unused_ids = list(first_by_id)
    kafka: list[KafkaRecord | None] = []
    for item in published:
        user = item.user_id or SYSTEM_KEY
        event_id = next(
            (
                i
                for i in unused_ids
                if (first_by_id[i].event_type, first_by_id[i].user_id, first_by_id[i].data)
                == (item.event, user, item.kafka)
            ),
            None,
        )
        if event_id is not None:
            unused_ids.remove(event_id)
        kafka.append(None if event_id is None else first_by_id[event_id])
    browser: list[int | None] = []
    unused_arrivals = list(range(len(arrivals)))
    for item in published:
        arrival = None
        if item.browser:
            arrival = next(
                (i for i in unused_arrivals if arrivals[i] == (item.event, item.data)), None
            )
            if arrival is not None:
                unused_arrivals.remove(arrival)
        browser.append(arrival)
    paired = [arrivals[i] for i in browser if i is not None]
    browser_repeats = sum(arrivals[i] in paired for i in unused_arrivals)
    return Outcome(
        published,
        kafka,
        browser,
        kafka_extra=len(unused_ids),
        browser_extra=len(unused_arrivals) - browser_repeats,
        kafka_repeats=len(records) - len(first_by_id),
        browser_repeats=browser_repeats,
    )


def _order_id(data: Mapping[str, Any]) -> str:
    """The order the event is about, from the payload itself or the analyzer's response."""
    for source in (data, data.get("response"), data.get("response_data")):
        if isinstance(source, Mapping) and source.get("orderid"):
            return str(source["orderid"])
    return "-"


def _short(event_id: str) -> str:
    """Head and tail of the 32-digit id: the head is per process, the tail counts the events."""
    return f"{event_id[:6]}…{event_id[-4:]}"
