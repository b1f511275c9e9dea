"""The API description (OpenAPI 3.0/3.1 or Swagger 2.0): operations found by method and path, schemas resolved."""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError




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
