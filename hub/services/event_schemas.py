"""Event schemas: a JSON Schema (draft 2020-12, checked with ``jsonschema``) per event type and version, for the
``data`` of the events the hub publishes.

Where they come from, later ones adding versions: the built-in plugin and other plugins
(:func:`~hub.hookspecs.register_event_schemas`), ``hub.yaml`` (``event_schemas``), and a tenant's own through the
API (kept in the database; only that tenant's events use them, before the shared ones). Each new version of a type
must be **backward compatible** with the one before -- every event valid under the old version stays valid under
the new -- unless it is registered as breaking. :func:`backward_incompatibilities` is that check, on the parts of
JSON Schema that matter for it: types, required properties, enums, bounds, patterns, closed objects, array items.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from hub.errors import ConfigError, NotFound, ValidationError
from hub.records import StoredEventSchema, utcnow
from hub.runtime import Runtime
from hub.schemas import EVENT_TYPE

log = logging.getLogger("hub.events.schemas")

#: Where a schema is served (and what an event's CloudEvents ``dataschema`` says).
SCHEMA_PATH = "/api/integrations/events/schemas/{event_type}/{version}"
#: Seconds a tenant's schemas are cached per process (registering one clears this process's cache at once).
TENANT_CACHE_SECONDS = 5.0


@dataclass(frozen=True)
class RegisteredSchema:
    event_type: str
    version: int
    schema: dict[str, Any]
    breaking: bool
    #: ``builtin``, a plugin's name, ``hub.yaml`` or ``tenant``.
    origin: str
    tenant: str | None = None

    @property
    def uri(self) -> str:
        return SCHEMA_PATH.format(event_type=self.event_type, version=self.version)

    def view(self, *, with_schema: bool = False) -> dict[str, Any]:
        view: dict[str, Any] = {
            "eventType": self.event_type,
            "version": self.version,
            "breaking": self.breaking,
            "origin": self.origin,
            "tenant": self.tenant,
            "uri": self.uri,
        }
        if with_schema:
            view["schema"] = self.schema
        return view


class EventSchemaRegistry:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        #: event type -> its shared versions, oldest first
        self.shared: dict[str, list[RegisteredSchema]] = {}
        self._validators: dict[tuple[str | None, str, int], Any] = {}
        self._tenant_cache: dict[str, tuple[float, dict[str, list[RegisteredSchema]]]] = {}
        self._lock = threading.Lock()
        for plugin, args, kwargs in runtime.host.event_schemas:
            try:
                self._add_shared(*args, origin="builtin" if plugin in _BUILTIN_NAMES else plugin, **kwargs)
            except (ValidationError, TypeError) as error:
                # A plugin's bad schema must not take the hub down (as with its providers): reported, skipped.
                log.error("plugin %s: event schema refused: %s", plugin, _message(error))
        for event_type, versions in runtime.config.get("event_schemas", {}).items():
            for entry in versions:
                try:
                    self._add_shared(
                        event_type, entry["version"], entry["schema"], breaking=entry["breaking"], origin="hub.yaml"
                    )
                except ValidationError as error:
                    raise ConfigError(
                        f"event_schemas.{event_type} version {entry['version']}: {_message(error)}"
                    ) from None

    # --- registering ---------------------------------------------------------------------------------

    def _add_shared(
        self, event_type: str, version: int, schema: dict[str, Any], *, breaking: bool = False, origin: str
    ) -> None:
        entry = RegisteredSchema(event_type, int(version), schema, bool(breaking), origin)
        self._check_new(self.shared.get(event_type, []), entry)
        self.shared.setdefault(event_type, []).append(entry)

    def _check_new(self, existing: list[RegisteredSchema], entry: RegisteredSchema) -> None:
        from jsonschema import Draft202012Validator
        from jsonschema.exceptions import SchemaError

        if not EVENT_TYPE.match(entry.event_type):
            raise ValidationError({"eventType": ["dotted lower-case name such as inventory.stock.updated"]})
        if entry.version < 1:
            raise ValidationError({"version": ["versions start at 1"]})
        try:
            Draft202012Validator.check_schema(entry.schema)
        except SchemaError as error:
            raise ValidationError({"schema": [f"not a valid JSON Schema: {error.message}"]}) from None
        if existing:
            latest = existing[-1]
            if entry.version <= latest.version:
                raise ValidationError(
                    {
                        "version": [
                            f"{entry.event_type} has version {latest.version} already: register {latest.version + 1}"
                        ]
                    }
                )
            problems = [] if entry.breaking else backward_incompatibilities(latest.schema, entry.schema)
            if problems:
                raise ValidationError(
                    {
                        "schema": [
                            f"not backward compatible with version {latest.version}: {problem}" for problem in problems
                        ]
                    },
                    f"Version {entry.version} of {entry.event_type} would refuse events version {latest.version} accepts; mark it breaking to register it anyway",
                )

    def register_for_tenant(
        self, tenant: str, event_type: str, version: int, schema: dict[str, Any], *, breaking: bool = False
    ) -> RegisteredSchema:
        """A tenant's own version: checked against the tenant's latest version of the type, else the shared one."""
        entry = RegisteredSchema(event_type, version, schema, breaking, "tenant", tenant)
        existing = self._tenant_schemas(tenant, fresh=True).get(event_type) or self.shared.get(event_type, [])
        self._check_new(existing, entry)
        with self.runtime.db.session() as session:
            if session.get(StoredEventSchema, (tenant, event_type, version)) is not None:
                raise ValidationError({"version": [f"{event_type} version {version} exists already"]})
            session.add(
                StoredEventSchema(
                    tenant=tenant,
                    event_type=event_type,
                    version=version,
                    schema=schema,
                    breaking=breaking,
                    created_at=utcnow(),
                )
            )
        self._tenant_cache.pop(tenant, None)
        return entry

    # --- looking up and validating ----------------------------------------------------------------------

    def _tenant_schemas(self, tenant: str, *, fresh: bool = False) -> dict[str, list[RegisteredSchema]]:
        cached = self._tenant_cache.get(tenant)
        if cached is not None and not fresh and time.monotonic() - cached[0] < TENANT_CACHE_SECONDS:
            return cached[1]
        with self.runtime.db.session() as session:
            rows = session.scalars(
                select(StoredEventSchema)
                .where(StoredEventSchema.tenant == tenant)
                .order_by(StoredEventSchema.event_type, StoredEventSchema.version)
            )
            found: dict[str, list[RegisteredSchema]] = {}
            for row in rows:
                found.setdefault(row.event_type, []).append(
                    RegisteredSchema(row.event_type, row.version, row.schema, row.breaking, "tenant", tenant)
                )
        self._tenant_cache[tenant] = (time.monotonic(), found)
        return found

    def versions(self, tenant: str, event_type: str) -> list[RegisteredSchema]:
        """The versions that apply to the tenant's events of this type: its own when it has any, else the shared."""
        return self._tenant_schemas(tenant).get(event_type) or self.shared.get(event_type, [])

    def get(self, tenant: str, event_type: str, version: int | None = None) -> RegisteredSchema | None:
        versions = self.versions(tenant, event_type)
        if not versions:
            return None
        if version is None:
            return versions[-1]
        return next((entry for entry in versions if entry.version == version), None)

    def validate(
        self, tenant: str, event_type: str, data: dict[str, Any], version: int | None = None, *, field: str = "data"
    ) -> RegisteredSchema | None:
        """Check ``data`` against the type's schema (the newest, or ``version``); the schema used, ``None`` when the
        type has none. Raises :class:`ValidationError` naming each bad field (``data.items.0.quantity``)."""
        entry = self.get(tenant, event_type, version)
        if entry is None:
            if version is not None:
                where = field.removesuffix("data").rstrip(".")
                raise ValidationError({f"{where}.schemaVersion" if where else "schemaVersion": [f"{event_type} has no schema version {version}"]})
            return None
        validator = self._validator(entry)
        errors: dict[str, list[str]] = {}
        for error in sorted(validator.iter_errors(data), key=lambda e: [str(part) for part in e.absolute_path]):
            parts = [field, *(str(part) for part in error.absolute_path)]
            if error.validator == "required" and isinstance(error.instance, dict):
                # Name the missing field itself, not the object that lacks it.
                missing = [name for name in error.validator_value if name not in error.instance]
                parts += missing[:1]
            errors.setdefault(".".join(parts), []).append(error.message[:300])
        if errors:
            raise ValidationError(
                errors, f"The event does not match the schema of {event_type} version {entry.version}"
            )
        return entry

    def _validator(self, entry: RegisteredSchema) -> Any:
        key = (entry.tenant, entry.event_type, entry.version)
        validator = self._validators.get(key)
        if validator is None:
            from jsonschema import Draft202012Validator

            validator = Draft202012Validator(entry.schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
            with self._lock:
                self._validators[key] = validator
        return validator

    def listing(self, tenant: str) -> list[dict[str, Any]]:
        own = self._tenant_schemas(tenant)
        types = sorted({*self.shared, *own})
        return [entry.view() for event_type in types for entry in self.versions(tenant, event_type)]

    def describe(self, tenant: str, event_type: str, version: int) -> dict[str, Any]:
        entry = self.get(tenant, event_type, version)
        if entry is None:
            raise NotFound(f"No schema for {event_type} version {version}")
        return entry.view(with_schema=True)


_BUILTIN_NAMES = {"event_schemas"}


def _message(error: BaseException) -> str:
    if isinstance(error, ValidationError):
        return "; ".join(f"{field}: {' '.join(map(str, reasons))}" for field, reasons in error.errors.items())
    return str(error)


# --- backward compatibility --------------------------------------------------------------------------------


def backward_incompatibilities(old: Any, new: Any, path: str = "") -> list[str]:
    """Ways in which a document valid under ``old`` could be refused by ``new`` (empty: compatible).

    Checked: ``type`` narrowed, ``enum``/``const`` narrowed, a ``required`` property added, ``minimum``/
    ``exclusiveMinimum``/``minLength``/``minItems`` raised, ``maximum``/``exclusiveMaximum``/``maxLength``/
    ``maxItems`` lowered, ``pattern``/``format``/``multipleOf`` added or changed, ``additionalProperties``
    closed (or a property removed from a closed object), and the same recursively for properties and array
    items. A rule ``new`` drops only widens it."""
    where = path or "(root)"
    if not isinstance(old, dict) or not isinstance(new, dict):
        return [] if new in (True, {}) or old == new else [f"{where}: the schema changed from {old!r} to {new!r}"]
    problems: list[str] = []
    old_types, new_types = _types(old), _types(new)
    if new_types is not None and (old_types is None or not old_types <= new_types):
        problems.append(f"{where}: type {sorted(old_types or ['any'])} narrowed to {sorted(new_types)}")
    new_values = _allowed_values(new)
    if new_values is not None:
        old_values = _allowed_values(old)
        if old_values is None or any(value not in new_values for value in old_values):
            problems.append(f"{where}: allowed values narrowed to {new_values!r}")
    added_required = set(new.get("required", [])) - set(old.get("required", []))
    if added_required:
        problems.append(f"{where}: new required properties {sorted(added_required)}")
    for name in ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties"):
        if name in new and (name not in old or new[name] > old[name]):
            problems.append(f"{where}: {name} raised to {new[name]}")
    for name in ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties"):
        if name in new and (name not in old or new[name] < old[name]):
            problems.append(f"{where}: {name} lowered to {new[name]}")
    for name in ("pattern", "format", "multipleOf"):
        if name in new and new[name] != old.get(name):
            problems.append(f"{where}: {name} {new[name]!r} added or changed")
    old_properties, new_properties = old.get("properties", {}), new.get("properties", {})
    if new.get("additionalProperties") is False:
        if old.get("additionalProperties") is not False:
            problems.append(f"{where}: closed to properties it does not list (additionalProperties: false)")
        removed = set(old_properties) - set(new_properties)
        if removed:
            problems.append(f"{where}: properties {sorted(removed)} removed from a closed object")
    for name, schema in new_properties.items():
        if name in old_properties:
            problems += backward_incompatibilities(old_properties[name], schema, f"{path}.{name}" if path else name)
        elif isinstance(old.get("additionalProperties"), dict):
            problems += backward_incompatibilities(
                old["additionalProperties"], schema, f"{path}.{name}" if path else name
            )
    if "items" in new:
        problems += backward_incompatibilities(old.get("items", {}), new["items"], f"{path}[]" if path else "[]")
    return problems


def _allowed_values(schema: dict[str, Any]) -> list[Any] | None:
    if "const" in schema:
        return [schema["const"]]
    return list(schema["enum"]) if "enum" in schema else None


def _types(schema: dict[str, Any]) -> set[str] | None:
    kind = schema.get("type")
    if kind is None:
        return None
    kinds = set(kind) if isinstance(kind, list) else {kind}
    if "number" in kinds:
        kinds.add("integer")  # an integer is a number: "number" widens "integer"
    return kinds
