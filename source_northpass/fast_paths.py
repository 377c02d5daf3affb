"""Work a sync repeats for every record or every request without need, done once or cheaply.

The entry point (`run.py`) installs these; where Airbyte's manifest runner starts the connector
they are not installed, and everything works the same, only slower. Each one changes where an
answer comes from, never the answer; `unit_tests/test_fast_paths.py` compares both ways. Why
Python, and why patch: the code is the CDK's and requests', built by the CDK from the manifest,
and no manifest field reaches it. Measured with `make bench-cpu` (pages of 100 records).

1. The cursor's date parsing, per record. For every record of an incremental stream the CDK's
   concurrent cursor parses `updated_at` (`ConcurrentCursor.observe` -> `DatetimeParser.parse`)
   with `datetime.strptime`: a regular expression per call, in pure Python, under a lock the
   worker threads take in turn: 7-8 microseconds of the 50-60 a record cost, the largest single
   item of a CPU-bound sync. Northpass stamps are always `2020-03-31T17:15:17Z` (the manifest's
   `datetime_format`); for a string of exactly that shape (20 ASCII characters, digits and
   separators in place) the fields are read by position and given to `datetime`, which checks
   their ranges. Anything else, and any value `datetime` refuses, goes to the CDK's parser, so
   results and errors stay the CDK's.

2. Proxy settings, per request. requests looks for proxies in the environment for every request
   (`Session.merge_environment_settings` -> `get_environ_proxies`), decoding every environment
   variable twice: about 0.2 ms of the ~1.3 ms of CPU a request costs with 35 variables, more in
   a container with many. Here the answer is kept per scheme, host and `no_proxy`, as the
   environment of a connector's process does not change while it runs (curl, for one, also reads
   it once). Proxies, `no_proxy` and certificate settings are honoured exactly as before.
"""

from datetime import datetime, timezone
from typing import Any, Callable, Dict, Optional, Tuple
from urllib.parse import urlsplit

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
    """Both shortcuts. True if both are in place (False: a library changed shape, and what it no
    longer offers is left unpatched)."""
    return all([cursor_datetimes(), proxies_read_once()])


def cursor_datetimes() -> bool:
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


def proxies_read_once() -> bool:
    """Keep requests' answer to "which proxies for this URL" per scheme, host and no_proxy. True if
    installed (or already in place); False if requests changed shape (nothing is patched)."""
    try:
        from requests import sessions
    except ImportError:
        return False
    read = getattr(sessions, "get_environ_proxies", None)
    if read is None:
        return False
    if getattr(read, "northpass_read_once", False):
        return True
    answers: Dict[Tuple[str, str, Optional[str]], Dict[str, str]] = {}

    def get_environ_proxies(url: str, no_proxy: Optional[str] = None) -> Dict[str, str]:
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc, no_proxy)
        answer = answers.get(key)
        if answer is None:
            if len(answers) > 64:  # a connector talks to one or two hosts; never grow without bound
                answers.clear()
            answer = answers[key] = read(url, no_proxy=no_proxy)
        return dict(answer)

    get_environ_proxies.northpass_read_once = True  # type: ignore[attr-defined]
    get_environ_proxies.requests_read = read  # type: ignore[attr-defined]
    sessions.get_environ_proxies = get_environ_proxies
    return True
