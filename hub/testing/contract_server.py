"""A stateful HTTP server that checks every request against a provider's official API description.

Provider plugins are tested with the provider's own SDK pointed at this server. The server is generic over the
description (OpenAPI 3.0/3.1, or Swagger 2.0): it finds the operation a request addresses, checks the path,
query and header parameters, the credentials the operation's ``security`` asks for, and the body — JSON,
``application/x-www-form-urlencoded`` with Stripe-style nested keys (``metadata[order_id]=x``,
``expand[]=a``, ``items[0][price]=p``) converted to the schema's types, or multipart — and refuses what the
description does not allow, in the provider's error shape. What a valid request *does* is up to the test: a
handler per operation keeps state in a dict like the real service (a created payment can be fetched and
refunded; a refund above the charge is refused). Handlers' responses are checked against the description too,
so the fakes stay faithful to the real API.

Example, for a Stripe fixture::

    from hub.testing.contract_server import ContractRequest, ContractServer
    from hub.testing.specs import load_spec

    def create_intent(request: ContractRequest, state: dict) -> tuple[int, dict]:
        intent = {"id": "pi_1", "object": "payment_intent", "amount": request.body["amount"], ...}
        state.setdefault("intents", {})[intent["id"]] = intent
        return 200, intent

    with ContractServer(load_spec("stripe.com.json"), handlers={"PostPaymentIntents": create_intent}) as server:
        client = stripe.StripeClient("sk_test_x", base_addresses={"api": server.url})
        client.v1.payment_intents.create(params={"amount": 2000, "currency": "usd"})
        assert server.requests[-1].operation_id == "PostPaymentIntents"

Only the standard library (and :mod:`hub.testing.servers`, which needs no more) is imported at module level
(werkzeug and jsonschema when a server is built), so ``hub.testing`` stays importable in plugin test suites
that need none of this.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import email.parser
import email.policy
import json
import math
import re
import threading
import traceback
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from hub.testing.servers import WsgiServer

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError

__all__ = [
    "ContractError",
    "ContractRequest",
    "ContractServer",
    "Credentials",
    "ErrorShaper",
    "Handler",
    "HandlerResult",
    "OpenAPIDocument",
    "default_error_shaper",
    "parse_nested_form",
]

_HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

#: What a handler returns: ``(status, body)`` or ``(status, body, headers)``. A dict or list body is sent as
#: JSON, ``str`` as text, ``bytes`` as is, ``None`` as an empty body.
HandlerResult = tuple[int, Any] | tuple[int, Any, Mapping[str, str]]
Handler = Callable[["ContractRequest", dict[str, Any]], HandlerResult]


@dataclass(frozen=True)
class ContractError:
    """Why the server refused a request, handed to the provider's error shaper.

    ``kind`` is one of ``"not_found"`` (no such path, or the path has no such method), ``"unauthorized"``
    (credentials missing, or refused by ``auth_check``), ``"invalid_request"`` (a parameter or the body breaks
    the description), ``"unsupported_media_type"`` (a body in a content type the operation does not take).
    ``param`` names the offending parameter in the request's own notation: ``metadata[order_id]`` for forms and
    query strings, ``personalizations.0.to`` for JSON. ``details`` lists every violation found, not only the one
    reported in ``message``.
    """

    status: int
    kind: str
    message: str
    param: str | None = None
    location: str | None = None
    operation_id: str | None = None
    details: tuple[str, ...] = ()


ErrorShaper = Callable[[ContractError], tuple[int, Any, Mapping[str, str]]]


def default_error_shaper(error: ContractError) -> tuple[int, Any, Mapping[str, str]]:
    """The Stripe-like shape many APIs share: ``{"error": {"type", "message", "param"}}`` with the error's status."""
    error_type = "authentication_error" if error.status == 401 else "invalid_request_error"
    body: dict[str, Any] = {"type": error_type, "message": error.message}
    if error.param is not None:
        body["param"] = error.param
    return error.status, {"error": body}, {}


@dataclass(frozen=True)
class Credentials:
    """The credentials of a request's ``Authorization`` header.

    ``scheme`` is lower-case (``"basic"``, ``"bearer"``…). Basic credentials are split into ``username`` and
    ``password``; any other scheme's value is in ``token``.
    """

    scheme: str
    token: str | None = None
    username: str | None = None
    password: str | None = None


@dataclass
class ContractRequest:
    """A request as the server understood it; handlers receive it and ``ContractServer.requests`` logs it.

    ``path_params``, ``query`` and ``body`` hold values already converted to the description's types (a form's
    ``amount=2000`` is the integer 2000, ``metadata[order_id]=7`` is ``{"metadata": {"order_id": "7"}}``).
    ``headers`` has lower-case names. ``status`` is the status the server answered with, and ``error`` the
    reason it refused the request, if it did.
    """

    method: str
    path: str
    headers: dict[str, str]
    raw_body: bytes
    query_string: str = ""
    operation_id: str | None = None
    path_template: str | None = None
    path_params: dict[str, Any] = field(default_factory=dict)
    query: dict[str, Any] = field(default_factory=dict)
    body: Any = None
    content_type: str | None = None
    auth: Credentials | None = None
    status: int | None = None
    error: ContractError | None = None

    def header(self, name: str, default: str | None = None) -> str | None:
        """A request header by case-insensitive name."""
        return self.headers.get(name.lower(), default)


class _Refused(Exception):
    """Raised inside request processing to answer with the provider-shaped error."""

    def __init__(self, error: ContractError) -> None:
        super().__init__(error.message)
        self.error = error


class _FormStructureError(ValueError):
    pass


# ---------------------------------------------------------------------------------------------------------------
# Form decoding


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


# ---------------------------------------------------------------------------------------------------------------
# The description


_INTEGER_TEXT = re.compile(r"[+-]?\d+")


def _strictly_equal(left: Any, right: Any) -> bool:
    # JSON Schema keeps true and 1 apart; Python's == does not.
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    return bool(left == right)


_TYPE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "object": lambda value: isinstance(value, dict),
    "array": lambda value: isinstance(value, list),
    "string": lambda value: isinstance(value, str),
    "integer": lambda value: isinstance(value, int) and not isinstance(value, bool),
    "number": lambda value: isinstance(value, int | float) and not isinstance(value, bool),
    "boolean": lambda value: isinstance(value, bool),
    "null": lambda value: value is None,
}


class OpenAPIDocument:
    """One API description, with lazy, cached ``$ref`` resolution and the schema machinery built on it.

    Every ``$ref`` in the bundled descriptions is local (``#/components/schemas/x``), so references are resolved
    by JSON pointer into the document itself instead of through a registry: faster on Stripe's 2.5 MB spec, and it
    lets ``nullable`` apply next to a ``$ref`` (Twilio writes ``{"$ref": enum, "nullable": true}``).
    """

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.spec = spec
        if "swagger" in spec:
            self.version = str(spec["swagger"])
        elif "openapi" in spec:
            self.version = str(spec["openapi"])
        else:
            raise ValueError("not an OpenAPI or Swagger description: no 'openapi' or 'swagger' key")
        self.is_swagger2 = self.version.startswith("2")
        self._pointer_cache: dict[str, Any] = {}
        self._pattern_cache: dict[str, re.Pattern[str] | None] = {}
        self._validator_classes: dict[str, Any] = {}
        self._lock = threading.Lock()
        #: Patterns Python's ``re`` cannot compile; each is skipped on its own, the rest of the schema still applies.
        self.skipped_patterns: set[str] = set()

    # -- references ----------------------------------------------------------------------------------------------

    def resolve(self, ref: str) -> Any:
        """The object a local ``$ref`` (``#/components/schemas/x``) points at."""
        cached = self._pointer_cache.get(ref)
        if cached is not None:
            return cached
        if not ref.startswith("#"):
            raise ValueError(f"only local $refs are supported (bundle the description first): {ref!r}")
        node: Any = self.spec
        pointer = unquote(ref[1:])
        for raw in pointer.split("/")[1:] if pointer else []:
            token = raw.replace("~1", "/").replace("~0", "~")
            try:
                node = node[int(token)] if isinstance(node, list) else node[token]
            except (KeyError, IndexError, ValueError, TypeError) as exc:
                raise ValueError(f"unresolvable $ref {ref!r}") from exc
        self._pointer_cache[ref] = node
        return node

    def deref(self, node: Any) -> Any:
        """Follow ``$ref`` chains until a concrete object."""
        seen = 0
        while isinstance(node, Mapping) and isinstance(node.get("$ref"), str):
            node = self.resolve(node["$ref"])
            seen += 1
            if seen > 64:
                raise ValueError("$ref cycle")
        return node

    # -- patterns ------------------------------------------------------------------------------------------------

    def compiled_pattern(self, pattern: str) -> re.Pattern[str] | None:
        """``pattern`` compiled with Python's ``re``, or ``None`` if it cannot be (then only it is skipped).

        Some validators give up on the whole body when one pattern fails to compile, so an invalid request would
        pass; here the bad pattern alone is ignored and recorded in :attr:`skipped_patterns`.
        """
        if pattern in self._pattern_cache:
            return self._pattern_cache[pattern]
        try:
            compiled: re.Pattern[str] | None = re.compile(pattern)
        except re.error:
            compiled = None
            self.skipped_patterns.add(pattern)
        self._pattern_cache[pattern] = compiled
        return compiled

    # -- schema validation ---------------------------------------------------------------------------------------

    def validator_for(self, schema: Any, *, mode: str) -> Any:
        """A jsonschema validator for ``schema``; ``mode`` is ``"request"`` or ``"response"``.

        OpenAPI 3.0 and Swagger 2.0 schemas are a Draft 4 dialect (boolean ``exclusiveMinimum``); 3.1 is Draft
        2020-12. The dialect is extended for OpenAPI: ``nullable``, local ``$ref`` with siblings, regexes compiled
        by Python with bad ones skipped one by one, and ``readOnly`` properties not required in requests (nor
        ``writeOnly`` ones in responses).
        """
        with self._lock:
            cls = self._validator_classes.get(mode)
            if cls is None:
                cls = self._build_validator_class(mode)
                self._validator_classes[mode] = cls
        return cls(schema)

    def _build_validator_class(self, mode: str) -> Any:
        from jsonschema import Draft4Validator, Draft202012Validator, validators
        from jsonschema.exceptions import UnknownType
        from jsonschema.exceptions import ValidationError as SchemaError

        base = Draft202012Validator if self.version.startswith("3.1") else Draft4Validator
        original = base.VALIDATORS
        skip_flag = "readOnly" if mode == "request" else "writeOnly"
        document = self

        def nullable(schema: Mapping[str, Any], instance: Any) -> bool:
            return instance is None and (schema.get("nullable") is True or schema.get("x-nullable") is True)

        def ref(validator: Any, reference: str, instance: Any, schema: Mapping[str, Any]) -> Iterator[SchemaError]:
            if nullable(schema, instance):
                return
            yield from validator.descend(instance, document.resolve(reference))

        def type_(validator: Any, types: Any, instance: Any, schema: Mapping[str, Any]) -> Iterator[SchemaError]:
            if nullable(schema, instance):
                return
            wanted = [types] if isinstance(types, str) else list(types)
            try:
                if any(validator.is_type(instance, kind) for kind in wanted):
                    return
            except UnknownType:
                # A Swagger-only type ("file") or a vendor one: not something JSON Schema can check.
                return
            yield SchemaError(f"{instance!r} is not of type {', '.join(repr(kind) for kind in wanted)}")

        def enum(validator: Any, values: Any, instance: Any, schema: Mapping[str, Any]) -> Iterator[SchemaError]:
            if nullable(schema, instance):
                return
            yield from original["enum"](validator, values, instance, schema)

        def nullable_aware(keyword: str) -> Callable[..., Iterator[SchemaError]]:
            # "nullable: true" beside anyOf/oneOf/allOf (Stripe's expandable fields) admits null too.
            def check(validator: Any, value: Any, instance: Any, schema: Mapping[str, Any]) -> Iterator[SchemaError]:
                if nullable(schema, instance):
                    return
                yield from original[keyword](validator, value, instance, schema)

            return check

        def pattern(validator: Any, regex: str, instance: Any, schema: Mapping[str, Any]) -> Iterator[SchemaError]:
            if not isinstance(instance, str):
                return
            compiled = document.compiled_pattern(regex)
            if compiled is not None and not compiled.search(instance):
                yield SchemaError(f"{instance!r} does not match {regex!r}")

        def pattern_properties(
            validator: Any, patterns: Mapping[str, Any], instance: Any, schema: Mapping[str, Any]
        ) -> Iterator[SchemaError]:
            if not isinstance(instance, dict):
                return
            for regex, subschema in patterns.items():
                compiled = document.compiled_pattern(regex)
                if compiled is None:
                    continue
                for key, value in instance.items():
                    if compiled.search(key):
                        yield from validator.descend(value, subschema, path=key, schema_path=regex)

        def additional_properties(
            validator: Any, additional: Any, instance: Any, schema: Mapping[str, Any]
        ) -> Iterator[SchemaError]:
            if not isinstance(instance, dict):
                return
            extras = document.additional_keys(instance, schema)
            if extras is None:
                return
            if isinstance(additional, Mapping):
                for key in extras:
                    yield from validator.descend(instance[key], additional, path=key)
            elif additional is False and extras:
                error = SchemaError(f"Additional properties are not allowed ({', '.join(map(repr, extras))})")
                error.unexpected = extras  # type: ignore[attr-defined]
                yield error

        def required(validator: Any, names: Any, instance: Any, schema: Mapping[str, Any]) -> Iterator[SchemaError]:
            if not isinstance(instance, dict) or not isinstance(names, list):
                return
            properties = schema.get("properties") or {}
            for name in names:
                if name in instance:
                    continue
                if document.deref(properties.get(name, {})).get(skip_flag) is True:
                    continue
                error = SchemaError(f"{name!r} is a required property")
                error.missing = name  # type: ignore[attr-defined]
                yield error

        overrides = {
            "$ref": ref,
            "type": type_,
            "enum": enum,
            "pattern": pattern,
            "patternProperties": pattern_properties,
            "additionalProperties": additional_properties,
            "required": required,
            **{keyword: nullable_aware(keyword) for keyword in ("anyOf", "allOf")},
            # oneOf is checked as anyOf: vendors' alternatives overlap without a discriminator (Vonage's SMS
            # response is oneOf [SMS, Error], and a real SMS answer fits both), so "exactly one" would refuse
            # every faithful response. Fitting none of the alternatives is still an error.
            "oneOf": lambda validator, alternatives, instance, schema: nullable_aware("anyOf")(
                validator, alternatives, instance, schema
            ),
        }
        if "const" in original:
            overrides["const"] = original["const"]
        return validators.extend(base, overrides)

    def additional_keys(self, instance: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str] | None:
        """Keys of ``instance`` that neither ``properties`` nor ``patternProperties`` cover.

        ``None`` when that cannot be told, because one of the ``patternProperties`` does not compile.
        """
        properties = schema.get("properties") or {}
        compiled = [self.compiled_pattern(regex) for regex in schema.get("patternProperties") or {}]
        if any(regex is None for regex in compiled):
            return None
        return [
            key
            for key in instance
            if key not in properties and not any(regex.search(key) for regex in compiled if regex is not None)
        ]

    def is_valid(self, instance: Any, schema: Any, *, mode: str = "response") -> bool:
        return not any(True for _ in self.validator_for(schema, mode=mode).iter_errors(instance))

    def validate(self, instance: Any, schema: Any, *, mode: str) -> list[ValidationError]:
        """All violations of ``schema`` by ``instance``, most relevant first."""
        from jsonschema.exceptions import best_match

        errors = list(self.validator_for(schema, mode=mode).iter_errors(instance))
        if not errors:
            return []
        best = best_match(errors)
        # best_match may return an error from inside an anyOf's context: put it first, keep the rest for details.
        return [best, *[error for error in errors if error is not best]]

    # -- type conversion of form and query values ------------------------------------------------------------------

    def _schema_type(self, schema: Mapping[str, Any]) -> Any:
        kind = schema.get("type")
        if kind is None:
            if "properties" in schema or "additionalProperties" in schema:
                return "object"
            if "items" in schema:
                return "array"
        return kind

    def matches_shallowly(self, value: Any, schema: Any) -> bool:
        """Whether ``value`` has the type (and enum membership) ``schema`` asks for at its top level."""
        schema = self.deref(schema)
        if not isinstance(schema, Mapping):
            return True
        if value is None and (schema.get("nullable") is True or schema.get("x-nullable") is True):
            return True
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return any(self.matches_shallowly(value, alternative) for alternative in schema[key])
        if "allOf" in schema and not all(self.matches_shallowly(value, part) for part in schema["allOf"]):
            return False
        if "enum" in schema and not any(_strictly_equal(value, option) for option in schema["enum"]):
            return False
        kind = self._schema_type(schema)
        if kind is None:
            return True
        kinds = [kind] if isinstance(kind, str) else list(kind)
        return any(_TYPE_CHECKS.get(name, lambda _value: True)(value) for name in kinds)

    def coerce(self, value: Any, schema: Any, *, wrap_scalars: bool = True) -> Any:
        """Convert form/query strings in ``value`` to the types ``schema`` declares.

        Forms carry only strings: ``"2000"`` becomes 2000 where the schema says integer, ``"true"`` a boolean, a
        digit-keyed dict (``items[0][price]``) a list. A value that cannot be converted is left as it is, so the
        validator reports it ("'abc' is not of type 'integer'"). Under ``anyOf``/``oneOf`` an alternative the
        value already fits is preferred, so Stripe's ``""`` (unset) stays ``""`` rather than becoming ``[""]``.
        ``wrap_scalars`` turns a lone value into a one-item list where an array is expected (a repeated key sent
        once, as Twilio's SDK does for ``MediaUrl``).
        """
        schema = self.deref(schema)
        if not isinstance(schema, Mapping):
            return value
        for key in ("anyOf", "oneOf"):
            if key in schema:
                alternatives = schema[key]
                for alternative in alternatives:
                    if self.matches_shallowly(value, alternative):
                        return self.coerce(value, alternative, wrap_scalars=wrap_scalars)
                for alternative in alternatives:
                    converted = self.coerce(value, alternative, wrap_scalars=wrap_scalars)
                    if self.matches_shallowly(converted, alternative):
                        return converted
                return value
        if "allOf" in schema:
            rest = {key: item for key, item in schema.items() if key != "allOf"}
            for part in [*schema["allOf"], rest]:
                value = self.coerce(value, part, wrap_scalars=wrap_scalars)
            return value
        kind = self._schema_type(schema)
        kinds = [kind] if isinstance(kind, str) else list(kind or [])
        if isinstance(value, str):
            return self._coerce_text(value, schema, kinds, wrap_scalars)
        if isinstance(value, dict):
            if "array" in kinds and "object" not in kinds and value and all(key.isdigit() for key in value):
                items = schema.get("items", {})
                return [self.coerce(value[key], items) for key in sorted(value, key=int)]
            if "object" in kinds or not kinds:
                return self._coerce_object(value, schema)
            return value
        if isinstance(value, list) and ("array" in kinds or not kinds):
            items = schema.get("items", {})
            if isinstance(items, Mapping):
                return [self.coerce(item, items, wrap_scalars=False) for item in value]
        return value

    def _coerce_text(self, value: str, schema: Mapping[str, Any], kinds: list[str], wrap_scalars: bool) -> Any:
        if "string" in kinds:
            return value
        for kind in kinds:
            if kind == "integer" and _INTEGER_TEXT.fullmatch(value):
                return int(value)
            if kind == "number":
                if _INTEGER_TEXT.fullmatch(value):
                    return int(value)
                try:
                    number = float(value)
                except ValueError:
                    continue
                if math.isfinite(number):
                    return number
            if kind == "boolean" and value.lower() in ("true", "false"):
                return value.lower() == "true"
            if kind == "array" and wrap_scalars:
                return [self.coerce(value, schema.get("items", {}), wrap_scalars=False)]
        return value

    def _coerce_object(self, value: dict[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
        properties = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        patterns = schema.get("patternProperties") or {}
        converted: dict[str, Any] = {}
        for key, item in value.items():
            subschema: Any = properties.get(key)
            if subschema is None:
                for regex, candidate in patterns.items():
                    compiled = self.compiled_pattern(regex)
                    if compiled is not None and compiled.search(key):
                        subschema = candidate
                        break
            if subschema is None and isinstance(additional, Mapping):
                subschema = additional
            converted[key] = self.coerce(item, subschema) if subschema is not None else item
        return converted

    # -- sample values -------------------------------------------------------------------------------------------

    def sample(self, schema: Any) -> Any:
        """A minimal value that satisfies ``schema``: its example if it has one, else its required properties.

        Used by the default handler, and by stateful handlers as the base of an object they then fill in.
        Vendors' examples do not always match their own schemas (SendGrid's, Square's): only valid ones are
        used, and if the assembled value still breaks the schema it is rebuilt from the schema alone.
        """
        value = self._sample(schema, examples=True, depth=0)
        if self.is_valid(value, schema):
            return value
        return self._sample(schema, examples=False, depth=0)

    def _sample(self, schema: Any, *, examples: bool, depth: int) -> Any:
        schema = self.deref(schema)
        if not isinstance(schema, Mapping) or depth > 24:
            return None
        for key in ("example", "default") if examples else ("default",):
            if key in schema and self.is_valid(schema[key], schema):
                return schema[key]
        if "enum" in schema and schema["enum"]:
            return schema["enum"][0]
        for key in ("anyOf", "oneOf"):
            if key in schema and schema[key]:
                return self._sample(schema[key][0], examples=examples, depth=depth + 1)
        if "allOf" in schema:
            # The parts, plus whatever the schema declares beside its allOf (SendGrid puts required fields there).
            rest = {key: value for key, value in schema.items() if key != "allOf"}
            merged: dict[str, Any] = {}
            for part in [*schema["allOf"], rest]:
                value = self._sample(part, examples=examples, depth=depth + 1)
                if isinstance(value, dict):
                    merged.update(value)
            return merged
        kind = self._schema_type(schema)
        if isinstance(kind, list):
            kind = next((name for name in kind if name != "null"), None)
        if kind == "object":
            properties = schema.get("properties") or {}
            return {
                name: self._sample(properties.get(name, {}), examples=examples, depth=depth + 1)
                for name in schema.get("required") or []
            }
        if kind == "array":
            count = int(schema.get("minItems", 0))
            return [self._sample(schema.get("items", {}), examples=examples, depth=depth + 1) for _ in range(count)]
        if kind == "string":
            return self._sample_text(schema)
        if kind in ("integer", "number"):
            minimum = schema.get("minimum", 0)
            if schema.get("exclusiveMinimum") is True:
                minimum += 1
            return int(minimum) if kind == "integer" else float(minimum)
        if kind == "boolean":
            return False
        if schema.get("nullable") is True:
            return None
        return {}

    def _sample_text(self, schema: Mapping[str, Any]) -> str:
        by_format = {
            "date-time": "1970-01-01T00:00:00Z",
            "date": "1970-01-01",
            "email": "user@example.com",
            "uri": "https://example.com/",
            "url": "https://example.com/",
            "uuid": "00000000-0000-0000-0000-000000000000",
        }
        text = by_format.get(str(schema.get("format")), "")
        pattern = schema.get("pattern")
        compiled = self.compiled_pattern(pattern) if isinstance(pattern, str) else None
        if compiled is not None and not compiled.search(text):
            text = _text_matching(compiled) or text
        minimum = int(schema.get("minLength", 0))
        if len(text) < minimum:
            padded = text + "x" * (minimum - len(text))
            if compiled is None or compiled.search(padded):
                text = padded
        return text


def _text_matching(compiled: re.Pattern[str]) -> str | None:
    """The shortest obvious string matching ``compiled`` (``^SM[0-9a-f]{32}$`` → ``"SM000…"``), or ``None``.

    Built from Python's own parse of the regex (``re._parser``, private but stable since 3.11); anything it
    cannot render, or a result that does not match after all, gives ``None`` and the caller keeps its default.
    """
    try:
        from re import _constants as constants  # type: ignore[attr-defined]
        from re import _parser as parser  # type: ignore[attr-defined]

        text = _render_regex(parser.parse(compiled.pattern, compiled.flags), constants)
    except Exception:  # noqa: BLE001 - any regex feature the renderer does not know means "no sample"
        return None
    return text if compiled.search(text) else None


def _render_regex(tokens: Any, constants: Any) -> str:
    repeats = {constants.MAX_REPEAT, constants.MIN_REPEAT, getattr(constants, "POSSESSIVE_REPEAT", None)}
    categories = {
        constants.CATEGORY_DIGIT: "0",
        constants.CATEGORY_WORD: "a",
        constants.CATEGORY_SPACE: " ",
        constants.CATEGORY_NOT_DIGIT: "a",
        constants.CATEGORY_NOT_WORD: " ",
        constants.CATEGORY_NOT_SPACE: "a",
    }
    out: list[str] = []
    for op, argument in tokens:
        if op is constants.LITERAL:
            out.append(chr(argument))
        elif op is constants.NOT_LITERAL:
            out.append("a" if argument != ord("a") else "b")
        elif op is constants.ANY:
            out.append("a")
        elif op is constants.IN:
            first_op, first_argument = argument[0]
            if first_op is constants.NEGATE:
                out.append("~")
            elif first_op is constants.LITERAL:
                out.append(chr(first_argument))
            elif first_op is constants.RANGE:
                out.append(chr(first_argument[0]))
            elif first_op is constants.CATEGORY:
                out.append(categories[first_argument])
            else:
                raise ValueError(first_op)
        elif op in repeats:
            minimum, _maximum, subpattern = argument
            out.append(_render_regex(subpattern, constants) * minimum)
        elif op is constants.SUBPATTERN:
            out.append(_render_regex(argument[-1], constants))
        elif op is constants.BRANCH:
            out.append(_render_regex(argument[1][0], constants))
        elif op is constants.CATEGORY:
            out.append(categories[argument])
        elif op in (constants.AT, constants.ASSERT, constants.ASSERT_NOT):
            continue
        else:
            raise ValueError(op)
    return "".join(out)


# ---------------------------------------------------------------------------------------------------------------
# Operations


@dataclass
class _Parameter:
    name: str
    location: str
    required: bool
    schema: Any
    style: str | None
    explode: bool | None
    collection_format: str | None = None


@dataclass
class _Body:
    required: bool
    content: dict[str, Any]  # lower-cased media type → media type object (with "schema")


@dataclass
class _Prepared:
    parameters: list[_Parameter]
    body: _Body | None
    security: list[dict[str, Any]] | None
    responses: dict[str, Any]


class _Operation:
    """One method on one path template, with its regex compiled at index time and the rest prepared lazily."""

    def __init__(
        self,
        document: OpenAPIDocument,
        method: str,
        template: str,
        base_path: str,
        path_item: Mapping[str, Any],
        operation: Mapping[str, Any],
    ) -> None:
        self.document = document
        self.method = method.upper()
        self.template = template
        self.full_template = base_path + template
        self.path_item = path_item
        self.operation = operation
        self.key = f"{self.method} {template}"
        self.operation_id: str = operation.get("operationId") or self.key
        pieces = re.split(r"(\{[^{}/]+\})", self.full_template)
        self.param_names = [piece[1:-1] for piece in pieces if piece.startswith("{") and piece.endswith("}")]
        regex = "".join(
            "([^/]+)" if piece.startswith("{") and piece.endswith("}") else re.escape(piece) for piece in pieces
        )
        self.regex = re.compile(regex)
        literal = sum(len(piece) for piece in pieces if not piece.startswith("{"))
        # Literal paths win over templated ones ("/v1/payment_intents/search" before ".../{intent}").
        self.sort_key = (len(self.param_names), -literal)
        self._prepared: _Prepared | None = None

    def match(self, path: str) -> dict[str, str] | None:
        found = self.regex.fullmatch(path)
        if found is None:
            return None
        return dict(zip(self.param_names, found.groups(), strict=True))

    def prepared(self) -> _Prepared:
        if self._prepared is None:
            self._prepared = self._prepare()
        return self._prepared

    def _prepare(self) -> _Prepared:
        document = self.document
        merged: dict[tuple[str, str], Mapping[str, Any]] = {}
        for raw in [*(self.path_item.get("parameters") or []), *(self.operation.get("parameters") or [])]:
            parameter = document.deref(raw)
            merged[(parameter["name"], parameter["in"])] = parameter  # operation level overrides path level
        parameters: list[_Parameter] = []
        body: _Body | None = None
        form_fields: list[Mapping[str, Any]] = []
        for (name, location), parameter in merged.items():
            if location == "body":  # Swagger 2.0
                consumes = self.operation.get("consumes") or document.spec.get("consumes") or ["application/json"]
                body = _Body(
                    required=bool(parameter.get("required")),
                    content={media.lower(): {"schema": parameter.get("schema", {})} for media in consumes},
                )
            elif location == "formData":  # Swagger 2.0
                form_fields.append(parameter)
            else:
                parameters.append(
                    _Parameter(
                        name=name,
                        location=location,
                        required=bool(parameter.get("required")) or location == "path",
                        schema=parameter.get("schema") or _swagger2_schema(parameter),
                        style=parameter.get("style"),
                        explode=parameter.get("explode"),
                        collection_format=parameter.get("collectionFormat"),
                    )
                )
        if form_fields:
            consumes = self.operation.get("consumes") or document.spec.get("consumes") or []
            media_types = [media.lower() for media in consumes if "form" in media.lower()]
            schema = {
                "type": "object",
                "properties": {field["name"]: _swagger2_schema(field) for field in form_fields},
                "required": [field["name"] for field in form_fields if field.get("required")],
            }
            body = _Body(
                required=bool(schema["required"]),
                content={media: {"schema": schema} for media in media_types or ["application/x-www-form-urlencoded"]},
            )
        request_body = self.operation.get("requestBody")
        if request_body is not None:
            request_body = document.deref(request_body)
            body = _Body(
                required=bool(request_body.get("required")),
                content={
                    media.split(";")[0].strip().lower(): value
                    for media, value in request_body.get("content", {}).items()
                },
            )
        security = self.operation.get("security", document.spec.get("security"))
        return _Prepared(
            parameters=parameters,
            body=body,
            security=security,
            responses=dict(self.operation.get("responses") or {}),
        )


_SWAGGER2_SCHEMA_KEYS = (
    "type", "format", "items", "enum", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength",
    "maxLength", "pattern", "minItems", "maxItems", "uniqueItems", "multipleOf", "default", "x-nullable",
)  # fmt: skip


def _swagger2_schema(parameter: Mapping[str, Any]) -> dict[str, Any]:
    """A Swagger 2.0 non-body parameter keeps its schema keywords on itself; gather them into a schema."""
    schema = {key: parameter[key] for key in _SWAGGER2_SCHEMA_KEYS if key in parameter}
    if schema.get("type") == "file":
        schema = {"type": "string", "format": "binary"}
    return schema


def _media_kind(media_type: str) -> str:
    if media_type == "application/json" or media_type.endswith("+json") or "/json" in media_type:
        return "json"
    if media_type == "application/x-www-form-urlencoded":
        return "form"
    if media_type.startswith("multipart/"):
        return "multipart"
    if media_type.startswith("text/"):
        return "text"
    return "binary"


def _find_media(content: Mapping[str, Any], media_type: str) -> tuple[str, Any] | None:
    if media_type in content:
        return media_type, content[media_type]
    wildcard = media_type.split("/")[0] + "/*"
    for candidate in (wildcard, "*/*"):
        if candidate in content:
            return media_type, content[candidate]
    return None


def _normalise_base_path(path: str) -> str:
    """``"v3/"`` → ``"/v3"``; ``"/"`` and ``""`` → ``""``."""
    stripped = path.strip("/")
    return f"/{stripped}" if stripped else ""


def _parse_credentials(header: str | None) -> Credentials | None:
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    scheme = scheme.lower()
    value = value.strip()
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return Credentials(scheme=scheme, token=value)
        username, _, password = decoded.partition(":")
        return Credentials(scheme=scheme, username=username, password=password)
    return Credentials(scheme=scheme, token=value)


# ---------------------------------------------------------------------------------------------------------------
# The server


class ContractServer:
    """A real HTTP server on 127.0.0.1 that serves one API description, statefully.

    :param spec: the parsed description (see :mod:`hub.testing.specs`).
    :param base_path: prefix the paths are served under. ``None`` (default) takes it from the description —
        the path of the first ``servers`` URL (``/v3`` for SendGrid's ``https://api.sendgrid.com/v3``), per path
        item or operation where they have their own, or Swagger's ``basePath``. ``""`` serves the paths as written.
    :param handlers: ``{operationId or "METHOD /template": handler}``; see :meth:`register`.
    :param error_shaper: turns a :class:`ContractError` into ``(status, body, headers)`` in the provider's shape.
    :param validate_responses: check each handler's response against the description; a violation answers 500
        with the reason and is recorded in :attr:`errors` (a fake that drifts from the real API fails loudly).
    :param require_auth: refuse with 401 a request without the credentials its operation's ``security`` asks
        for (Basic, Bearer, an API-key header/query parameter); operations without ``security`` are not checked.
    :param auth_check: optional ``(request) -> bool`` that checks the credentials' values (e.g. the test key).
    """

    def __init__(
        self,
        spec: Mapping[str, Any],
        *,
        base_path: str | None = None,
        handlers: Mapping[str, Handler] | None = None,
        error_shaper: ErrorShaper = default_error_shaper,
        validate_responses: bool = True,
        require_auth: bool = True,
        auth_check: Callable[[ContractRequest], bool] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.document = OpenAPIDocument(spec)
        self.error_shaper = error_shaper
        self.validate_responses = validate_responses
        self.require_auth = require_auth
        self.auth_check = auth_check
        self.host = host
        self._port = port
        self._base_path = None if base_path is None else _normalise_base_path(base_path)
        #: State shared by the handlers; cleared by :meth:`reset`.
        self.state: dict[str, Any] = {}
        #: Every request received, in order, including refused ones.
        self.requests: list[ContractRequest] = []
        #: Contract violations of the *fakes* (handler responses, handler exceptions); see :meth:`check`.
        self.errors: list[str] = []
        self._lock = threading.RLock()
        self._handlers: dict[str, Handler] = {}
        self._routes: dict[str, list[_Operation]] = {}
        self._by_key: dict[str, _Operation] = {}
        self._index()
        for key, handler in (handlers or {}).items():
            self.register(key, handler)
        self._server: WsgiServer | None = None

    # -- indexing ------------------------------------------------------------------------------------------------

    def _server_path(self, *levels: Mapping[str, Any]) -> str:
        if self._base_path is not None:
            return self._base_path
        spec = self.document.spec
        if self.document.is_swagger2:
            return _normalise_base_path(str(spec.get("basePath", "")))
        for level in [*levels, spec]:
            servers = level.get("servers")
            if servers:
                server = servers[0]
                url = str(server.get("url", ""))
                for name, variable in (server.get("variables") or {}).items():
                    url = url.replace("{" + name + "}", str(variable.get("default", "")))
                return _normalise_base_path(urlsplit(url).path)
        return ""

    def _index(self) -> None:
        for template, raw_item in (self.document.spec.get("paths") or {}).items():
            path_item = self.document.deref(raw_item)
            for method in _HTTP_METHODS:
                operation = path_item.get(method)
                if not isinstance(operation, Mapping):
                    continue
                base = self._server_path(operation, path_item)
                entry = _Operation(self.document, method, template, base, path_item, operation)
                self._routes.setdefault(entry.method, []).append(entry)
                self._by_key[entry.key] = entry
                self._by_key.setdefault(entry.operation_id, entry)
        for entries in self._routes.values():
            entries.sort(key=lambda entry: entry.sort_key)

    def _operation(self, key: str) -> _Operation:
        entry = self._by_key.get(key)
        if entry is None:
            method, _, template = key.partition(" ")
            entry = next(
                (op for op in self._routes.get(method.upper(), []) if op.full_template == template),
                None,
            )
        if entry is None:
            raise KeyError(f"the description has no operation {key!r} (an operationId or 'METHOD /path/{{param}}')")
        return entry

    @property
    def operation_ids(self) -> list[str]:
        """Every operation's id (``operationId``, or ``"METHOD /template"`` where it has none)."""
        return sorted({entry.operation_id for entries in self._routes.values() for entry in entries})

    # -- handlers ------------------------------------------------------------------------------------------------

    def register(self, key: str, handler: Handler) -> None:
        """Serve the operation ``key`` (its ``operationId`` or ``"POST /v1/refunds"``) with ``handler``.

        ``handler(request, state)`` gets the validated :class:`ContractRequest` and the server's shared
        :attr:`state` dict, and returns ``(status, body)`` or ``(status, body, headers)``. Handlers run one at a
        time, so they need no locking of their own. An unknown key raises ``KeyError`` at once, so a typo in a
        fixture does not silently fall back to the default handler.
        """
        self._handlers[self._operation(key).operation_id] = handler

    def handler(self, key: str) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`register`."""

        def decorate(function: Handler) -> Handler:
            self.register(key, function)
            return function

        return decorate

    def sample_response(self, key: str, status: int | str | None = None) -> Any:
        """A minimal body the description allows for operation ``key`` (first 2xx response unless ``status``).

        The first documented example that matches the schema, else the schema's required properties with
        placeholder values: the base a stateful handler fills in.
        """
        entry = self._operation(key)
        responses = entry.prepared().responses
        code = str(status) if status is not None else self._first_success(responses)
        if code not in responses:
            return None
        media = self._response_media(self.document.deref(responses[code]), "application/json")
        if media is None:
            return None
        schema = media.get("schema", {})
        documented = [media["example"]] if "example" in media else []
        examples = media.get("examples")
        if isinstance(examples, Mapping):
            documented += [
                example["value"]
                for example in map(self.document.deref, examples.values())
                if isinstance(example, Mapping) and "value" in example
            ]
        for example in documented:
            if self.document.is_valid(example, schema):
                return example
        return self.document.sample(schema)

    @staticmethod
    def _first_success(responses: Mapping[str, Any]) -> str:
        codes = sorted(code for code in responses if str(code).startswith("2"))
        return str(codes[0]) if codes else "default"

    def _default_handler(self, request: ContractRequest, state: dict[str, Any]) -> HandlerResult:
        entry = self._operation(request.operation_id or "")
        responses = entry.prepared().responses
        code = self._first_success(responses)
        status = int(code) if code.isdigit() else 200
        body = None if status == 204 else self.sample_response(entry.operation_id, code if code in responses else None)
        return status, body

    # -- lifecycle -----------------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the contract server is not started")
        return self._server.port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` — the SDK's base address; the description's base path is served beneath it."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> ContractServer:
        if self._server is None:
            self._server = WsgiServer(self._wsgi_app, host=self.host, port=self._port, name="contract-server").start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.stop()
        self._server = None

    def __enter__(self) -> ContractServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget state, logged requests and recorded errors (between tests sharing one server)."""
        with self._lock:
            self.state.clear()
            self.requests.clear()
            self.errors.clear()

    def check(self) -> None:
        """Raise ``AssertionError`` if a handler broke the description or crashed; call it at fixture teardown."""
        if self.errors:
            raise AssertionError("contract server: " + "\n".join(self.errors))

    def check_requests(self, *, allow_refused: Collection[str] = ()) -> None:
        """Raise ``AssertionError`` if the server refused a request the client sent, listing each one.

        A refused request means the code under test sent something the official description does not allow
        (a missing parameter, a body of the wrong shape, an unknown path): the provider would refuse it too.
        ``allow_refused`` names :attr:`ContractError.kind` values a test suite provokes on purpose, e.g.
        ``{"unauthorized"}`` where tests send a wrong API key.
        """
        refused = [
            f"{request.method} {request.path}: {request.error.message}"
            for request in self.requests
            if request.error is not None and request.error.kind not in allow_refused
        ]
        if refused:
            raise AssertionError(
                "contract server refused requests the description does not allow:\n" + "\n".join(refused)
            )

    @contextlib.contextmanager
    def isolated(self, *, allow_refused: Collection[str] = ()) -> Iterator[ContractServer]:
        """One test's use of a shared (session-scoped) server: reset it, then check it at the end.

        Yields the server emptied by :meth:`reset`; when the block ends without an exception, asserts that the
        fakes kept to the description (:meth:`check`) and that every request met it (:meth:`check_requests`
        with ``allow_refused``). The per-test fixture of a plugin's suite::

            @pytest.fixture(scope="session")
            def twilio_server(twilio_spec):
                with ContractServer(twilio_spec, error_shaper=twilio_error_shaper) as server:
                    yield server

            @pytest.fixture
            def twilio(twilio_server):
                with twilio_server.isolated(allow_refused={"unauthorized"}) as server:
                    yield server

        (pytest resumes a fixture normally at teardown even when the test failed, so the checks run then too.)
        """
        self.reset()
        yield self
        self.check()
        self.check_requests(allow_refused=allow_refused)

    # -- request processing --------------------------------------------------------------------------------------

    def _wsgi_app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        from werkzeug.wrappers import Request

        request = Request(environ)
        status, headers, payload = self.handle(
            request.method,
            request.path,
            request.query_string.decode("latin-1"),
            dict(request.headers.items()),
            request.get_data(cache=False),
        )
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
        headers = {**headers, "Content-Length": str(len(payload))}
        start_response(f"{status} {reason}", list(headers.items()))
        return [payload]

    def handle(
        self, method: str, path: str, query_string: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """Process one request and return ``(status, headers, payload)``; the HTTP layer only transports it.

        ``path`` is the percent-decoded path, ``query_string`` the raw query string.
        """
        request = ContractRequest(
            method=method.upper(),
            path=path,
            headers={name.lower(): value for name, value in headers.items()},
            raw_body=body,
            query_string=query_string,
        )
        request.auth = _parse_credentials(request.header("authorization"))
        try:
            entry = self._route(request)
            self._check_auth(entry, request)
            self._check_parameters(entry, request)
            self._check_body(entry, request)
        except _Refused as refused:
            return self._refuse(request, refused.error)
        return self._respond(entry, request)

    def _refuse(self, request: ContractRequest, error: ContractError) -> tuple[int, dict[str, str], bytes]:
        status, body, headers = self.error_shaper(error)
        request.status = status
        request.error = error
        with self._lock:
            self.requests.append(request)
        return self._encode(status, body, headers)

    def _route(self, request: ContractRequest) -> _Operation:
        for entry in self._routes.get(request.method, []):
            params = entry.match(request.path)
            if params is not None:
                request.operation_id = entry.operation_id
                request.path_template = entry.template
                request.path_params = dict(params)
                return entry
        other_methods = sorted(
            method
            for method, entries in self._routes.items()
            if method != request.method and any(entry.regex.fullmatch(request.path) for entry in entries)
        )
        message = f"Unrecognized request URL ({request.method}: {request.path})."
        if other_methods:
            message += f" This path accepts: {', '.join(other_methods)}."
        raise _Refused(
            ContractError(status=404, kind="not_found", message=message, location="path", details=(message,))
        )

    def _check_auth(self, entry: _Operation, request: ContractRequest) -> None:
        prepared = entry.prepared()
        if (
            self.require_auth
            and prepared.security
            and not any(
                all(self._scheme_satisfied(name, request) for name in requirement) for requirement in prepared.security
            )
        ):
            schemes = sorted({name for requirement in prepared.security for name in requirement})
            message = f"No valid credentials provided (this operation needs one of: {', '.join(schemes)})."
            raise _Refused(
                ContractError(
                    status=401, kind="unauthorized", message=message, location="header",
                    operation_id=entry.operation_id, details=(message,),
                )
            )  # fmt: skip
        if self.auth_check is not None and not self.auth_check(request):
            message = "Invalid credentials provided."
            raise _Refused(
                ContractError(
                    status=401, kind="unauthorized", message=message, location="header",
                    operation_id=entry.operation_id, details=(message,),
                )
            )  # fmt: skip

    def _scheme_satisfied(self, name: str, request: ContractRequest) -> bool:
        spec = self.document.spec
        schemes = (
            spec.get("securityDefinitions")
            if self.document.is_swagger2
            else (spec.get("components") or {}).get("securitySchemes")
        )
        scheme = self.document.deref((schemes or {}).get(name) or {})
        kind = str(scheme.get("type", "")).lower()
        auth = request.auth
        if kind in ("http", "basic"):
            wanted = "basic" if kind == "basic" else str(scheme.get("scheme", "")).lower()
            if wanted in ("basic", "bearer"):
                return auth is not None and auth.scheme == wanted and bool(auth.token or auth.username)
            return auth is not None
        if kind == "apikey":
            location, key = scheme.get("in"), str(scheme.get("name", ""))
            if location == "header":
                return bool(request.header(key))
            if location == "query":
                return key in dict(parse_qsl(request.query_string, keep_blank_values=True))
            if location == "cookie":
                return f"{key}=" in (request.header("cookie") or "")
            return True
        if kind in ("oauth2", "openidconnect"):
            return auth is not None and auth.scheme == "bearer" and bool(auth.token)
        # mutualTLS and unknown schemes cannot be checked over plain HTTP.
        return True

    def _invalid(
        self, entry: _Operation, message: str, *, param: str | None, location: str, details: Iterable[str] = ()
    ) -> _Refused:
        return _Refused(
            ContractError(
                status=400,
                kind="invalid_request",
                message=message,
                param=param,
                location=location,
                operation_id=entry.operation_id,
                details=tuple(details) or (message,),
            )
        )

    def _schema_failure(
        self, entry: _Operation, errors: list[ValidationError], *, prefix: list[Any], location: str, notation: str
    ) -> _Refused:
        namer = _form_param_name if notation == "form" else _json_param_name
        described = []
        for error in errors:
            path = [*prefix, *error.absolute_path]
            missing = getattr(error, "missing", None)
            unexpected = getattr(error, "unexpected", None)
            if missing is not None:
                described.append((f"Missing required param: {namer([*path, missing])}.", namer([*path, missing])))
            elif unexpected:
                name = namer([*path, unexpected[0]])
                described.append((f"Received unknown parameter: {name}.", name))
            else:
                name = namer(path) if path else None
                where = f" for {name}" if name else ""
                # jsonschema spells out the whole enum; Stripe's longest run to hundreds of values.
                detail = error.message if len(error.message) <= 300 else error.message[:300] + "…"
                described.append((f"Invalid value{where}: {detail}.", name))
        message, param = described[0]
        return self._invalid(entry, message, param=param, location=location, details=[text for text, _ in described])

    def _check_parameters(self, entry: _Operation, request: ContractRequest) -> None:
        prepared = entry.prepared()
        query_pairs = parse_qsl(request.query_string, keep_blank_values=True)
        try:
            nested_query = parse_nested_form(query_pairs)
        except _FormStructureError as exc:
            raise self._invalid(
                entry, f"Invalid structure for query parameter {exc}.", param=str(exc), location="query"
            ) from exc
        query: dict[str, Any] = {}
        for parameter in prepared.parameters:
            if parameter.location == "path":
                raw: Any = request.path_params.get(parameter.name)
            elif parameter.location == "query":
                raw = nested_query.get(parameter.name)
            elif parameter.location == "header":
                # OpenAPI: header parameters named Accept, Content-Type or Authorization are ignored (security and
                # content negotiation cover them).
                if parameter.name.lower() in ("accept", "content-type", "authorization"):
                    continue
                raw = request.header(parameter.name)
            else:
                continue
            if raw is None:
                if parameter.required:
                    raise self._invalid(
                        entry,
                        f"Missing required {parameter.location} parameter: {parameter.name}.",
                        param=parameter.name,
                        location=parameter.location,
                    )
                continue
            value = self._parameter_value(parameter, raw)
            errors = self.document.validate(value, parameter.schema, mode="request")
            if errors:
                raise self._schema_failure(
                    entry, errors, prefix=[parameter.name], location=parameter.location, notation="form"
                )
            if parameter.location == "path":
                request.path_params[parameter.name] = value
            elif parameter.location == "query":
                query[parameter.name] = value
        # Query keys the description does not declare are kept (many APIs ignore them), unconverted.
        for name, value in nested_query.items():
            query.setdefault(name, value)
        request.query = query

    def _parameter_value(self, parameter: _Parameter, raw: Any) -> Any:
        schema = self.document.deref(parameter.schema)
        kind = self.document._schema_type(schema) if isinstance(schema, Mapping) else None
        if isinstance(raw, str) and (kind == "array" or (isinstance(kind, list) and "array" in kind)):
            separator = self._array_separator(parameter)
            if separator is not None:
                raw = raw.split(separator) if raw else []
        return self.document.coerce(raw, schema)

    def _array_separator(self, parameter: _Parameter) -> str | None:
        """How an array sent as one string is split; ``None`` when each item comes as its own repeated key."""
        if self.document.is_swagger2:
            collection = parameter.collection_format or "csv"
            return {"csv": ",", "ssv": " ", "tsv": "\t", "pipes": "|"}.get(collection)
        style = parameter.style or ("form" if parameter.location in ("query", "cookie") else "simple")
        explode = parameter.explode if parameter.explode is not None else style == "form"
        if style == "form" and explode:
            return None
        return {"spaceDelimited": " ", "pipeDelimited": "|"}.get(style, ",")

    def _check_body(self, entry: _Operation, request: ContractRequest) -> None:
        body_spec = entry.prepared().body
        raw = request.raw_body
        full_type = request.header("content-type") or ""
        media_type = full_type.split(";")[0].strip().lower()
        request.content_type = media_type or None
        if body_spec is None:
            # A body on an operation that defines none is ignored, as real servers do: some SDKs send "{}" on
            # GET or DELETE, and refusing that would fail tests for a difference the provider never sees.
            return
        if not raw and not media_type:
            if body_spec.required:
                raise self._invalid(entry, "A request body is required.", param=None, location="body")
            return
        found = _find_media(body_spec.content, media_type) if media_type else None
        if found is None:
            accepted = ", ".join(sorted(body_spec.content)) or "none"
            message = f"Unsupported content type {media_type or '(none)'!r}; this operation accepts: {accepted}."
            raise _Refused(
                ContractError(
                    status=415, kind="unsupported_media_type", message=message, location="body",
                    operation_id=entry.operation_id, details=(message,),
                )
            )  # fmt: skip
        _, media = found
        media = self.document.deref(media)
        schema = media.get("schema") if isinstance(media, Mapping) else None
        kind = _media_kind(media_type)
        if kind in ("json", "text", "binary") and not raw:
            if body_spec.required:
                raise self._invalid(entry, "A request body is required.", param=None, location="body")
            return
        value, notation = self._decode_body(entry, kind, full_type, raw, schema)
        request.body = value
        if schema is None or kind == "binary":
            return
        errors = self.document.validate(value, schema, mode="request")
        if errors:
            raise self._schema_failure(entry, errors, prefix=[], location="body", notation=notation)

    def _decode_body(self, entry: _Operation, kind: str, full_type: str, raw: bytes, schema: Any) -> tuple[Any, str]:
        if kind == "json":
            try:
                return json.loads(raw.decode("utf-8")), "json"
            except (UnicodeDecodeError, ValueError) as exc:
                raise self._invalid(entry, f"Invalid JSON body: {exc}.", param=None, location="body") from exc
        if kind in ("form", "multipart"):
            try:
                pairs = (
                    parse_qsl(raw.decode("utf-8"), keep_blank_values=True)
                    if kind == "form"
                    else _multipart_pairs(full_type, raw)
                )
                nested = parse_nested_form(pairs)
            except UnicodeDecodeError as exc:
                raise self._invalid(entry, "The form body is not UTF-8.", param=None, location="body") from exc
            except _FormStructureError as exc:
                raise self._invalid(
                    entry, f"Invalid structure for parameter {exc}.", param=str(exc), location="body"
                ) from exc
            return (self.document.coerce(nested, schema) if schema is not None else nested), "form"
        if kind == "text":
            return raw.decode("utf-8", errors="replace"), "json"
        return raw, "json"

    def _respond(self, entry: _Operation, request: ContractRequest) -> tuple[int, dict[str, str], bytes]:
        handler = self._handlers.get(entry.operation_id, self._default_handler)
        with self._lock:
            try:
                result = handler(request, self.state)
                status, body, headers = (*result, {}) if len(result) == 2 else result  # type: ignore[misc]
                headers = dict(headers)
            except Exception:
                problem = f"{entry.operation_id}: handler raised\n{traceback.format_exc()}"
                self.errors.append(problem)
                request.status = 500
                self.requests.append(request)
                return self._encode(500, {"contract_server_error": problem}, {})
            problem = self._check_response(entry, status, body, headers) if self.validate_responses else None
            if problem is not None:
                self.errors.append(problem)
                status, body, headers = 500, {"contract_server_error": problem}, {}
            request.status = status
            self.requests.append(request)
        return self._encode(status, body, headers)

    def _response_media(self, response: Mapping[str, Any], media_type: str) -> Mapping[str, Any] | None:
        if self.document.is_swagger2:
            return {"schema": response["schema"]} if "schema" in response else None
        content = {key.split(";")[0].strip().lower(): value for key, value in (response.get("content") or {}).items()}
        if not content:
            return None
        found = _find_media(content, media_type)
        if found is None:
            # Prefer JSON when the handler did not say which of several documented types it answers with.
            json_type = next((key for key in content if _media_kind(key) == "json"), None)
            found = (json_type, content[json_type]) if json_type else next(iter(content.items()))
        return self.document.deref(found[1])

    def _check_response(self, entry: _Operation, status: int, body: Any, headers: Mapping[str, str]) -> str | None:
        responses = entry.prepared().responses
        candidates = [str(status), f"{str(status)[0]}XX", f"{str(status)[0]}xx", "default"]
        code = next((candidate for candidate in candidates if candidate in responses), None)
        if code is None:
            if status >= 400:
                # Many descriptions document no error responses at all (Twilio's), while the real API still
                # answers errors: a fake's error status cannot be held to a schema that does not exist.
                return None
            return f"{entry.operation_id}: status {status} is not documented (documented: {', '.join(map(str, responses))})"
        if body is None or isinstance(body, bytes | str):
            return None
        content_type = next(
            (value for name, value in headers.items() if name.lower() == "content-type"), "application/json"
        )
        media = self._response_media(self.document.deref(responses[code]), content_type.split(";")[0].strip().lower())
        if media is None or "schema" not in media:
            return None
        errors = self.document.validate(body, media["schema"], mode="response")
        if not errors:
            return None
        details = "; ".join(
            f"{_json_param_name(error.absolute_path) or '(root)'}: {error.message}" for error in errors[:5]
        )
        return f"{entry.operation_id}: the handler's {status} response breaks the description: {details}"

    @staticmethod
    def _encode(status: int, body: Any, headers: Mapping[str, str]) -> tuple[int, dict[str, str], bytes]:
        headers = dict(headers)
        has_type = any(name.lower() == "content-type" for name in headers)
        if body is None:
            payload = b""
        elif isinstance(body, bytes):
            payload = body
            if not has_type:
                headers["Content-Type"] = "application/octet-stream"
        elif isinstance(body, str):
            payload = body.encode("utf-8")
            if not has_type:
                headers["Content-Type"] = "text/plain; charset=utf-8"
        else:
            payload = json.dumps(body).encode("utf-8")
            if not has_type:
                headers["Content-Type"] = "application/json"
        return status, headers, payload


def _multipart_pairs(full_type: str, raw: bytes) -> list[tuple[str, str]]:
    """Fields of a ``multipart/form-data`` body as (name, value) pairs; file contents decoded as Latin-1."""
    parser = email.parser.BytesParser(policy=email.policy.HTTP)
    message = parser.parsebytes(b"Content-Type: " + full_type.encode("latin-1") + b"\r\n\r\n" + raw)
    pairs: list[tuple[str, str]] = []
    if not message.is_multipart():
        return pairs
    for part in message.iter_parts():  # type: ignore[attr-defined]
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        payload = part.get_payload(decode=True) or b""
        if part.get_filename() is not None:
            pairs.append((str(name), payload.decode("latin-1")))
        else:
            pairs.append((str(name), payload.decode(part.get_content_charset() or "utf-8", errors="replace")))
    return pairs
