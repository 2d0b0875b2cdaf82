"""The data contract: typed records between stages and Arrow schemas of the output tables."""

from schemas.records import (
    RAW_EXCERPT_LIMIT,
    STATUS_APPLIED,
    STATUS_FAILED,
    STATUS_SKIPPED_EMPTY,
    STATUS_SKIPPED_LANGUAGE,
    DeadLetter,
    Entity,
    GeoPlace,
    RawRecord,
    Story,
    Topic,
    sha256_hex,
)
from schemas.tables import ENTITIES, ERRORS, EVENTS, SCHEMA_VERSION, TABLES, entity_rows, error_row, event_row

__all__ = [
    "RAW_EXCERPT_LIMIT", "STATUS_APPLIED", "STATUS_FAILED", "STATUS_SKIPPED_EMPTY", "STATUS_SKIPPED_LANGUAGE",
    "DeadLetter", "Entity", "GeoPlace", "RawRecord", "Story", "Topic", "sha256_hex",
    "ENTITIES", "ERRORS", "EVENTS", "SCHEMA_VERSION", "TABLES", "entity_rows", "error_row", "event_row",
]
