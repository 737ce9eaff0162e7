"""Whether an MLflow tracking store can be used: one-line errors that name the store and the
fix, within seconds and before any data or model is built (MLflow itself would retry an
unreachable server for minutes, and answer a damaged file with a long SQLAlchemy traceback).

Light on imports: `tradeoff-report` checks its store before loading MLflow.
"""

from __future__ import annotations

import sqlite3
import urllib.error
import urllib.request
from contextlib import closing
from pathlib import Path
from urllib.parse import urlsplit

from .paths import OutputDirError, writable_dir

__all__ = ["KNOWN_SCHEMES", "StoreError", "check_store", "store_failure"]

# Tracking URI schemes MLflow 3 opens (a `+driver` suffix, as in postgresql+psycopg, is allowed).
KNOWN_SCHEMES = (
    "file",
    "sqlite",
    "http",
    "https",
    "postgresql",
    "mysql",
    "mssql",
    "databricks",
    "databricks-uc",
    "uc",
)
_FIX_URI = "e.g. sqlite:///mlflow.db, http://HOST:5000 or postgresql://USER@HOST/DB"


class StoreError(ValueError):
    """A tracking store that cannot be used; the message names it and the fix."""


def _scheme(uri: str) -> str:
    if "://" not in uri and not uri.startswith("file:"):
        return "" if uri != "databricks" else "databricks"
    return urlsplit(uri).scheme.split("+")[0].lower()


def check_store(
    uri: str, setting: str = "tracking.uri", *, timeout: float = 5.0, create: bool = True
) -> None:
    """Raise StoreError if the store at `uri` is unknown, unreachable, unwritable (a new sqlite
    file in a folder that cannot be written, when `create`) or not an MLflow database.
    `setting` is the option that chose it, named in the message."""
    scheme = _scheme(uri)
    if scheme not in ("", *KNOWN_SCHEMES):
        raise StoreError(
            f"{setting}={uri!r}: unknown scheme {scheme + '://'!r}; give an MLflow tracking "
            f"URI, {_FIX_URI}"
        )
    if scheme in ("http", "https"):
        _check_server(uri, setting, timeout)
    elif scheme == "sqlite" and uri.startswith("sqlite:///"):
        path = uri.removeprefix("sqlite:///").split("?")[0]
        if path and path != ":memory:":
            _check_sqlite(uri, Path(path), setting, create)


def _check_server(uri: str, setting: str, timeout: float) -> None:
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
            pass
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StoreError(
            f"{setting}={uri!r} is unreachable ({reason}); start the server "
            "(`mlflow server --backend-store-uri ...`) or set "
            f"{setting} to a reachable one, e.g. sqlite:///mlflow.db"
        ) from None


def _check_sqlite(uri: str, path: Path, setting: str, create: bool) -> None:
    if not path.exists():
        if not create:
            return
        folder = path.parent if str(path.parent) else Path(".")
        try:
            writable_dir(folder, setting, create=False)
        except OutputDirError:
            raise StoreError(
                f"{setting}={uri!r}: folder {str(folder)!r} does not exist or is not "
                f"writable; create it or point {setting} elsewhere"
            ) from None
        return
    fix = f"move {str(path)!r} away (MLflow makes a new store) or point {setting} elsewhere"
    if path.is_dir():
        raise StoreError(f"{setting}={uri!r}: {str(path)!r} is a folder, not a database; {fix}")
    if path.stat().st_size == 0:
        return  # an empty file: MLflow makes its tables there
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as con:
            tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master")}
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{setting}={uri!r}: {str(path)!r} is damaged ({exc}); {fix}") from None
    if tables and not {"experiments", "alembic_version"} <= tables:
        raise StoreError(
            f"{setting}={uri!r}: {str(path)!r} is an SQLite database but not an MLflow store "
            f"(its tables: {', '.join(sorted(tables)[:5])}); {fix}"
        )


def store_failure(exc: BaseException, uri: str) -> str | None:
    """One line for an error the store raised while in use (a file damaged after the start
    check, a server gone), or None if `exc` is not one."""
    chain: list[BaseException] = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    for err in chain:
        if isinstance(err, sqlite3.DatabaseError) or type(err).__module__.startswith("sqlalchemy"):
            text = str(getattr(err, "orig", None) or err).splitlines()[0][:200]
            return f"the MLflow store {uri!r} failed ({text}); check or move the store"
    return None
