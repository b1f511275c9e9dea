"""The hub's schema revisions, in order (``0001_initial`` first); Alembic reads them, nothing imports them."""
