"""The decoded tail of the disk store: what dropping positions to make room leaves of it."""

from __future__ import annotations

import pytest

from forwarder.store._tail import Run, Tail
from harness.events import numbered


def run(first: int, last: int) -> Run:
    return Run(first, last, 10 * (last - first + 1), [numbered(n) for n in range(first, last + 1)])


def tail_of(*runs: Run) -> Tail:
    tail = Tail(0)
    for one in runs:
        tail.append(one)
    return tail


def held(tail: Tail) -> list[tuple[int, int, int]]:
    return [(r.first, r.last, len(r.envelopes)) for r in tail.runs[tail.start :]]


def test_dropping_through_a_position_forgets_whole_runs_and_cuts_the_one_it_falls_in():
    tail = tail_of(run(1, 10), run(11, 20), run(21, 30))
    tail.drop_through(15)
    assert held(tail) == [(16, 20, 5), (21, 30, 10)]
    assert (tail.front, tail.events, tail.bytes) == (16, 15, 200)
    assert tail.runs[tail.start].envelopes[0].id == "ev-000016"
    tail.drop_through(5)
    assert tail.front == 16, "the front never goes back"
    tail.drop_through(20)
    assert held(tail) == [(21, 30, 10)]
    assert (tail.front, tail.events, tail.bytes) == (21, 10, 100)
    tail.drop_through(21)
    assert held(tail) == [(22, 30, 9)]
    tail.drop_through(30)
    assert (held(tail), tail.events, tail.bytes, tail.front) == ([], 0, 0, 31)
    tail.drop_through(40)
    assert tail.front == 41


def test_dropping_from_an_empty_tail_moves_only_the_front():
    tail = Tail(7)
    tail.drop_through(3)
    assert (tail.front, tail.last, held(tail)) == (4, 7, [])


@pytest.mark.parametrize(
    ("runs", "start", "kept"),
    [(2000, 75, 975), (2100, 49, 1049)],
)
def test_forgotten_runs_are_let_go_once_they_are_most_of_the_list(runs, start, kept):
    """The list is cut when over 1024 runs are forgotten and they outnumber those held."""
    tail = tail_of(*(run(n, n) for n in range(1, runs + 1)))
    tail.drop_through(1100)
    assert (tail.start, len(tail.runs), len(tail.lasts)) == (start, kept, kept)
    assert tail.after(1100) == tail.start
    assert held(tail)[0] == (1101, 1101, 1)
    assert tail.events == runs - 1100
