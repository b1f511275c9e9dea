"""The ``hub`` command: ``serve``, ``worker``, ``token``, ``plugins``, ``check``."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from hub.config import load_config
from hub.errors import ConfigError


def _config(path: str | None) -> dict[str, Any]:
    try:
        return load_config(path)
    except ConfigError as error:
        raise click.ClickException(f"hub.yaml is invalid: {error}") from None


def _token_store(path: str | None) -> Any:
    # Token commands need only the database: no plugin is loaded, so they work even if one is broken.
    from hub.auth import TokenStore
    from hub.records import Database, normalise_database_url

    config = _config(path)
    os.makedirs(config["data_dir"], exist_ok=True)
    db = Database(normalise_database_url(config["database_url"], config["data_dir"]))
    db.create_all()
    return TokenStore(db)


@click.group()
@click.option("--config", "config_path", envvar="HUB_CONFIG", default=None, help="Path to hub.yaml (default ./hub.yaml).")
@click.pass_context
def main(context: click.Context, config_path: str | None) -> None:
    """Integration hub: notify, pay, store, publish and sync through provider plugins."""
    context.obj = {"config_path": config_path}


@main.command()
@click.option("--host", default=None, help="Interface to listen on (default from hub.yaml: 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default from hub.yaml: 8000).")
@click.option("--workers", type=int, default=None, help="HTTP worker processes (default from hub.yaml: 1).")
@click.option("--threads", type=int, default=8, show_default=True, help="Threads per HTTP worker.")
@click.option("--job-workers", type=int, default=None, help="Background job threads per process (0: run 'hub worker' instead).")
@click.pass_context
def serve(context: click.Context, host: str | None, port: int | None, workers: int | None, threads: int, job_workers: int | None) -> None:
    """Run the API server (gunicorn) with background workers."""
    from gunicorn.app.base import BaseApplication

    from hub.observability import configure_logging

    config_path = context.obj["config_path"]
    config = _config(config_path)
    configure_logging(os.environ.get("HUB_LOG_LEVEL", "INFO"))
    bind_host = host or config["server"]["host"]
    bind_port = config["server"]["port"] if port is None else port
    manager_holder: dict[str, Any] = {}

    class HubServer(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            options = {
                "bind": f"{bind_host}:{bind_port}",
                "workers": workers or config["server"]["workers"],
                "worker_class": "gthread",
                "threads": threads,
                "timeout": 120,
                "graceful_timeout": 20,
                "accesslog": None,
                "post_worker_init": _post_worker_init,
                "worker_exit": _worker_exit,
                # gunicorn's control socket lives in a shared folder: two hubs on one host would collide.
                "control_socket_disable": True,
            }
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            from hub.api import create_app

            app = create_app(config)
            manager_holder["manager"] = app.extensions["hub"]
            return app

    def _post_worker_init(worker: Any) -> None:
        manager = manager_holder.get("manager")
        if manager is not None:
            manager.start_workers(job_workers)

    def _worker_exit(server: Any, worker: Any) -> None:
        manager = manager_holder.get("manager")
        if manager is not None:
            manager.close()  # stops job threads, then each provider's close hook

    click.echo(f"hub listening on http://{bind_host}:{bind_port}/api/integrations (data in {config['data_dir']})", err=True)
    HubServer().run()


@main.command()
@click.option("--threads", type=int, default=None, help="Worker threads (default from hub.yaml queue.workers).")
@click.pass_context
def worker(context: click.Context, threads: int | None) -> None:
    """Run background workers only (scale out: several of these beside 'hub serve --job-workers 0')."""
    from hub.manager import IntegrationManager
    from hub.observability import configure_logging

    configure_logging(os.environ.get("HUB_LOG_LEVEL", "INFO"))
    manager = IntegrationManager(_config(context.obj["config_path"]))
    manager.recover_unfinished(older_than=0)
    manager.jobs.run_worker_forever(threads or max(1, manager.config["queue"]["workers"]))


@main.group()
def token() -> None:
    """Create, list, revoke and rotate API tokens."""


@token.command("create")
@click.option("--tenant", required=True, help="The tenant the token acts for.")
@click.option("--name", default=None, help="A label to recognise it by.")
@click.option("--admin", is_flag=True, help="May also initialize and shut down the hub.")
@click.option("--expires-in", type=float, default=None, help="Seconds until it expires (default: never).")
@click.pass_context
def token_create(context: click.Context, tenant: str, name: str | None, admin: bool, expires_in: float | None) -> None:
    """Print a new token for TENANT (the token alone on the last line; it is not shown again)."""
    row, secret = _token_store(context.obj["config_path"]).create(tenant, name, admin=admin, expires_in=expires_in)
    click.echo(f"Created token {row.id} for tenant {tenant}{' (admin)' if admin else ''}. Store it now; it is not shown again:", err=True)
    click.echo(secret)


@token.command("list")
@click.option("--tenant", default=None)
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_context
def token_list(context: click.Context, tenant: str | None, as_json: bool) -> None:
    """List tokens (ids and prefixes, never the tokens)."""
    rows = _token_store(context.obj["config_path"]).list(tenant)
    items = [
        {
            "id": row.id,
            "tenant": row.tenant,
            "name": row.name,
            "prefix": row.prefix + "…",
            "admin": row.admin,
            "created": row.created_at.isoformat(timespec="seconds"),
            "expires": row.expires_at.isoformat(timespec="seconds") if row.expires_at else None,
            "revoked": row.revoked_at.isoformat(timespec="seconds") if row.revoked_at else None,
            "lastUsed": row.last_used_at.isoformat(timespec="seconds") if row.last_used_at else None,
        }
        for row in rows
    ]
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    for item in items:
        state = "revoked" if item["revoked"] else (f"expires {item['expires']}" if item["expires"] else "active")
        click.echo(f"{item['id']}  {item['tenant']:<16} {item['prefix']:<14} {state:<32} {item['name'] or ''}")


@token.command("revoke")
@click.argument("token_id")
@click.pass_context
def token_revoke(context: click.Context, token_id: str) -> None:
    """Revoke a token at once."""
    if not _token_store(context.obj["config_path"]).revoke(token_id):
        raise click.ClickException(f"no active token {token_id}")
    click.echo(f"revoked {token_id}")


@token.command("rotate")
@click.argument("token_id")
@click.option("--grace", type=float, default=3600, show_default=True, help="Seconds the old token stays valid.")
@click.pass_context
def token_rotate(context: click.Context, token_id: str, grace: float) -> None:
    """Issue a replacement token; the old one keeps working for --grace seconds."""
    try:
        row, secret = _token_store(context.obj["config_path"]).rotate(token_id, grace)
    except KeyError:
        raise click.ClickException(f"no active token {token_id}") from None
    click.echo(f"Created token {row.id}; {token_id} stays valid for {grace:.0f}s:", err=True)
    click.echo(secret)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_context
def plugins(context: click.Context, as_json: bool) -> None:
    """List plugins: name, version, status, providers, hooks and load errors."""
    from hub.plugins import PluginHost, PluginPolicy

    config = _config(context.obj["config_path"])
    host = PluginHost(PluginPolicy.from_settings(config["plugins"]))
    host.load()
    items = host.plugin_list()
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    for item in items:
        click.echo(f"{item['name']:<20} {item['version'] or '-':<10} {item['status']:<12} {item['source']:<10} providers: {', '.join(item['providers']) or '-'}")
        if item["error"]:
            click.echo(f"    error: {item['error']}")
    if host.failures:
        sys.exit(1)


@main.command()
@click.pass_context
def check(context: click.Context) -> None:
    """Validate hub.yaml and build every provider; exit 1 on any problem."""
    from hub.manager import IntegrationManager

    manager = IntegrationManager(_config(context.obj["config_path"]))
    problems = [f"provider {slot.name}: {slot.error}" for slot in manager.registry.slots.values() if slot.error]
    problems += [f"plugin {record.name}: {record.error}" for record in manager.host.failures]
    for problem in problems:
        click.echo(problem, err=True)
    click.echo("hub.yaml OK" if not problems else f"{len(problems)} problem(s)")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
