"""A verifiable export of the audit trail (JSON Lines), and its offline verification.

Line 1 is a header; then every event of the seals that cover the window (whole seals, so each
seal can be checked complete); then those seals, with their (event id, digest) lists; last a
manifest with the counts and a SHA-256 over every line before it, signed with the audit key.
`verify_export` needs the file and the public key only: no database, no secret.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from app.access.signing import AuditSigner, AuditVerifier
from app.domain.seals import (
    SealContent,
    SealRecord,
    canonical_json,
    canonical_time,
    event_content,
    event_digest,
)
from app.storage import seals as storage
from app.storage.retention import database_now

EXPORT_FORMAT = "agent-service-audit-export"
EXPORT_VERSION = 1
_SEAL_PAGE = 20


def _line(value: dict[str, Any]) -> bytes:
    return canonical_json(value) + b"\n"


async def export_lines(
    conn: asyncpg.Connection, signer: AuditSigner, *, since: datetime, until: datetime
) -> AsyncIterator[bytes]:
    """The export's lines, one seal page at a time. Run it in one REPEATABLE READ transaction."""
    digest = _Digest()
    window = await storage.seals_in_window(conn, since=since, until=until)
    header = {
        "type": "header",
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "since": canonical_time(since),
        "until": canonical_time(until),
        "created_at": canonical_time(await database_now(conn)),
        "key_id": signer.key_id,
    }
    yield digest.add(_line(header))
    counts = {"events": 0, "seals": 0}
    first_event = last_event = first_seal = last_seal = None
    if window is not None:
        async for seal_page in _pages(conn, *window):
            for seal in seal_page:
                for event in await storage.events_by_id(conn, seal):
                    line = {"type": "event", "seal_id": seal.id, "event": event_content(event)}
                    yield digest.add(_line(line))
                    counts["events"] += 1
                    first_event = event.id if first_event is None else min(first_event, event.id)
                    last_event = event.id if last_event is None else max(last_event, event.id)
        async for seal_page in _pages(conn, *window):
            for seal in seal_page:
                yield digest.add(_line(_seal_line(seal)))
                counts["seals"] += 1
                first_seal = first_seal or seal.id
                last_seal = seal.id
    body = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        **counts,
        "first_event_id": first_event,
        "last_event_id": last_event,
        "first_seal_id": first_seal,
        "last_seal_id": last_seal,
        "unsealed_in_window": await storage.unsealed_in_window(conn, since=since, until=until),
        "lines_digest": digest.hexdigest(),
        "key_id": signer.key_id,
    }
    yield _line({"type": "manifest", "manifest": body, "signature": signer.sign(canonical_json(body))})


async def _pages(conn: asyncpg.Connection, first: int, last: int) -> AsyncIterator[list[SealRecord]]:
    after = first - 1
    while page := await storage.seals_after(conn, after_id=after, until_id=last, limit=_SEAL_PAGE):
        yield page
        after = page[-1].id


def _seal_line(seal: SealRecord) -> dict[str, Any]:
    return {
        "type": "seal",
        "seal": seal.content.body(),
        "digest": seal.digest,
        "signature": seal.signature,
        "event_ids": list(seal.event_ids),
        "event_digests": list(seal.event_digests),
    }


class _Digest:
    """A running SHA-256 over the lines, as written."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def add(self, line: bytes) -> bytes:
        self._hash.update(line)
        return line

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


@dataclass(frozen=True, slots=True)
class ExportCheck:
    """What `verify_export` found: the figures, or the first line that does not match and why."""

    events: int
    seals: int
    line: int | None = None  # 1-based
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


class _Bad(Exception):
    def __init__(self, line: int, reason: str) -> None:
        self.line, self.reason = line, reason


def verify_export(lines: Iterable[bytes], verifier: AuditVerifier) -> ExportCheck:
    """Check an export with the public key alone; a change of any byte makes it fail, naming a line."""
    try:
        return _verify(lines, verifier)
    except _Bad as bad:
        return ExportCheck(0, 0, bad.line, bad.reason)


def _verify(lines: Iterable[bytes], verifier: AuditVerifier) -> ExportCheck:
    digest = _Digest()
    events: dict[int, tuple[int, int, str]] = {}  # event id -> (line, seal id, digest)
    seals: list[tuple[int, SealRecord]] = []
    manifest: tuple[int, dict[str, Any]] | None = None
    number = 0
    for number, raw in enumerate(lines, start=1):
        if manifest is not None:
            raise _Bad(number, "a line after the manifest")
        value = _parse(number, raw)
        kind = value.get("type")
        if number == 1:
            if kind != "header" or value.get("format") != EXPORT_FORMAT or value.get("version") != EXPORT_VERSION:
                raise _Bad(1, f"not a header of {EXPORT_FORMAT} version {EXPORT_VERSION}")
            if value.get("key_id") != verifier.key_id:
                raise _Bad(1, "the export was signed with another key than the one given")
        elif kind == "event":
            _take_event(number, value, events)
        elif kind == "seal":
            seals.append((number, _take_seal(number, value, verifier)))
        elif kind == "manifest":
            manifest = (number, value)
            continue
        else:
            raise _Bad(number, "an unknown line type")
        digest.add(raw)
    if manifest is None:
        raise _Bad(number + 1, "the manifest is missing (the export is cut short)")
    _check_chain_and_events(seals, events)  # first: a changed event or seal is named by its own line
    _check_manifest(*manifest, digest.hexdigest(), verifier, len(events), len(seals))
    return ExportCheck(len(events), len(seals))


def _parse(number: int, raw: bytes) -> dict[str, Any]:
    if not raw.endswith(b"\n"):
        raise _Bad(number, "the line does not end with a newline")
    try:
        value = json.loads(raw)
    except ValueError:
        raise _Bad(number, "not JSON") from None
    if not isinstance(value, dict):
        raise _Bad(number, "not a JSON object")
    return value


def _take_event(number: int, value: dict[str, Any], events: dict[int, tuple[int, int, str]]) -> None:
    content, seal_id = value.get("event"), value.get("seal_id")
    if not isinstance(content, dict) or not isinstance(content.get("id"), int) or not isinstance(seal_id, int):
        raise _Bad(number, "an event line without an event id or a seal id")
    if content["id"] in events:
        raise _Bad(number, f"event {content['id']} appears twice")
    events[content["id"]] = (number, seal_id, event_digest(content))


def _take_seal(number: int, value: dict[str, Any], verifier: AuditVerifier) -> SealRecord:
    try:
        content = SealContent.from_body(value["seal"])
        seal = SealRecord(
            content,
            str(value["digest"]),
            str(value["signature"]),
            tuple(int(i) for i in value["event_ids"]),
            tuple(str(d) for d in value["event_digests"]),
        )
    except (KeyError, TypeError, ValueError):
        raise _Bad(number, "a malformed seal") from None
    if not verifier.verify(seal.signature, content.signed_bytes()):
        raise _Bad(number, f"seal {content.seal_id}: the signature does not match")
    if seal.digest != content.digest or not seal.lists_match():
        raise _Bad(number, f"seal {content.seal_id}: its digest or event list is not the one it signed")
    return seal


def _check_manifest(
    number: int, value: dict[str, Any], lines_digest: str, verifier: AuditVerifier, events: int, seals: int
) -> None:
    body, signature = value.get("manifest"), value.get("signature")
    if not isinstance(body, dict) or not isinstance(signature, str):
        raise _Bad(number, "a malformed manifest")
    if not verifier.verify(signature, canonical_json(body)):
        raise _Bad(number, "the manifest's signature does not match")
    if body.get("lines_digest") != lines_digest:
        raise _Bad(number, "the lines before the manifest are not the ones it signed")
    if (body.get("events"), body.get("seals")) != (events, seals):
        raise _Bad(number, "the counts are not the manifest's")


def _check_chain_and_events(seals: list[tuple[int, SealRecord]], events: dict[int, tuple[int, int, str]]) -> None:
    listed: set[int] = set()
    previous: SealRecord | None = None
    for number, seal in seals:
        if previous is not None and seal.content.previous_digest != previous.digest:
            raise _Bad(number, f"seal {seal.id} does not follow seal {previous.id}")
        for event_id, sealed_digest in zip(seal.event_ids, seal.event_digests, strict=True):
            found = events.get(event_id)
            if found is None:
                raise _Bad(number, f"seal {seal.id} lists event {event_id}, which the export lacks")
            line, seal_id, digest = found
            if seal_id != seal.id or digest != sealed_digest:
                raise _Bad(line, f"event {event_id} does not match its digest in seal {seal.id}")
            listed.add(event_id)
        previous = seal
    for event_id, (line, _, _) in sorted(events.items(), key=lambda item: item[1][0]):
        if event_id not in listed:
            raise _Bad(line, f"event {event_id} is in no seal of the export")
