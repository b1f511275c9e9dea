"""Decoding form bodies with nested keys (Stripe style: ``metadata[order_id]``, ``items[0][price]``)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass
from hub.testing.contract_server.messages import (
    _FormStructureError,
)

_BRACKET = re.compile(r"\[([^\[\]]*)\]")


def _split_form_key(key: str) -> list[str]:
    """``items[0][price]`` → ``["items", "0", "price"]``; a key that is not bracket notation stays whole."""
    start = key.find("[")
    if start <= 0 or not key.endswith("]"):
        return [key]
    rest = key[start:]
    parts = _BRACKET.findall(rest)
    if "".join(f"[{part}]" for part in parts) != rest:
        return [key]
    return [key[:start], *parts]


def _insert_form_value(root: dict[str, Any], parts: list[str], value: str) -> None:
    node: Any = root
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if isinstance(node, list):
            # Only "[]" addresses a list here (indexed keys build dicts, turned into lists by the schema later).
            if part != "":
                raise _FormStructureError(parts[0])
            if last:
                node.append(value)
                return
            following = parts[index + 1]
            # Rails/Rack semantics for "items[][price]=1&items[][qty]=2": keep filling the last element until
            # one of its keys repeats, then start a new one.
            if following != "" and node and isinstance(node[-1], dict) and following not in node[-1]:
                node = node[-1]
            else:
                child: Any = [] if following == "" else {}
                node.append(child)
                node = child
            continue
        if last:
            if part not in node:
                node[part] = value
            elif isinstance(node[part], list):
                node[part].append(value)
            elif isinstance(node[part], dict):
                raise _FormStructureError(parts[0])
            else:
                # A repeated plain key ("To=a&To=b") is a list, as form style with explode=true means.
                node[part] = [node[part], value]
            return
        wanted: type = list if parts[index + 1] == "" else dict
        child = node.get(part)
        if child is None or child == "":
            # "metadata=" followed by "metadata[k]=v": the structured value wins.
            child = wanted()
            node[part] = child
        elif not isinstance(child, wanted):
            raise _FormStructureError(parts[0])
        node = child


def parse_nested_form(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Decode bracket-notation form pairs into nested dicts and lists, all leaves strings.

    ``metadata[order_id]=7`` → ``{"metadata": {"order_id": "7"}}``; ``expand[]=a&expand[]=b`` →
    ``{"expand": ["a", "b"]}``; ``items[0][price]=p`` → ``{"items": {"0": {"price": "p"}}}`` (a digit-keyed dict,
    which becomes a list where the schema says ``array``); a repeated plain key gives a list.
    """
    root: dict[str, Any] = {}
    for key, value in pairs:
        _insert_form_value(root, _split_form_key(key), value)
    return root


def _form_param_name(path: Iterable[Any]) -> str:
    parts = [str(part) for part in path]
    return parts[0] + "".join(f"[{part}]" for part in parts[1:]) if parts else ""


def _json_param_name(path: Iterable[Any]) -> str:
    return ".".join(str(part) for part in path)
