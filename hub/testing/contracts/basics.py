"""What every contract check shares: the test tenant and recipients, and the helpers that fail a check
with a message saying what the plugin must change."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hub import hookspecs

if TYPE_CHECKING:
    pass

#: Recipients used when a check is not given any: reserved example domains and test numbers.
DEFAULT_ADDRESSES: dict[str, tuple[str, ...]] = {
    "email": ("contract-one@example.com", "contract-two@example.org"),
    "sms": ("+15005550006", "+14155550100"),
    "chat": ("#contract-tests", "#contract-tests-2"),
}

CONTRACT_TENANT = "contract-tests"
NOTIFY_STATUSES = ("sent", "queued", "failed", "retry")
HEALTH_STATUSES = ("success", "error")

_IMPL_ATTRIBUTE = f"{hookspecs.PROJECT_NAME}_impl"


def _label(provider: object) -> str:
    type_name = getattr(provider, "type_name", "") or type(provider).__name__
    return f"{type_name} provider {getattr(provider, 'name', '?')!r}"


def _require(condition: object, problem: str) -> None:
    # Not a bare assert: the checks must also fail under ``python -O``.
    if not condition:
        raise AssertionError(problem)


def _expect(condition: object, provider: object, problem: str) -> None:
    if not condition:
        raise AssertionError(f"{_label(provider)}: {problem}")


def _expect_error(
    expected: type[BaseException] | tuple[type[BaseException], ...],
    provider: object,
    action: str,
    function: Callable[[], Any],
) -> BaseException:
    """Run ``function`` and return the error it raised, failing unless it is an ``expected`` one."""
    names = " or ".join(cls.__name__ for cls in (expected if isinstance(expected, tuple) else (expected,)))
    try:
        outcome = function()
    except expected as error:
        return error
    except AssertionError:
        raise  # a failed check inside (a missing hook), already explained
    except Exception as error:
        raise AssertionError(
            f"{_label(provider)}: {action} raised {type(error).__name__}({error}); it must raise {names} "
            "(from hub.errors) so the core neither retries nor fails over"
        ) from error
    raise AssertionError(f"{_label(provider)}: {action} returned {outcome!r}; it must raise {names} (from hub.errors)")


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"
