"""The failed tests in an SQLite store's file, read raw (as another process would)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from probed.store import failures
from probed.store.failures import Record


def stored_failures(
    db: Path, service: str | None = None, check: str | None = None
) -> list[tuple[Record, str]]:
    """(record, reason) of every failed test, of one check when named, by time."""
    conn = sqlite3.connect(db)
    try:
        texts = {int(i): str(t) for i, t in conn.execute("SELECT id, text FROM texts")}
        rows = conn.execute(
            "SELECT f.location, f.week, f.data FROM failure_weeks f JOIN checks c"
            " ON c.id = f.check_id WHERE (? IS NULL OR c.service = ?) AND (? IS NULL OR c.name = ?)",
            (service, service, check, check),
        ).fetchall()
    finally:
        conn.close()
    found = sorted((r for _, r in failures.decode_rows(rows)), key=lambda r: r.at)
    return [(r, texts.get(r.reason, "")) for r in found]
