"""Contract checks: one function per capability, asserting what :mod:`hub.hookspecs` promises the core.

Each check takes a :class:`hub.testing.ProviderHarness` and a provider built with it, calls the
provider's hooks as the core would, and fails with an ``AssertionError`` that says what the plugin
must change. Each returns what it observed (the result of the main call) for further assertions.

* :func:`check_provider_class` -- the class attributes, hooks and settings schema.
* :func:`check_notify`, :func:`check_pay`, :func:`check_store`, :func:`check_publish`,
  :func:`check_sync` -- one capability each.
* :func:`check_health` -- the optional ``health`` hook.
* :func:`run_contract` -- all of the above that apply to a provider.

The checks talk to the provider for real: point the provider at a test account, a local emulator or a
mocked HTTP API (``responses``, ``respx``), never at production.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from marshmallow import Schema

from hub import hookspecs
from hub.capabilities import CAPABILITIES, CHANNELS, HealthResult
from hub.plugins import PROVIDER_HOOKS, REQUIRED_HOOKS

if TYPE_CHECKING:
    from hub.testing import ProviderHarness

from hub.testing.contracts.basics import _IMPL_ATTRIBUTE, DEFAULT_ADDRESSES, HEALTH_STATUSES, _expect, _label, _require
from hub.testing.contracts.notify import check_notify
from hub.testing.contracts.pay import check_pay
from hub.testing.contracts.publish import check_publish
from hub.testing.contracts.store import check_store
from hub.testing.contracts.sync import check_sync

__all__ = [
    "DEFAULT_ADDRESSES",
    "check_health",
    "check_notify",
    "check_pay",
    "check_provider_class",
    "check_publish",
    "check_store",
    "check_sync",
    "run_contract",
]


# --- the class --------------------------------------------------------------------------------


def check_provider_class(provider_class: type) -> None:
    """The provider class declares what the core reads: ``type_name``, ``capability``, ``channels``
    (notify), the capability's required hooks decorated with ``@hookimpl``, hook signatures matching
    :mod:`hub.hookspecs`, a marshmallow ``settings_schema`` declaring every ``env_settings`` and
    ``secret_settings`` key."""
    name = provider_class.__name__
    type_name = getattr(provider_class, "type_name", "")
    _require(
        isinstance(type_name, str) and type_name.strip() == type_name and type_name,
        f"{name}: set type_name to the name users write as `type:` in hub.yaml (got {type_name!r})",
    )
    capability = getattr(provider_class, "capability", "")
    _require(
        capability in CAPABILITIES,
        f"{name}: capability must be one of {', '.join(CAPABILITIES)} (got {capability!r})",
    )
    if capability == "notify":
        channels = getattr(provider_class, "channels", ())
        _require(
            isinstance(channels, tuple | list) and channels,
            f"{name}: a notify provider must list the channels it delivers, e.g. channels = ('email',)",
        )
        unknown = [channel for channel in channels if channel not in CHANNELS]
        _require(not unknown, f"{name}: unknown channels {unknown}; channels are {', '.join(CHANNELS)}")

    for hook_name in REQUIRED_HOOKS[capability]:
        function = getattr(provider_class, hook_name, None)
        _require(function is not None, f"{name}: a {capability} provider must implement {hook_name}()")
        _require(
            hasattr(function, _IMPL_ATTRIBUTE),
            f"{name}.{hook_name}() is not decorated with @hookimpl (from hub import hookimpl): the hub would never call it",
        )
    for attribute in dir(provider_class):
        function = getattr(provider_class, attribute, None)
        decorated = hasattr(function, _IMPL_ATTRIBUTE)
        if attribute in PROVIDER_HOOKS and callable(function) and not decorated:
            raise AssertionError(
                f"{name}.{attribute}() looks like the {attribute} hook but is not decorated with @hookimpl: "
                "the hub would never call it"
            )
        if decorated and attribute not in PROVIDER_HOOKS:
            raise AssertionError(
                f"{name}.{attribute}() is decorated with @hookimpl but is not a provider hook "
                f"(provider hooks: {', '.join(PROVIDER_HOOKS)}); set-up hooks such as register_providers "
                "belong to the plugin module"
            )
        if decorated:
            _check_hook_signature(name, attribute, function)

    schema_class = getattr(provider_class, "settings_schema", None)
    env_settings = getattr(provider_class, "env_settings", {}) or {}
    secret_settings = getattr(provider_class, "secret_settings", ()) or ()
    _require(isinstance(env_settings, Mapping), f"{name}: env_settings must map setting -> environment variable")
    _require(
        isinstance(secret_settings, tuple | list | set | frozenset),
        f"{name}: secret_settings must be a tuple of setting names",
    )
    for setting, variable in env_settings.items():
        _require(
            isinstance(variable, str) and variable,
            f"{name}: env_settings[{setting!r}] must be the name of an environment variable (got {variable!r})",
        )
    if schema_class is None:
        declared: set[str] = set()
    else:
        _require(
            isinstance(schema_class, type) and issubclass(schema_class, Schema),
            f"{name}: settings_schema must be a marshmallow Schema class (got {schema_class!r})",
        )
        fields = schema_class().fields
        declared = set(fields) | {field.data_key for field in fields.values() if field.data_key}
    for kind, settings in (("env_settings", list(env_settings)), ("secret_settings", list(secret_settings))):
        undeclared = [setting for setting in settings if setting not in declared]
        _require(
            not undeclared,
            f"{name}: {kind} names {undeclared}, which settings_schema does not declare; the core refuses "
            "unknown settings, so declare every setting as a schema field",
        )


def _check_hook_signature(class_name: str, hook_name: str, function: Callable[..., Any]) -> None:
    spec = getattr(hookspecs, hook_name)
    expected = list(inspect.signature(spec).parameters)
    parameters = list(inspect.signature(function).parameters.values())
    if parameters and parameters[0].name == "self":
        parameters = parameters[1:]
    names = [parameter.name for parameter in parameters]
    unknown = [parameter for parameter in names if parameter not in expected]
    _require(
        not unknown,
        f"{class_name}.{hook_name}() takes {unknown}, which the hook does not pass; "
        f"its parameters must be named as in the hookspec: {hook_name}({', '.join(expected)})",
    )


# --- health -----------------------------------------------------------------------------------


def check_health(harness: ProviderHarness, provider: Any) -> HealthResult | None:
    """The optional ``health`` hook returns a ``HealthResult`` with status ``success`` or ``error`` and a
    message, and never raises. Returns ``None`` when the provider does not implement it."""
    if not harness.implements(provider, "health"):
        return None
    try:
        result = harness.call(provider, "health")
    except Exception as error:
        raise AssertionError(
            f"{_label(provider)}: health() raised {type(error).__name__}({error}); return "
            "HealthResult('error', reason) instead"
        ) from error
    _expect(isinstance(result, HealthResult), provider, f"health() returned {result!r}, not a HealthResult")
    _expect(
        result.status in HEALTH_STATUSES,
        provider,
        f"health() status is {result.status!r}; use one of {', '.join(HEALTH_STATUSES)}",
    )
    _expect(isinstance(result.message, str) and result.message, provider, "health() must explain itself in message")
    return result


# --- everything -------------------------------------------------------------------------------


def run_contract(harness: ProviderHarness, provider: Any, **inputs: Any) -> dict[str, Any]:
    """Run every check that applies to ``provider``: the class, its capability's check, and health.

    ``inputs`` are the capability check's keyword arguments (``succeeding_method=`` for pay,
    ``topic=`` for publish, ``data_type=`` for sync, which is required). For notify every declared
    channel is checked unless ``channel=`` is given; ``addresses=`` may then be a mapping of channel ->
    addresses. Returns each check's result by name (``"notify:sms"``, ``"pay"``, ``"health"``...).
    """
    check_provider_class(type(provider))
    capability = provider.capability
    results: dict[str, Any] = {}
    check = _CAPABILITY_CHECKS[capability]
    accepted = set(inspect.signature(check).parameters) - {"harness", "provider"}
    unknown = sorted(set(inputs) - accepted)
    if unknown:
        raise TypeError(f"run_contract: {check.__name__} takes no {unknown} (it takes {sorted(accepted)})")
    if capability == "notify":
        inputs = dict(inputs)
        channels = [inputs.pop("channel")] if inputs.get("channel") else list(provider.channels)
        addresses = inputs.pop("addresses", None)
        for channel in channels:
            channel_addresses = addresses.get(channel) if isinstance(addresses, Mapping) else addresses
            results[f"notify:{channel}"] = check_notify(harness, provider, channel, channel_addresses, **inputs)
    elif capability == "sync":
        if "data_type" not in inputs:
            raise TypeError("run_contract: pass data_type= (a data type the sync provider offers)")
        results["sync"] = check(harness, provider, **inputs)
    else:
        results[capability] = check(harness, provider, **inputs)
    results["health"] = check_health(harness, provider)
    return results


_CAPABILITY_CHECKS: dict[str, Callable[..., Any]] = {
    "notify": check_notify,
    "pay": check_pay,
    "store": check_store,
    "publish": check_publish,
    "sync": check_sync,
}
