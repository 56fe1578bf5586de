"""jobs.progress (where a running job stands within its epoch); versions.best_epoch,
stop_reason and validation (the epoch whose weights a version keeps, why training
stopped, and the validation scores recorded at that epoch)

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.add_column(sa.Column("progress", sa.JSON(), nullable=True))
    with op.batch_alter_table("versions") as batch_op:
        batch_op.add_column(sa.Column("best_epoch", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("stop_reason", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("validation", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("versions") as batch_op:
        batch_op.drop_column("validation")
        batch_op.drop_column("stop_reason")
        batch_op.drop_column("best_epoch")
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_column("progress")
