"""Plugin discovery through the ``hub`` entry-point group, and what happens when a plugin is broken."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from hub.api import create_app
from hub.errors import ConfigError
from hub.manager import IntegrationManager
from hub.plugins import PluginHost, PluginLoadError, PluginPolicy
from tests.conftest import base_config

GOOD_PLUGIN = '''
from hub import hookimpl
from hub.capabilities import NotifyResult, Provider, RecipientResult
from marshmallow import Schema, fields


class PagerSettings(Schema):
    api_key = fields.String(required=True)


class Pager(Provider):
    type_name = "pager"
    capability = "notify"
    channels = ("sms",)
    settings_schema = PagerSettings
    env_settings = {"api_key": "PAGER_API_KEY"}
    secret_settings = ("api_key",)

    @hookimpl
    def notify(self, message):
        return NotifyResult([RecipientResult(r.address, "sent", "pg-" + message.id) for r in message.recipients])


@hookimpl
def register_providers(register):
    register(Pager)
'''


def install_fake_distribution(root: Path, dist: str, version: str, modules: dict[str, str], entry_points: dict[str, str]) -> None:
    """A real installed distribution, as pip leaves it: a module and a .dist-info folder whose
    entry_points.txt names it under the ``hub`` group. importlib.metadata finds it on sys.path."""
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[hub]\n{lines}\n")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    return root


def test_an_installed_plugin_is_discovered_and_serves(site: Path, tmp_path: Path) -> None:
    install_fake_distribution(site, "hub-pager", "1.2.3", {"hub_pager": GOOD_PLUGIN}, {"pager": "hub_pager"})
    config = base_config(tmp_path / "var", providers={"pager": {"type": "pager"}}, services={"sms": {"providers": ["pager"]}})
    hub = IntegrationManager(config, environ={"PAGER_API_KEY": "k-123"})
    try:
        record = hub.host.records["pager"]
        assert (record.status, record.version, record.distribution, record.providers) == ("loaded", "1.2.3", "hub-pager", ["pager"])
        client = create_app(manager=hub).test_client()
        headers = {"Authorization": f"Bearer {hub.tokens.create('t')[1]}", "X-Tenant-ID": "t"}
        body = {"type": "sms", "recipients": [{"phone": "+14155552671"}], "template": "critical_alert", "data": {"title": "t", "message": "m"}}
        sent = client.post("/api/integrations/notifications", json=body, headers=headers).get_json()["data"]
        assert sent["transporter"] == "pager" and sent["recipients"][0]["providerMessageId"].startswith("pg-")
        service = client.get("/api/integrations/services/sms", headers=headers).get_json()["data"]
        assert service["dependencies"] == ["PAGER_API_KEY"] and service["providers"][0]["settings"]["api_key"] == "[REDACTED]"
    finally:
        hub.close()


def test_a_provider_setting_missing_fails_start_up_with_its_path(site: Path, tmp_path: Path) -> None:
    install_fake_distribution(site, "hub-pager", "1.0", {"hub_pager": GOOD_PLUGIN}, {"pager": "hub_pager"})
    config = base_config(tmp_path / "var", providers={"pager": {"type": "pager"}})
    with pytest.raises(ConfigError) as raised:
        IntegrationManager(config, environ={})
    assert raised.value.path == "providers.pager.api_key" and "PAGER_API_KEY" in str(raised.value)
    config = base_config(tmp_path / "var", providers={"pager": {"type": "pager", "api_key": "k", "colour": "red"}})
    with pytest.raises(ConfigError, match="providers.pager.colour"):
        IntegrationManager(config, environ={})


def test_a_broken_plugin_is_reported_and_the_hub_keeps_working(site: Path, tmp_path: Path) -> None:
    install_fake_distribution(site, "hub-broken", "0.1", {"hub_broken": "import not_a_module_anywhere\n"}, {"broken": "hub_broken"})
    install_fake_distribution(
        site,
        "hub-typo",
        "0.1",
        {"hub_typo": "from hub import hookimpl\n\n@hookimpl\ndef register_provider(register):\n    pass\n"},
        {"typo": "hub_typo"},
    )
    config = base_config(tmp_path / "var", providers={"pagerduty": {"type": "broken-type"}}, services={"sms": {"providers": ["outbox", "pagerduty"]}})
    hub = IntegrationManager(config, environ={})
    try:
        assert hub.host.records["broken"].status == "failed" and "not_a_module_anywhere" in hub.host.records["broken"].error
        assert hub.host.records["typo"].status == "failed" and "register_provider" in hub.host.records["typo"].error
        client = create_app(manager=hub).test_client()
        headers = {"Authorization": f"Bearer {hub.tokens.create('t')[1]}", "X-Tenant-ID": "t"}
        listed = {p["name"]: p for p in client.get("/api/integrations/plugins", headers=headers).get_json()["data"]["plugins"]}
        assert listed["broken"]["status"] == "failed" and listed["broken"]["error"]
        health = client.get("/api/integrations/health/sms", headers=headers).get_json()["data"]
        assert health["status"] == "healthy" and health["details"]["pagerduty"]["status"] == "error"
        assert "unknown provider type" in health["details"]["pagerduty"]["message"]
        body = {"type": "email", "recipients": [{"email": "a@example.com"}], "data": {"subject": "s", "message": "m"}}
        assert client.post("/api/integrations/notifications", json=body, headers=headers).status_code == 200
    finally:
        hub.close()


def test_strict_mode_makes_a_broken_plugin_fatal(site: Path) -> None:
    install_fake_distribution(site, "hub-broken", "0.1", {"hub_broken2": "raise RuntimeError('boom')\n"}, {"broken2": "hub_broken2"})
    host = PluginHost(PluginPolicy.from_settings({}, {"HUB_STRICT_PLUGINS": "1"}))
    with pytest.raises(PluginLoadError, match="boom"):
        host.load()


def test_strict_mode_names_a_refused_provider_type_once(site: Path) -> None:
    lazy = """
        from hub import hookimpl


        class Lazy:  # a pay provider without pay or refund
            type_name = "lazy-pay"
            capability = "pay"


        @hookimpl
        def register_providers(register):
            register(Lazy)
    """
    install_fake_distribution(site, "hub-lazy", "0.1", {"hub_lazy": lazy}, {"lazy": "hub_lazy"})
    host = PluginHost(PluginPolicy.from_settings({}, {"HUB_STRICT_PLUGINS": "1", "HUB_PLUGINS_ALLOW": "lazy"}))
    with pytest.raises(PluginLoadError) as raised:
        host.load()
    assert str(raised.value) == "plugin 'lazy': lazy-pay: a pay provider must implement pay, refund, payment_status"
    assert "lazy-pay" not in host.provider_types


def test_plugins_list_each_provider_type_with_its_capability_channels_and_hooks(site: Path, tmp_path: Path) -> None:
    with_health = GOOD_PLUGIN.replace(
        "\n\n@hookimpl\ndef register_providers",
        "\n    @hookimpl\n    def health(self):\n        return None\n\n    @hookimpl\n    def close(self):\n        pass\n"
        "\n\n@hookimpl\ndef register_providers",
    )
    install_fake_distribution(site, "hub-pager", "1.0", {"hub_pager5": with_health}, {"pager5": "hub_pager5"})
    config = base_config(tmp_path / "var", plugins={"allow": ["pager5"], "block": [], "strict": False})
    hub = IntegrationManager(config, environ={})
    try:
        client = create_app(manager=hub).test_client()
        headers = {"Authorization": f"Bearer {hub.tokens.create('t')[1]}", "X-Tenant-ID": "t"}
        listed = {p["name"]: p for p in client.get("/api/integrations/plugins", headers=headers).get_json()["data"]["plugins"]}
        assert listed["pager5"]["hooks"] == ["register_providers"]  # the plugin's own set-up hooks, as before
        assert listed["pager5"]["providers"] == ["pager"]
        assert listed["pager5"]["providerTypes"] == [
            {"type": "pager", "capability": "notify", "channels": ["sms"], "hooks": ["notify", "health", "close"]}
        ]
        assert listed["sandbox"]["providerTypes"] == [{"type": "sandbox", "capability": "pay", "channels": [], "hooks": ["pay", "payment_status", "capture", "cancel", "refund", "health", "handle_webhook"]}]
        assert listed["templates"]["providerTypes"] == [] and "register_templates" in listed["templates"]["hooks"]
    finally:
        hub.close()


def test_block_and_allow_lists(site: Path) -> None:
    install_fake_distribution(site, "hub-pager", "1.0", {"hub_pager3": GOOD_PLUGIN}, {"pager3": "hub_pager3"})
    blocked = PluginHost(PluginPolicy.from_settings({"block": ["pager3"]}, {}))
    blocked.load()
    assert blocked.records["pager3"].status == "blocked" and "pager" not in blocked.provider_types
    by_env = PluginHost(PluginPolicy.from_settings({}, {"HUB_PLUGINS_BLOCK": "pager3, other"}))
    by_env.load()
    assert by_env.records["pager3"].status == "blocked"
    nothing = PluginHost(PluginPolicy.from_settings({}, {"HUB_PLUGINS_ALLOW": ""}))
    nothing.load()
    assert nothing.records["pager3"].status == "not-allowed"
    assert "outbox" in nothing.provider_types  # built-ins still load
    only = PluginHost(PluginPolicy.from_settings({"allow": ["pager3"]}, {}))
    only.load()
    assert only.records["pager3"].status == "loaded" and "pager" in only.provider_types
    builtin_blocked = PluginHost(PluginPolicy.from_settings({"block": ["sandbox"]}, {}))
    builtin_blocked.load(entry_points=False)
    assert builtin_blocked.records["sandbox"].status == "blocked" and "sandbox" not in builtin_blocked.provider_types


def test_provider_types_are_checked_when_registered() -> None:
    from hub import hookimpl
    from hub.capabilities import Provider

    class NoHooks(Provider):
        type_name = "lazy-pay"
        capability = "pay"

    class Duplicate(Provider):
        type_name = "outbox"
        capability = "notify"
        channels = ("email",)

        @hookimpl
        def notify(self, message: Any) -> Any:
            return None

    class Plugin:
        @staticmethod
        @hookimpl
        def register_providers(register: Any) -> None:
            register(NoHooks)
            register(Duplicate)

    host = PluginHost()
    host.load(entry_points=False)
    record = host.add_plugin(Plugin(), "sloppy")
    assert record.status == "failed"
    assert "must implement pay, refund" in record.error and "already registered by plugin 'outbox'" in record.error
    assert host.provider_types["outbox"] is not Duplicate


def test_a_provider_that_fails_to_start_is_reported(tmp_path: Path) -> None:
    config = base_config(tmp_path / "var", mode="production")
    hub = IntegrationManager(config, environ={}, entry_points=False)
    try:
        assert "production" in hub.registry.slots["sandbox"].error
        health = hub.service_health("payment")
        assert health["status"] == "unhealthy" and "production" in health["error"]
        from hub.errors import NoProviderError

        with pytest.raises(NoProviderError):
            hub.process_payment(5, "USD", tenant_id="t")
    finally:
        hub.close()


def test_unknown_provider_type_is_fatal_in_strict_mode(tmp_path: Path) -> None:
    config = base_config(tmp_path / "var", providers={"ghost": {"type": "ghost"}}, plugins={"strict": True})
    with pytest.raises(ConfigError, match="providers.ghost.type"):
        IntegrationManager(config, environ={}, entry_points=False)


def test_a_provider_entry_can_ignore_the_environment(site: Path, tmp_path: Path) -> None:
    install_fake_distribution(site, "hub-pager", "1.0", {"hub_pager4": GOOD_PLUGIN}, {"pager4": "hub_pager4"})
    providers = {"first": {"type": "pager"}, "second": {"type": "pager", "env": False, "api_key": "own-key"}, "third": {"type": "pager", "env": False}}
    with pytest.raises(ConfigError, match="providers.third.api_key"):
        IntegrationManager(base_config(tmp_path / "var", providers=providers), environ={"PAGER_API_KEY": "from-env"})
    del providers["third"]
    hub = IntegrationManager(base_config(tmp_path / "var", providers=providers), environ={"PAGER_API_KEY": "from-env"})
    try:
        assert hub.registry.slots["first"].instance.settings["api_key"] == "from-env"
        assert hub.registry.slots["second"].instance.settings["api_key"] == "own-key"
    finally:
        hub.close()


def test_a_plugin_failing_half_way_through_set_up_leaves_nothing_behind(site: Path) -> None:
    half = GOOD_PLUGIN.replace("    register(Pager)", "    register(Pager)\n    raise RuntimeError('second provider broke')")
    install_fake_distribution(site, "hub-half", "0.1", {"hub_half": half}, {"half": "hub_half"})
    host = PluginHost(PluginPolicy.from_settings({}, {"HUB_PLUGINS_ALLOW": "half"}))
    host.load()
    assert host.records["half"].status == "failed" and "second provider broke" in host.records["half"].error
    assert "pager" not in host.provider_types and host.records["half"].providers == []
    assert host.records["half"].to_dict()["providerTypes"] == []
