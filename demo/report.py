"""Pair what was published with what Kafka and the browser received, and print it side by side."""

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
    browser_extra: int

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
        return not self.missing and self.in_order

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
        lines = [
            f"published {len(self.published)} events "
            f"(emitter: {stats.queued} queued, {stats.dropped} dropped)",
            f"Kafka received {kafka} of {len(self.published)}"
            + (f", plus {self.kafka_extra} unexpected" if self.kafka_extra else ""),
            f"browser received {browser} of {self.browser_expected} "
            f"({len(self.published) - self.browser_expected} for Kafka only)"
            + (f", plus {self.browser_extra} unexpected" if self.browser_extra else ""),
            *self.missing,
        ]
        if not self.in_order:
            lines.append("events arrived out of the order they were published")
        verdict = (
            "all ids matched, in the order published"
            if self.complete
            else "NOT everything arrived as published"
        )
        lines.append(f"{verdict}; took {elapsed_s:.1f} s")
        return [f"summary: {line}" for line in lines]


def match(
    published: Sequence[Published],
    records: Sequence[KafkaRecord],
    arrivals: Sequence[tuple[str, Any]],
) -> Outcome:
    """Pair each published event with the first unused record and arrival equal to it."""
    unused_records = list(range(len(records)))
    unused_arrivals = list(range(len(arrivals)))
    kafka: list[KafkaRecord | None] = []
    browser: list[int | None] = []
    for item in published:
        user = item.user_id or SYSTEM_KEY
        index = next(
            (
                i
                for i in unused_records
                if (records[i].event_type, records[i].user_id, records[i].data)
                == (item.event, user, item.kafka)
            ),
            None,
        )
        if index is not None:
            unused_records.remove(index)
        kafka.append(None if index is None else records[index])
        arrival = None
        if item.browser:
            arrival = next(
                (i for i in unused_arrivals if arrivals[i] == (item.event, item.data)), None
            )
            if arrival is not None:
                unused_arrivals.remove(arrival)
        browser.append(arrival)
    return Outcome(published, kafka, browser, len(unused_records), len(unused_arrivals))


def _order_id(data: Mapping[str, Any]) -> str:
    """The order the event is about, from the payload itself or the analyzer's response."""
    for source in (data, data.get("response"), data.get("response_data")):
        if isinstance(source, Mapping) and source.get("orderid"):
            return str(source["orderid"])
    return "-"


def _short(event_id: str) -> str:
    """Head and tail of the 32-digit id: the head is per process, the tail counts the events."""
    return f"{event_id[:6]}…{event_id[-4:]}"
