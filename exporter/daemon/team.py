"""Team mode in the daemon: what the OTLP receiver decodes goes through an inbox to the loop, which owns
the ledger. A sender's answer waits until its batch is committed, so a 200 means the data is durable;
a batch the loop cannot take in time gets 503, and the sender's retry is absorbed by the dedupe."""

from __future__ import annotations

import queue
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path

from exporter.events import Request
from exporter.metrics.contract import ENGINEERING
from exporter.metrics.points import user_label
from exporter.pipeline import Pipeline
from exporter.sources.otlp import Engineering, Identity, Logs, Point

ANSWER_WITHIN = 10.0  # seconds a sender waits for its batch to be committed before a 503
Batch = Logs | list[Point]


class Inbox:
    """Batches handed from the receiver's threads to the loop."""

    def __init__(self, wake: Callable[[], None], answer_within: float = ANSWER_WITHIN) -> None:
        self._queue: queue.SimpleQueue[tuple[Batch, Future[None]]] = queue.SimpleQueue()
        self._wake = wake
        self.answer_within = answer_within

    def sink(self, kind: str, batch: Batch) -> None:
        """The receiver's sink: returns once the loop committed the batch; raises (→ 503) otherwise."""
        done: Future[None] = Future()
        self._queue.put((batch, done))
        self._wake()
        try:
            done.result(self.answer_within)
        except FutureTimeout:
            raise TimeoutError(f"the ledger did not take the batch within {self.answer_within:g} s") from None

    def take(self) -> list[tuple[Batch, Future[None]]]:
        items = []
        while True:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                return items


@dataclass
class Team:
    """Applies received batches to the ledger: usage events, tool results, engineering counters."""

    grace_ms: int  # how long an event waits for its transcript line; 0 with the transcript source off
    tools_from_otlp: bool  # with transcripts, the responses' tool_use blocks count tool calls already
    users: str = "off"  # labels.user: off | hash | email
    engineering: Engineering = field(default_factory=Engineering)

    def apply(self, app: Pipeline, items: list[tuple[Batch, Future[None]]], now_ms: int) -> list[Future[None]]:
        """Commits each batch; returns the senders to answer once the metrics show it. An error answers
        every batch not yet committed with it."""
        committed = []
        try:
            for batch, done in items:
                if isinstance(batch, list):
                    self._points(app, batch)
                else:
                    self._logs(app, batch, now_ms)
                committed.append(done)
        except BaseException as err:
            for _, done in items[len(committed) :]:
                done.set_exception(err)
            for done in committed:  # stored all the same
                done.set_result(None)
            raise
        return committed

    def settle(self, app: Pipeline, now_ms: int) -> Counter[str]:
        return app.ledger.settle(app.enrich, self.grace_ms, now_ms)

    def _logs(self, app: Pipeline, logs: Logs, now_ms: int) -> None:
        requests = [Request.from_event(event._replace(user=self.user(who))) for event, _, who in logs.requests]
        if requests:
            app.ledger.receive(requests, app.enrich, self.grace_ms, now_ms)
        tools = Counter((t.tool, t.agent, t.project) for t in logs.tools) if self.tools_from_otlp else Counter()
        skipped = logs.other + (0 if self.tools_from_otlp else len(logs.tools))
        app.ledger.add_counters(
            {"lines.otlp.skipped": skipped, "lines.otlp.malformed": logs.rejected}, tool_calls=tools
        )

    def user(self, who: Identity) -> str:
        """The user label: off (""), a short hash of the e-mail (or the user id), or the e-mail itself.
        Only what the setting asks for reaches the ledger."""
        person = who.email or who.user_id or ""
        if self.users == "off" or not person:
            return ""
        return user_label(self.users, person)

    def _points(self, app: Pipeline, points: list[Point]) -> None:
        before = self.engineering.totals
        self.engineering.add(points)
        grown = {}
        for (metric, kind), total in self.engineering.totals.items():
            scale = ENGINEERING[metric][2]  # whole stored units per unit (active time: milliseconds)
            # Whole units only cross into the ledger; the fraction waits in the running total.
            delta = int(total * scale) - int(before.get((metric, kind), 0.0) * scale)
            if delta > 0:
                grown[f"eng.{metric}.{kind}"] = delta
        if grown:
            app.ledger.add_counters(grown)


def bearer_tokens(path: Path | None) -> frozenset[str]:
    """One token a line; blank lines and `#` comments are ignored."""
    if path is None:
        return frozenset()
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return frozenset(line for line in lines if line and not line.startswith("#"))
