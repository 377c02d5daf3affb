"""The CDK cursor's per-record date parsing, without `strptime`.

For every record of an incremental stream the CDK's concurrent cursor parses the record's
`updated_at` (`ConcurrentCursor.observe` -> `DatetimeParser.parse`), with `datetime.strptime`:
a regular expression per call, in pure Python, under a lock that the worker threads take in
turn. That was 7-8 microseconds of the 50-60 a record costs, the largest single item of a
CPU-bound sync (16,000-19,000 records/s before, 20,000-21,000 after; `make bench-cpu`).

Northpass stamps are always `2020-03-31T17:15:17Z`, the manifest's `datetime_format`. For a
string of exactly that shape (20 ASCII characters, digits and separators in place) the fields
are read by position and given to `datetime`, which checks their ranges; anything else, and any
value `datetime` refuses, goes to the CDK's own parser unchanged, so its result and its errors
are the CDK's. `unit_tests/test_fast_cursor.py` compares the two on edge cases and on random
strings of the shape.

Why Python, and why patch: the cursor and its parser are built by the CDK's factory from the
manifest's DatetimeBasedCursor, and no manifest field chooses the parser. The patch is installed
by the entry point (`run.py`) only; where Airbyte's manifest runner starts the connector the CDK's
parser runs as it is, with the same results, only slower.
"""

from datetime import datetime, timezone
from typing import Any, Callable, Optional

NORTHPASS_DATETIME = "%Y-%m-%dT%H:%M:%SZ"
_UTC = timezone.utc


def parse_northpass_datetime(value: Any) -> Optional[datetime]:
    """`value` as an aware UTC datetime if it has exactly the shape of NORTHPASS_DATETIME and is
    a valid date; None otherwise (the caller then asks strptime, for its answer or its error)."""
    if (
        type(value) is not str
        or len(value) != 20
        or not value.isascii()
        or value[4] != "-"
        or value[7] != "-"
        or value[10] != "T"
        or value[13] != ":"
        or value[16] != ":"
        or value[19] != "Z"
    ):
        return None
    year, month, day, hour, minute, second = (
        value[0:4], value[5:7], value[8:10], value[11:13], value[14:16], value[17:19]
    )
    if not (year + month + day + hour + minute + second).isdigit():
        return None
    try:
        return datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=_UTC)
    except ValueError:
        return None


def install() -> bool:
    """Give the CDK's DatetimeParser a fast path for NORTHPASS_DATETIME. True if installed (or
    already in place); False if the CDK's parser is not where it was (nothing is patched)."""
    try:
        from airbyte_cdk.sources.declarative.datetime.datetime_parser import DatetimeParser
    except ImportError:
        return False
    cdk_parse: Callable[..., datetime] = DatetimeParser.parse
    if getattr(cdk_parse, "northpass_fast_path", False):
        return True

    def parse(self: Any, date: Any, format: str) -> datetime:
        if format == NORTHPASS_DATETIME:
            parsed = parse_northpass_datetime(date)
            if parsed is not None:
                return parsed
        return cdk_parse(self, date, format)

    parse.northpass_fast_path = True  # type: ignore[attr-defined]
    parse.cdk_parse = cdk_parse  # type: ignore[attr-defined]
    parse.__doc__ = cdk_parse.__doc__
    DatetimeParser.parse = parse  # type: ignore[method-assign]
    return True
