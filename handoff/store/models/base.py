"""What every table shares: the declarative base and its naming convention, the column
types (UTC timestamps, enums stored as their values) and the column lengths."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase

# Short state names are stored as their lowercase values in a plain VARCHAR (no native
# PostgreSQL ENUM type): adding a state then needs no ALTER TYPE migration.
ENUM_LENGTH = 32
# An ARI channel or bridge id ("1700000000.42" or a uuid we pass in).
ARI_ID_LENGTH = 128
# A cluster node's name (cluster.node).
NODE_NAME_LENGTH = 64
PHONE_NUMBER_LENGTH = 64
# host:port of an AI engine's AudioSocket listener (a DNS name may be long).
ENGINE_ADDRESS_LENGTH = 300

EnumT = TypeVar("EnumT", bound=enum.StrEnum)


def enum_type(enum_class: type[EnumT]) -> sa.Enum:
    return sa.Enum(
        enum_class,
        native_enum=False,
        create_constraint=False,
        length=ENUM_LENGTH,
        values_callable=lambda members: [member.value for member in members],
        validate_strings=True,
    )


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python.

    SQLite keeps no offset, so values are normalised to UTC on the way in and tagged
    UTC on the way out; a naive datetime is refused rather than guessed at.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: store timestamps in UTC")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime()}
    # Stable constraint names, identical on SQLite and PostgreSQL, so later migrations
    # can drop or alter them by name.
    metadata = sa.MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
