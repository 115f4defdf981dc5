"""The one decoder for JSON that users hand in: hyperparameters and tuning files, inference
configurations, model folders' files, channels' records, requests.

Every reader decodes with orjson, so all follow the same rules: strict JSON (no NaN or
Infinity literals), UTF-8, and nesting capped at MAX_DEPTH levels. Python's json has no cap
of its own: JSON nested a thousand deep raises RecursionError there, not a decoding error.
Every failure is a `json.JSONDecodeError` (orjson's subclasses it: msg, lineno, colno),
which each reader turns into the typed error of what it reads.
"""

from __future__ import annotations

import json
import re
import reprlib
from typing import Any, Union

import orjson

MAX_DEPTH = 1024  # orjson's own limit: deeper nesting is a decoding error

# Line breaks and control characters: JSON text leaves U+0085, U+2028 and U+2029 as they
# are, and str.splitlines breaks on them.
_BREAKS = re.compile("[\x00-\x1f\x7f\x85\u2028\u2029]")

_OUTLINE = reprlib.Repr()
_OUTLINE.maxlevel = 3
_OUTLINE.maxstring = _OUTLINE.maxother = 80


def loads(data: Union[bytes, str]) -> Any:
    """Decode one JSON document; raise json.JSONDecodeError for anything that is not JSON
    or is nested more than MAX_DEPTH levels deep."""
    return orjson.loads(data)



def outline(value: Any) -> str:
    """A short repr of any value with its nesting cut after a few levels (`[[[[...]]]]`),
    for messages: repr() and json.dumps() of a value nested hundreds deep raise
    RecursionError."""
    return _OUTLINE.repr(value)


def show(value: Any) -> str:
    """A decoded value as JSON text (Python json's spacing) for messages; its outline when
    it is nested too deep to write."""
    try:
        return json.dumps(value)
    except RecursionError:
        return outline(value)


def one_line(text: str) -> str:
    """`text` with line breaks and control characters escaped as JSON escapes them (\\n,
    \\u0000, \\u2028), so a message quoting a user's value stays one line."""
    return _BREAKS.sub(lambda match: json.dumps(match.group(), ensure_ascii=True)[1:-1], text)
