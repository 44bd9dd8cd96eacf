"""Wiring: settings → ledger, pricer, classifier; the one-shot ingest every command starts with."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

from exporter.classify import Classifier
from exporter.config import PriceOverride, Settings, claude_roots
from exporter.ingest import IngestResult, Progress, ingest
from exporter.ledger import Ledger, Request, to_nanos
from exporter.pricing import Override, Pricer, Rates


@dataclass
class App:
    settings: Settings
    env: dict[str, str]

    @cached_property
    def ledger(self) -> Ledger:
        return Ledger(Path(self.settings.state_dir))

    @property
    def roots(self) -> list[Path]:
        return list(claude_roots(self.settings, self.env))

    @cached_property
    def pricer(self) -> Pricer:
        return Pricer([override(o) for o in self.settings.pricing.overrides])

    @cached_property
    def classifier(self) -> Classifier:
        rules = self.settings.classify
        return Classifier(rules.tools, rules.categories)

    @property
    def fingerprint(self) -> str:
        """Changes whenever stored costs or labels would come out differently."""
        rules = self.settings.classify
        return f"{self.pricer.fingerprint} {sorted(rules.tools.items())} {sorted(rules.categories.items())}"

    def enrich(self, r: Request) -> Request:
        """Prices and classifies a merged request; labels derive from the merge, never one copy."""
        interaction, category = self.classifier.classify(r.agent, r.tools, r.compaction, r.web_search)
        at = datetime.fromtimestamp(r.ts / 1000, UTC)
        cost = self.pricer.price(r.model, r.tokens, r.web_search, r.speed, at)
        return replace(r, interaction=interaction, category=category, cost=to_nanos(cost))

    def refresh(self, progress: Progress | None = None) -> IngestResult:
        """Brings the ledger up to date with the transcripts, and with price or rule changes."""
        self.ledger.reprice(self.fingerprint, self.enrich)
        return ingest(self.ledger, self.roots, self.enrich, progress)


def override(o: PriceOverride) -> Override:
    def rates(r: PriceOverride | object) -> Rates:
        return Rates(r.input, r.output, r.cache_read, r.cache_write_5m, r.cache_write_1h)  # type: ignore[attr-defined]

    tier = o.long_context
    return Override(
        o.model, o.input, o.output, o.cache_read, o.cache_write_5m, o.cache_write_1h,
        long_context_threshold=tier.threshold if tier else None,
        long_context=rates(tier) if tier else None,
    )  # fmt: skip
