"""Subscription filters: which consumed events a subscription's handler gets (``subscriptions.<name>.filter``).

A record the filter does not let through is skipped: the worker commits past it as if it had been handled.
Conditions read the event's data by dotted path; a missing field fails every condition but ``exists`` (with
``value: false``). ``crosses_below`` fires once per crossing -- the event's previous value was at or above the
threshold and its new one is below -- so a stock level that stays low alerts once, not at every sale.
"""

from __future__ import annotations

import fnmatch
import operator
from collections.abc import Callable
from typing import Any

from hub.capabilities import ConsumedRecord, Event, Subscription

#: What :func:`field_value` returns for a path the data does not have.
MISSING = object()
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "lte": operator.le,
    "gt": operator.gt,
    "gte": operator.ge,
    "in": lambda value, allowed: value in (allowed or []),
}


def field_value(data: dict[str, Any], path: str) -> Any:
    value: Any = data
    for part in path.removeprefix("data.").split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return MISSING
    return value


def matches(rules: dict[str, Any], event: Event | None) -> bool:
    """Whether ``event`` passes the filter (``rules`` as loaded by SubscriptionFilterSchema)."""
    if event is None:  # not a hub event: only an empty filter lets it through
        return not (rules["event_types"] or rules["where"] or rules["crosses_below"])
    if rules["event_types"] and not any(
        fnmatch.fnmatchcase(event.event_type, pattern) for pattern in rules["event_types"]
    ):
        return False
    for condition in rules["where"]:
        value = field_value(event.data, condition["field"])
        if condition["op"] == "exists":
            if (value is not MISSING) != (condition["value"] is not False):
                return False
            continue
        try:
            if value is MISSING or not _COMPARE[condition["op"]](value, condition["value"]):
                return False
        except TypeError:  # "ten" < 10: a value of another type does not match
            return False
    crossing = rules["crosses_below"]
    if crossing:
        new, old = field_value(event.data, crossing["field"]), field_value(event.data, crossing["previous"])
        threshold = (
            crossing["threshold"]
            if crossing["threshold"] is not None
            else field_value(event.data, crossing["threshold_field"])
        )
        try:
            return bool(old >= threshold > new)
        except TypeError:
            return False
    return True


class FilteredHandler:
    """A handler that only sees the events its subscription's filter lets through."""

    def __init__(self, rules: dict[str, Any], handler: Callable[[ConsumedRecord, Subscription], Any]) -> None:
        self.rules = rules
        self.handler = handler
        self.label = getattr(handler, "label", None)

    def __call__(self, record: ConsumedRecord, subscription: Subscription) -> Any:
        if not matches(self.rules, record.event()):
            return None
        return self.handler(record, subscription)
