"""Custom components for source-northpass: only what the declarative manifest cannot say.

Airbyte injects this one file into its manifest runner, so it imports only the standard library and
airbyte-cdk. Each docstring names the built-in it stands in for and where that built-in falls short.
"""

import atexit
import gc
import ipaddress
import copy
import itertools
import json
import logging
import queue
import threading
from collections import Counter
from dataclasses import InitVar, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Iterator, Mapping, MutableMapping, NamedTuple
from urllib.parse import urlsplit

import orjson
import requests

from airbyte_cdk.models import FailureType
from airbyte_cdk.sources.connector_state_manager import ConnectorStateManager
from airbyte_cdk.sources.declarative.extractors.record_extractor import RecordExtractor
from airbyte_cdk.sources.declarative.interpolation.interpolated_string import InterpolatedString
from airbyte_cdk.sources.declarative.migrations.state_migration import StateMigration
from airbyte_cdk.sources.declarative.requesters.paginators import PaginationStrategy
from airbyte_cdk.sources.declarative.retrievers.simple_retriever import SimpleRetriever
from airbyte_cdk.sources.declarative.validators.validation_strategy import ValidationStrategy
from airbyte_cdk.sources.types import Config, Record, StreamSlice
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

logger = logging.getLogger("airbyte")

# The interpreter's last collection at exit walks every object the CDK built, to free what the
# process's end frees anyway: 0.25-0.3 s of each sync under the manifest runner (docs/benchmarks.md).
atexit.register(gc.freeze)


def _failure(message: str, failure_type: FailureType = FailureType.system_error) -> AirbyteTracedException:
    return AirbyteTracedException(message=message, failure_type=failure_type)


def _config_error(message: str) -> AirbyteTracedException:
    return _failure(message, FailureType.config_error)


def _document(response: requests.Response) -> Any:  # the JSON body, or {} when it is not JSON
    try:
        return orjson.loads(response.content)  # airbyte-cdk's own JSON library: a third of json's time
    except ValueError:
        return {}


def _said(response: requests.Response) -> str:  # Northpass's own words about an error response
    document = _document(response)
    errors = document.get("errors") if isinstance(document, dict) else None
    first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
    return str(first.get("detail") or first.get("title") or "no detail")[:300]


def _whole(record: Mapping[str, Any]) -> bytes:  # a record as a whole: a changed record is another
    return orjson.dumps(dict(record), option=orjson.OPT_SORT_KEYS)


def _identity(record: Mapping[str, Any]) -> str:
    """What tells one record of a list from another: its id, or for a record without one (an event of
    the activity feed) the whole record. Two events may share every field of their key, or every field
    at all, and still be two events: callers count identities, and never take a match of the key alone."""
    record_id = record.get("id")
    return str(record_id) if record_id is not None else _whole(record).decode()


def _rendered_int(value: int | str, config: Config, parameters: Mapping[str, Any]) -> int:
    return int(InterpolatedString.create(str(value), parameters=parameters).eval(config))


class _ThisSync:
    """What one sync learns about the account, shared by every stream (and every parent read): which
    spelling of a path answers, which warnings were given. Airbyte runs each command in a process of
    its own, so this lives exactly as long as one sync."""

    def __init__(self) -> None:
        self.lock, self.trying = threading.Lock(), threading.Lock()
        self.spellings: dict[str, str] = {}  # a path_variants key -> the spelling that answered
        self.warned: set = set()
        self.started = datetime.now(timezone.utc)
        self.read: set = set()  # (stream, parent id) read this sync (NorthpassListRetriever.once_per)

    def warn_once(self, key: Any, message: str) -> None:
        with self.lock:
            if key in self.warned:
                return
            self.warned.add(key)
        logger.warning(message)

    def send(self, variants: Mapping[str, list], endpoint: str, stream_slice: StreamSlice, send: Callable) -> Any:
        """One request of `endpoint`, whose `{key}` segment Northpass spells in more than one way
        (the manifest's `path_variants`, most likely first): in the spelling that answered this sync,
        else in each in turn while they answer 404. Only an answer decides: a 404 may be a deleted parent."""
        key = next((k for k in variants if "{%s}" % k in endpoint), None)

        def spelled(spelling: str) -> StreamSlice:
            partition = {**stream_slice.partition, key: spelling}
            return StreamSlice(partition=partition, cursor_slice=stream_slice.cursor_slice, extra_fields=stream_slice.extra_fields)

        if key is None:
            return send(stream_slice)
        if key in self.spellings:
            return send(spelled(self.spellings[key]))
        with self.trying:  # one stream tries at a time: a fallback costs one request, not one per worker
            for spelling in [self.spellings[key]] if key in self.spellings else variants[key]:
                response = send(spelled(spelling))
                if response is None or response.status_code != 404:
                    break
            if response is not None and response.ok:
                self.spellings[key] = spelling
        return response


SYNC = _ThisSync()


def _vanished(stream: str, page: int, response: requests.Response) -> AirbyteTracedException:
    return _failure(
        f"Stream {stream}: Northpass answered page {page} of {urlsplit(response.url).path} with HTTP "
        f"{response.status_code} ({_said(response)}): the list went away while it was read. Failing rather "
        "than sync part of it; the next sync reads it again."
    )


LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


def _is_loopback(host: str) -> bool:
    try:
        return host.lower() in LOOPBACK_NAMES or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class BaseUrlValidation(ValidationStrategy):
    """`base_url` must be https, or plain http to a loopback host (tests, local proxies), so the key
    never travels in clear. ValidateAdheresToSchema (or the spec's `pattern`) can only answer "does
    not match <regex>"; this says what is wrong, before any request."""

    def validate(self, value: Any) -> None:
        try:
            parts = urlsplit(value.strip())
            host, _ = parts.hostname or "", parts.port  # a malformed port raises ValueError
        except (AttributeError, ValueError):
            raise _config_error(f"base_url {value!r} is not a URL such as https://api.northpass.com.") from None
        if parts.scheme not in ("http", "https") or not host:
            raise _config_error(f"base_url {value!r} is not a URL: it must start with https:// and name a host.")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise _config_error("base_url must not contain a user name, password, query string or fragment.")
        if parts.scheme == "http" and not _is_loopback(host):
            raise _config_error(
                f"base_url {value!r} uses plain http:// to a host that is not this machine; the API key would "
                "travel unencrypted. Use https://, or http:// only for localhost/127.0.0.1/[::1]."
            )


def parse_datetime(value: str) -> datetime:
    """An ISO 8601 date or datetime in UTC; a date means midnight, no zone means UTC."""
    text = value.strip()
    if len(text) == 10:
        parsed = datetime.strptime(text, "%Y-%m-%d")
    else:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)


@dataclass
class StartDateValidation(ValidationStrategy):
    """`start_date` must be an ISO 8601 date or datetime. A regex (ValidateAdheresToSchema, or the
    spec's `pattern`) cannot refuse 2024-02-30, and its message would be the regex."""

    def validate(self, value: Any) -> None:
        try:
            if value not in (None, ""):
                parse_datetime(value)
        except (AttributeError, TypeError, ValueError):
            raise _config_error(f"start_date {value!r} is not an ISO 8601 date or datetime (2024-01-31).") from None


@dataclass
class JsonApiRecordExtractor(RecordExtractor):
    """A JSON:API resource as one flat record: its `attributes` at the top level, with `id`,
    `type`, `links` and `relationships` kept, as the public Northpass connector emits them.

    DpathExtractor on `data` with DpathFlattenFields on `attributes` agrees only when nothing
    collides: an attribute named `id` or `type` leaves every attribute nested, `attributes: null`
    stays, a missing `links` stays missing (unit_tests/test_records.py compares the two).
    """

    parameters: InitVar[Mapping[str, Any]]

    def extract_records(self, response: requests.Response) -> Iterable[MutableMapping[str, Any]]:
        document = _document(response)
        data = document.get("data") if isinstance(document, dict) else None
        if not isinstance(data, (list, dict)):  # never an empty page
            raise _failure(f"Northpass answered {urlsplit(response.url).path} without a JSON:API data array.")
        for resource in [data] if isinstance(data, dict) else data:
            record = dict(resource.get("attributes") or {})
            for member in ("id", "type", "links", "relationships"):
                record[member] = resource.get(member)
            yield record


def has_next_page(document: Any, count: int, limit: int, fullest: int) -> bool:
    """Whether a list goes on after a page of `count` records, `fullest` being the stream's largest
    page before it. `links.next` says so; a short page proves nothing (Northpass may clamp `limit`).
    Without `links` (a proxy that drops them) the pages are the evidence: one as full as `limit`
    or as the fullest (a clamping server's size), or a stream's first, may have a next one."""
    links = document.get("links") if isinstance(document, dict) else None
    if isinstance(links, dict):
        return bool(links.get("next"))
    SYNC.warn_once("no links", "Northpass answers without JSON:API links; each list is read until a page comes back short.")
    return count > 0 and count >= min(limit, fullest or count)


class _RepeatedPageGuard:
    """A page answering with the records of the page before (a proxy cache, `page` ignored) is asked
    for again; after `max_repeats` repeats the stream fails: a list neither loops nor ends early."""

    def __init__(self, max_repeats: int = 2) -> None:
        self.max_repeats, self.previous, self.repeats = max_repeats, None, 0

    def is_repeat(self, ids: tuple, page: int, where: str) -> bool:
        if ids != self.previous:
            self.previous, self.repeats = ids, 0
            return False
        self.repeats += 1
        if self.repeats > self.max_repeats:
            raise _failure(f"Northpass kept answering page {page} of {where} with the page before it; stopping.")
        logger.warning(f"Page {page} of {where} repeated the previous page; requesting it again.")
        return True


@dataclass
class NextLinkPageNumber(PaginationStrategy):
    """Page numbers (`page=1, 2, ...`) for as long as the document has a `links.next`.

    PageIncrement ends a list at its first short page, and Northpass may clamp `limit` silently;
    CursorPagination could follow `links.next`, but neither notices a server answering every page
    alike (an endless loop) nor a document without links (has_next_page). Each partition (the
    slice the CDK passes) has its repeat guard until its list ends; the fullest page is the
    stream's (a lost update between threads costs a request, never a record).
    """

    config: Config
    page_size: int | str
    parameters: InitVar[Mapping[str, Any]]
    _guards: dict = field(init=False, repr=False, default_factory=dict)
    _fullest: int = field(init=False, repr=False, default=0)

    def __post_init__(self, parameters: Mapping[str, Any]) -> None:
        self._page_size = _rendered_int(self.page_size, self.config, parameters)

    @property
    def initial_token(self) -> Any:
        return 1

    def get_page_size(self) -> int:
        return self._page_size

    def next_page_token(
        self,
        response: requests.Response,
        last_page_size: int,
        last_record: Record | None,
        last_page_token_value: Any = None,
        page_size_override: int | None = None,
        stream_slice: StreamSlice | None = None,
    ) -> Any:
        page = int(last_page_token_value or 1)
        partition = json.dumps(dict(stream_slice.partition) if stream_slice else {}, sort_keys=True, default=str)
        document = _document(response)
        data = document.get("data") if isinstance(document, dict) else None
        data = data if isinstance(data, list) else []
        has_next = has_next_page(document, len(data), page_size_override or self._page_size, self._fullest)
        self._fullest = max(self._fullest, len(data))
        if not has_next:
            self._guards.pop(partition, None)
            return None
        if page == 1 or partition not in self._guards:
            self._guards[partition] = _RepeatedPageGuard()
        ids = tuple(_identity(r) for r in data if isinstance(r, dict))
        return page if self._guards[partition].is_repeat(ids, page, urlsplit(response.url).path) else page + 1


def _instant(value: Any) -> datetime | None:  # a record's updated_at; None when absent or unreadable
    try:
        return parse_datetime(value) if isinstance(value, str) and value else None
    except ValueError:
        return None


def _format(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class UpdatedAtState(StateMigration):
    """A saved state is accepted only in its documented shape, `{"updated_at": "<ISO 8601>"}`,
    normalised to UTC seconds. The CDK's cursor fails on a malformed value with a generic error;
    this names the stream and what to do. The CDK's own concurrent state format passes untouched."""

    parameters: InitVar[Mapping[str, Any]]
    cursor_field: str = "updated_at"

    def __post_init__(self, parameters: Mapping[str, Any]) -> None:
        self.stream = parameters.get("name", "this stream")

    def should_migrate(self, stream_state: Mapping[str, Any]) -> bool:
        return bool(stream_state) and "state_type" not in stream_state

    def migrate(self, stream_state: Mapping[str, Any]) -> Mapping[str, Any]:
        moment = _instant(stream_state.get(self.cursor_field))
        if moment is None or set(stream_state) != {self.cursor_field}:
            raise _config_error(
                f"The saved state of stream {self.stream} is {json.dumps(dict(stream_state))[:200]}, not "
                f'{{"{self.cursor_field}": "<ISO 8601 datetime>"}}. Reset the stream (a full read) or fix the '
                "state to that shape."
            )
        return {self.cursor_field: _format(moment)}


class _ServerIgnoresQuery(Exception):
    """The server answered as if a filter or sort parameter were not there, or refused it."""


class _Checkpoint(NamedTuple):  # every record of `walk` updated before `moment` has been yielded
    walk: Any
    moment: datetime


class _FirstPages(NamedTuple):  # the walk's first pages are read: whether it goes on, its round trip, its first query
    has_next: bool
    seconds: float
    filters: dict


class _Refused(Exception):
    """A list's first request answered 403 or 404: the account's plan, or the account, lacks it."""

    def __init__(self, response: requests.Response, tried: list[str]):
        super().__init__()
        self.status, self.said, self.where = response.status_code, _said(response), " and ".join(tried)


def _skip_refused(stream: str, config: Config, words: str) -> None:
    """A top-level list refused on its first request: skipped with one warning, or a config_error."""
    if not config.get("skip_unavailable_streams", True):
        raise _config_error(f"Stream {stream}: {words}. Grant the API key access, or deselect the stream.")
    SYNC.warn_once(
        ("refused", stream),
        f"Stream {stream} skipped: {words}, as for a list the account's plan does not include. The sync goes "
        "on without it (and without the lists under it); its state is unchanged.",
    )


def _answered(response: requests.Response) -> str:
    return f"Northpass answered {urlsplit(response.url).path} with HTTP {response.status_code} ({_said(response)})"


@dataclass
class NorthpassListRetriever(SimpleRetriever):
    """SimpleRetriever for a list read by page number (a course's enrollments, a group's people, the
    quizzes), with what an error handler cannot do, as a response filter sees one response and not
    which page it answers: a path Northpass spells two ways (`path_variants`) is asked again in the next
    spelling on a 404; a 403 or 404 on a first page skips the list with a warning (a top-level one as
    skip_unavailable_streams says). On a later page the list went away while it was read, and the
    stream fails: a part of a list is not the list. `once_per` a partition field: a parent named again
    (a learner changed and active, or active again) is read once per sync (the CDK drops a partition
    only while its twin is open). `absent_after` first pages answering 404 and none 2xx (for parents
    just listed): the endpoint does not exist, and is not asked again this sync.
    """

    path_variants: Mapping[str, list] = field(default_factory=dict)
    once_per: str = ""
    absent_after: int = 0

    def __post_init__(self, parameters: Mapping[str, Any]) -> None:
        super().__post_init__(parameters)
        self.endpoint = parameters.get("endpoint", "")
        self.answers, self.absent = 0, 0  # first pages answered 2xx and 404

    def read_records(self, records_schema: Mapping[str, Any], stream_slice: StreamSlice | None = None) -> Iterable[Any]:
        if stream_slice is not None and self.once_per:
            with SYNC.lock:
                key = (self.name, str(stream_slice.partition.get(self.once_per)))
                if key in SYNC.read:
                    return
                SYNC.read.add(key)
        yield from super().read_records(records_schema, stream_slice)

    def _fetch_next_page(
        self, stream_slice: StreamSlice, next_page_token: Mapping[str, Any] | None = None, page_size_override=None
    ) -> requests.Response | None:
        def send(spelled: StreamSlice) -> requests.Response | None:
            return SimpleRetriever._fetch_next_page(self, spelled, next_page_token, page_size_override)

        if ("absent", self.name) in SYNC.warned:
            return None
        response = SYNC.send(self.path_variants, self.endpoint, stream_slice, send)
        page = int((next_page_token or {}).get("next_page_token") or 1)
        if response is not None and response.ok and page == 1:
            self.answers += 1
        if response is not None and response.status_code in (403, 404):
            if page > 1:
                raise _vanished(self.name, page, response)
            self._refused(stream_slice, response)
        return response

    def _refused(self, stream_slice: StreamSlice, response: requests.Response) -> None:
        if not stream_slice.partition:
            return _skip_refused(self.name, self.config, _answered(response))
        logger.warning(f"Stream {self.name}: skipping {urlsplit(response.url).path}: {_answered(response)}; the sync goes on without it.")
        with SYNC.lock:
            self.absent += response.status_code == 404
            absent = self.absent_after and self.absent >= self.absent_after and not self.answers
        if absent:
            SYNC.warn_once(
                ("absent", self.name),
                f"Stream {self.name}: Northpass answered the first {self.absent} requests with 404, for records it had "
                f"just listed: its endpoint ({self.endpoint}) does not exist for this account. Not asking again this "
                "sync; the stream has no records.",
            )


@dataclass
class BulkListRetriever(NorthpassListRetriever):
    """Every parent's resource from one list (course properties: a page of courses per request), else,
    where the list answers its first request 403 or 404, each parent's own (`each`: a partition per
    parent; `each_requester`: the request of one), with one warning. The built-ins choose one
    retriever and one partition router per stream, before the first answer."""

    each: Any = None
    each_requester: Any = None

    def read_records(self, records_schema: Mapping[str, Any], stream_slice: StreamSlice | None = None) -> Iterable[Any]:
        self.fallback = False
        yield from super().read_records(records_schema, stream_slice)
        if not self.fallback:
            return
        for parent in self.each.stream_slices():
            response = self.each_requester.send_request(stream_slice=parent)
            if response is None:
                raise _failure(f"Northpass returned no response for stream {self.name}.")
            if response.status_code in (403, 404):
                logger.warning(f"Stream {self.name}: skipping {urlsplit(response.url).path}: {_answered(response)}.")
                continue
            yield from self.record_selector.select_records(response, {}, records_schema, stream_slice=parent)

    def _refused(self, stream_slice: StreamSlice, response: requests.Response) -> None:
        self.fallback = True
        logger.warning(f"Stream {self.name}: {_answered(response)}; reading each parent's own instead, a request each.")


@dataclass
class UpdatedAtKeysetRetriever(SimpleRetriever):
    """A list read in `updated_at` order by key, so nothing is skipped while data changes.

    The built-ins page by offset (DatetimeBasedCursor with a page-number paginator: `page=N`), and a
    person changed, created or deleted while page 3 is read shifts everyone after them: one who
    never changed is never emitted, and the state moves past them for good. `pagination_reset`
    (SPLIT_USING_CURSOR) pages by number between resets, fails a slice on a tie and re-emits
    boundary records. Here every request is `page=1&sort=updated_at&filter[updated_at][gteq]=<last
    seen>`; a full page at one timestamp is read by id (`filter[updated_at][eq]=T&filter[id][gt]=
    <last id>&sort=id`, or by page number until a pass finds no one new), then the walk goes on
    `[gt]=T`. A server ignoring or refusing the filter or sort is read whole by page number, with
    one warning. Boundary records are emitted once; after each page a STATE `{"updated_at": T}`
    says every record updated before T is emitted. The walk starts at the cursor slice's
    `start_time` (state, else start_date), or in full refresh at start_date or the beginning.
    Records without `updated_at`, which no filter matches, are found at one end of the order (_nulls).
    A first request answered 403 or 404 skips the stream with one warning (skip_unavailable_streams).
    When a round trip is slower than the request budget, a big list is read as several ranges at once
    (_ranges) within this one partition: CDK partitions would need calendar slices or per-partition state.
    As a `change_log` (the feed, read as the parent of the learners whose changes it logs) it ends a
    little before the sync began (CLOCKS): an event after that may be newer than its learner's read in
    this sync, which the CDK makes once per learner, so it is left to the next sync's log. A first read
    (no state, no start_date) begins there too, as a first sync reads every learner anyway, and ends with
    a record of only the cursor, that moment: the parent's state then says so with no event since (the
    CDK's cursor state is its last record, else its start, 1970); it names no learner.
    """

    cursor_field: str = "updated_at"
    page_size: int | str = 100
    path_variants: Mapping[str, list] = field(default_factory=dict)
    newest_first: bool = False  # the list's own order (no sort asked) is newest first: a feed
    change_log: bool = False  # read as a parent's change log (below)

    CLOCKS = timedelta(minutes=1)  # how far Northpass's clock and this machine's may be apart

    def __post_init__(self, parameters: Mapping[str, Any]) -> None:
        super().__post_init__(parameters)
        self.limit = _rendered_int(self.page_size, self.config, parameters)
        self.endpoint = parameters.get("endpoint", "")

    def read_records(self, records_schema: Mapping[str, Any], stream_slice: StreamSlice | None = None) -> Iterable[Any]:
        yield from _KeysetWalk(self, records_schema, stream_slice or StreamSlice(partition={}, cursor_slice={})).run()


class _KeysetWalk:
    """One read of one stream: the per-read state of UpdatedAtKeysetRetriever (threads share it)."""

    MAX_TIE_PASSES = 4

    def __init__(self, retriever: UpdatedAtKeysetRetriever, schema: Mapping[str, Any], stream_slice: StreamSlice):
        self.r, self.schema, self.slice, self.field = retriever, schema, stream_slice, retriever.cursor_field
        start = (stream_slice.cursor_slice or {}).get("start_time")
        self.checkpoints = bool(start)
        start = start or retriever.config.get("start_date")
        self.lower_instant = parse_datetime(start) if start else None
        if self.lower_instant is not None and self.lower_instant <= datetime(1970, 1, 1, tzinfo=timezone.utc):
            self.lower_instant = None  # the cursor's "beginning of time": no filter at all
        self.lower = _format(self.lower_instant) if self.lower_instant else None
        self.start_instant = self.lower_instant  # where this read begins: a scan falls back to it
        self.boundary: Counter = Counter()  # identities emitted at the boundary second: the next request repeats them
        self.operator = "gteq"
        self.fullest = 0  # the walk's largest page: the server's page size, should it clamp `limit`
        self.answered = False  # a 403 or 404 before any answer is a refusal; after one, a failure
        self.tried: list[str] = []  # the paths that answered the refusal
        self.nulls: set[str] = set()  # identities of the records without the cursor field emitted
        self.early: Counter | None = Counter()  # the first records emitted (run): a scan that follows skips them
        # (None once more than EARLY, or once the scan begins)
        self.records = self.moments = 0  # records read, and how many of them had updated_at
        self.nulls_at_start = False  # the walk's own first page showed where the nulls sort
        self.keyed = False  # the walk moved by key (else it read pages by number: all of them)
        self.upper: datetime | None = None  # as one range of several (_ranges): where the next begins
        self.given: tuple | None = None  # as one of the later ranges: its first page, the probe's
        self.finished, self.seconds, self.bounds = False, 0.0, threading.Lock()

    def _read(self, page: int = 1, **filters: str) -> tuple[list[Record], list[datetime | None], bool]:
        params = {"limit": self.r.limit, "page": page, **filters}

        def send(spelled: StreamSlice) -> requests.Response | None:
            response = self.r.requester.send_request(stream_state={}, stream_slice=spelled, request_params=params)
            if response is not None and not self.answered and urlsplit(response.url).path not in self.tried:
                self.tried.append(urlsplit(response.url).path)
            return response

        response = SYNC.send(self.r.path_variants, self.r.endpoint, self.slice, send)
        if response is None:
            raise _failure(f"Northpass returned no response for stream {self.r.name}.")
        if response.status_code in (403, 404):  # passed back by the manifest's error handlers
            raise _Refused(response, self.tried) if not self.answered else _vanished(self.r.name, page, response)
        if response.status_code == 400:
            asked = "&".join(f"{k}={v}" for k, v in filters.items()) or f"page {page} with limit={self.r.limit}"
            raise _ServerIgnoresQuery(f"refused {asked} on stream {self.r.name} (HTTP 400: {_said(response)})")
        self.answered, self.seconds = True, response.elapsed.total_seconds()
        records = list(self.r.record_selector.select_records(response, {}, self.schema, stream_slice=self.slice))
        moments = [_instant(r.data.get(self.field)) for r in records]
        self.records, self.moments = self.records + len(records), self.moments + sum(m is not None for m in moments)
        has_next = has_next_page(_document(response), len(records), self.r.limit, self.fullest)
        self.fullest = max(self.fullest, len(records))
        return records, moments, has_next

    def _pages(self, page: int = 1, **filters: str) -> Iterator[tuple[list[Record], list[datetime | None]]]:
        """Every page of a read by page number from `page` (a page repeating the one before is asked again)."""
        guard, has_next = _RepeatedPageGuard(), True
        while has_next:
            records, moments, has_next = self._read(page, **filters)
            if has_next and guard.is_repeat(tuple(_identity(r.data) for r in records), page, f"stream {self.r.name}"):
                continue
            yield records, moments
            page += 1

    def _passed(self, record: Record, moment: datetime | None, boundary: Counter) -> bool:
        """Whether the walk has emitted this record (its cursor at `moment`) already, or passed it by;
        `boundary`: this page's count of the records emitted at the bound, each matched once."""
        if moment is None:  # no cursor value: emitted once per read, wherever it is found
            identity = _identity(record.data)
            if identity in self.nulls:
                return True
            self.nulls.add(identity)
            return False
        if self.lower_instant is None or moment > self.lower_instant:
            return False
        if moment < self.lower_instant or self.operator == "gt":
            return True
        identity = _identity(record.data)
        if boundary[identity] > 0:
            boundary[identity] -= 1
            return True
        return False

    EARLY = 1000  # the first records emitted, kept whole: a scan after them does not emit them again

    def _new(self, records: list[Record], moments: list[datetime | None], emitted: Counter | None = None) -> Iterator[Record]:
        """The records of a page not passed yet; nor, in a scan, `emitted` before it (each copy once)."""
        boundary = Counter(self.boundary)
        for record, moment in zip(records, moments):
            if self._passed(record, moment, boundary):
                continue
            if emitted:
                identity = _whole(record.data)
                if emitted[identity] > 0:
                    emitted[identity] -= 1
                    continue
            yield record

    def run(self) -> Iterator[Any]:
        if ("refused", self.r.name) in SYNC.warned:  # a parent read again: skipped with the stream
            return
        ends = SYNC.started - self.r.CLOCKS
        begins = self.r.change_log and self.lower_instant is None
        if begins:
            self.start_instant, self.lower_instant, self.lower = ends, ends, _format(ends)
        try:
            for item in self._walk():
                if isinstance(item, Record):
                    if self.r.change_log and (_instant(item.data.get(self.field)) or ends) > ends:
                        continue  # the next sync's log holds it
                    if self.early is not None:  # emitted: a scan that follows skips it
                        self.early[_whole(item.data)] += 1
                        self.early = self.early if len(self.early) <= self.EARLY else None
                yield item
            if begins:
                yield {self.field: self.lower}
        except _Refused as refused:
            _skip_refused(self.r.name, self.r.config, f"Northpass answered {refused.where} with HTTP {refused.status} ({refused.said})")
        if self.records and not self.moments:
            SYNC.warn_once(
                ("no cursor", self.r.name),
                f"Stream {self.r.name}: none of its records carries {self.field}, so each sync reads the whole "
                "list; it cannot be read incrementally.",
            )

    def _walk(self) -> Iterator[Any]:
        try:
            if self.lower is None:
                yield from self._walked()
                if self.keyed and not self.nulls_at_start:  # else its pages by number held every one
                    yield from self._nulls(f"-{self.field}", newest=self.lower_instant)
                return
            covered, nulls = yield from self._newest_first()
            if not covered and nulls != "all":
                yield from self._walked()
            if not nulls:  # none at the descending end: the ascending one
                yield from self._nulls(self.field)
        except _ServerIgnoresQuery as reason:
            feed = self.r.newest_first and self.start_instant is not None
            instead = "the feed newest first, down to where the last sync ended" if feed else "the whole list page by page"
            logger.warning(f"Stream {self.r.name}: Northpass {reason}; reading {instead} instead.")
            self.lower_instant, self.operator, self.boundary = self.start_instant, "gteq", Counter()
            emitted, self.early = self.early, None  # what the scan emits is not counted: twins are two
            try:  # no filter or sort relied upon; no checkpoints: the order is unknown
                oldest = None  # a newest-first feed's oldest record so far
                for records, moments in self._pages():
                    yield from self._new(records, moments, emitted)
                    known = [m for m in moments if m is not None]
                    if known and (known != sorted(known, reverse=True) or (oldest and known[0] > oldest)):
                        feed = False  # not newest first after all: read to the end
                    oldest = known[-1] if known else oldest
                    if feed and known and known[0] < self.start_instant:
                        return  # the data-feed stop: every later page is older still
            except _ServerIgnoresQuery as refused:
                raise _failure(f"Northpass {refused}. If it is the page size it refuses, lower page_size.") from None

    def _newest_first(self) -> Iterator[Any]:
        """From a lower bound (a state, start_date): the newest page first. Reaching below the bound
        (fewer changes than a page: most incremental syncs) it is the whole read; either way it is
        the descending end's look for records without updated_at. Returns (covered, what _nulls found)."""
        records, moments, has_next = self._read(sort=f"-{self.field}")
        known = [m for m in moments if m is not None]
        # Covered: the page reaches from at or above the bound (the record that set a state is still
        # there, or newer) to below it, in descending order (_nulls checks it), or is the whole list.
        covered = not has_next or bool(known and known[0] >= self.lower_instant > known[-1])
        nulls = yield from self._nulls(f"-{self.field}", first=(records, moments, has_next))
        if covered:
            yield from self._new(records, moments)
        return covered, nulls or not has_next

    def _walked(self) -> Iterator[Any]:
        """The walk by key (_keyset), as several ranges at once (_ranges) when one chain of requests,
        a round trip each, is slower than the request budget; its checkpoints as STATE messages."""
        walk = self._keyset()
        for item in walk:
            if isinstance(item, _FirstPages):
                if item.has_next and item.seconds * float(self.r.config.get("requests_per_second") or 10) >= 1:
                    yield from self._ranges(walk, item.filters)
                    return
            elif isinstance(item, _Checkpoint):
                yield from self._state(item.moment)
            else:
                yield item

    def _state(self, moment: datetime | None) -> Iterator[Any]:
        if self.checkpoints and moment is not None:
            state = ConnectorStateManager()
            state.update_state_for_stream(self.r.name, None, {self.field: _format(moment)})
            yield state.create_state_message(self.r.name, None)

    SPLIT_PAGES = 50  # a range per this many pages of the list: a probe (a request) per range
    SPLIT_AFTER = 2  # pages the walk reads before it may split: fewer changes than that cost no probe
    RANGE_THREADS = 8  # ranges read at once; all streams together stay under requests_per_second

    def _ranges(self, walk: Iterator[Any], filters: dict) -> Iterator[Any]:
        """The rest of the walk as disjoint ranges of updated_at, each read by key in a thread of its
        own. Split where the data is, not by the calendar: page 1 + k * SPLIT_PAGES of the walk's first
        query, asked by number, is range k's first page: it holds every record after its first one's
        updated_at T up to its last (as any page of one order does), so range k starts after T and the
        range before ends at T, inclusive. The last range is open. A STATE says how far the first
        unfinished range has come: a killed sync reads the unfinished ranges again."""
        out: queue.Queue = queue.Queue(maxsize=4 * self.RANGE_THREADS)
        stop, parts, pending, running = threading.Event(), [self], [], set()

        def put(item: Any) -> None:
            while not stop.is_set():
                try:
                    return out.put(item, timeout=0.5)
                except queue.Full:
                    continue

        def read(part: _KeysetWalk, items: Iterator[Any]) -> None:
            try:
                for item in items:
                    put(item)
                    if stop.is_set():
                        return
            except BaseException as error:  # noqa: BLE001 - raised again by the reader below
                put(error)
            put(("done", part))

        def start(part: _KeysetWalk, items: Iterator[Any]) -> None:
            running.add(part)
            threading.Thread(target=read, args=(part, items), daemon=True, name=f"{self.r.name} range").start()

        def split() -> Iterator[Any]:  # the probes, run as one more reader
            previous = None
            for k in itertools.count(1):
                records, moments, has_next = self._read(1 + k * self.SPLIT_PAGES, **filters)
                begins = next(((r, m) for r, m in zip(records, moments) if m is not None), None)
                if begins is None:
                    if records:
                        continue  # a page without updated_at: further on
                    return  # past the end of the list
                if previous is not None and begins[1] <= previous:
                    return  # `page` not honoured (or one second filling SPLIT_PAGES pages): no more ranges
                previous = begins[1]
                with self.bounds:
                    tail = parts[-1]
                    if tail.finished:
                        return
                    if tail.lower_instant is not None and begins[1] < tail.lower_instant:
                        continue  # the last range has read past it already
                    part = copy.copy(self)
                    part.lower, part.lower_instant, part.operator = begins[0].data[self.field], begins[1], "gt"
                    part.boundary, part.upper, part.finished = Counter(), None, False
                    part.given = (records, moments, has_next)
                    tail.upper = begins[1]
                    parts.append(part)
                    starts[id(part)] = begins[1]
                yield ("range", part)

        starts = {id(self): self.start_instant}  # where each range began: all before it is read
        progress: dict = {}  # how far each range's yielded records go (a _Checkpoint), or "done"
        start(self, walk)
        start(None, split())
        reported = None
        try:
            while running:
                item = out.get()
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, tuple) and item[0] == "range":
                    pending.append(item[1])
                elif isinstance(item, tuple) and item[0] == "done":
                    running.discard(item[1])
                    progress[id(item[1])] = "done"
                elif isinstance(item, _Checkpoint):
                    progress[id(item.walk)] = item.moment
                elif not isinstance(item, _FirstPages):
                    yield item
                    continue
                while pending and len(running) < self.RANGE_THREADS + 1:
                    part = pending.pop(0)
                    start(part, part._keyset(part.given))
                with self.bounds:
                    unfinished = (p for p in parts if progress.get(id(p)) != "done")
                    frontier = next((progress.get(id(p), starts[id(p)]) for p in unfinished), None)
                if frontier is not None and frontier != reported:
                    reported = frontier
                    yield from self._state(frontier)
        finally:
            stop.set()

    def _keyset(self, given: tuple | None = None) -> Iterator[Any]:
        """The walk by key, up to `upper` (inclusive) as one range of several, whose first page may be
        `given`. Yields records, _FirstPages after its first SPLIT_AFTER, a _Checkpoint after each page
        that moves it on."""
        page, guard, first, verified, reads = 1, _RepeatedPageGuard(), True, None, 0
        while True:
            filters = {"sort": self.field}
            if self.lower is not None:
                filters[f"filter[{self.field}][{self.operator}]"] = self.lower
            if given:  # a probe's page (_ranges), from this range's first record: in order, or not trusted
                (records, moments, has_next), given = given, None
                self._check_order(moments, self.field, lead=False, newest=None)
            else:
                records, moments, has_next = self._read(page, **filters)
                self._verify(moments)
            if verified is not None:  # the page before is a checkpoint once this one honours its filter
                yield verified
                verified = None
            if first and self.lower is None and moments:
                self.nulls_at_start = moments[0] is None
            with self.bounds:  # _ranges may end this range (`upper`) while the page is decided
                if self.upper is not None and any(m is not None and m > self.upper for m in moments):
                    kept = [(r, m) for r, m in zip(records, moments) if m is None or m <= self.upper]
                    records, moments, has_next = [r for r, _ in kept], [m for _, m in kept], False
                emitted = list(self._new(records, moments))  # against the bounds before this page
                known = [i for i, m in enumerate(moments) if m is not None]
                last = known[-1] if known else None
                moves = has_next and last is not None and (self.lower_instant is None or moments[last] > self.lower_instant)
                if moves:
                    self.lower, self.lower_instant, self.operator = records[last].data[self.field], moments[last], "gteq"
                    self.boundary = Counter(_identity(r.data) for r, m in zip(records, moments) if m == moments[last])
                self.finished = not has_next
            yield from emitted
            first, reads, query = False, reads + 1, query if reads else filters
            if reads == self.SPLIT_AFTER:
                yield _FirstPages(has_next, self.seconds, query)
            if not has_next:
                return
            if not records:
                raise _ServerIgnoresQuery(f"returned an empty page with a next one on stream {self.r.name}")
            if last is None:  # a whole page without updated_at (they sort first): the next page by number
                if not guard.is_repeat(tuple(_identity(r.data) for r in records), page, f"stream {self.r.name}"):
                    page += 1
                continue
            page, guard, self.keyed = 1, _RepeatedPageGuard(), True
            if moves:
                verified = _Checkpoint(self, self.lower_instant)
                continue
            # A full page at one timestamp: read that tie group, then go on strictly after it.
            yield from self._tie_group(records)
            self.operator, self.boundary = "gt", Counter()

    def _nulls(self, sort: str, first: tuple | None = None, newest: datetime | None = None) -> Iterator[Any]:
        """Records whose updated_at is null or absent, which no filter matches: a sort puts them at one
        end (last ascending in Postgres, first in MySQL), so the first page of an order shows them.
        Emits those at the start of `sort` (`first`: its page 1, read, and whether it has a next),
        reading on while a page ends with one. Returns False if none sort there, "all" if every record
        of the list did (it has been read whole), else True."""
        if first is None:
            pages = self._pages(sort=sort)
        else:
            pages = itertools.chain([first[:2]], self._pages(2, sort=sort) if first[2] else ())
        for index, (records, moments) in enumerate(pages):
            self._check_order(moments, sort, lead=index > 0 or bool(moments and moments[0] is None), newest=newest)
            nulls = [r for r, m in zip(records, moments) if m is None]
            yield from self._new(nulls, [None] * len(nulls))
            if index == 0 and moments and moments[0] is not None:
                return False
            if not moments or moments[-1] is not None:
                return True
        return "all"

    def _check_order(self, moments: list, sort: str, lead: bool, newest: datetime | None) -> None:
        """An unfiltered page of `sort` holds its records without updated_at at one end (the start,
        when they `lead` the order) and the others in order; descending, from at least `newest` (the
        walk's last, as records only get newer). Otherwise the server ignores the sort."""
        known = [m for m in moments if m is not None]
        nulls = [None] * (len(moments) - len(known))
        descending = sort.startswith("-")
        shape = [*nulls, *known] if lead else [*known, *nulls]
        if moments != shape or known != sorted(known, reverse=descending) or bool(descending and newest and known and known[0] < newest):
            raise _ServerIgnoresQuery(f"ignored sort={sort} on stream {self.r.name}")

    def _verify(self, moments: list[datetime | None]) -> None:
        known = [m for m in moments if m is not None]
        low = self.lower_instant
        if low is not None and any(m < low or (self.operator == "gt" and m == low) for m in known):
            raise _ServerIgnoresQuery(f"ignored filter[{self.field}] on stream {self.r.name}")
        if known != sorted(known):
            raise _ServerIgnoresQuery(f"ignored sort={self.field} on stream {self.r.name}")

    def _tie_group(self, page: list[Record]) -> Iterator[Any]:
        """Every record with its cursor at self.lower, each once; `page` (a full page of them) and the
        boundary's are emitted. By id, or for records without one by page number (_tie_group_by_page)."""
        seen = Counter(_identity(r.data) for r in page) | self.boundary
        if any(r.data.get("id") is None for r in page):
            yield from self._tie_group_by_page(seen)
            return
        last_id = None  # the first request starts the group from its lowest id
        try:
            while True:
                filters = {"sort": "id", f"filter[{self.field}][eq]": self.lower}
                records, moments, has_next = self._read(**filters, **({"filter[id][gt]": last_id} if last_id else {}))
                ids = [str(r.data.get("id")) for r in records]
                tied = all(m == self.lower_instant for m in moments)
                if not tied or ids != sorted(ids) or (last_id and ids and ids[0] <= last_id):
                    raise _ServerIgnoresQuery("id")
                for record, record_id in zip(records, ids):
                    if record_id not in seen:
                        seen[record_id] = 1
                        yield record
                if not has_next or not ids:
                    return
                last_id = ids[-1]
        except _ServerIgnoresQuery:
            logger.warning(
                f"Stream {self.r.name}: Northpass does not page by id within the {len(seen)}+ records with "
                f"{self.field} {self.lower}; reading them by page number, twice or more, so none is missed."
            )
            yield from self._tie_group_by_page(seen)

    def _tie_group_by_page(self, seen: Counter) -> Iterator[Any]:
        """Page numbers within one second until a pass finds nothing new. A record with an id counts
        once, one without as often as a pass holds it (`seen`: the most any pass held). Members only
        leave a past second, or join the current one, and either can hide another only in that pass."""
        for _ in range(self.MAX_TIE_PASSES):
            new, held = 0, Counter()
            for records, moments in self._pages(**{"sort": self.field, f"filter[{self.field}][eq]": self.lower}):
                if any(m != self.lower_instant for m in moments):
                    raise _ServerIgnoresQuery(f"ignored filter[{self.field}][eq] on stream {self.r.name}")
                for record in records:
                    identity = _identity(record.data)
                    held[identity] = 1 if record.data.get("id") is not None else held[identity] + 1
                    if held[identity] > seen[identity]:
                        seen[identity] = held[identity]
                        new += 1
                        yield record
            if not new:
                return
        raise _failure(
            f"Stream {self.r.name}: the records with {self.field} {self.lower} kept changing while they were read "
            f"({self.MAX_TIE_PASSES} passes); failing rather than risk missing one.",
            FailureType.transient_error,
        )
