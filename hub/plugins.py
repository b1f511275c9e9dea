"""The plugin manager: loading plugins, the provider-type and template registries, calling provider hooks.

Loading order is explicit (as in tox): blocked names first, then the ``hub`` entry points (each in its
own try/except, so a broken plugin is reported instead of taking the hub down), then the built-in
plugins, then ``check_pending()`` so a misspelt hook name is caught.

Callers never touch ``pm.hook`` directly: :class:`PluginHost` has a method per thing the core needs.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from hub import hookspecs
from hub.capabilities import CAPABILITIES, CHANNELS

log = logging.getLogger("hub.plugins")

ENTRY_POINT_GROUP = "hub"

#: Built-in plugins: the hub's own providers use the same contract as third-party ones.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "hub.builtins.templates",
    "hub.builtins.outbox",
    "hub.builtins.local_disk",
    "hub.builtins.event_log",
    "hub.builtins.file_source",
    "hub.builtins.sandbox",
    "hub.builtins.event_schemas",
    "hub.builtins.actions",
)

#: Hooks each capability's providers must implement (checked when a provider type is registered).
REQUIRED_HOOKS: dict[str, tuple[str, ...]] = {
    "notify": ("notify",),
    "pay": ("pay", "refund", "payment_status"),
    "store": ("store", "store_read", "store_head", "store_delete"),
    "publish": ("publish",),
    "sync": ("sync",),
}

#: Hooks a provider instance implements: every hookspec except the (historic) set-up hooks, in the order
#: hookspecs.py defines them. Derived, so a hook added there is known here (kit checks, ``GET /plugins``).
PROVIDER_HOOKS: tuple[str, ...] = tuple(
    name
    for name, spec in vars(hookspecs).items()
    if callable(spec)
    and getattr(spec, f"{hookspecs.PROJECT_NAME}_spec", None) is not None
    and not getattr(spec, f"{hookspecs.PROJECT_NAME}_spec").get("historic")
)


class PluginLoadError(RuntimeError):
    """Raised instead of reporting when strict plugin loading is on (``HUB_STRICT_PLUGINS=1``)."""


@dataclass
class TemplateDefinition:
    name: str
    channel: str
    text: str
    subject: str | None = None
    html: str | None = None
    blocks: str | None = None
    required: tuple[str, ...] = ()
    source: str = ""


@dataclass(frozen=True)
class ProviderTypeInfo:
    """One provider type a plugin registered: what users write as ``type:`` and what it can do."""

    type_name: str
    capability: str
    channels: tuple[str, ...]
    hooks: tuple[str, ...]  # the provider hooks its class implements, in hookspecs order

    @classmethod
    def of(cls, provider_class: type) -> ProviderTypeInfo:
        return cls(
            provider_class.type_name,  # type: ignore[attr-defined]
            provider_class.capability,  # type: ignore[attr-defined]
            tuple(getattr(provider_class, "channels", ()) or ()),
            tuple(hook for hook in PROVIDER_HOOKS if _has_hookimpl(provider_class, hook)),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type_name, "capability": self.capability, "channels": list(self.channels), "hooks": list(self.hooks)}


@dataclass
class PluginRecord:
    """What ``GET /plugins`` and ``hub plugins`` show for one plugin."""

    name: str
    source: str  # "builtin", "entrypoint" or "inprocess"
    version: str | None = None
    distribution: str | None = None
    hooks: list[str] = field(default_factory=list)  # the plugin's own (set-up) hooks
    providers: list[str] = field(default_factory=list)  # provider type names, as in provider_types
    provider_types: list[ProviderTypeInfo] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)
    handlers: list[str] = field(default_factory=list)
    status: str = "loaded"  # loaded | failed | blocked | not-allowed
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "version": self.version,
            "distribution": self.distribution,
            "status": self.status,
            "hooks": self.hooks,
            "providers": self.providers,
            "providerTypes": [info.to_dict() for info in self.provider_types],
            "templates": self.templates,
            "handlers": self.handlers,
            "error": self.error,
        }


@dataclass
class PluginPolicy:
    """Which plugins may load. ``allow=None`` allows all; an empty allow-list loads no external plugin."""

    allow: set[str] | None = None
    block: set[str] = field(default_factory=set)
    strict: bool = False

    @classmethod
    def from_settings(cls, settings: dict[str, Any] | None = None, environ: dict[str, str] | None = None) -> PluginPolicy:
        settings = settings or {}
        environ = os.environ if environ is None else environ
        allow = settings.get("allow")
        allow_set = set(allow) if allow is not None else None
        if "HUB_PLUGINS_ALLOW" in environ:
            allow_set = _split_names(environ["HUB_PLUGINS_ALLOW"])
        block = set(settings.get("block") or ()) | _split_names(environ.get("HUB_PLUGINS_BLOCK", ""))
        strict = bool(settings.get("strict")) or environ.get("HUB_STRICT_PLUGINS", "") in ("1", "true", "yes")
        return cls(allow=allow_set, block=block, strict=strict)


def _split_names(value: str) -> set[str]:
    return {name.strip() for name in value.split(",") if name.strip()}


class PluginHost:
    """Owns the pluggy ``PluginManager`` and the registries built from the set-up hooks."""

    def __init__(self, policy: PluginPolicy | None = None) -> None:
        self.policy = policy or PluginPolicy()
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.provider_types: dict[str, type] = {}
        self.provider_type_plugin: dict[str, str] = {}
        self.templates: dict[tuple[str, str], TemplateDefinition] = {}
        #: Event handlers from ``register_handlers``: name -> (handler, plugin name).
        self.handlers: dict[str, tuple[Callable[..., Any], str]] = {}
        #: Event schemas from ``register_event_schemas``, in load order: (plugin name, args, kwargs); the
        #: schema registry checks them (versions, compatibility) when it is built.
        self.event_schemas: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        #: Handler types from ``register_handler_types``: type name -> (factory, settings schema, plugin name).
        self.handler_types: dict[str, tuple[Callable[..., Any], type, str]] = {}
        self.records: dict[str, PluginRecord] = {}
        self._hook_cache: dict[tuple[int, str], Callable[..., Any] | None] = {}
        self._lock = threading.RLock()

    # --- loading -----------------------------------------------------------------------------

    def load(self, builtins: Iterable[str] = BUILTIN_PLUGINS, entry_points: bool = True) -> None:
        for name in self.policy.block:
            self.pm.set_blocked(name)
        if entry_points:
            self._load_entry_points()
        for module_name in builtins:
            short_name = module_name.rsplit(".", 1)[-1]
            if short_name in self.policy.block:
                self.records[short_name] = PluginRecord(short_name, "builtin", status="blocked")
                continue
            module = importlib.import_module(module_name)
            self.add_plugin(module, short_name, source="builtin", version=_hub_version())
        self.pm.check_pending()

    def _load_entry_points(self) -> None:
        for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
            name = entry_point.name
            dist = getattr(entry_point, "dist", None)
            record = PluginRecord(
                name,
                "entrypoint",
                version=dist.version if dist else None,
                distribution=dist.metadata["Name"] if dist else None,
            )
            if name in self.policy.block:
                record.status = "blocked"
                self.records[name] = record
                continue
            if self.policy.allow is not None and name not in self.policy.allow:
                record.status = "not-allowed"
                self.records[name] = record
                continue
            if name in self.records and self.records[name].status == "loaded":
                continue  # the same distribution seen twice on sys.path
            try:
                plugin = entry_point.load()
                self.add_plugin(plugin, name, source="entrypoint", version=record.version, record=record)
            except Exception as error:  # a broken plugin must not take the hub down
                self._record_failure(record, error)

    def _record_failure(self, record: PluginRecord, error: BaseException) -> None:
        record.status = "failed"
        # A strict-mode refusal from set-up already says what is wrong; do not wrap it a second time.
        record.error = str(error) if isinstance(error, PluginLoadError) else f"{type(error).__name__}: {error}"
        self.records[record.name] = record
        if self.pm.get_plugin(record.name) is not None:
            self.pm.unregister(name=record.name)
        # Whatever it registered before failing goes too: half a plugin is worse than none.
        for type_name in [t for t, plugin in self.provider_type_plugin.items() if plugin == record.name]:
            del self.provider_types[type_name], self.provider_type_plugin[type_name]
        record.providers, record.provider_types = [], []
        self.templates = {key: template for key, template in self.templates.items() if template.source != record.name}
        self.handlers = {name: entry for name, entry in self.handlers.items() if entry[1] != record.name}
        record.handlers = []
        if self.policy.strict:
            # Not logged as well: the caller reports the error (the CLI as one line), a log entry would repeat it.
            if isinstance(error, PluginLoadError):
                raise error
            raise PluginLoadError(f"plugin {record.name!r} failed to load: {record.error}") from error
        log.error(
            "plugin %s failed to load: %s",
            record.name,
            record.error,
            extra={"plugin": record.name, "traceback": traceback.format_exc()},
        )

    def add_plugin(
        self,
        plugin: object,
        name: str,
        *,
        source: str = "inprocess",
        version: str | None = None,
        record: PluginRecord | None = None,
    ) -> PluginRecord:
        """Register a plugin module or object and run its set-up hooks (used for built-ins, entry
        points, and by :mod:`hub.testing` to add a plugin without installing it)."""
        record = record or PluginRecord(name, source, version=version)
        with self._lock:
            self.pm.register(plugin, name=name)
            try:
                # Earlier plugins passed this check, so a failure here is this plugin's: a hook
                # implementation whose name matches no hook (a typo pluggy would otherwise ignore).
                self.pm.check_pending()
            except pluggy.PluginValidationError:
                self.pm.unregister(plugin)
                raise
            record.hooks = sorted(impl_name for impl_name in _hook_names(self.pm, plugin))
            self.records[name] = record
            for impl in self.pm.hook.register_providers.get_hookimpls():
                if impl.plugin is plugin:
                    impl.function(register=lambda cls, _r=record: self._register_provider_type(cls, _r))
            for impl in self.pm.hook.register_templates.get_hookimpls():
                if impl.plugin is plugin:
                    impl.function(register=lambda *a, _r=record, **kw: self._register_template(_r, *a, **kw))
            for impl in self.pm.hook.register_handlers.get_hookimpls():
                if impl.plugin is plugin:
                    impl.function(register=lambda name, handler, _r=record: self._register_handler(_r, name, handler))
            for impl in self.pm.hook.register_handler_types.get_hookimpls():
                if impl.plugin is plugin:
                    impl.function(register=lambda *a, _r=record: self._register_handler_type(_r, *a))
            for impl in self.pm.hook.register_event_schemas.get_hookimpls():
                if impl.plugin is plugin:
                    impl.function(register=lambda *a, _r=record, **kw: self.event_schemas.append((_r.name, a, kw)))
        return record

    def _register_provider_type(self, provider_class: type, record: PluginRecord) -> None:
        type_name = getattr(provider_class, "type_name", "")
        capability = getattr(provider_class, "capability", "")
        problem = None
        if not type_name:
            problem = f"{provider_class.__name__} has no type_name"
        elif type_name in self.provider_types and self.provider_types[type_name] is not provider_class:
            problem = f"provider type {type_name!r} is already registered by plugin {self.provider_type_plugin[type_name]!r}"
        elif capability not in CAPABILITIES:
            problem = f"{type_name}: capability must be one of {', '.join(CAPABILITIES)}, not {capability!r}"
        elif capability == "notify" and not set(getattr(provider_class, "channels", ())) <= set(CHANNELS):
            problem = f"{type_name}: channels must be among {', '.join(CHANNELS)}"
        else:
            missing = [hook for hook in REQUIRED_HOOKS[capability] if not _has_hookimpl(provider_class, hook)]
            if missing:
                problem = f"{type_name}: a {capability} provider must implement {', '.join(missing)}"
        if problem:
            if self.policy.strict:
                raise PluginLoadError(f"plugin {record.name!r}: {problem}")
            _report(record, problem)
            return
        self.provider_types[type_name] = provider_class
        self.provider_type_plugin[type_name] = record.name
        if type_name not in record.providers:
            record.providers.append(type_name)
            record.provider_types.append(ProviderTypeInfo.of(provider_class))

    def _register_template(
        self,
        record: PluginRecord,
        name: str,
        channel: str,
        *,
        text: str,
        subject: str | None = None,
        html: str | None = None,
        blocks: str | None = None,
        required: Iterable[str] = (),
    ) -> None:
        if channel not in CHANNELS:
            _report(record, f"template {name!r}: channel must be one of {', '.join(CHANNELS)}")
            return
        existing = self.templates.get((name, channel))
        if existing is not None and record.source == "builtin" and self.records.get(existing.source, record).source != "builtin":
            return  # built-ins load after installed plugins, which may replace a built-in template
        self.templates[(name, channel)] = TemplateDefinition(
            name, channel, text, subject, html, blocks, tuple(required), source=record.name
        )
        if name not in record.templates:
            record.templates.append(name)

    def _register_handler_type(self, record: PluginRecord, type_name: Any, factory: Any = None, settings_schema: Any = None) -> None:
        from marshmallow import Schema

        if not isinstance(type_name, str) or not type_name or not callable(factory) or not (isinstance(settings_schema, type) and issubclass(settings_schema, Schema)):
            _report(record, f"handler type {type_name!r}: register(type_name, factory, settings_schema) takes a name, a callable and a marshmallow Schema class")
            return
        if type_name == "callable":
            _report(record, "handler type 'callable' is the core's (handlers registered with register_handlers)")
            return
        self.handler_types[type_name] = (factory, settings_schema, record.name)

    def _register_handler(self, record: PluginRecord, name: str, handler: Callable[..., Any]) -> None:
        if not isinstance(name, str) or not name or not callable(handler):
            _report(record, f"handler {name!r}: register(name, handler) takes a name and a callable")
            return
        self.handlers[name] = (handler, record.name)
        if name not in record.handlers:
            record.handlers.append(name)

    # --- provider instances ------------------------------------------------------------------

    def register_provider(self, provider: object, registered_name: str) -> None:
        """Register a built provider instance so pluggy validates its hook implementations."""
        with self._lock:
            if self.pm.get_plugin(registered_name) is not None:
                self.pm.unregister(name=registered_name)
            self.pm.register(provider, name=registered_name)
            self._hook_cache = {key: value for key, value in self._hook_cache.items() if key[0] != id(provider)}

    def unregister_provider(self, registered_name: str) -> None:
        with self._lock:
            provider = self.pm.get_plugin(registered_name)
            if provider is not None:
                self.pm.unregister(name=registered_name)
                self._hook_cache = {k: v for k, v in self._hook_cache.items() if k[0] != id(provider)}

    def hook_for(self, provider: object, hook_name: str) -> Callable[..., Any] | None:
        """The provider's own implementation of ``hook_name`` (resolved once, then cached), or None."""
        key = (id(provider), hook_name)
        try:
            return self._hook_cache[key]
        except KeyError:
            pass
        function = None
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
            if impl.plugin is provider:
                function = impl.function
                break
        self._hook_cache[key] = function
        return function

    def plugin_list(self) -> list[dict[str, Any]]:
        return [record.to_dict() for record in sorted(self.records.values(), key=lambda r: (r.source != "builtin", r.name))]

    @property
    def failures(self) -> list[PluginRecord]:
        return [record for record in self.records.values() if record.status == "failed"]


def _report(record: PluginRecord, problem: str) -> None:
    record.status = "failed"
    record.error = problem if not record.error else f"{record.error}; {problem}"
    log.error("plugin %s: %s", record.name, problem, extra={"plugin": record.name})


def _has_hookimpl(provider_class: type, hook_name: str) -> bool:
    function = getattr(provider_class, hook_name, None)
    return function is not None and hasattr(function, f"{hookspecs.PROJECT_NAME}_impl")


def _hook_names(pm: pluggy.PluginManager, plugin: object) -> list[str]:
    callers = pm.get_hookcallers(plugin) or []
    return [caller.name for caller in callers]


def _hub_version() -> str | None:
    try:
        return metadata.version("integration-hub")
    except metadata.PackageNotFoundError:
        return None
