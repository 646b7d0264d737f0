"""Audit seals: the canonical content of an audit event and of a seal, and their digests. No I/O.

A seal is a signed checkpoint over a set of audit events, chained to the seal before it by
that seal's digest (AWS CloudTrail's digest files, Certificate Transparency's tree heads).
What is hashed must be byte-for-byte the same wherever it is computed (the sealer, `audit
verify`, an offline `verify-export`), so both are serialised one fixed way: JSON with sorted
keys, no spaces, ASCII only, times in UTC as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from app.domain.audit import AuditEventRecord

SEAL_FORMAT = "agent-service-audit-seal"
SEAL_VERSION = 1
# The previous digest of the first seal ever made: no seal comes before it.
GENESIS_DIGEST = "0" * 64


def canonical_json(value: Any) -> bytes:
    """The one serialisation every digest and signature here is computed over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_time(value: datetime) -> str:
    """A timestamptz as UTC with microseconds (PostgreSQL's precision), always the same length."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_content(event: AuditEventRecord) -> dict[str, Any]:
    """Every column of the event but the sealing bookkeeping (`xact`): what its digest covers.

    It is also an exported event's line, so an auditor's verification hashes exactly this.
    """
    return {
        "id": event.id,
        "occurred_at": canonical_time(event.occurred_at),
        "actor_id": None if event.actor_id is None else str(event.actor_id),
        "actor_role": None if event.actor_role is None else event.actor_role.value,
        "channel": event.channel.value,
        "action": event.action.value,
        "task_id": None if event.task_id is None else str(event.task_id),
        "outcome": event.outcome.value,
        "request_id": event.request_id,
        "detail": event.detail,
    }


def event_digest(content: dict[str, Any]) -> str:
    """The SHA-256 of an event's canonical content (`event_content`, or its exported line)."""
    return sha256_hex(canonical_json(content))


def events_digest(event_ids: Sequence[int], event_digests: Sequence[str]) -> str:
    """One digest over a seal's list of `[event id, event digest]` pairs, in id order."""
    return sha256_hex(canonical_json([[i, d] for i, d in zip(event_ids, event_digests, strict=True)]))


@dataclass(frozen=True, slots=True)
class SealContent:
    """What a seal signs: the events it covers (their count, id range, times and list digest),
    when it was made, and the digest of the seal before it.

    `xact_watermark` is the sealing transaction's snapshot xmin: the seal covers every event
    whose transaction id is below it that no earlier seal covers, and no such event can commit
    later. `first_event_id`/`last_event_id` are the lowest and highest ids covered; with late
    commits, seals' id ranges may interleave, so the list of (id, digest) pairs is what counts.
    """

    seal_id: int
    sealed_at: datetime
    xact_watermark: int
    first_event_id: int
    last_event_id: int
    event_count: int
    first_occurred_at: datetime
    last_occurred_at: datetime
    events_digest: str
    previous_digest: str
    key_id: str

    def body(self) -> dict[str, Any]:
        return {
            "format": SEAL_FORMAT,
            "version": SEAL_VERSION,
            "seal_id": self.seal_id,
            "sealed_at": canonical_time(self.sealed_at),
            "xact_watermark": self.xact_watermark,
            "first_event_id": self.first_event_id,
            "last_event_id": self.last_event_id,
            "event_count": self.event_count,
            "first_occurred_at": canonical_time(self.first_occurred_at),
            "last_occurred_at": canonical_time(self.last_occurred_at),
            "events_digest": self.events_digest,
            "previous_digest": self.previous_digest,
            "key_id": self.key_id,
        }

    def signed_bytes(self) -> bytes:
        return canonical_json(self.body())

    @property
    def digest(self) -> str:
        """The seal's own digest: what the next seal names as its previous digest."""
        return sha256_hex(self.signed_bytes())

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> SealContent:
        """The content back from its body (an exported seal line); `KeyError`/`ValueError` when malformed."""
        if body["format"] != SEAL_FORMAT or body["version"] != SEAL_VERSION:
            raise ValueError("not a seal of this format")
        return cls(
            seal_id=int(body["seal_id"]),
            sealed_at=datetime.fromisoformat(body["sealed_at"]),
            xact_watermark=int(body["xact_watermark"]),
            first_event_id=int(body["first_event_id"]),
            last_event_id=int(body["last_event_id"]),
            event_count=int(body["event_count"]),
            first_occurred_at=datetime.fromisoformat(body["first_occurred_at"]),
            last_occurred_at=datetime.fromisoformat(body["last_occurred_at"]),
            events_digest=str(body["events_digest"]),
            previous_digest=str(body["previous_digest"]),
            key_id=str(body["key_id"]),
        )


def seal_over(
    events: Sequence[AuditEventRecord],
    *,
    seal_id: int,
    sealed_at: datetime,
    xact_watermark: int,
    previous_digest: str,
    key_id: str,
    digests: Sequence[str] | None = None,
) -> tuple[SealContent, tuple[int, ...], tuple[str, ...]]:
    """A new seal's content over `events` (at least one, in id order), and its (id, digest) lists.
    `digests`: the events' digests, when the caller has computed them already (in slices)."""
    ids = tuple(event.id for event in events)
    digests = tuple(digests) if digests is not None else tuple(event_digest(event_content(e)) for e in events)
    times = [event.occurred_at for event in events]
    content = SealContent(
        seal_id=seal_id,
        sealed_at=sealed_at,
        xact_watermark=xact_watermark,
        first_event_id=ids[0],
        last_event_id=ids[-1],
        event_count=len(ids),
        first_occurred_at=min(times),
        last_occurred_at=max(times),
        events_digest=events_digest(ids, digests),
        previous_digest=previous_digest,
        key_id=key_id,
    )
    return content, ids, digests


@dataclass(frozen=True, slots=True)
class SealRecord:
    """One `audit_seal` row as stored: to be checked, never trusted. The lists may be left
    unloaded (empty) where only the signed content is wanted (listing seals)."""

    content: SealContent
    digest: str
    signature: str  # base64 of the Ed25519 signature over `content.signed_bytes()`
    event_ids: tuple[int, ...] = ()
    event_digests: tuple[str, ...] = ()

    @property
    def id(self) -> int:
        return self.content.seal_id

    def lists_match(self) -> bool:
        """Whether the stored (id, digest) lists are the ones the signed content describes."""
        ids = self.event_ids
        return (
            len(ids) == len(self.event_digests) == self.content.event_count
            and ids == tuple(sorted(set(ids)))
            and bool(ids)
            and (ids[0], ids[-1]) == (self.content.first_event_id, self.content.last_event_id)
            and events_digest(ids, self.event_digests) == self.content.events_digest
        )
