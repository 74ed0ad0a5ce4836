"""Restricted topics with phrases: each of an assistant's restricted topics becomes a
name and the phrases that bring it up.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03

``assistants.restricted_topics`` held a JSON list of strings that nothing read; it now
holds ``[{"name": ..., "phrases": [...]}]``. Each old string becomes a topic named by
its words (lower case, ASCII, '_' between them: what an engine may send as a handoff's
``topic``) whose one phrase is the string itself, so an admin's old list starts acting
as it reads. Downgrade keeps the names. Frozen like 0001: plain SQL and JSON, no model
imports.
"""

import re
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _name(text: str) -> str:
    plain = unicodedata.normalize("NFKD", text.casefold())
    plain = "".join(c for c in plain if not unicodedata.combining(c))
    return "_".join(re.findall(r"[a-z0-9]+", plain))[:100] or "topic"


def _rewrite(convert: Callable[[list[Any]], list[Any]]) -> None:
    # Typed as JSON on both sides, so SQLite's text and PostgreSQL's json are each read
    # and written in their own way.
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT id, restricted_topics FROM assistants")
                        .columns(id=sa.Integer, restricted_topics=sa.JSON)).all()
    update = sa.text("UPDATE assistants SET restricted_topics = :v WHERE id = :i") \
        .bindparams(sa.bindparam("v", type_=sa.JSON))
    for assistant_id, value in rows:
        bind.execute(update, {"v": convert(value or []), "i": assistant_id})


def _up(value: list[Any]) -> list[dict[str, Any]]:
    topics: dict[str, list[str]] = {}
    for item in value:
        if isinstance(item, dict):  # already the new shape
            topics.setdefault(str(item["name"]), []).extend(item.get("phrases", []))
        elif isinstance(item, str) and item.strip():
            topics.setdefault(_name(item), []).append(item.strip())
    return [{"name": n, "phrases": list(dict.fromkeys(p))} for n, p in topics.items()]


def _down(value: list[Any]) -> list[str]:
    return [str(item["name"]) if isinstance(item, dict) else str(item) for item in value]


def upgrade() -> None:
    _rewrite(_up)


def downgrade() -> None:
    _rewrite(_down)
