"""Read-only queries on a sqlite store (Optuna's or MLflow's) while another process writes it."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path


def query(db: Path, sql: str, *args: str) -> list[tuple]:
    """Rows of `sql`, or [] while the file or its schema does not exist yet or a writer holds it.

    Far cheaper than an MLflow or Optuna search, so a test can poll a running sweep every few
    milliseconds and catch a job that lasts only a second.
    """
    if not db.exists():
        return []
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as con:
            return con.execute(sql, args).fetchall()
    except sqlite3.OperationalError:
        return []
