"""Integration hub: one place to notify, pay, store, publish and sync, with providers as plugins."""

from hub.hookspecs import hookimpl

__all__ = ["hookimpl", "IntegrationManager"]


def __getattr__(name: str):
    # Imported lazily so that ``from hub import hookimpl`` in a plugin stays cheap.
    if name == "IntegrationManager":
        from hub.manager import IntegrationManager

        return IntegrationManager
    raise AttributeError(name)
