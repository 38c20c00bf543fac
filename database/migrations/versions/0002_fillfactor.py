"""room on every page for HOT updates of users and orders

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 01:40:00

Nearly every event rewrites a row that already exists. With full pages (the default fillfactor
of 100) each rewrite moves the row to another page and inserts a new entry into every index of
the table. With a quarter of each page kept free, PostgreSQL can put the new version on the same
page and skip the index writes when no indexed column changed (a HOT update): measured on a
batch of 10,000 order upserts, 30 to 40% less execution time and WAL (bench/README.md).
Only pages written from now on get the room: run VACUUM FULL on existing tables to repack them.
"""
from typing import Sequence, Union

from alembic import op


revision: str = '0002'
down_revision: Union[str, None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

FILLFACTOR = 75


def upgrade() -> None:
    for table in ("users", "orders"):
        op.execute(f"ALTER TABLE {table} SET (fillfactor = {FILLFACTOR})")


def downgrade() -> None:
    for table in ("users", "orders"):
        op.execute(f"ALTER TABLE {table} RESET (fillfactor)")
