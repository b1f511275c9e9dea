"""Real faults for tests: a slow SMTP relay, a private PostgreSQL cluster that can be restarted, a small
tmpfs that fills up, and the hub's API served on a real socket in a thread.

Nothing here fakes the hub: each helper is a real server or a real file system, so a test drives the hub
through the same protocols production does (SMTP, PostgreSQL's wire protocol, ``ENOSPC`` from the kernel).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Self

from hub.testing.servers import SmtpServer, free_port

POSTGRES_BIN = Path(os.environ.get("HUB_TEST_POSTGRES_BIN", "/usr/lib/postgresql/15/bin"))


class SlowSmtpServer(SmtpServer):
    """:class:`SmtpServer` answering each message after ``delay`` seconds (a relay far away, or overloaded).
    The wait is asynchronous: other connections are served meanwhile, as a real relay does."""

    def __init__(self, *, delay: float, **settings: Any) -> None:
        super().__init__(**settings)
        self.delay = delay

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's name)
        await asyncio.sleep(self.delay)
        return await super().handle_DATA(server, session, envelope)


class PrivatePostgres:
    """A PostgreSQL cluster of its own (``initdb`` in a temporary folder, a free port), run as the
    ``postgres`` user when this process is root, so a test may restart or stop it without touching the
    machine's shared server. Trust authentication on 127.0.0.1 only."""

    def __init__(self, bin_dir: Path = POSTGRES_BIN) -> None:
        self.bin_dir = bin_dir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="hub-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @staticmethod
    def available(bin_dir: Path = POSTGRES_BIN) -> str | None:
        """Why no private cluster can run here, or None when it can."""
        if not (bin_dir / "initdb").exists():
            return f"no PostgreSQL binaries in {bin_dir} (set HUB_TEST_POSTGRES_BIN)"
        if os.geteuid() == 0 and shutil.which("runuser") is None:
            return "running as root without runuser: PostgreSQL refuses to run as root"
        return None

    def _run(self, *command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=timeout, check=True)

    def init(self) -> Self:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(str(self.bin_dir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        options = (
            f"port = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self.root}'\n"
            # A test cluster: durability off (it is thrown away), small, quick to stop.
            "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nshared_buffers = 16MB\nmax_connections = 100\n"
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(options)
        return self

    def start(self) -> Self:
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30", "start")
        return self

    def restart(self, down_for: float = 0.0) -> None:
        """``pg_ctl restart -m fast``: every session is cut, the server is down for a moment, then back.
        ``down_for``: stop, stay down that many seconds (connections refused), then start."""
        if not down_for:
            self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30", "-m", "fast", "restart")
            return
        self.stop()
        time.sleep(down_for)
        self.start()

    def stop(self) -> None:
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-w", "-t", "30", "-m", "fast", "stop")

    def create_database(self, name: str) -> str:
        """A fresh database in the cluster; returns its URL."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
            connection.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def close(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # not running
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class Tmpfs:
    """A ``size``-byte tmpfs mounted at ``path`` (root only): a disk that really fills up. :meth:`mount`
    returns why it could not mount (a test skips with it), or None."""

    def __init__(self, path: Path, size: str = "2m") -> None:
        self.path = path
        self.size = size
        self.mounted = False

    def mount(self) -> str | None:
        self.path.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.size}", "tmpfs", str(self.path)], capture_output=True, text=True)
        if result.returncode != 0:
            return f"cannot mount a tmpfs at {self.path}: {(result.stderr or result.stdout).strip()}"
        self.mounted = True
        return None

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.path).free

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True, check=False)
            self.mounted = False


class ServedApp:
    """A Flask app on a real socket (werkzeug's threaded server) in a daemon thread: requests go through
    TCP and a thread per request, as behind a load balancer; ``url`` is its base."""

    def __init__(self, app: Any) -> None:
        from werkzeug.serving import make_server

        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="hub-test-server", daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self._thread.join(timeout=10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def wait_for(condition: Any, timeout: float, what: str, every: float = 0.05) -> Any:
    """Poll ``condition()`` until it returns something true; AssertionError naming ``what`` at ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout} s")
        time.sleep(every)
    return value
