"""Content negotiation for the endpoint: which format a request is in (Content-Type) and
which one to answer in (Accept). Pure functions of the header values; no HTTP here."""

from __future__ import annotations

from typing import Dict, Optional, Tuple

JSON = "application/json"
JSON_LINES = "application/jsonlines"
# Media types accepted for each format (Content-Type and Accept), canonical name first.
FORMATS: Dict[str, Tuple[str, ...]] = {
    JSON: (JSON,),
    JSON_LINES: (JSON_LINES, "application/x-jsonlines", "application/jsonl"),
}


def media_type(header: str) -> str:
    """The media type of a Content-Type header, lower-cased and without parameters."""
    return header.split(";", 1)[0].strip().lower()


def format_of(media: str) -> Optional[str]:
    """The format (a key of FORMATS) a media type names, or None if it names neither."""
    for name, aliases in FORMATS.items():
        if media in aliases:
            return name
    return None


def accepted(accept: str, natural: str) -> Optional[str]:
    """The response format from an Accept header: the request's own format unless the
    client prefers (or only takes) the other one; None if it takes neither."""
    if not accept.strip():
        return natural
    order = [natural] + [name for name in FORMATS if name != natural]
    best, best_q = None, 0.0
    for item in accept.split(","):
        parts = [p.strip() for p in item.split(";")]
        media = parts[0].lower()
        q = 1.0
        for param in parts[1:]:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q <= 0:
            continue
        if media in ("*/*", "application/*"):
            candidates = order
        else:
            name = format_of(media)
            candidates = [name] if name else []
        for name in candidates:
            if q > best_q or (q == best_q and best is not None
                              and order.index(name) < order.index(best)):
                best, best_q = name, q
    return best
