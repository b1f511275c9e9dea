"""Caches cleared in every process at once: two hubs on one database and one Redis. A token revoked, a template
saved and credentials stored in one are seen by the other well within the caches' expiry (seconds)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hub.manager import IntegrationManager
from hub.runtime.invalidation import Invalidations
from tests.conftest import base_config

KEYS = "u7Cnl2_1dGQbQm9_1zS1Yl6f1sVw5S2nq0l3mJm7d1Q="
#: Far below every cache's expiry (tokens 5 s, templates and credentials 2 s): only a message explains it.
PROMPT = 0.5


def _within(seconds: float, condition: Callable[[], Any]) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < seconds, f"not within {seconds} s"
        time.sleep(0.005)
    return time.monotonic() - started


@pytest.fixture
def pair(tmp_path: Path, redis_url: str) -> Any:
    database = f"sqlite:///{tmp_path / 'shared.db'}"
    hubs = [
        IntegrationManager(base_config(tmp_path / name, database_url=database, redis_url=redis_url), environ={"HUB_CREDENTIAL_KEYS": KEYS}, entry_points=False)
        for name in ("one", "two")
    ]
    for hub in hubs:
        _within(5, lambda hub=hub: hub.runtime.invalidations._thread is not None)
    time.sleep(0.2)  # both subscribed
    yield hubs
    for hub in hubs:
        hub.close()


def test_a_token_revoked_in_one_process_is_refused_by_the_other_at_once(pair: list[IntegrationManager]) -> None:
    one, two = pair
    row, token = one.tokens.create("demo", "shared")
    assert two.tokens.verify(token) is not None  # now cached in two for TokenStore.CACHE_SECONDS
    assert one.tokens.revoke(row.id)
    took = _within(PROMPT, lambda: two.tokens.verify(token) is None)
    print(f"revocation seen by the other process after {took * 1000:.0f} ms (cache expiry {two.tokens.CACHE_SECONDS} s)")


def test_a_saved_template_and_stored_credentials_show_in_the_other_process_at_once(pair: list[IntegrationManager]) -> None:
    one, two = pair
    templates_one, templates_two = one.templates, two.templates
    templates_one.save("demo", "greeting", {"channel": "email", "subject": "v1", "text": "one"})
    assert templates_two.render("greeting", "email", {}, "demo").subject == "v1"  # cached in two
    templates_one.save("demo", "greeting", {"channel": "email", "subject": "v2", "text": "two"})
    _within(PROMPT, lambda: templates_two.render("greeting", "email", {}, "demo").subject == "v2")

    vault_one, vault_two = one.runtime.credentials, two.runtime.credentials
    assert vault_two.settings_for("demo", "sandbox") is None  # checked: nothing for REFRESH_SECONDS
    vault_one.put("demo", "sandbox", {"webhook_secret": "fresh"}, by="test", grace_seconds=0)
    _within(PROMPT, lambda: (vault_two.settings_for("demo", "sandbox") or {}).get("webhook_secret") == "fresh")


def test_without_redis_a_change_applies_here_and_publishing_never_fails() -> None:
    cleared: list[str] = []
    local = Invalidations(None)
    local.on("templates", cleared.append)
    local.changed("templates", "demo")
    assert cleared == ["demo"]
    unreachable = Invalidations("redis://127.0.0.1:1/0")  # nothing listens: published best effort, applied here
    unreachable.on("tokens", cleared.append)
    unreachable.changed("tokens", "")
    unreachable.close()
    assert cleared == ["demo", ""]
