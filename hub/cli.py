"""The ``hub`` command: ``serve``, ``worker``, ``token``, ``files``, ``sync``, ``dead-letters``, ``plugins``, ``check``.

Every failure ends the same way: one line on stderr naming the cause (``hub: providers.pager.api_key: ...``)
and exit status 1. ``hub --debug ...`` (or ``HUB_DEBUG=1``) shows the traceback instead. Long work
(``sync run``, ``files migrate``, ``dead-letters replay --all``) shows a progress bar when stdout is a terminal
and one plain line per step otherwise (see :class:`Steps`).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
from typing import Any

import click

from hub.config import load_config
from hub.errors import HubError


class HubGroup(click.Group):
    """A click group that turns any exception from a command into one line on stderr."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.UsageError):
            raise  # click's own: usage errors already print one "Error:" line with the usage
        except BrokenPipeError:
            # The reader went away (``hub plugins | head``): nothing to say, and nowhere to say it.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(1)
        except Exception as error:
            if ctx.params.get("debug"):
                raise
            config = (ctx.obj or {}).get("config")
            exit_code = error.exit_code if isinstance(error, click.ClickException) else 1
            click.echo(f"hub: {describe_failure(error, config)}", err=True)
            ctx.exit(exit_code)


def describe_failure(error: BaseException, config: dict[str, Any] | None = None) -> str:
    """One line naming what went wrong, for someone who did not write the code."""
    from hub.plugins import PluginLoadError

    if isinstance(error, click.ClickException):
        return error.format_message()
    if isinstance(error, HubError | PluginLoadError):  # raised on purpose: the message is the explanation
        return _first_line(str(error)) or type(error).__name__
    if _is_database_error(error):
        # The driver's message, not SQLAlchemy's wrapping ("[SQL: ...]", "Background on this error at ...").
        reason = _first_line(str(getattr(error, "orig", None) or error))
        return f"database {_database_label(config)}: {reason}"
    reason = _first_line(str(error))
    if not reason and error.__cause__ is not None:
        reason = _first_line(str(error.__cause__))
    return f"{type(error).__name__}: {reason}" if reason else type(error).__name__


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0].strip() if lines else ""


def _is_database_error(error: BaseException) -> bool:
    try:
        from sqlalchemy.exc import SQLAlchemyError
    except ImportError:  # pragma: no cover - SQLAlchemy is a dependency
        return False
    return isinstance(error, SQLAlchemyError)


def _database_label(config: dict[str, Any] | None) -> str:
    """The database URL with its password hidden, or "(unknown)" before the config is read."""
    if not config:
        return "(unknown)"
    try:
        from sqlalchemy.engine import make_url

        from hub.records import normalise_database_url

        url = normalise_database_url(config["database_url"], config["data_dir"])
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unreadable URL)"


def _config(context: click.Context) -> dict[str, Any]:
    """hub.yaml, validated; kept on the context so a later failure can name the database."""
    config = load_config(context.obj["config_path"])
    context.obj["config"] = config
    return config


def _quiet_logging(context: click.Context) -> None:
    """Commands that report problems themselves log nothing (``HUB_LOG_LEVEL`` is the server's), unless
    ``--debug``: Python's last-resort handler would print each logged error a second time."""
    if context.obj["debug"]:
        from hub.observability import configure_logging

        configure_logging("DEBUG", json_format=False)
    elif not any(getattr(handler, "_hub_quiet", False) for handler in logging.getLogger().handlers):
        quiet = logging.NullHandler()
        quiet._hub_quiet = True  # type: ignore[attr-defined]
        logging.getLogger().addHandler(quiet)


def _token_store(context: click.Context) -> Any:
    # Token commands need only the database: no plugin is loaded, so they work even if one is broken.
    from hub.auth import TokenStore
    from hub.records import Database, normalise_database_url

    _quiet_logging(context)
    config = _config(context)
    os.makedirs(config["data_dir"], exist_ok=True)
    db = Database(normalise_database_url(config["database_url"], config["data_dir"]))
    db.create_all()
    # With Redis, a revoke or rotate here is announced to every running hub process at once.
    from hub.runtime.invalidation import Invalidations

    return TokenStore(db, Invalidations(config["redis_url"]))


class Steps:
    """Progress of long CLI work: a rich bar when stdout is a terminal (each step's line printed above it),
    else one plain line per step, which logs, pipes and CI keep and grep well; ``quiet`` (``--json``) prints
    neither. A terminal is what rich says it is: a TTY, or ``TTY_COMPATIBLE=1`` / ``FORCE_COLOR`` set."""

    def __init__(self, description: str, total: int | None = None, *, quiet: bool = False, bar: bool = True, console: Any = None) -> None:
        self.description = description
        self.total = total
        self.quiet = quiet
        self.bar = bar  # False: plain lines even on a terminal (one step needs no bar)
        self._console = console
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> Steps:
        if self.quiet or not self.bar:
            return self
        from rich.console import Console  # imported here: the other commands start without it

        console = self._console or Console(highlight=False)
        if console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
            )
            self._progress.start()
            self._task = self._progress.add_task(self.description, total=self.total)
        return self

    @property
    def terminal(self) -> bool:
        return self._progress is not None

    def step(self, line: str | None, advance: int = 1, *, err: bool = False) -> None:
        """One step done (``advance`` 0: a line only, e.g. a failure); its line goes to stdout, or stderr."""
        if self.quiet:
            if err and line:
                click.echo(line, err=True)  # failures are still said with --json, on stderr
            return
        if self._progress is not None:
            if line:
                # Above the bar: the bar stays the last line of the terminal.
                self._progress.console.print(line, markup=False, highlight=False, style="red" if err else None)
            if advance:
                self._progress.advance(self._task, advance)
        elif line:
            click.echo(line, err=err)

    def __exit__(self, *exc_info: object) -> None:
        if self._progress is not None:
            self._progress.stop()


@click.group(cls=HubGroup)
@click.option("--config", "config_path", envvar="HUB_CONFIG", default=None, help="Path to hub.yaml (default ./hub.yaml).")
@click.option("--debug", is_flag=True, envvar="HUB_DEBUG", help="Show the traceback when a command fails.")
@click.pass_context
def main(context: click.Context, config_path: str | None, debug: bool) -> None:
    """Integration hub: notify, pay, store, publish and sync through provider plugins."""
    context.obj = {"config_path": config_path, "debug": debug}


def _bind(host: str, port: int) -> socket.socket:
    """Bind the server's socket here, so a port in use is one clear error before gunicorn starts (gunicorn
    itself would retry five times, logging each, then exit). gunicorn adopts it through ``fd://``."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        listener = socket.socket(family, kind, proto)
    except OSError as error:
        raise click.ClickException(f"cannot listen on {host}:{port}: {error}") from None
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn does: restarts reuse TIME_WAIT ports
        listener.bind(address)
    except OSError as error:
        listener.close()
        raise click.ClickException(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    return listener


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
    from gunicorn.errors import AppImportError

    from hub.api import begin_shutdown, create_app
    from hub.observability import configure_logging

    debug = context.obj["debug"]
    config = _config(context)
    configure_logging("DEBUG" if debug else os.environ.get("HUB_LOG_LEVEL", "INFO"))
    # Build the hub once here, before any socket or fork: a bad provider setting, a plugin refused in strict
    # mode or an unreachable database stops start-up with one line instead of a worker's traceback.
    create_app(config).extensions["hub"].close()
    bind_host = host or config["server"]["host"]
    listener = _bind(bind_host, config["server"]["port"] if port is None else port)
    bound_port = listener.getsockname()[1]  # the real one when port 0 asked the OS to choose
    listener_fd = listener.detach()  # gunicorn owns it from here (and keeps it across a HUP reload)
    manager_holder: dict[str, Any] = {}

    class HubServer(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            options = {
                "bind": f"fd://{listener_fd}",
                "workers": workers or config["server"]["workers"],
                "worker_class": _draining_worker_class(begin_shutdown),
                "threads": threads,
                "timeout": 120,
                # SIGTERM: the master closes the listening socket, each worker finishes its in-flight requests
                # (and its running jobs) for at most this long, then the master ends what is left and exits 0.
                "graceful_timeout": config["server"]["graceful_timeout"],
                "accesslog": None,
                # gunicorn's "Listening at" comes before the app is built; "hub listening" below says it is ready.
                "loglevel": "debug" if debug else "warning",
                "post_worker_init": _post_worker_init,
                "worker_exit": _worker_exit,
                # gunicorn's control socket lives in a shared folder: two hubs on one host would collide.
                "control_socket_disable": True,
            }
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            try:
                app = create_app(config)
            except Exception as error:
                if debug:
                    raise
                # gunicorn prints an AppImportError's text alone (no traceback) and stops the server.
                raise AppImportError(f"hub: {describe_failure(error, config)}") from None
            manager_holder["manager"] = app.extensions["hub"]
            return app

    def _post_worker_init(worker: Any) -> None:
        manager = manager_holder.get("manager")
        if manager is not None:
            manager.runtime.jobs.bulkheads.size_for("requests", threads)  # default request limits follow --threads
            manager.start_workers(job_workers)
        if worker.age == 1:  # the first worker only: the others say nothing new
            # The socket listens (gunicorn's master) and this worker has built the app: requests are served.
            url = f"http://{bind_host}:{bound_port}/api/integrations"
            click.echo(f"hub listening on {url} (data in {config['data_dir']}); console: http://{bind_host}:{bound_port}/console/", err=True)

    def _worker_exit(server: Any, worker: Any) -> None:
        manager = manager_holder.get("manager")
        if manager is not None:
            manager.close()  # stops job threads, then each provider's close hook

    HubServer().run()


def _draining_worker_class(begin_shutdown: Any) -> type:
    """gunicorn's threaded worker, told of SIGTERM the moment it arrives: ``/readyz`` answers 503 (to a load
    balancer on a kept-alive connection) and the embedded job workers take no new job while the in-flight
    requests finish (gunicorn's own part). The listening socket is closed at once too: gunicorn would keep it
    open until the drain ends, and connections queued in its backlog meanwhile would hang, then be reset;
    closed, a new connection is refused and the load balancer tries another process straight away."""
    from gunicorn.workers.gthread import ThreadWorker

    class DrainingWorker(ThreadWorker):  # type: ignore[misc]
        def handle_exit(self, sig: int, frame: Any) -> None:
            app = getattr(self, "wsgi", None)
            if app is not None and hasattr(app, "extensions"):
                begin_shutdown(app)
            super().handle_exit(sig, frame)
            if getattr(self, "method_queue", None) is not None:
                self.method_queue.defer(self._refuse_new_connections)  # in the worker's loop, not the handler

        def _refuse_new_connections(self) -> None:
            self.set_accept_enabled(False)
            for listener in self.sockets:
                listener.close()  # gunicorn closes them again at the end: a second close does nothing

    return DrainingWorker


@main.command()
@click.option("--threads", type=int, default=None, help="Worker threads (default from hub.yaml queue.workers).")
@click.pass_context
def worker(context: click.Context, threads: int | None) -> None:
    """Run background workers only (scale out: several of these beside 'hub serve --job-workers 0').

    SIGTERM stops it gracefully: no new job, running ones finish within server.graceful_timeout, exit 0."""
    from hub import IntegrationManager
    from hub.observability import configure_logging

    configure_logging("DEBUG" if context.obj["debug"] else os.environ.get("HUB_LOG_LEVEL", "INFO"))
    manager = IntegrationManager(_config(context))
    manager.recover_unfinished(older_than=0)
    if manager.jobs.run_worker_forever(threads or max(1, manager.config["queue"]["workers"])):
        manager.close()  # every job finished: close the providers (an SMTP pool says QUIT)
    # else a job still runs: its provider stays open under it; the process exits and the job's lease lapses.


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
    row, secret = _token_store(context).create(tenant, name, admin=admin, expires_in=expires_in)
    click.echo(f"Created token {row.id} for tenant {tenant}{' (admin)' if admin else ''}. Store it now; it is not shown again:", err=True)
    click.echo(secret)


@token.command("list")
@click.option("--tenant", default=None)
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_context
def token_list(context: click.Context, tenant: str | None, as_json: bool) -> None:
    """List tokens (ids and prefixes, never the tokens)."""
    rows = _token_store(context).list(tenant)
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
    if not _token_store(context).revoke(token_id):
        raise click.ClickException(f"no active token {token_id}")
    click.echo(f"revoked {token_id}")


@token.command("rotate")
@click.argument("token_id")
@click.option("--grace", type=float, default=3600, show_default=True, help="Seconds the old token stays valid.")
@click.pass_context
def token_rotate(context: click.Context, token_id: str, grace: float) -> None:
    """Issue a replacement token; the old one keeps working for --grace seconds."""
    try:
        row, secret = _token_store(context).rotate(token_id, grace)
    except KeyError:
        raise click.ClickException(f"no active token {token_id}") from None
    click.echo(f"Created token {row.id}; {token_id} stays valid for {grace:.0f}s:", err=True)
    click.echo(secret)


@main.group()
def files() -> None:
    """Stored files."""


@files.command("migrate")
@click.option("--tenant", default=None, help="Only this tenant's files (default: every tenant's).")
@click.option("--limit", type=int, default=1000, show_default=True, help="Move at most this many files.")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_context
def files_migrate(context: click.Context, tenant: str | None, limit: int, as_json: bool) -> None:
    """Move files a failover put on a later storage provider back to the first one (checksum-verified).
    Exits 1 when a file could not be moved (its provider is still down: the rest wait for the next run)."""
    from sqlalchemy import select

    from hub import IntegrationManager
    from hub.records import FileRecord

    manager = IntegrationManager(_config(context))
    report: dict[str, Any] = {"moved": [], "failed": [], "remaining": 0}
    try:
        store = manager.store
        if tenant:
            tenants = [tenant]
        else:
            with manager.db.session() as session:
                tenants = sorted(session.scalars(select(FileRecord.tenant).where(FileRecord.deleted_at.is_(None)).distinct()))
        # limit 0 moves nothing and counts what waits: the bar's total.
        remaining = {name: store.migrate(name, 0)["remaining"] for name in tenants}
        with Steps("moving files", min(sum(remaining.values()), limit), quiet=as_json) as steps:
            for name in tenants:
                # One file per call, so the bar moves file by file; a failure stops this tenant's files, as one
                # migrate(tenant, limit) call does.
                while remaining[name] and len(report["moved"]) < limit:
                    step = store.migrate(name, 1)
                    remaining[name] = step["remaining"]
                    for file_id in step["moved"]:
                        report["moved"].append(file_id)
                        steps.step(f"moved {file_id} (tenant {name})")
                    for failure in step["failed"]:
                        report["failed"].append(failure)
                        steps.step(f"failed {failure['fileId']}: {failure['error']}", 0, err=True)
                    if step["failed"] or not step["moved"]:
                        break
        report["remaining"] = sum(remaining.values())
    finally:
        manager.close()
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(f"moved {len(report['moved'])} file(s); {report['remaining']} still on another provider")
    if report["failed"]:
        context.exit(1)


@main.group()
def sync() -> None:
    """Sync jobs."""


@sync.command("run")
@click.argument("job")
@click.option("--tenant", default=None, help="The tenant (default: the schedule's, else default_tenant).")
@click.option("--provider", default=None, help="Only this sync provider (default: the schedule's; for inventory, every source).")
@click.option("--full", "full_resync", is_flag=True, help="Ignore the saved cursor: read from the beginning.")
@click.option("--option", "options", multiple=True, help="A sync option as key=value (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_context
def sync_run(context: click.Context, job: str, tenant: str | None, provider: str | None, full_resync: bool, options: tuple[str, ...], as_json: bool) -> None:
    """Run a sync now, to the end of the stream: JOB is a schedule's name (sync_schedules) or a data type.
    Inventory without --provider syncs every source. Exits 1 when a run failed."""
    from hub import IntegrationManager
    from hub.errors import HubError
    from hub.services.sync import SyncJob

    config = _config(context)
    schedule = next((item for item in config["sync_schedules"] if item.get("name") == job), None)
    data_type = schedule["data_type"] if schedule else job
    parsed = dict(schedule["options"]) if schedule else {}
    for option in options:
        name, equals, value = option.partition("=")
        if not equals or not name:
            raise click.BadParameter(f"{option!r}: key=value", param_hint="--option")
        parsed[name] = value
    tenant = tenant or (schedule or {}).get("tenant") or config["default_tenant"]
    provider = provider or (schedule or {}).get("provider")
    manager = IntegrationManager(config)
    failed = False
    results: dict[str, Any] = {}
    try:
        # A bar over runs (each run stores pages up to the sync: limits, then the next goes on from its checkpoint);
        # the total is unknown until a run says it reached the end of the stream.
        with Steps(f"sync {job}", quiet=as_json) as steps:
            if data_type == "inventory" and not provider and not parsed:
                results = manager.sync.sync_all_inventory(tenant, full_resync=full_resync)
                failed = any(not result["success"] for result in results.values())
                for name, result in results.items():
                    outcome = "ok" if result["success"] else "failed"
                    error = f" ({result['error']})" if result.get("error") else ""
                    steps.step(f"{name}: {outcome} {result.get('count', 0)} record(s) job {result['jobId']}{error}")
            else:
                first = True
                while True:  # each run goes on from the checkpoint the last one saved
                    try:
                        view, _ = manager.sync.start(tenant, SyncJob(data_type, parsed, provider, full_resync=full_resync and first))
                    except HubError as error:
                        failed = True
                        steps.step(f"failed: {error}", 0)
                        break
                    first = False
                    results[view["jobId"]] = {key: view[key] for key in ("status", "provider", "count", "pages", "hasMore", "error")}
                    steps.step(f"{view['provider']}: {view['status']} {view['count']} record(s) in {view['pages']} page(s) job {view['jobId']}")
                    if view["status"] != "succeeded" or not view["hasMore"]:
                        failed = view["status"] != "succeeded"
                        break
    finally:
        manager.close()
    if as_json:
        click.echo(json.dumps(results, indent=2, default=str))
    if failed:
        context.exit(1)


#: The kind a subscription's dead letter (a consumed event its handler kept refusing) is listed under; every
#: other kind is a record's (a notification, payment, event, sync... whose job ran out of attempts: ``dead``).
SUBSCRIPTION_KIND = "subscription"


def _dead_kind(context: click.Context, parameter: click.Parameter, value: str | None) -> str | None:
    """``--kind``: a record kind the ledger knows, or ``subscription`` (checked here, not with a click.Choice,
    so the ledger's list of kinds is imported only by the commands that take it)."""
    from hub.runtime.ledger import ID_PREFIX

    kinds = [*ID_PREFIX, SUBSCRIPTION_KIND]
    if value is not None and value not in kinds:
        raise click.BadParameter(f"{value!r} is not one of {', '.join(kinds)}")
    return value


def _record_item(record: Any) -> dict[str, Any]:
    return {
        "id": record.id,
        "kind": record.kind,
        "tenantId": record.tenant,
        "status": record.status,
        "service": record.service,
        "provider": record.provider,
        "attempts": record.attempts,
        "error": record.error,
        # The replay runs under this key again: the provider sees the same key, so a payment is not charged twice.
        "idempotencyKey": record.idempotency_key,
        "createdAt": record.created_at.isoformat(),
    }


def _letter_item(letter: Any) -> dict[str, Any]:
    return {
        "id": letter.id,
        "kind": SUBSCRIPTION_KIND,
        "tenantId": letter.tenant,
        "status": "dead",
        "subscription": letter.subscription,
        "provider": letter.provider,
        "topic": letter.topic,
        "partition": letter.partition,
        "offset": letter.offset,
        "attempts": letter.attempts,
        "error": letter.error,
        "createdAt": letter.created_at.isoformat(),
    }


def _dead_items(manager: Any, tenant: str | None, kind: str | None, limit: int | None) -> list[dict[str, Any]]:
    """Dead records and subscription dead letters, newest first: the tenant's, or every tenant's."""
    from sqlalchemy import select

    from hub.records import DeadLetter, Record

    if tenant:
        tenants = [tenant]
    else:
        with manager.db.session() as session:
            dead = set(session.scalars(select(Record.tenant).where(Record.status == "dead").distinct()))
            dead |= set(session.scalars(select(DeadLetter.tenant).distinct()))
        tenants = sorted(dead)
    page = limit or 1_000_000  # replay --all: every one
    found: list[tuple[Any, dict[str, Any]]] = []
    for name in tenants:
        if kind != SUBSCRIPTION_KIND:
            found += [(record.created_at, _record_item(record)) for record in manager.runtime.ledger.list(name, kind, "dead", page)]
        if kind in (None, SUBSCRIPTION_KIND):
            with manager.db.session() as session:
                # The service's own listing (publish.dead_letters) gives views; the rows carry comparable times.
                query = select(DeadLetter).where(DeadLetter.tenant == name).order_by(DeadLetter.created_at.desc()).limit(page)
                found += [(letter.created_at, _letter_item(letter)) for letter in session.scalars(query)]
    found.sort(key=lambda pair: pair[0], reverse=True)
    return [item for _, item in found[:page]]


def _find_dead(manager: Any, item_id: str, tenant: str | None) -> dict[str, Any]:
    """The record or dead letter ``item_id`` (the tenant's, when given)."""
    from hub.records import DeadLetter, Record

    with manager.db.session() as session:
        record = session.get(Record, item_id)
        if record is not None and tenant in (None, record.tenant):
            return _record_item(record)
        letter = session.get(DeadLetter, item_id)
        if letter is not None and tenant in (None, letter.tenant):
            return _letter_item(letter)
    raise click.ClickException(f"no dead letter or record {item_id}" + (f" for tenant {tenant}" if tenant else ""))


def _replay(manager: Any, item: dict[str, Any]) -> tuple[bool, str]:
    """Replay one with its service's own method: ``(replayed, status or why not)``. A record is queued again
    (same record, same idempotency key; only its unfinished work is redone); a subscription's dead letter is
    handed to its handler now."""
    try:
        if item["kind"] == SUBSCRIPTION_KIND:
            outcome = manager.publish.replay_dead_letter(item["tenantId"], item["id"])
            return outcome["status"] == "delivered", outcome.get("error") or outcome["status"]
        return True, manager.runtime.ledger.replay_dead(item["id"], item["tenantId"]).status
    except HubError as error:  # not dead (any more), its subscription gone...
        return False, _first_line(str(error)) or type(error).__name__


def _describe_item(item: dict[str, Any]) -> str:
    if item["kind"] == SUBSCRIPTION_KIND:
        return f"{item['subscription']} {item['topic']}[{item['partition']}]@{item['offset']}"
    return item["service"] + (f"/{item['provider']}" if item["provider"] else "")


@main.group("dead-letters")
def dead_letters() -> None:
    """Dead letters: records whose job ran out of attempts, and events a subscription's handler kept refusing."""


@dead_letters.command("list")
@click.option("--tenant", default=None, help="Only this tenant's (default: every tenant's).")
@click.option("--kind", default=None, callback=_dead_kind, help="Only this kind: notification, payment, event, sync... or subscription.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="Show at most this many, newest first.")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_context
def dead_letters_list(context: click.Context, tenant: str | None, kind: str | None, limit: int, as_json: bool) -> None:
    """List dead letters, newest first, each line saying its kind."""
    from hub import IntegrationManager

    _quiet_logging(context)
    manager = IntegrationManager(_config(context))
    try:
        items = _dead_items(manager, tenant, kind, limit)
    finally:
        manager.close()
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    for item in items:
        error = _first_line(item["error"] or "")
        click.echo(f"{item['id']}  {item['kind']:<14} {item['tenantId']:<16} {_describe_item(item):<32} {item['attempts']} attempt(s)  {error}")


@dead_letters.command("replay")
@click.argument("item_id", required=False, metavar="[ID]")
@click.option("--all", "replay_all", is_flag=True, help="Replay every dead letter (of --tenant, of --kind).")
@click.option("--tenant", default=None, help="The tenant (default: the one the id belongs to; with --all, every tenant).")
@click.option("--kind", default=None, callback=_dead_kind, help="With --all: only this kind (as for list).")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_context
def dead_letters_replay(context: click.Context, item_id: str | None, replay_all: bool, tenant: str | None, kind: str | None, as_json: bool) -> None:
    """Replay dead letter ID, or --all of them: a record is queued again under its original idempotency key
    (a replayed payment cannot charge twice), a subscription's dead letter is handed to its handler again.
    Exits 1 naming each one that could not be replayed."""
    from hub import IntegrationManager

    if replay_all == (item_id is not None):
        raise click.UsageError("give a dead letter's ID or --all")
    if kind and not replay_all:
        raise click.UsageError("--kind goes with --all")
    _quiet_logging(context)
    manager = IntegrationManager(_config(context))
    outcomes: list[dict[str, Any]] = []
    try:
        items = _dead_items(manager, tenant, kind, None)[::-1] if replay_all else [_find_dead(manager, item_id or "", tenant)]
        with Steps("replaying", len(items), quiet=as_json, bar=replay_all) as steps:
            for item in items:
                replayed, status = _replay(manager, item)
                outcomes.append({"id": item["id"], "kind": item["kind"], "tenantId": item["tenantId"], "replayed": replayed, "status" if replayed else "error": status})
                if replayed:
                    steps.step(f"replayed {item['id']} ({item['kind']}, tenant {item['tenantId']}): {status}")
                else:
                    steps.step(f"hub: could not replay {item['id']} ({item['kind']}, tenant {item['tenantId']}): {status}", err=True)
    finally:
        manager.close()
    failed = [outcome for outcome in outcomes if not outcome["replayed"]]
    if as_json:
        click.echo(json.dumps(outcomes, indent=2))
    elif replay_all:
        click.echo(f"replayed {len(outcomes) - len(failed)} of {len(outcomes)}")
    if failed:
        if replay_all:
            click.echo(f"hub: {len(failed)} could not be replayed: {', '.join(outcome['id'] for outcome in failed)}", err=True)
        context.exit(1)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_context
def plugins(context: click.Context, as_json: bool) -> None:
    """List plugins: name, version, status, set-up hooks, provider types (capability, channels, provider
    hooks) and load errors; exit 1 if a plugin failed to load."""
    from hub.plugins import PluginHost, PluginPolicy

    _quiet_logging(context)  # a load error is in the listing; the log line would repeat it
    config = _config(context)
    host = PluginHost(PluginPolicy.from_settings(config["plugins"]))
    host.load()
    items = host.plugin_list()
    if as_json:
        click.echo(json.dumps(items, indent=2))
    else:
        for item in items:
            providers = ", ".join(item["providers"]) or "-"
            click.echo(f"{item['name']:<20} {item['version'] or '-':<10} {item['status']:<12} {item['source']:<10} providers: {providers}")
            if item["hooks"]:
                click.echo(f"    set-up hooks: {', '.join(item['hooks'])}")
            for provider in item["providerTypes"]:
                channels = f" [{', '.join(provider['channels'])}]" if provider["channels"] else ""
                click.echo(f"    {provider['type']}: {provider['capability']}{channels}; hooks: {', '.join(provider['hooks'])}")
            if item["error"]:
                click.echo(f"    error: {item['error']}")
    if host.failures:
        sys.exit(1)


@main.command()
@click.pass_context
def check(context: click.Context) -> None:
    """Validate hub.yaml and build every provider; exit 1 on any problem."""
    from hub import IntegrationManager

    _quiet_logging(context)  # each problem is printed once below
    manager = IntegrationManager(_config(context))
    try:
        problems = [f"provider {slot.name}: {slot.error}" for slot in manager.registry.slots.values() if slot.error]
        problems += [f"plugin {record.name}: {record.error}" for record in manager.host.failures]
    finally:
        manager.close()
    for problem in problems:
        click.echo(f"hub: {problem}", err=True)
    click.echo("hub.yaml OK" if not problems else f"{len(problems)} problem(s)")
    sys.exit(1 if problems else 0)


from hub.db_commands import db  # noqa: E402  (the db group, registered here beside its import)

main.add_command(db)


if __name__ == "__main__":
    main()
