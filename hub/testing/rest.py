"""A whole hub in this process, driven through its REST API: a plugin's end-to-end tests.

:class:`~hub.testing.ProviderHarness` calls one provider's hooks. A plugin also wants to see the hub *use* its
provider: failover from a provider whose service is down to a backup, a bulk send queued and then run, a
webhook updating a delivery record. :func:`rest_hub` builds that hub from a hub.yaml written as a dict, with
the plugin registered in-process (nothing installed, no entry points scanned, no environment read), and hands
back a Flask test client already authenticated as a tenant::

    import hub_pager
    from hub.testing.rest import rest_hub

    def test_the_hub_fails_over_to_the_backup(tmp_path, dead_url, pager_server):
        with rest_hub(
            tmp_path,
            plugins=[(hub_pager, "pager")],
            providers={
                "primary": {"type": "pager", "url": dead_url},
                "backup": {"type": "pager", "url": pager_server.url},
            },
            services={"sms": {"providers": ["primary", "backup"]}},
        ) as api:
            response = api.notify({"type": "sms", "recipients": [{"phone": "+14155550100"}], "data": {"message": "Hi"}})
            assert response.status_code == 200, response.get_json()
            assert response.get_json()["data"]["transporter"] == "backup"

The hub retries quickly (:data:`FAST_RETRY`) and runs no queue workers: a bulk send answers 202 and the test
runs it with :meth:`RestHub.run_queued`, as a worker would, so the test decides when it happens.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from flask.testing import FlaskClient
    from werkzeug.test import TestResponse

    from hub.manager import IntegrationManager

__all__ = ["FAST_RETRY", "NOTIFICATIONS_PATH", "RestHub", "rest_hub"]

#: The hub's retry settings in tests: one retry after about 10 ms, so failover happens without waiting.
FAST_RETRY: Mapping[str, Any] = {"attempts": 2, "initial_delay": 0.01, "max_delay": 0.05, "jitter": 0.01}

#: Where notifications are sent (POST) and read back (GET ``{path}/{record_id}``).
NOTIFICATIONS_PATH = "/api/integrations/notifications"


class RestHub:
    """A hub, its Flask test client, and the headers of one tenant's API token; see :func:`rest_hub`.

    :attr:`hub` is the :class:`~hub.manager.IntegrationManager` (for ``run_record``, ``registry``…),
    :attr:`client` the test client and :attr:`headers` the tenant's ``Authorization`` and ``X-Tenant-ID``.
    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(self, hub: IntegrationManager, tenant: str = "demo") -> None:
        from hub.api import create_app

        self.hub = hub
        self.tenant = tenant
        self.client: FlaskClient = create_app(manager=hub).test_client()
        token = hub.tokens.create(tenant)[1]
        self.headers: dict[str, str] = {"Authorization": f"Bearer {token}", "X-Tenant-ID": tenant}

    def post(self, path: str, json: Any = None, **kwargs: Any) -> TestResponse:
        """POST ``json`` to ``path`` as the tenant; other keyword arguments go to the test client (``data=``…).

        For a provider's webhook, which arrives without the tenant's token, use :attr:`client` directly.
        """
        return self.client.post(path, json=json, headers={**self.headers, **kwargs.pop("headers", {})}, **kwargs)

    def get(self, path: str, **kwargs: Any) -> TestResponse:
        """GET ``path`` as the tenant."""
        return self.client.get(path, headers={**self.headers, **kwargs.pop("headers", {})}, **kwargs)

    def notify(self, body: Mapping[str, Any]) -> TestResponse:
        """``POST /api/integrations/notifications`` with ``body`` (``type``, ``recipients``, ``template``, ``data``)."""
        return self.post(NOTIFICATIONS_PATH, json=dict(body))

    def notification(self, record_id: str) -> dict[str, Any]:
        """The notification's view (``GET /api/integrations/notifications/<id>``): its status, ``attempts``, and
        each recipient's outcome (``recipients``, with ``deliveryStatus`` once a webhook reported it)."""
        response = self.get(f"{NOTIFICATIONS_PATH}/{record_id}")
        assert response.status_code == 200, response.get_json()
        data: dict[str, Any] = response.get_json()["data"]
        return data

    def run_queued(self, accepted: TestResponse) -> str:
        """Run a notification the hub accepted for later (``202``), as a queue worker would; returns its id.

        Fails the test if the response is not a 202 (a send small enough to be answered at once, or an error).
        """
        assert accepted.status_code == 202, accepted.get_json()
        record_id: str = accepted.get_json()["data"]["messageId"]
        self.hub.run_record(record_id)
        return record_id

    def close(self) -> None:
        """Close the hub (its providers' ``close`` hooks, its database)."""
        self.hub.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def rest_hub(
    data_dir: str | os.PathLike[str],
    *,
    plugins: Sequence[tuple[object, str]],
    providers: Mapping[str, Any],
    services: Mapping[str, Any],
    retry: Mapping[str, Any] = FAST_RETRY,
    queue: Mapping[str, Any] | None = None,
    tenant: str = "demo",
    environ: Mapping[str, str] | None = None,
    **config: Any,
) -> RestHub:
    """Build a hub from these hub.yaml sections and return it as a :class:`RestHub` (close it when done).

    :param data_dir: the hub's data folder (its database, the outbox…), e.g. pytest's ``tmp_path``.
    :param plugins: ``[(module or object, name), ...]`` registered in-process as if installed; the built-in
        plugins load too, installed entry points do not.
    :param providers: the ``providers`` section, ``{name: {"type": ..., settings...}}``.
    :param services: the ``services`` section, e.g. ``{"sms": {"providers": ["primary", "backup"]}}``.
    :param retry: the ``retry`` section; :data:`FAST_RETRY` by default.
    :param queue: merged over ``{"workers": 0}``: no background workers, so :meth:`RestHub.run_queued` runs
        accepted bulk sends when the test says (``{"batch_size": 10}`` to cut them into more batches).
    :param tenant: the tenant whose token :attr:`RestHub.headers` carry.
    :param environ: replaces ``os.environ`` for ``${VAR}`` interpolation and providers' ``env_settings``; empty by
        default, so the test sees exactly the settings it wrote.
    :param config: any other section, e.g. ``rate_limits={"limits": {"email": "100000/minute"}}``.

    Raises :class:`hub.errors.ConfigError` for an invalid configuration, naming the key.
    """
    from hub.config import validate_config
    from hub.manager import IntegrationManager

    environ = dict(environ or {})
    raw = {
        "data_dir": os.fspath(data_dir),
        "providers": dict(providers),
        "services": dict(services),
        "retry": dict(retry),
        "queue": {"workers": 0, **(queue or {})},
        **config,
    }
    hub = IntegrationManager(
        validate_config(raw, environ=environ), environ=environ, entry_points=False, plugins=plugins
    )
    try:
        return RestHub(hub, tenant)
    except BaseException:
        hub.close()
        raise
