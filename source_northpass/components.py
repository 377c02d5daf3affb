"""Custom components for source-northpass: only what the declarative manifest cannot say.

Airbyte injects this one file into its manifest runner, so it must stand alone: it imports
nothing but the standard library and airbyte-cdk. The manifest refers to these classes as
``source_declarative_manifest.components.<Class>``.
"""

import atexit
import gc
import ipaddress
import json
import logging

try:  # airbyte-cdk depends on orjson, so it is there wherever the CDK is; json is the fallback
    import orjson

    _loads = orjson.loads
except ImportError:  # pragma: no cover
    _loads = json.loads
import threading
import time
from concurrent.futures import Future
from dataclasses import InitVar, dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, MutableMapping, Optional, Set, Tuple, Union
from urllib.parse import urlsplit

import requests

from airbyte_cdk.models import (
    AirbyteMessage,
    AirbyteStateBlob,
    AirbyteStateMessage,
    AirbyteStateType,
    AirbyteStreamState,
    FailureType,
    StreamDescriptor,
    Type,
)
from airbyte_cdk.sources.declarative.auth.declarative_authenticator import DeclarativeAuthenticator
from airbyte_cdk.sources.declarative.extractors.record_extractor import RecordExtractor
from airbyte_cdk.sources.declarative.interpolation.interpolated_string import InterpolatedString
from airbyte_cdk.sources.declarative.migrations.state_migration import StateMigration
from airbyte_cdk.sources.declarative.requesters.error_handlers.default_error_handler import (
    DefaultErrorHandler,
)
from airbyte_cdk.sources.declarative.requesters.paginators.strategies.pagination_strategy import (
    PaginationStrategy,
)
from airbyte_cdk.sources.declarative.retrievers.simple_retriever import SimpleRetriever
from airbyte_cdk.sources.declarative.transformations.transformation import RecordTransformation
from airbyte_cdk.sources.declarative.validators.validation_strategy import ValidationStrategy
from airbyte_cdk.sources.streams.http.error_handlers.response_models import (
    ErrorResolution,
    ResponseAction,
)
from airbyte_cdk.sources.streams.call_rate import APIBudget, CallRateLimitHit
from airbyte_cdk.sources.types import Config, Record, StreamSlice
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

logger = logging.getLogger("airbyte")

# At exit the interpreter's collector walks, one last time, every object the CDK built (a million
# or so) to free what the end of the process frees anyway: 0.2 s of a 7 s sync as Airbyte's
# manifest runner starts it (last request to exit 0.33-0.41 s, 0.16-0.19 s without). Freezing
# them first, as the standard library's gc.freeze is for, skips that pass under every runner.
atexit.register(gc.freeze)

_DOCUMENT = "_northpass_document"


def json_api_document(response: requests.Response) -> Any:
    """Parse a response body once and remember it on the response.

    The extractor and the paginator both read the same JSON:API document; parsing a page of
    100 people twice is a measurable share of a sync's CPU time.
    """
    document = response.__dict__.get(_DOCUMENT)
    if document is None:
        try:
            document = _loads(response.content)
        except ValueError:
            document = {}
        response.__dict__[_DOCUMENT] = document
    return document


def _config_error(message: str) -> AirbyteTracedException:
    return AirbyteTracedException(
        message=message, internal_message=message, failure_type=FailureType.config_error
    )


# --------------------------------------------------------------------------------------------
# Config validation
# --------------------------------------------------------------------------------------------

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class BaseUrlValidation(ValidationStrategy):
    """`base_url` must be https, or plain http to a loopback host (tests, local proxies).

    JSON Schema can only say "does not match <regex>"; this says what is wrong, and it runs
    before any stream is built, so the API key is never sent in clear text to another host.
    """

    def validate(self, value: Any) -> None:
        if not isinstance(value, str) or not value.strip():
            raise _config_error("base_url must be a URL such as https://api.northpass.com.")
        try:
            parts = urlsplit(value.strip())
            host = parts.hostname or ""
            parts.port  # noqa: B018 - raises ValueError on a malformed port
        except ValueError:
            raise _config_error(f"base_url {value!r} is not a valid URL.")
        if parts.scheme not in ("http", "https") or not host:
            raise _config_error(
                f"base_url {value!r} is not a valid URL: it must start with https:// and name a host."
            )
        if parts.username or parts.password:
            raise _config_error("base_url must not contain a user name or password.")
        if parts.query or parts.fragment:
            raise _config_error("base_url must not contain a query string or fragment.")
        if parts.scheme == "http" and not _is_loopback(host):
            raise _config_error(
                f"base_url {value!r} uses plain http:// to a host that is not this machine; the API key "
                "would travel unencrypted. Use https://, or http:// only for localhost/127.0.0.1/[::1]."
            )


def parse_datetime(value: str) -> datetime:
    """Parse an ISO 8601 date or datetime; a date means midnight UTC, a naive time means UTC."""
    text = value.strip()
    if len(text) == 10:
        parsed = datetime.strptime(text, "%Y-%m-%d")
    else:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


@dataclass
class StartDateValidation(ValidationStrategy):
    """`start_date` must be an ISO 8601 date or datetime, said in words rather than a regex."""

    def validate(self, value: Any) -> None:
        if value is None or value == "":
            return
        try:
            if not isinstance(value, str):
                raise ValueError
            parse_datetime(value)
        except ValueError:
            raise _config_error(
                f"start_date {value!r} is not an ISO 8601 date or datetime; "
                "use e.g. 2024-01-31 or 2024-01-31T00:00:00Z."
            )


# --------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------


@dataclass
class ApiKeyHeader(DeclarativeAuthenticator):
    """The API key in a header (`X-Api-Key`), rendered once.

    The CDK's ApiKeyAuthenticator says the same in YAML, but renders its Jinja token six times per
    request (its header name, its header and the request's auth each ask for the token): a
    request cost the connector 1.61 ms of CPU with it, 1.36 ms with this. The key cannot change
    during a sync, so its first rendering is kept. It is rendered on first use, not when the
    source is built, so a config without a key reaches the spec's validation and its message.
    """

    config: Config
    parameters: InitVar[Mapping[str, Any]]
    header: str = "X-Api-Key"
    api_token: Union[InterpolatedString, str] = "{{ config['api_key'] }}"

    def __post_init__(self, parameters: Mapping[str, Any]) -> None:
        self._template = InterpolatedString.create(self.api_token, parameters=parameters)
        self._token: Optional[str] = None

    @property
    def auth_header(self) -> str:
        return self.header

    @property
    def token(self) -> str:
        if self._token is None:
            self._token = str(self._template.eval(self.config))
        return self._token


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


@dataclass
class JsonApiRecordExtractor(RecordExtractor):
    """Turn a JSON:API document into flat records: the resource's `attributes` lifted to the top
    level, with `id`, `type`, `links` and `relationships` kept, as the public connector emits them.

    One pass in plain Python: the CDK's generic dpath flattening costs several times more per
    record, and record processing must keep up with a sync at the rate limit. `data` may be a list
    (list endpoints) or one object (e.g. course properties). A response the error handler chose to
    ignore (a forbidden course) yields nothing; a successful response without `data` is an error,
    never an empty page.
    """

    parameters: InitVar[Mapping[str, Any]]

    def extract_records(self, response: requests.Response) -> Iterable[MutableMapping[str, Any]]:
        if response.status_code >= 400:
            return
        document = json_api_document(response)
        data = document.get("data") if isinstance(document, dict) else None
        if isinstance(data, dict):
            data = [data]
        if not isinstance(data, list):
            raise AirbyteTracedException(
                message=f"Northpass answered {urlsplit(response.url).path} without a JSON:API data array.",
                failure_type=FailureType.system_error,
            )
        for resource in data:
            record = dict(resource.get("attributes") or {})
            record["id"] = resource.get("id")
            record["type"] = resource.get("type")
            record["links"] = resource.get("links")
            record["relationships"] = resource.get("relationships")
            yield record


# --------------------------------------------------------------------------------------------
# Paging
# --------------------------------------------------------------------------------------------


def has_next_page(document: Any, count: int, limit: int, fullest: int) -> bool:
    """Whether a list goes on after this page of `count` records, `fullest` being the largest page
    the server gave before it for this stream. `links.next` says so; a short page proves nothing
    (Northpass may clamp `limit`). A document without any `links` member (a server or proxy that
    drops them) leaves only the pages themselves as evidence: a page as full as `limit`, or as the
    fullest page before it (a server clamping `limit` gives that many on every page but a list's
    last), may have a next one; so may a stream's first page, as it may be clamped. A page shorter
    than both ends its list. A missing member costs a request now and then, never records."""
    links = document.get("links") if isinstance(document, dict) else None
    if isinstance(links, dict):
        return bool(links.get("next"))
    if not _NO_LINKS_WARNED.is_set():
        _NO_LINKS_WARNED.set()
        logger.warning("Northpass answers without JSON:API links; each list is read until a page comes back short.")
    return count > 0 and count >= min(limit, fullest or count)


_NO_LINKS_WARNED = threading.Event()  # one warning per run, not one per page


class _RepeatedPageGuard:
    """Notices a page that answers with the same records as the page before it (a proxy cache,
    a server ignoring `page`): the page is asked for again, and after `max_repeats` repeats the
    stream fails loudly, so a list never loops forever nor ends early as if complete."""

    def __init__(self, max_repeats: int = 2) -> None:
        self.max_repeats = max_repeats
        self.previous: Optional[Tuple[Any, ...]] = None
        self.repeats = 0

    def is_repeat(self, ids: Tuple[Any, ...], page: int, where: str) -> bool:
        if ids != self.previous:
            self.previous, self.repeats = ids, 0
            return False
        self.repeats += 1
        if self.repeats > self.max_repeats:
            raise AirbyteTracedException(
                message=f"Northpass kept answering page {page} of {where} with the records of the page "
                "before it; stopping instead of looping or skipping records.",
                failure_type=FailureType.system_error,
            )
        logger.warning(f"Page {page} of {where} repeated the previous page; requesting it again.")
        return True


@dataclass
class NextLinkPageNumber(PaginationStrategy):
    """Page numbers (`page=1, 2, ...`) for as long as the document has a `links.next`
    (see has_next_page for a document without links).

    The CDK's PageIncrement stops at the first short page, but Northpass may clamp `limit`
    silently, so a short page proves nothing: only `links.next` ends a list. A server that keeps
    answering with the same records (a proxy cache, a broken `page` parameter) would make that an
    endless loop; each page goes through a _RepeatedPageGuard. The guard needs memory across the
    pages of one partition: partitions run one per thread, so it lives in thread-local storage,
    replaced on every first page. The fullest page so far (evidence of the server's page size for
    a document without links) is the stream's, across its partitions: a lost update between
    threads only makes it smaller, which costs a request, never records.
    """

    config: Config
    page_size: Union[int, str]
    parameters: InitVar[Mapping[str, Any]]
    start_from_page: int = 1
    max_repeats: int = 2
    _pages: threading.local = field(init=False, repr=False, default_factory=threading.local)
    _fullest: int = field(init=False, repr=False, default=0)

    def __post_init__(self, parameters: Mapping[str, Any]) -> None:
        size = InterpolatedString.create(str(self.page_size), parameters=parameters).eval(self.config)
        self._page_size = int(size)

    @property
    def initial_token(self) -> Optional[Any]:
        return self.start_from_page

    def get_page_size(self) -> Optional[int]:
        return self._page_size

    def next_page_token(
        self,
        response: requests.Response,
        last_page_size: int,
        last_record: Optional[Record],
        last_page_token_value: Optional[Any] = None,
        page_size_override: Optional[int] = None,
        stream_slice: Optional[Any] = None,
    ) -> Optional[Any]:
        page = int(last_page_token_value or self.start_from_page)
        if page == self.start_from_page or not hasattr(self._pages, "guard"):
            self._pages.guard = _RepeatedPageGuard(self.max_repeats)
        document = json_api_document(response)
        data = document.get("data") if isinstance(document, dict) else None
        count = len(data) if isinstance(data, list) else 0
        has_next = has_next_page(document, count, self._page_size, self._fullest)
        self._fullest = max(self._fullest, count)
        if not has_next:
            return None
        ids = tuple(r.get("id") for r in data) if isinstance(data, list) else ()
        if self._pages.guard.is_repeat(ids, page, urlsplit(response.url).path):
            return page
        return page + 1


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


@dataclass
class NorthpassErrorHandler(DefaultErrorHandler):
    """The manifest's DefaultErrorHandler, plus two things YAML cannot say well:

    - A successful answer that is not a JSON:API document (an HTML page from a proxy, a body
      without `data`) is retried like a 5xx, never taken as an empty page. A response filter
      predicate could say so, but it would parse every page a second time, and the CPU a sync
      spends on JSON is what keeps it from the rate limit's floor; here the body is parsed once
      and the extractor reuses it.
    - IGNORE decisions (a forbidden or vanished parent's children) are logged as warnings: the
      CDK logs them at INFO, where nobody looks, and a skipped resource must be visible.
    """

    def interpret_response(
        self, response_or_exception: Optional[Union[requests.Response, Exception]]
    ) -> ErrorResolution:
        if isinstance(response_or_exception, requests.Response) and response_or_exception.ok:
            document = json_api_document(response_or_exception)
            if not (isinstance(document, dict) and "data" in document):
                return ErrorResolution(
                    response_action=ResponseAction.RETRY,
                    failure_type=FailureType.transient_error,
                    error_message=f"Northpass answered {urlsplit(response_or_exception.url).path} with "
                    "something that is not a JSON:API document (no data).",
                )
            return super().interpret_response(response_or_exception)
        resolution = super().interpret_response(response_or_exception)
        if resolution.response_action == ResponseAction.IGNORE:
            logger.warning(resolution.error_message or "Skipping a resource Northpass refused.")
        return resolution


@dataclass
class PartitionKeys(RecordTransformation):
    """Copy the partition's keys (`course_id`, `group_id`, ...) onto each record.

    AddFields says the same with one Jinja template per field and record; for lists of
    thousands of enrollments that interpolation is a visible share of the sync's CPU time.
    """

    parameters: InitVar[Mapping[str, Any]]

    def transform(
        self,
        record: Dict[str, Any],
        config: Optional[Config] = None,
        stream_state: Optional[Any] = None,
        stream_slice: Optional[StreamSlice] = None,
    ) -> None:
        partition = stream_slice.partition if stream_slice is not None else {}
        for key, value in partition.items():
            if key != "parent_slice":
                record[key] = value


# --------------------------------------------------------------------------------------------
# Incremental reads: key paging on updated_at
# --------------------------------------------------------------------------------------------


def _instant(value: Any) -> Optional[datetime]:
    """A record's updated_at as an aware datetime; None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_datetime(value)
    except ValueError:
        return None


def _format(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass
class UpdatedAtState(StateMigration):
    """Accept a saved state only in its documented shape, `{"updated_at": "<ISO 8601>"}`.

    Runs before the CDK cursor reads the state, whose own failure on a malformed value is a
    generic "something went wrong"; a person needs to hear which stream and what to do. The value
    is normalised to UTC seconds, the format the connector sends Northpass. The CDK's own
    concurrent state format passes through untouched.
    """

    parameters: InitVar[Mapping[str, Any]]
    cursor_field: str = "updated_at"

    def __post_init__(self, parameters: Mapping[str, Any]) -> None:
        self._stream = parameters.get("name", "this stream")

    def should_migrate(self, stream_state: Mapping[str, Any]) -> bool:
        return bool(stream_state) and "state_type" not in stream_state

    def migrate(self, stream_state: Mapping[str, Any]) -> Mapping[str, Any]:
        value = stream_state.get(self.cursor_field)
        moment = _instant(value)
        if moment is None or set(stream_state) != {self.cursor_field}:
            raise _config_error(
                f"The saved state of stream {self._stream} is {json.dumps(dict(stream_state))[:200]}, not "
                f'{{"{self.cursor_field}": "<ISO 8601 datetime>"}}. Reset the stream (a full read) or '
                "fix the state to that shape."
            )
        return {self.cursor_field: _format(moment)}


class _SliceWithStableHash(StreamSlice):
    """The same slice, hashed once instead of once per record.

    The CDK cursor files every record under `hash(record.associated_slice)`, and a StreamSlice
    recomputes its hash (a JSON dump of the slice) on every call: a seventh of a sync's CPU time.
    Equal slices hash equally, so the cursor finds this one when the partition closes.
    """

    @classmethod
    def of(cls, stream_slice: StreamSlice) -> "StreamSlice":
        if isinstance(stream_slice, cls) or type(stream_slice) is not StreamSlice:
            return stream_slice
        copy = cls(
            partition=stream_slice.partition,
            cursor_slice=stream_slice.cursor_slice,
            extra_fields=stream_slice.extra_fields,
        )
        copy._hash = StreamSlice.__hash__(stream_slice)
        return copy

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: Any) -> bool:
        return StreamSlice.__eq__(self, other)


class _SharedFetches:
    """Identical requests in flight at the same moment get one response.

    A list that is both a stream and a parent (`courses` is read by its own stream and, for their
    partitions, by `course_enrollments`, `course_activities` and `course_properties`) is otherwise
    read once per reader, the copies running side by side at the start of a sync: each copy takes
    a slot of the 10-a-second budget for the very same page. The CDK's response cache does not help
    (the copies ask at the same moment, before anything is cached, and it stores every page of every
    list). Here the first reader of a page fetches it and the readers asking for the same page
    while it is in flight wait for that response; nothing is kept once it has arrived, so a later
    request for the same page goes to Northpass again (its data may have changed since).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight: Dict[Tuple[str, ...], "Future[Optional[requests.Response]]"] = {}

    def get(self, key: Tuple[str, ...], fetch: Callable[[], Optional[requests.Response]]) -> Optional[requests.Response]:
        with self._lock:
            shared = self._in_flight.get(key)
            if shared is None:
                own: "Future[Optional[requests.Response]]" = Future()
                self._in_flight[key] = own
        if shared is not None:
            return shared.result()
        try:
            response = fetch()
            if response is not None:
                response.content  # the body is read here, once, not by two readers at a time
        except BaseException as error:
            self._finish(key)
            own.set_exception(error)
            raise
        self._finish(key)
        own.set_result(response)
        return response

    def _finish(self, key: Tuple[str, ...]) -> None:
        with self._lock:
            del self._in_flight[key]


_SHARED_FETCHES = _SharedFetches()


class _KeyWalksFirst:
    """When a key walk's next page and other requests wait for the same slot of the request
    budget, the key walk gets it.

    A key-paged list (`people`) is a chain: each page is asked for from the last `updated_at` of
    the page before, so it cannot be read ahead, and the sync ends when its chain does. The
    page-numbered lists (each course's enrollments) can go in any order. The CDK's budget gives a
    freed slot to whichever waiting thread wakes first, and every waiting thread wakes at the
    moment it frees: the chain then gets about one slot in four, falls behind while the lists
    run, and is left alone at the end, one page per round trip. Here a request that is not a key
    walk's yields to a key walk waiting at the same moment (it retries a few milliseconds later),
    and otherwise takes the budget as before. With the manifest's half windows, which free a few
    slots every half second, the chain keeps up: at 120 ms a request, sync 7.83 -> 7.48 s; at 80 ms
    no change (the sync is already as short as the budget allows). YAML has no priority between
    requests; the budget the manifest declares (one object, shared by every stream's requester)
    is wrapped once.
    """

    YIELD_SECONDS = 0.005

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._waiting = 0  # key walks waiting for a slot now

    def install(self, budget: Optional[APIBudget]) -> None:
        if budget is None or getattr(budget, "_northpass_key_walks_first", False):
            return
        acquire = budget.acquire_call

        def acquire_call(request: Any, block: bool = True, timeout: Optional[float] = None) -> None:
            if getattr(self._local, "key_walk", False):
                with self._lock:
                    self._waiting += 1
                try:
                    return acquire(request, block=block, timeout=timeout)
                finally:
                    with self._lock:
                        self._waiting -= 1
            if not block or timeout is not None:
                return acquire(request, block=block, timeout=timeout)
            while True:
                try:
                    return acquire(request, block=False)
                except CallRateLimitHit as hit:
                    time.sleep(max(hit.time_to_wait.total_seconds(), 0.0))
                    while self._waiting:  # a key walk wants this slot: let it take it first
                        time.sleep(self.YIELD_SECONDS)

        budget.acquire_call = acquire_call  # type: ignore[method-assign]
        budget._northpass_key_walks_first = True  # type: ignore[attr-defined]

    def key_walk(self, send: Callable[[], Any]) -> Any:
        self._local.key_walk = True
        try:
            return send()
        finally:
            self._local.key_walk = False


_KEY_WALKS_FIRST = _KeyWalksFirst()


class _ServerIgnoresQuery(Exception):
    """The server answered as if a filter or sort parameter were not there, or refused it."""


@dataclass
class UpdatedAtKeysetRetriever(SimpleRetriever):
    """Read a list in `updated_at` order by key, not by offset, so that nothing is skipped while
    Northpass data changes during the sync.

    Why not the CDK's DatetimeBasedCursor with a page-number paginator: `page=N` is an offset, and
    a person updated, created or deleted while page 3 is read shifts everyone after them by one,
    so someone who never changed is never emitted, and the state then moves past them for good.
    Here every request is `page=1` of `filter[updated_at][gteq]=<last updated_at seen>&sort=updated_at`:
    a change elsewhere in the list cannot shift what the next request returns.

    - Ties: when a whole page shares one `updated_at` (a bulk import stamps hundreds of learners
      with the same second), moving the filter does not advance. The tie group is then read by id
      (`filter[updated_at][eq]=T&filter[id][gt]=<last id>&sort=id`), and the main walk resumes
      with `filter[updated_at][gt]=T`. If the server does not honour the id filter or sort, the
      group is read by page number instead, and read again until a pass finds no one new, so a
      member leaving the group mid-read cannot hide another.
    - A server that ignores the updated_at filter or the sort is detected from the records it
      returns, one that refuses them from its HTTP 400; the stream then falls back to a plain
      page-number walk of the whole list, keeps only records at or after the cursor, and logs
      one warning saying so.
    - Records seen twice at a boundary timestamp are emitted once (only the ids at the current
      boundary are remembered, so memory stays bounded).
    - State: after each page, a STATE message `{"updated_at": T}` is emitted, where every record
      updated before T has been emitted; a sync stopped half-way resumes from there and re-reads
      about a page. The final state is the CDK cursor's: the newest `updated_at` emitted.

    The lower bound comes from the CDK cursor's slice (`start_time`: the state, else start_date);
    in full refresh there is no cursor slice and the walk starts at start_date, or at the
    beginning when none is set.
    """

    cursor_field: str = "updated_at"
    page_size: Union[int, str] = 100

    def __post_init__(self, parameters: Mapping[str, Any]) -> None:
        super().__post_init__(parameters)
        self._limit = int(InterpolatedString.create(str(self.page_size), parameters=parameters).eval(self.config))
        _KEY_WALKS_FIRST.install(getattr(self.requester, "api_budget", None))

    def read_records(
        self,
        records_schema: Mapping[str, Any],
        stream_slice: Optional[StreamSlice] = None,
    ) -> Iterable[Any]:
        stream_slice = _SliceWithStableHash.of(stream_slice or StreamSlice(partition={}, cursor_slice={}))
        yield from _KeysetWalk(self, records_schema, stream_slice).run()

    # Requests and records, shared by the walk's modes.
    def fetch(self, stream_slice: StreamSlice, params: Mapping[str, Any]) -> requests.Response:
        """One page; a reader asking for the very page another reader is fetching shares it."""
        key = (
            self.name,
            self.requester.get_path(stream_state={}, stream_slice=stream_slice, next_page_token=None),
            json.dumps(stream_slice.partition, sort_keys=True, default=str),
            json.dumps(params, sort_keys=True, default=str),
        )
        response = _SHARED_FETCHES.get(
            key,
            lambda: _KEY_WALKS_FIRST.key_walk(
                lambda: self.requester.send_request(stream_state={}, stream_slice=stream_slice, request_params=dict(params))
            ),
        )
        if response is None:
            raise AirbyteTracedException(
                message=f"Northpass returned no response for stream {self.name}.",
                failure_type=FailureType.system_error,
            )
        return response

    def records(self, response: requests.Response, schema: Mapping[str, Any], stream_slice: StreamSlice) -> List[Record]:
        return list(
            self.record_selector.select_records(
                response=response, stream_state={}, records_schema=schema, stream_slice=stream_slice
            )
        )

    def state_message(self, updated_at: str) -> AirbyteMessage:
        return AirbyteMessage(
            type=Type.STATE,
            state=AirbyteStateMessage(
                type=AirbyteStateType.STREAM,
                stream=AirbyteStreamState(
                    stream_descriptor=StreamDescriptor(name=self.name),
                    stream_state=AirbyteStateBlob(**{self.cursor_field: updated_at}),
                ),
            ),
        )


class _KeysetWalk:
    """One read of one stream: the per-read state of UpdatedAtKeysetRetriever (which is shared by
    threads, so it keeps none itself)."""

    MAX_TIE_PASSES = 4

    def __init__(self, retriever: UpdatedAtKeysetRetriever, schema: Mapping[str, Any], stream_slice: StreamSlice):
        self.r = retriever
        self.schema = schema
        self.slice = stream_slice
        self.field = retriever.cursor_field
        self.limit = retriever._limit
        start = (stream_slice.cursor_slice or {}).get("start_time") or retriever.config.get("start_date")
        self.checkpoints = bool((stream_slice.cursor_slice or {}).get("start_time"))
        self.lower_instant: Optional[datetime] = parse_datetime(start) if start else None
        if self.lower_instant is not None and self.lower_instant <= _EPOCH:
            self.lower_instant = None  # the cursor's "beginning of time": no filter at all
        self.lower: Optional[str] = _format(self.lower_instant) if self.lower_instant else None
        # ids emitted whose updated_at equals the boundary (the only ones a next request repeats);
        # after a whole tie group at the boundary was read, the walk goes on strictly after it
        self.boundary_ids: Set[str] = set()
        self.operator = "gteq"
        self.checkpointed: Optional[str] = None
        self.fullest = 0  # the largest page of this walk: what the server gives, should it clamp `limit`

    # -- helpers ---------------------------------------------------------------------------
    def _params(self, page: int = 1, **filters: str) -> Dict[str, Any]:
        params: Dict[str, Any] = {"limit": self.limit, "page": page}
        params.update(filters)
        return params

    def _read(self, params: Mapping[str, Any], refusal_is_final: bool = False) -> Tuple[List[Record], bool]:
        response = self.r.fetch(self.slice, params)
        if response.status_code == 400:  # passed back by the manifest's keyset_error_handler
            self._refused(response, params, refusal_is_final)
        records = self.r.records(response, self.schema, self.slice)
        document = json_api_document(response)
        has_next = has_next_page(document, len(records), self.limit, self.fullest)
        self.fullest = max(self.fullest, len(records))
        return records, has_next

    def _refused(self, response: requests.Response, params: Mapping[str, Any], final: bool) -> None:
        """A 400: the endpoint does not allow the filter or sort (some JSON:API servers refuse what
        others ignore). The walk then reads the list another way; if even the plain page-number
        read is refused, the stream fails, saying what Northpass said."""
        document = json_api_document(response)
        errors = document.get("errors") if isinstance(document, dict) else None
        first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
        said = str(first.get("detail") or first.get("title") or "no detail")[:300]
        asked = "&".join(f"{k}={v}" for k, v in params.items() if k not in ("limit", "page"))
        if not final:
            raise _ServerIgnoresQuery(f"refused {asked or 'the query'} on stream {self.r.name} (HTTP 400: {said})")
        raise AirbyteTracedException(
            message=f"Northpass refused page {params.get('page')} of stream {self.r.name} with limit="
            f"{params.get('limit')} (HTTP 400: {said}). If it is the page size it refuses, lower page_size.",
            failure_type=FailureType.system_error,
        )

    def _stamp(self, record: Record) -> Tuple[Optional[datetime], Optional[str]]:
        raw = record.data.get(self.field)
        return _instant(raw), raw

    def _passed(self, record: Record, moment: Optional[datetime]) -> bool:
        """Whether the walk has emitted this record (updated at `moment`) already, or passed it by."""
        if self.lower_instant is None or moment is None or moment > self.lower_instant:
            return False
        if moment < self.lower_instant:
            return True
        return self.operator == "gt" or str(record.data.get("id")) in self.boundary_ids

    def _warn(self, what: str) -> None:
        logger.warning(
            f"Stream {self.r.name}: Northpass {what}; reading the whole list page by page instead "
            "(correct, but every page is requested)."
        )

    # -- the walk --------------------------------------------------------------------------
    def run(self) -> Iterator[Any]:
        try:
            yield from self._keyset()
        except _ServerIgnoresQuery as reason:
            self._warn(str(reason))
            yield from self._scan()

    def _keyset(self) -> Iterator[Any]:
        while True:
            filters = {"sort": self.field}
            if self.lower is not None:
                filters[f"filter[{self.field}][{self.operator}]"] = self.lower
            records, has_next = self._read(self._params(**filters))
            stamps = [self._stamp(r) for r in records]
            self._verify(stamps, strictly_after=self.operator == "gt")
            for record, (moment, _) in zip(records, stamps):
                if not self._passed(record, moment):
                    yield record
            if not has_next:
                return
            if not records:
                raise _ServerIgnoresQuery(f"returned an empty page with a next link on stream {self.r.name}")
            last_moment, last_raw = stamps[-1]
            if last_moment is None:
                raise _ServerIgnoresQuery(f"returned records without {self.field} on stream {self.r.name}")
            if self.lower_instant is None or last_moment > self.lower_instant:
                self.lower, self.lower_instant, self.operator = last_raw, last_moment, "gteq"
                self.boundary_ids = {str(r.data.get("id")) for r, (m, _) in zip(records, stamps) if m == last_moment}
                yield from self._checkpoint()
                continue
            # A full page at one timestamp: read that tie group, then go on strictly after it.
            seen = {str(r.data.get("id")) for r in records} | self.boundary_ids
            yield from self._tie_group(seen)
            self.operator = "gt"
            self.boundary_ids = set()

    def _verify(self, stamps: List[Tuple[Optional[datetime], Optional[str]]], strictly_after: bool) -> None:
        previous: Optional[datetime] = None
        for moment, _ in stamps:
            if moment is None:
                continue
            if self.lower_instant is not None and (
                moment < self.lower_instant or (strictly_after and moment == self.lower_instant)
            ):
                raise _ServerIgnoresQuery(f"ignored filter[{self.field}] on stream {self.r.name}")
            if previous is not None and moment < previous:
                raise _ServerIgnoresQuery(f"ignored sort={self.field} on stream {self.r.name}")
            previous = moment

    def _checkpoint(self) -> Iterator[Any]:
        if self.checkpoints and self.lower is not None and self.lower != self.checkpointed:
            self.checkpointed = self.lower
            yield self.r.state_message(_format(self.lower_instant) if self.lower_instant else self.lower)

    def _tie_group(self, seen: Set[str]) -> Iterator[Any]:
        """Every record with updated_at == self.lower, each once; `seen` are already emitted."""
        tie = self.lower
        last_id: Optional[str] = None  # the first request starts the group from its lowest id
        try:
            while True:
                filters = {"sort": "id", f"filter[{self.field}][eq]": tie}
                if last_id is not None:
                    filters["filter[id][gt]"] = last_id
                records, has_next = self._read(self._params(**filters))
                ids = [str(r.data.get("id")) for r in records]
                if any(last_id is not None and i <= last_id for i in ids) or ids != sorted(ids) or any(
                    self._stamp(r)[0] != self.lower_instant for r in records
                ):
                    raise _ServerIgnoresQuery("id")
                for record, record_id in zip(records, ids):
                    if record_id not in seen:
                        seen.add(record_id)
                        yield record
                if not has_next or not ids:
                    return
                last_id = ids[-1]
        except _ServerIgnoresQuery:
            logger.warning(
                f"Stream {self.r.name}: Northpass does not page by id within the {len(seen)}+ records "
                f"updated at {tie}; reading them by page number, twice or more, so none is missed."
            )
            yield from self._tie_group_by_page(seen)

    def _tie_group_by_page(self, seen: Set[str]) -> Iterator[Any]:
        """Page numbers within one timestamp, repeated until a pass finds no one new: members only
        leave a past timestamp, and a leaver can hide another member only in the pass it left."""
        filters = {"sort": self.field, f"filter[{self.field}][eq]": self.lower}
        for _ in range(self.MAX_TIE_PASSES):
            new_in_pass = 0
            page = 1
            while True:
                records, has_next = self._read(self._params(page=page, **filters))
                for record in records:
                    record_id = str(record.data.get("id"))
                    if self._stamp(record)[0] == self.lower_instant and record_id not in seen:
                        seen.add(record_id)
                        new_in_pass += 1
                        yield record
                if not has_next or not records:
                    break
                page += 1
            if new_in_pass == 0:
                return
        raise AirbyteTracedException(
            message=f"Stream {self.r.name}: the records updated at {self.lower} kept changing while they "
            f"were read ({self.MAX_TIE_PASSES} passes); failing rather than risk missing one.",
            failure_type=FailureType.transient_error,
        )

    def _scan(self) -> Iterator[Any]:
        """The safe mode: every page by number, no filter or sort relied upon; records the walk has
        already passed (before its boundary, or at it and emitted) are dropped here. No checkpoints:
        the order is unknown until the end."""
        page = 1
        guard = _RepeatedPageGuard()
        while True:
            records, has_next = self._read(self._params(page=page), refusal_is_final=True)
            if has_next and guard.is_repeat(tuple(r.data.get("id") for r in records), page, f"stream {self.r.name}"):
                continue
            for record in records:
                if not self._passed(record, self._stamp(record)[0]):
                    yield record
            if not has_next:
                return
            page += 1
