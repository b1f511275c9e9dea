"""Hub processes for multi-process tests and benchmarks: ``hub serve`` and ``hub worker`` as subprocesses.

Each runs in its own session (process group), so :meth:`HubProcess.kill` is a real SIGKILL of everything it
started (gunicorn's master and its workers too) and :meth:`HubProcess.stop` a graceful SIGTERM, then SIGKILL.
Output goes to a log file (a pipe would fill and block a chatty process); :meth:`HubProcess.log_tail` shows its
end for an assertion message.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from hub.testing.servers import wait_for_port

__all__ = ["ApiServer", "HubProcess", "Worker", "hub_environment", "stop_all", "wait_until"]

T = TypeVar("T")

#: The repository the tests run from (``hub/testing/processes.py`` -> the folder holding ``hub/``).
REPO = Path(__file__).resolve().parent.parent.parent


def hub_environment(plugins: Iterable[str] = ("hub-smtp",), **extra: str) -> dict[str, str]:
    """This environment for a hub subprocess: the worktree and ``plugins/<name>`` folders first on
    ``PYTHONPATH`` (the editable installs may point at another checkout), no inherited ``DATABASE_URL``,
    ``REDIS_URL`` or ``HUB_CONFIG`` (the test's config file says where everything is), quiet logs."""
    path = [str(REPO), *(str(REPO / "plugins" / name) for name in plugins), os.environ.get("PYTHONPATH", "")]
    environment = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "REDIS_URL", "HUB_CONFIG")}
    return {**environment, "PYTHONPATH": os.pathsep.join(filter(None, path)), "HUB_LOG_LEVEL": "WARNING", **extra}


def wait_until(condition: Callable[[], T], timeout: float, what: str, log: Path | None = None, every: float = 0.02) -> T:
    """Poll ``condition`` until it returns something true, and return that; fail after ``timeout`` seconds with
    ``what`` and the end of ``log``."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
            raise AssertionError(f"{what}: not after {timeout} s\n{tail}")
        time.sleep(every)
    return value


class HubProcess:
    """``python -m hub.cli --config CONFIG <arguments>`` in its own process group, output appended to ``log``."""

    def __init__(self, config: Path, log: Path, arguments: list[str], environment: dict[str, str] | None = None) -> None:
        self.log = log
        self.output = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "hub.cli", "--config", str(config), *arguments],
            stdin=subprocess.DEVNULL, stdout=self.output, stderr=subprocess.STDOUT,
            env=environment or hub_environment(), start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, size: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-size:] if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL the whole group: nothing runs a handler, nothing is released (a crash)."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self.output.close()

    def terminate(self) -> None:
        """SIGTERM to the group (the graceful stop), without waiting."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)

    def stop(self, timeout: float = 15.0) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
            except ProcessLookupError:
                pass
        self.output.close()

    def __enter__(self: Any) -> Any:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def stop_all(processes: Iterable[HubProcess], timeout: float = 15.0) -> None:
    """Stop several at once: SIGTERM to all first, so their graceful stops overlap, then wait for each."""
    processes = list(processes)
    for process in processes:
        process.terminate()
    deadline = time.monotonic() + timeout
    for process in processes:
        process.stop(max(0.1, deadline - time.monotonic()))


class Worker(HubProcess):
    """``hub worker --threads N``."""

    def __init__(self, config: Path, log: Path, threads: int = 2, environment: dict[str, str] | None = None) -> None:
        super().__init__(config, log, ["worker", "--threads", str(threads)], environment)


class ApiServer(HubProcess):
    """``hub serve --port P --job-workers 0`` (background work left to :class:`Worker` processes); the
    constructor returns once the port accepts connections."""

    def __init__(
        self, config: Path, log: Path, port: int, *, workers: int = 1, threads: int = 8, job_workers: int = 0,
        environment: dict[str, str] | None = None, startup_timeout: float = 30.0,
    ) -> None:
        arguments = ["serve", "--port", str(port), "--workers", str(workers), "--threads", str(threads), "--job-workers", str(job_workers)]
        super().__init__(config, log, arguments, environment)
        self.port = port
        self.url = f"http://127.0.0.1:{port}/api/integrations"
        try:
            wait_for_port("127.0.0.1", port, startup_timeout, process=self.process)
            # gunicorn's master listens before its worker has built the app: wait for the app's own answer.
            wait_until(self._live, startup_timeout, f"GET /livez on {port}", log)
        except Exception as error:
            self.stop()
            raise AssertionError(f"hub serve on {port} did not start: {error}\n{self.log_tail()}") from error

    def _live(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"hub serve on {self.port} exited with status {self.process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/livez", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False


class NoEmptyRedisDatabase(RuntimeError):
    """Every database number tried already holds keys: nothing of anyone else's may be mixed with the hub's."""


#: What a hub writes to Redis: huey's queue, the limiter's windows, the breakers' states.
HUB_REDIS_KEYS = ("huey.*hubjobs*", "hub-limits-hub*", "hub:breaker:*")


@contextlib.contextmanager
def empty_redis_database(base: str, numbers: range = range(8, 16)) -> Iterator[str]:
    """The URL of an empty database number (tried in random order) of the Redis at ``base`` (``redis://host:port``);
    afterwards only the hub's own keys (:data:`HUB_REDIS_KEYS`) are deleted from it.

    :raises NoEmptyRedisDatabase: when every number in ``numbers`` holds keys.
    """
    import random

    import redis

    for number in random.sample(list(numbers), len(numbers)):
        client = redis.Redis.from_url(f"{base}/{number}")
        if client.dbsize() == 0:
            break
        client.close()
    else:
        raise NoEmptyRedisDatabase(f"no empty Redis database among {numbers.start}-{numbers.stop - 1} at {base}")
    try:
        yield f"{base}/{number}"
    finally:
        for pattern in HUB_REDIS_KEYS:
            keys = list(client.scan_iter(match=pattern, count=1000))
            if keys:
                client.delete(*keys)
        client.close()
