"""The provider chart's geometry: audited provider calls bucketed over time, laid out as SVG coordinates that
the template draws (bars for calls and errors, a line for mean latency). Drawn server-side: no chart library."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from hub.records import AuditEntry

BUCKETS = 24
#: The plot area inside the SVG's viewBox (0 0 WIDTH HEIGHT): room for the axis labels around it.
WIDTH, HEIGHT = 640, 170
LEFT, RIGHT, TOP, BOTTOM = 44, 596, 12, 140
#: The shortest span a chart covers, so a handful of calls within a second are not a chart of one bar.
MIN_SPAN = timedelta(minutes=1)


@dataclass
class Bucket:
    calls: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)

    @property
    def mean_latency(self) -> float | None:
        return sum(self.latencies) / len(self.latencies) if self.latencies else None


def provider_charts(calls: Iterable[AuditEntry]) -> list[dict[str, Any]]:
    """One chart per provider (by name), all over the same time span: the span of ``calls``."""
    calls = list(calls)
    if not calls:
        return []
    start = min(entry.at for entry in calls)
    end = max(entry.at for entry in calls)
    if end - start < MIN_SPAN:
        start = end - MIN_SPAN
    step = (end - start) / BUCKETS
    by_provider: dict[str, list[Bucket]] = {}
    for entry in calls:
        buckets = by_provider.setdefault(str(entry.provider), [Bucket() for _ in range(BUCKETS)])
        index = min(int((entry.at - start) / step), BUCKETS - 1)
        bucket = buckets[index]
        bucket.calls += 1
        bucket.errors += entry.outcome != "success"
        if entry.latency_ms is not None:
            bucket.latencies.append(entry.latency_ms)
    return [_chart(name, buckets, start, step) for name, buckets in sorted(by_provider.items())]


def _chart(name: str, buckets: list[Bucket], start: datetime, step: timedelta) -> dict[str, Any]:
    most_calls = max(bucket.calls for bucket in buckets) or 1
    means = [bucket.mean_latency for bucket in buckets]
    slowest = max((mean for mean in means if mean is not None), default=0.0) or 1.0
    slot = (RIGHT - LEFT) / BUCKETS
    bars: list[dict[str, Any]] = []
    points: list[tuple[float, float]] = []
    for index, bucket in enumerate(buckets):
        x = LEFT + index * slot
        calls_height = (BOTTOM - TOP) * bucket.calls / most_calls
        errors_height = (BOTTOM - TOP) * bucket.errors / most_calls
        at = start + step * index
        bars.append(
            {
                "x": round(x + 1, 1),
                "width": round(slot - 2, 1),
                "calls_y": round(BOTTOM - calls_height, 1),
                "calls_height": round(calls_height, 1),
                "errors_y": round(BOTTOM - errors_height, 1),
                "errors_height": round(errors_height, 1),
                "title": f"{at:%H:%M:%S}: {bucket.calls} call(s), {bucket.errors} error(s)"
                + (f", mean {means[index]:.1f} ms" if means[index] is not None else ""),
            }
        )
        if means[index] is not None:
            points.append((round(x + slot / 2, 1), round(BOTTOM - (BOTTOM - TOP) * means[index] / slowest, 1)))
    every = [latency for bucket in buckets for latency in bucket.latencies]
    total_calls = sum(bucket.calls for bucket in buckets)
    total_errors = sum(bucket.errors for bucket in buckets)
    return {
        "provider": name,
        "calls": total_calls,
        "errors": total_errors,
        "error_rate": round(total_errors / total_calls, 4) if total_calls else 0.0,
        "mean_latency": round(sum(every) / len(every), 2) if every else None,
        "bars": bars,
        "latency_points": points,
        "latency_line": " ".join(f"{x},{y}" for x, y in points),
        "most_calls": most_calls,
        "slowest": round(slowest, 1),
        "start": start,
        "end": start + step * BUCKETS,
        "geometry": {"width": WIDTH, "height": HEIGHT, "left": LEFT, "right": RIGHT, "top": TOP, "bottom": BOTTOM},
    }
