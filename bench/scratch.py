"""A throw-away database for a benchmark: a temporary SQLite file, or a fresh PostgreSQL schema
that is dropped afterwards."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg


@contextmanager
def scratch_database(postgres_url: str | None, name: str) -> Iterator[str]:
    """The URL of an empty database; PostgreSQL when `postgres_url` is given, else SQLite."""
    if not postgres_url:
        yield f"sqlite:///{Path(tempfile.mkdtemp(prefix=f'campaign-{name}-')) / f'{name}.db'}"
        return
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{postgres_url}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA "{schema}" CASCADE')
