"""The conformance kit: test a provider plugin exactly as the hub will use it, without installing it.

Installing the hub registers this module as a pytest plugin (the ``pytest11`` entry point), so a
plugin's tests use the ``provider_harness`` fixture with the checks in :mod:`hub.testing.contracts`::

    import hub_pager
    from hub.testing.contracts import run_contract

    def test_pager_meets_the_notify_contract(provider_harness):
        provider_harness.add_plugin(hub_pager, "pager")
        provider = provider_harness.build("pager", {"api_key": "test-key"})
        run_contract(provider_harness, provider, channel="sms", addresses=["+15005550006"])

:class:`ProviderHarness` validates settings with the provider's own schema and builds the provider with
:func:`hub.registry.build_provider`, as the core does at start-up, and :meth:`ProviderHarness.call`
calls the provider's *own* hook implementation, as the core does: a test passes only if the hub would
find and call the hook too.

The rest of the kit, for testing against real servers rather than mocks:

* :mod:`hub.testing.specs` — providers' official API descriptions; :func:`~hub.testing.specs.spec_or_skip`
  loads one in a fixture, skipping only where npm is missing;
* :mod:`hub.testing.contract_server` — :class:`~hub.testing.contract_server.ContractServer`, a stateful fake
  that refuses what the description does not allow; ``server.isolated()`` gives each test a clean, checked run;
* :mod:`hub.testing.servers` — :class:`~hub.testing.servers.WsgiServer` for a hand-written HTTP fake, SMTP and
  moto servers, :func:`~hub.testing.servers.refused_url` (also the ``dead_url`` fixture) for a service that is down;
* :mod:`hub.testing.rest` — :func:`~hub.testing.rest.rest_hub`, a whole hub with the plugin registered, driven
  through its REST API (failover, bulk sends, webhooks);
* :mod:`hub.testing.transport` — the checks every HTTP provider runs instead of writing them again:
  :func:`~hub.testing.transport.check_transport_errors` (server down, too slow, dropped connection, 5xx, 429 with
  ``Retry-After``, 401/403), :func:`~hub.testing.transport.check_concurrent_use` (several threads, pooled
  connections) and :func:`~hub.testing.transport.check_webhook_signatures` (valid, forged, tampered, stale,
  replayed), with the servers they use (:class:`~hub.testing.transport.FaultServer`,
  :class:`~hub.testing.transport.ConnectionCountingProxy`).

(PYTEST_DONT_REWRITE: the checks write their own assertion messages, and a test module may import this
package before naming it in ``pytest_plugins``; this marker keeps pytest from warning about that.)
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from hub import hookimpl
from hub.capabilities import ProviderContext
from hub.plugins import PROVIDER_HOOKS, PluginHost, PluginRecord
from hub.registry import build_provider
from hub.testing.rest import RestHub, rest_hub
from hub.testing.servers import refused_url
from hub.testing.transport import check_concurrent_use, check_transport_errors, check_webhook_signatures

__all__ = [
    "ProviderHarness",
    "RestHub",
    "check_concurrent_use",
    "check_transport_errors",
    "check_webhook_signatures",
    "dead_url",
    "provider_harness",
    "rest_hub",
]


class ProviderHarness:
    """A :class:`~hub.plugins.PluginHost` plus the providers a test built from it.

    :param data_dir: the hub data directory handed to providers (``context.data_dir``).
    :param host: an existing host; a fresh one (no plugins loaded) by default.
    """

    def __init__(self, data_dir: str | os.PathLike[str], host: PluginHost | None = None) -> None:
        self.host = host or PluginHost()
        self.data_dir = str(data_dir)
        #: Providers built by :meth:`build`, with the name each was registered under.
        self.providers: list[tuple[str, Any]] = []
        self._serial = itertools.count(1)

    # --- plugins ---------------------------------------------------------------------------------

    def load_builtins(self) -> None:
        """Load the hub's built-in plugins (not the installed entry points: tests stay hermetic)."""
        self.host.load(entry_points=False)

    def add_plugin(self, plugin: object, name: str | None = None) -> PluginRecord:
        """Register a plugin module or object in-process, as if it were installed, and run its set-up
        hooks. Fails the test if the hub refuses it (a provider class without its required hooks, a
        duplicate ``type_name``, a misspelt hook name)."""
        name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        record = self.host.add_plugin(plugin, name)
        if record.status == "failed":
            raise AssertionError(f"the hub refused plugin {name!r}: {record.error}")
        # Catches a hook implementation whose name matches no hook (``register_provider`` for
        # ``register_providers``), which pluggy would otherwise ignore silently.
        self.host.pm.check_pending()
        return record

    def add_provider_classes(self, *provider_classes: type, name: str | None = None) -> PluginRecord:
        """Register provider classes defined in a test, without writing a plugin module for them."""

        class InlinePlugin:
            @hookimpl
            def register_providers(self, register: Callable[[type], None]) -> None:
                for provider_class in provider_classes:
                    register(provider_class)

        type_names = "+".join(getattr(cls, "type_name", "") or cls.__name__ for cls in provider_classes)
        return self.add_plugin(InlinePlugin(), name or f"inline:{type_names}:{next(self._serial)}")

    def provider_class(self, type_name: str) -> type:
        try:
            return self.host.provider_types[type_name]
        except KeyError:
            known = ", ".join(sorted(self.host.provider_types)) or "none"
            raise AssertionError(
                f"no provider type {type_name!r} is registered (registered: {known}); "
                "add its plugin with harness.add_plugin(module, name) first"
            ) from None

    # --- providers -------------------------------------------------------------------------------

    def build(
        self,
        type_name: str,
        settings: dict[str, Any] | None = None,
        name: str | None = None,
        tenant: str | None = None,
        mode: str = "development",
        data_dir: str | os.PathLike[str] | None = None,
        environ: dict[str, str] | None = None,
    ) -> Any:
        """Validate ``settings`` with the provider's schema and build and register the provider, as the
        core does for ``providers.<name>`` in hub.yaml.

        Raises :class:`hub.errors.ConfigError` for invalid settings, and whatever the constructor
        raises. ``environ`` replaces ``os.environ`` for ``env_settings``. Without ``name`` each provider
        gets a fresh one, so building a type twice gives two independent providers.
        """
        provider_class = self.provider_class(type_name)
        name = name or f"{type_name}-{next(self._serial)}"
        context = ProviderContext(tenant=tenant, mode=mode, data_dir=str(data_dir or self.data_dir))
        provider = build_provider(self.host, provider_class, name, dict(settings or {}), context, environ=environ)
        registered_name = name if tenant is None else f"{name}@{tenant}"
        self.providers.append((registered_name, provider))
        return provider

    def implements(self, provider: object, hook_name: str) -> bool:
        """Whether the core would find ``provider``'s own implementation of ``hook_name``."""
        return self.host.hook_for(provider, hook_name) is not None

    def call(self, provider: object, hook_name: str, **kwargs: Any) -> Any:
        """Call ``provider``'s own implementation of ``hook_name`` with keyword arguments, as the core
        does (never broadcast to other plugins)."""
        if hook_name not in PROVIDER_HOOKS:
            raise AssertionError(f"{hook_name!r} is not a provider hook; provider hooks: {', '.join(PROVIDER_HOOKS)}")
        function = self.host.hook_for(provider, hook_name)
        if function is None:
            raise AssertionError(
                f"{provider!r} does not implement {hook_name}(): define it as a method decorated with "
                "@hookimpl (from hub import hookimpl), and build the provider with harness.build()"
            )
        return function(**kwargs)

    def call_concurrently(
        self, provider: object, hook_name: str, calls: Sequence[Mapping[str, Any]], *, timeout: float = 30.0
    ) -> list[Any]:
        """Make every call in ``calls`` (keyword arguments for :meth:`call`) at once, each from a thread of its
        own, as the hub's queue workers do; returns the results in the order of ``calls``.

        Raises ``AssertionError`` naming each call that raised (the first error is its cause), or the calls
        still running after ``timeout`` seconds: a provider must be safe to call from several threads.
        """
        results: list[Any] = [None] * len(calls)
        errors: list[tuple[int, BaseException]] = []

        def run(index: int) -> None:
            try:
                results[index] = self.call(provider, hook_name, **calls[index])
            except BaseException as error:  # reported by the calling thread below
                errors.append((index, error))

        threads = [
            threading.Thread(target=run, args=(index,), name=f"{hook_name}-{index}") for index in range(len(calls))
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if errors:
            errors.sort(key=lambda item: item[0])
            raised = "; ".join(f"call {index}: {error!r}" for index, error in errors)
            message = f"{len(errors)} of {len(calls)} concurrent {hook_name}() calls raised: {raised}"
            raise AssertionError(message) from errors[0][1]
        running = [thread.name for thread in threads if thread.is_alive()]
        if running:
            raise AssertionError(f"concurrent {hook_name}() calls still running after {timeout:.0f} s: {running}")
        return results

    def close(self) -> None:
        """Call every built provider's ``close`` hook (newest first) and unregister it."""
        while self.providers:
            registered_name, provider = self.providers.pop()
            try:
                if self.implements(provider, "close"):
                    self.call(provider, "close")
            finally:
                self.host.unregister_provider(registered_name)


@pytest.fixture
def provider_harness(tmp_path: Path) -> Iterator[ProviderHarness]:
    """A :class:`ProviderHarness` with the built-in plugins loaded and a fresh data directory; add your
    plugin with ``provider_harness.add_plugin(module, name)``. Built providers are closed afterwards."""
    harness = ProviderHarness(tmp_path / "hub-data")
    harness.load_builtins()
    yield harness
    harness.close()


@pytest.fixture
def dead_url() -> str:
    """The address of a service that is down: ``http://127.0.0.1:PORT`` with nothing listening, so connecting
    is refused at once. Point a provider at it to test its connection errors, or a hub's failover to the next
    provider. See :func:`hub.testing.servers.refused_url` for one with a path."""
    return refused_url()
