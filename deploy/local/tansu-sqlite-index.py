#!/usr/bin/env python3
"""Adds the index the tansu 0.6.0 SQLite storage lacks: its `header` table has no index on
(topition, offset_id), so every record a consumer fetches scans every header of every topic,
and the broker slows to a few dozen records per second as the log grows (our records carry four
headers each). Waits (bounded) for tansu to create its schema, then creates the index once;
idempotent. Usage: tansu-sqlite-index.py <path to tansu.db> [timeout seconds]"""

import sqlite3
import sys
import time

path = sys.argv[1]
deadline = time.monotonic() + float(sys.argv[2] if len(sys.argv) > 2 else 30)
while True:
    try:
        db = sqlite3.connect(path, timeout=30)
        if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'header'").fetchone():
            db.execute("CREATE INDEX IF NOT EXISTS healthplane_header_record ON header (topition, offset_id)")
            db.commit()
            break
        db.close()
    except sqlite3.Error as e:
        if time.monotonic() > deadline:
            sys.exit(f"cannot index the broker's headers in {path}: {e}")
    if time.monotonic() > deadline:
        sys.exit(f"the broker did not create its schema in {path}")
    time.sleep(0.2)
