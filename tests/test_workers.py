"""The worker pool on its own: results in order whatever the pool's size and look-ahead, a worker's
exception raised in the parent, a stop ending it early; no worker outlives it (see conftest)."""

from __future__ import annotations

import os

import pytest

from exporter.ledger.workers import Workers


def _nothing() -> None:
    pass


def _square(n: int) -> tuple[int, int]:
    if n == 13:
        raise ValueError("unlucky")
    return n * n, os.getpid()


# Forked here: a spawned pool would start multiprocessing's resource tracker in this process, for good (the
# daemon's spawned workers are tested through a real `serve`, in tests/test_stop.py).
@pytest.mark.parametrize("count, ahead", [(1, 1), (2, 1), (2, 4), (3, 8)])
def test_results_come_in_order_from_every_worker(count: int, ahead: int) -> None:
    items = [n for n in range(40) if n != 13]
    with Workers[int, tuple[int, int]]("fork", count, _nothing, (), _square, items) as pool:
        results = list(pool.ordered(lambda: False, ahead))
    assert [(item, square) for item, (square, _) in results] == [(n, n * n) for n in items]
    assert len({pid for _, (_, pid) in results}) <= count and os.getpid() not in {pid for _, (_, pid) in results}


def test_an_exception_in_a_worker_is_raised_in_the_parent_with_later_items_handed_out() -> None:
    items = list(range(30))  # 13 fails while 14 and more are handed out or parsed already; it may be
    # raised while an item before it is still parsed (13 is handed out once 6 are taken): never after it
    taken: list[int] = []
    with (
        Workers[int, tuple[int, int]]("fork", 2, _nothing, (), _square, items) as pool,
        pytest.raises(ValueError, match="unlucky"),
    ):
        for item, _ in pool.ordered(lambda: False, ahead=8):
            taken.append(item)
    assert taken == list(range(len(taken))) and 6 <= len(taken) <= 13


def test_a_stop_ends_the_results_early() -> None:
    taken: list[int] = []
    with Workers[int, tuple[int, int]]("fork", 2, _nothing, (), _square, list(range(12))) as pool:
        for item, _ in pool.ordered(lambda: len(taken) >= 5, ahead=4):
            taken.append(item)
    assert taken == [0, 1, 2, 3, 4]
