"""A Prometheus text exposition read with prometheus_client's own parser, never with regexes.

No pytest here: the benches read expositions too.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


def parsed(exposition: str, kinds: tuple[str, ...] = ()) -> Iterator[Sample]:
    """Every sample of the exposition, of the families of `kinds` ("counter", "histogram", …) if given."""
    for family in text_string_to_metric_families(exposition):
        if not kinds or family.type in kinds:
            yield from family.samples


def written(labels: dict[str, str]) -> str:
    """Labels as the exposition writes them, `{a="b",c="d"}` in their order, "" for none."""
    if not labels:
        return ""
    escaped = (v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"') for v in labels.values())
    return "{" + ",".join(f'{k}="{v}"' for k, v in zip(labels, escaped, strict=True)) + "}"


def samples(exposition: str, name: str) -> dict[str, float]:
    """`{labels: value}` of one metric (a sample's full name: `…_total`, `…_bucket`), labels as written."""
    return {written(s.labels): s.value for s in parsed(exposition) if s.name == name}


def labelled(exposition: str, name: str) -> list[tuple[dict[str, str], float]]:
    """`(labels, value)` of every sample of one metric."""
    return [(s.labels, s.value) for s in parsed(exposition) if s.name == name]


def by_label(exposition: str, name: str, label: str) -> dict[str, float]:
    """One metric's values summed by the value of one of its labels."""
    totals: dict[str, float] = {}
    for labels, value in labelled(exposition, name):
        totals[labels[label]] = totals.get(labels[label], 0.0) + value
    return totals


def label_values(exposition: str, label: str) -> set[str]:
    """Every value that `label` takes, across all the exposition's samples."""
    return {s.labels[label] for s in parsed(exposition) if label in s.labels}


def counter_samples(exposition: str) -> dict[str, float]:
    """`{name{labels}: value}` of every sample that only grows: counters and histograms, not `process_*`
    (those start again with each process)."""
    grows = parsed(exposition, ("counter", "histogram"))
    return {s.name + written(s.labels): s.value for s in grows if not s.name.startswith("process_")}
