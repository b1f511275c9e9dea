"""Configured provider instances: building them from hub.yaml, per-tenant overrides, priority order.

A *provider type* is a class a plugin registered (``smtp``); a *provider* is a configured instance of it
under a name of the operator's choosing (``providers.smtp-eu``). One type can be configured several times
(two Stripe accounts), and a tenant can override a provider's settings, which builds a separate instance
for that tenant.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from marshmallow import RAISE, Schema, ValidationError

from hub.capabilities import ProviderContext
from hub.config import SERVICES, first_error
from hub.errors import ConfigError
from hub.plugins import PluginHost

log = logging.getLogger("hub.registry")

#: Keys of a ``providers.<name>`` entry that are the hub's, not the provider's settings.
ENTRY_KEYS = ("type", "enabled", "env")


def provider_settings(
    provider_class: type, raw: dict[str, Any], path: str, environ: dict[str, str] | None = None
) -> dict[str, Any]:
    """Validate a provider's settings with its own schema, filling absent ones from its environment
    variables. Raises :class:`ConfigError` naming ``path.<key>``."""
    environ = os.environ if environ is None else environ
    if raw.get("env") is False:
        environ = {}
    raw = {key: value for key, value in raw.items() if key not in ENTRY_KEYS}
    for setting, variable in getattr(provider_class, "env_settings", {}).items():
        if raw.get(setting) in (None, "") and environ.get(variable):
            raw[setting] = environ[variable]
    schema_class: type[Schema] | None = getattr(provider_class, "settings_schema", None)
    if schema_class is None:
        if raw:
            raise ConfigError(f"{path}.{next(iter(raw))}", "this provider takes no settings")
        return {}
    try:
        return schema_class(unknown=RAISE).load(raw)
    except ValidationError as error:
        key, reason = first_error(error.messages)
        variable = getattr(provider_class, "env_settings", {}).get(key.split(".")[0])
        if variable and "Missing data" in reason:
            reason = f"{reason} (set it in hub.yaml or the {variable} environment variable)"
        raise ConfigError(f"{path}.{key}", reason) from None


def build_provider(
    host: PluginHost,
    provider_class: type,
    name: str,
    raw_settings: dict[str, Any],
    context: ProviderContext,
    *,
    path: str | None = None,
    environ: dict[str, str] | None = None,
) -> object:
    """Validate settings, instantiate the provider and register it with the plugin manager."""
    settings = provider_settings(provider_class, raw_settings, path or f"providers.{name}", environ)
    provider = provider_class(name, settings, context)
    registered_name = name if context.tenant is None else f"{name}@{context.tenant}"
    host.register_provider(provider, registered_name)
    return provider


@dataclass
class ProviderSlot:
    """One configured provider: its settings, its shared instance, and per-tenant instances."""

    name: str
    type_name: str
    settings: dict[str, Any]
    provider_class: type | None
    instance: object | None = None
    error: str | None = None
    #: The validated settings (environment variables filled in): what the provider was built with.
    resolved: dict[str, Any] = field(default_factory=dict)
    tenant_instances: dict[str, object] = field(default_factory=dict)
    tenant_errors: dict[str, str] = field(default_factory=dict)

    @property
    def capability(self) -> str | None:
        return getattr(self.provider_class, "capability", None)

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(getattr(self.provider_class, "channels", ()))

    @property
    def secret_settings(self) -> tuple[str, ...]:
        return tuple(getattr(self.provider_class, "secret_settings", ()))


class ProviderRegistry:
    """Builds every provider in ``config["providers"]`` and answers "which providers, in which order,
    serve this service for this tenant"."""

    def __init__(self, host: PluginHost, config: dict[str, Any], environ: dict[str, str] | None = None) -> None:
        self.host = host
        self.config = config
        self.environ = dict(os.environ) if environ is None else environ
        self.slots: dict[str, ProviderSlot] = {}
        self._lock = threading.RLock()
        #: ``(tenant, provider) -> settings`` stored through the API (the credential vault), or ``None``.
        self.stored_settings: Callable[[str, str], dict[str, Any] | None] | None = None

    def build_all(self) -> None:
        """Build every enabled provider. Bad settings raise ConfigError (start-up fails with the key
        path); a provider whose plugin is missing or whose constructor fails is recorded and reported."""
        for name, entry in self.config["providers"].items():
            if not entry.get("enabled", True):
                continue
            self.slots[name] = self._build_slot(name, entry)
        for tenant, tenant_config in self.config["tenants"].items():
            for name, overrides in tenant_config["providers"].items():
                slot = self.slots.get(name)
                if slot and slot.provider_class is not None:
                    # Validate now so a tenant's bad override also fails at start-up.
                    provider_settings(
                        slot.provider_class,
                        {**slot.settings, **overrides},
                        f"tenants.{tenant}.providers.{name}",
                        self.environ,
                    )

    def _build_slot(self, name: str, entry: dict[str, Any]) -> ProviderSlot:
        type_name = entry["type"]
        provider_class = self.host.provider_types.get(type_name)
        settings = {key: value for key, value in entry.items() if key not in ("type", "enabled")}  # "env" stays: provider_settings reads it
        slot = ProviderSlot(name, type_name, settings, provider_class)
        if provider_class is None:
            failed = [record.name for record in self.host.failures]
            hint = f" (plugins that failed to load: {', '.join(failed)})" if failed else " (is its plugin installed?)"
            slot.error = f"unknown provider type {type_name!r}{hint}"
            log.error("provider %s: %s", name, slot.error)
            if self.host.policy.strict:
                raise ConfigError(f"providers.{name}.type", slot.error)
            return slot
        slot.resolved = provider_settings(provider_class, settings, f"providers.{name}", self.environ)  # fail fast
        try:
            slot.instance = build_provider(self.host, provider_class, name, settings, self._context(None), environ=self.environ)
        except ConfigError:
            raise
        except Exception as error:  # a provider that cannot start is reported, the hub goes on
            slot.error = f"{type(error).__name__}: {error}"
            log.error("provider %s failed to start: %s", name, slot.error)
            if self.host.policy.strict:
                raise
        return slot

    def _context(self, tenant: str | None) -> ProviderContext:
        return ProviderContext(tenant=tenant, mode=self.config["mode"], data_dir=self.config["data_dir"])

    def add(self, name: str, provider: object) -> ProviderSlot:
        """Register an already-built provider instance under ``name`` (``register_integration``)."""
        with self._lock:
            slot = ProviderSlot(name, getattr(provider, "type_name", type(provider).__name__), {}, type(provider))
            slot.instance = provider
            self.host.register_provider(provider, name)
            self.slots[name] = slot
            return slot

    def instance(self, name: str, tenant: str | None) -> object:
        """The instance serving ``tenant`` (its own if it overrides settings). Raises ConfigError with
        the reason when the provider could not be built."""
        from hub.errors import ConfigurationError

        slot = self.slots.get(name)
        if slot is None:
            raise ConfigurationError(f"no provider named {name!r}")
        overrides = self.config["tenants"].get(tenant, {}).get("providers", {}).get(name) if tenant else None
        stored = self.stored_settings(tenant, name) if tenant and self.stored_settings is not None else None
        if stored:
            overrides = {**(overrides or {}), **stored}  # the API's credentials win over hub.yaml's
        if not overrides:
            if slot.instance is None:
                raise ConfigurationError(slot.error or f"provider {name!r} is not available")
            return slot.instance
        with self._lock:
            if tenant in slot.tenant_instances:
                return slot.tenant_instances[tenant]
            if tenant in slot.tenant_errors:
                raise ConfigurationError(slot.tenant_errors[tenant])
            try:
                instance = build_provider(
                    self.host,
                    slot.provider_class,
                    name,
                    {**slot.settings, **overrides},
                    self._context(tenant),
                    path=f"tenants.{tenant}.providers.{name}",
                    environ=self.environ,
                )
            except Exception as error:
                slot.tenant_errors[tenant] = f"{type(error).__name__}: {error}"
                raise ConfigurationError(slot.tenant_errors[tenant]) from error
            slot.tenant_instances[tenant] = instance
            return instance

    def forget(self, name: str, tenant: str) -> None:
        """Drop ``tenant``'s own instance of ``name`` (its settings changed): the next call builds it again."""
        slot = self.slots.get(name)
        if slot is not None:
            with self._lock:
                slot.tenant_instances.pop(tenant, None)
                slot.tenant_errors.pop(tenant, None)

    def build_for(self, name: str, tenant: str, settings: dict[str, Any]) -> object:
        """A separate instance of ``name`` for ``tenant`` with ``settings`` over hub.yaml's (not cached)."""
        slot = self.slots[name]
        overrides = self.config["tenants"].get(tenant, {}).get("providers", {}).get(name) or {}
        return build_provider(
            self.host, slot.provider_class, name, {**slot.settings, **overrides, **settings}, self._context(tenant),
            path=f"credentials.{tenant}.{name}", environ=self.environ,
        )

    def service_providers(self, service: str, tenant: str | None = None) -> list[str]:
        """Provider names for ``service`` in priority order (the tenant's own list if it has one)."""
        tenant_services = self.config["tenants"].get(tenant, {}).get("services", {}) if tenant else {}
        service_config = tenant_services.get(service) or self.config["services"].get(service)
        if service_config is not None:
            if not service_config.get("enabled", True):
                return []
            return list(service_config["providers"])
        # Not listed in hub.yaml: every provider that can serve it, in the order they are configured.
        info = SERVICES[service]
        return [
            slot.name
            for slot in self.slots.values()
            if slot.capability == info.capability and (info.channel is None or info.channel in slot.channels)
        ]

    def all_instances(self) -> list[tuple[ProviderSlot, object]]:
        pairs: list[tuple[ProviderSlot, object]] = []
        for slot in self.slots.values():
            if slot.instance is not None:
                pairs.append((slot, slot.instance))
            pairs.extend((slot, instance) for instance in slot.tenant_instances.values())
        return pairs
