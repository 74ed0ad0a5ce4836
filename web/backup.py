"""`switchboard backup` and `restore`: the database, the recordings and the settings file
in one archive, restorable into an empty installation (SQLite or PostgreSQL, either way).

The database goes in as rows, one JSON line per row and a file per table, read from the
tables as they are (reflected, not from today's models) inside one transaction, so a
backup taken while calls go on is a consistent moment. The archive names the migration
the rows belong to; a restore builds the schema up to that migration, loads the rows,
then migrates to the newest schema, so an archive from an older release restores into a
newer one. A restore only ever fills an empty database and an empty recordings folder:
it never merges into, or overwrites, a live installation's history.

The archive holds what the database holds: password hashes, desk phones' SIP passwords,
call transcripts and recordings. It is written readable by its owner only (0600).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import tarfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from handoff.settings import Settings
from handoff.store import create_store_engine
from handoff.store.schema import alembic_config

FORMAT = "switchboard-backup/1"
MANIFEST = "manifest.json"
DATABASE_DIR = "database"
RECORDINGS_DIR = "recordings"
SETTINGS_DIR = "settings"
# Alembic's own bookkeeping: the manifest carries the revision instead.
_SKIPPED_TABLES = {"alembic_version"}


class BackupError(Exception):
    """A backup or restore that cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class Summary:
    archive: Path
    revision: str
    rows: dict[str, int]
    recordings: int
    settings_file: str | None


# ---- values <-> JSON ---------------------------------------------------------------------

# Timestamps and bytes have no JSON form; they travel tagged and come back as the type
# the target column has (a naive SQLite timestamp is UTC: the store writes only UTC).


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, date):
        return {"$date": value.isoformat()}
    if isinstance(value, bytes | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode()}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and len(value) == 1:
        (tag, raw), = value.items()
        if tag == "$datetime":
            moment = datetime.fromisoformat(raw)
            return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        if tag == "$date":
            return date.fromisoformat(raw)
        if tag == "$bytes":
            return base64.b64decode(raw)
    return value


# ---- backup ------------------------------------------------------------------------------


async def backup(settings: Settings, out: Path, settings_file: Path | None) -> Summary:
    """Write the installation to ``out`` (a .tar.gz); the database may be in use."""
    engine = create_store_engine(settings.database_url)
    try:
        async with engine.connect() as conn:
            revision, tables = await conn.run_sync(_read_database)
    except sa.exc.OperationalError as exc:
        raise BackupError(f"cannot read the database {_safe_url(settings)}: {exc.orig}") from exc
    finally:
        await engine.dispose()
    if revision is None:
        raise BackupError(f"the database {_safe_url(settings)} has no Switchboard schema: "
                          "nothing to back up")
    recordings_dir = settings.data_path / "recordings"
    recordings = sorted(p for p in recordings_dir.glob("*") if p.is_file()) \
        if recordings_dir.is_dir() else []
    counts = {name: len(rows) for name, rows in tables.items()}
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "created_at": datetime.now(UTC).isoformat(),
        "revision": revision,
        "database": settings.database_url.split(":", 1)[0],
        "recordings_dir": str(recordings_dir),
        "tables": counts,
        "table_order": list(tables),
        "settings_file": settings_file.name if settings_file else None,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    # Owner-only from the first byte: the archive holds password hashes and SIP secrets.
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
        _add_bytes(tar, MANIFEST, json.dumps(manifest, indent=2).encode())
        for name, rows in tables.items():
            body = "".join(json.dumps({k: _encode(v) for k, v in row.items()}) + "\n"
                           for row in rows)
            _add_bytes(tar, f"{DATABASE_DIR}/{name}.jsonl", body.encode())
        for path in recordings:
            tar.add(path, arcname=f"{RECORDINGS_DIR}/{path.name}", recursive=False)
        if settings_file is not None:
            tar.add(settings_file, arcname=f"{SETTINGS_DIR}/{settings_file.name}")
    partial.replace(out)
    return Summary(out, revision, counts, len(recordings),
                   settings_file.name if settings_file else None)


def _read_database(conn: Connection) -> tuple[str | None, dict[str, list[dict[str, Any]]]]:
    # One transaction for every table: SQLite (WAL) and PostgreSQL (repeatable read)
    # both give it one snapshot, so rows that refer to each other arrive together.
    if conn.dialect.name == "postgresql":
        conn.execution_options(isolation_level="REPEATABLE READ")
    with conn.begin():
        heads = MigrationContext.configure(conn).get_current_heads()
        metadata = sa.MetaData()
        metadata.reflect(conn)
        tables = {}
        for table in metadata.sorted_tables:
            if table.name in _SKIPPED_TABLES:
                continue
            order = list(table.primary_key.columns) or list(table.columns)
            rows = conn.execute(sa.select(table).order_by(*order)).mappings()
            tables[table.name] = [dict(row) for row in rows]
    return (heads[0] if heads else None), tables


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o600
    tar.addfile(info, io.BytesIO(data))


def _safe_url(settings: Settings) -> str:
    """The database URL without its password, for messages."""
    return sa.engine.make_url(settings.database_url).render_as_string(hide_password=True)


def default_archive(settings: Settings) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return settings.data_path / "backups" / f"switchboard-{stamp}.tar.gz"


# ---- restore -----------------------------------------------------------------------------


async def restore(settings: Settings, archive: Path) -> Summary:
    """Fill this installation, which must be empty, from ``archive``."""
    with _open_archive(archive) as tar:
        manifest = _manifest(tar, archive)
        revision = str(manifest["revision"])
        if revision not in _known_revisions():
            raise BackupError(f"{archive} was written by a newer Switchboard (schema "
                              f"{revision}); upgrade this one before restoring it")
        recordings_dir = settings.data_path / "recordings"
        if recordings_dir.is_dir() and any(recordings_dir.iterdir()):
            raise BackupError(f"{recordings_dir} is not empty: restore into a fresh "
                              "data folder (set data_dir), or move it away first")
        tables = {name: list(_rows(tar, name)) for name in manifest["table_order"]}
        old_dir = str(manifest["recordings_dir"])
        for row in tables.get("calls", []):
            # Recordings move with the data folder; the rows follow them.
            path = row.get("recording_path")
            if isinstance(path, str) and os.path.dirname(path) == old_dir:
                row["recording_path"] = str(recordings_dir / os.path.basename(path))
        engine = create_store_engine(settings.database_url)
        try:
            await _load_database(engine, revision, tables)
        finally:
            await engine.dispose()
        recordings = _extract(tar, RECORDINGS_DIR, recordings_dir)
        settings_name = manifest.get("settings_file")
        if settings_name:
            # Next to the data, never over a settings file in use: the admin decides.
            _extract(tar, SETTINGS_DIR, settings.data_path / "restored-settings")
    return Summary(archive, revision, {k: len(v) for k, v in tables.items()}, recordings,
                   str(settings_name) if settings_name else None)


@contextlib.contextmanager
def _open_archive(archive: Path) -> Iterator[tarfile.TarFile]:
    try:
        tar = tarfile.open(archive, mode="r:gz")  # noqa: SIM115 (closed below)
    except (OSError, tarfile.TarError) as exc:
        raise BackupError(f"{archive}: not a Switchboard backup ({exc})") from exc
    with tar:
        yield tar


def _manifest(tar: tarfile.TarFile, archive: Path) -> dict[str, Any]:
    try:
        member = tar.extractfile(MANIFEST)
    except KeyError:
        member = None
    if member is None:
        raise BackupError(f"{archive}: no {MANIFEST}; not a Switchboard backup")
    manifest: dict[str, Any] = json.loads(member.read())
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{archive}: format {manifest.get('format')!r}, expected {FORMAT}")
    return manifest


def _rows(tar: tarfile.TarFile, table: str) -> Iterator[dict[str, Any]]:
    member = tar.extractfile(f"{DATABASE_DIR}/{table}.jsonl")
    if member is None:
        raise BackupError(f"the archive lacks the rows of table {table}")
    for line in member:
        yield {k: _decode(v) for k, v in json.loads(line).items()}


def _known_revisions() -> set[str]:
    script = ScriptDirectory.from_config(alembic_config())
    return {rev.revision for rev in script.walk_revisions()}


async def _load_database(engine: AsyncEngine, revision: str,
                         tables: dict[str, list[dict[str, Any]]]) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(_migrate_to, revision)
        await conn.run_sync(_insert_rows, tables)
    # The rows are in; the newest migrations bring them to today's schema.
    async with engine.begin() as conn:
        await conn.run_sync(_migrate_to, "head")


def _migrate_to(conn: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = conn
    command.upgrade(config, revision)


def _insert_rows(conn: Connection, tables: dict[str, list[dict[str, Any]]]) -> None:
    metadata = sa.MetaData()
    metadata.reflect(conn)
    holding = {name: conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
               for name, table in metadata.tables.items() if name not in _SKIPPED_TABLES}
    if any(holding.values()):
        filled = ", ".join(f"{n} {name}" for name, n in holding.items() if n)
        raise BackupError(f"the database already holds data ({filled}): restore needs an "
                          "empty database (a new data_dir, or a new PostgreSQL database)")
    for name, rows in tables.items():
        if name not in metadata.tables:
            raise BackupError(f"the archive has a table {name} this schema lacks")
        if rows:
            conn.execute(metadata.tables[name].insert(), rows)
    if conn.dialect.name == "postgresql":
        _advance_sequences(conn, metadata.tables.values())


def _advance_sequences(conn: Connection, tables: Iterable[sa.Table]) -> None:
    """Rows came in with their ids; the next new row must not take one of them."""
    for table in tables:
        for column in table.primary_key.columns:
            if not isinstance(column.type, sa.Integer):
                continue
            conn.execute(sa.text(
                "SELECT setval(pg_get_serial_sequence(:t, :c), "
                f"coalesce((SELECT max({column.name}) FROM {table.name}), 0) + 1, false) "
                "WHERE pg_get_serial_sequence(:t, :c) IS NOT NULL"),
                {"t": table.name, "c": column.name})


def _extract(tar: tarfile.TarFile, folder: str, target: Path) -> int:
    """The archive's files under ``folder`` into ``target``; nothing outside it."""
    count = 0
    for member in tar.getmembers():
        path = PurePosixPath(member.name)
        if path.parts[:1] != (folder,) or not member.isfile() or len(path.parts) != 2:
            continue
        target.mkdir(parents=True, exist_ok=True)
        source = tar.extractfile(member)
        if source is None:
            continue
        # The name alone, never a path from the archive: no ../ can leave target.
        with (target / path.name).open("wb") as out:
            out.write(source.read())
        count += 1
    return count
