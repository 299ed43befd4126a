"""Counters and latency histograms in the Prometheus text format (0.0.4), kept in memory
for the life of the process. Small on purpose: the service needs a handful of series and
no extra dependency."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

# Seconds; /predict on CPU lives between a few ms (tiny batch) and tens of seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Gauge:
    """A value read at scrape time (training running, serving version...)."""

    name: str
    help: str
    value: float
    labels: Labels = ()


class Metrics:
    def __init__(self, prefix: str = "skillloop"):
        self.prefix = prefix
        self._lock = threading.Lock()
        self._help: dict[str, tuple[str, str]] = {}  # name -> (type, help)
        self._counters: dict[str, dict[Labels, float]] = defaultdict(dict)
        self._histograms: dict[str, dict[Labels, list[float]]] = defaultdict(dict)

    def counter(self, name: str, help: str) -> None:
        self._help[name] = ("counter", help)

    def histogram(self, name: str, help: str) -> None:
        self._help[name] = ("histogram", help)

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        key = _labels(labels)
        with self._lock:
            series = self._counters[name]
            series[key] = series.get(key, 0.0) + value

    def observe(self, name: str, seconds: float, **labels: str) -> None:
        key = _labels(labels)
        with self._lock:
            # per series: one count per bucket, then +Inf count and sum
            series = self._histograms[name].setdefault(key, [0.0] * (len(LATENCY_BUCKETS) + 2))
            for i, bound in enumerate(LATENCY_BUCKETS):
                if seconds <= bound:
                    series[i] += 1
            series[-2] += 1
            series[-1] += seconds

    def value(self, name: str, **labels: str) -> float:
        """A counter's current value (0 when never incremented)."""
        with self._lock:
            return self._counters.get(name, {}).get(_labels(labels), 0.0)

    def render(self, gauges: Iterable[Gauge] = ()) -> str:
        lines: list[str] = []
        with self._lock:
            for name, series in sorted(self._counters.items()):
                full = self._head(lines, name, "counter")
                for key, value in sorted(series.items()):
                    lines.append(f"{full}{_fmt_labels(key)} {_num(value)}")
            for name, histogram in sorted(self._histograms.items()):
                full = self._head(lines, name, "histogram")
                for key, values in sorted(histogram.items()):
                    for bound, count in zip(LATENCY_BUCKETS, values, strict=False):
                        le = _fmt_labels(key + (("le", _num(bound)),))
                        lines.append(f"{full}_bucket{le} {_num(count)}")
                    lines.append(
                        f"{full}_bucket{_fmt_labels(key + (('le', '+Inf'),))} {_num(values[-2])}"
                    )
                    lines.append(f"{full}_count{_fmt_labels(key)} {_num(values[-2])}")
                    lines.append(f"{full}_sum{_fmt_labels(key)} {values[-1]:.6f}")
        seen: set[str] = set()
        for gauge in gauges:
            full = f"{self.prefix}_{gauge.name}"
            if gauge.name not in seen:
                seen.add(gauge.name)
                lines.append(f"# HELP {full} {gauge.help}")
                lines.append(f"# TYPE {full} gauge")
            lines.append(f"{full}{_fmt_labels(gauge.labels)} {_num(gauge.value)}")
        return "\n".join(lines) + "\n"

    def _head(self, lines: list[str], name: str, kind: str) -> str:
        full = f"{self.prefix}_{name}"
        _, help_text = self._help.get(name, (kind, name.replace("_", " ")))
        lines.append(f"# HELP {full} {help_text}")
        lines.append(f"# TYPE {full} {kind}")
        return full


def _labels(labels: dict[str, str]) -> Labels:
    return tuple(sorted((k, str(v)) for k, v in labels.items()))


def _fmt_labels(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
