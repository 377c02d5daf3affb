"""Custom components for source-northpass: only what the declarative manifest cannot say.

Airbyte injects this one file into its manifest runner, so it must stand alone: it imports
nothing but the standard library and airbyte-cdk. The manifest refers to these classes as
``source_declarative_manifest.components.<Class>``.
"""

import ipaddress
import json
import logging
import threading
from dataclasses import InitVar, dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, List, Mapping, MutableMapping, Optional, Union
from urllib.parse import urlsplit

import requests

from airbyte_cdk.models import FailureType
from airbyte_cdk.sources.declarative.extractors.record_extractor import RecordExtractor
from airbyte_cdk.sources.declarative.interpolation.interpolated_string import InterpolatedString
from airbyte_cdk.sources.declarative.requesters.error_handlers.default_error_handler import (
    DefaultErrorHandler,
)
from airbyte_cdk.sources.declarative.requesters.paginators.strategies.pagination_strategy import (
    PaginationStrategy,
)
from airbyte_cdk.sources.declarative.validators.validation_strategy import ValidationStrategy
from airbyte_cdk.sources.streams.http.error_handlers.response_models import (
    ErrorResolution,
    ResponseAction,
)
from airbyte_cdk.sources.types import Config, Record
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

logger = logging.getLogger("airbyte")

_DOCUMENT = "_northpass_document"


def json_api_document(response: requests.Response) -> Any:
    """Parse a response body once and remember it on the response.

    The extractor and the paginator both read the same JSON:API document; parsing a page of
    100 people twice is a measurable share of a sync's CPU time.
    """
    document = response.__dict__.get(_DOCUMENT)
    if document is None:
        try:
            document = json.loads(response.content)
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


@dataclass
class NextLinkPageNumber(PaginationStrategy):
    """Page numbers (`page=1, 2, ...`) for as long as the document has a `links.next`.

    The CDK's PageIncrement stops at the first short page, but Northpass may clamp `limit`
    silently, so a short page proves nothing: only `links.next` ends a list. A server that keeps
    answering with the same records (a proxy cache, a broken `page` parameter) would make that an
    endless loop; each page is therefore compared with the previous one, a repeat is requested
    again, and if it repeats `max_repeats` times the stream fails loudly instead of looping or
    ending early. The comparison needs memory across the pages of one partition: partitions run
    one per thread, so it lives in thread-local storage, reset by every first page.
    """

    config: Config
    page_size: Union[int, str]
    parameters: InitVar[Mapping[str, Any]]
    start_from_page: int = 1
    max_repeats: int = 2
    _pages: threading.local = field(init=False, repr=False, default_factory=threading.local)

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
        memory = self._pages
        if page == self.start_from_page:
            memory.previous, memory.repeats = None, 0
        document = json_api_document(response)
        links = document.get("links") if isinstance(document, dict) else None
        if not (isinstance(links, dict) and links.get("next")):
            return None
        data = document.get("data")
        fingerprint = tuple(r.get("id") for r in data) if isinstance(data, list) else ()
        if fingerprint == getattr(memory, "previous", None):
            memory.repeats = getattr(memory, "repeats", 0) + 1
            where = urlsplit(response.url).path
            if memory.repeats > self.max_repeats:
                raise AirbyteTracedException(
                    message=f"Northpass kept answering page {page} of {where} with the records of the page "
                    "before it; stopping instead of looping or skipping records.",
                    failure_type=FailureType.system_error,
                )
            logger.warning(f"Page {page} of {where} repeated the previous page; requesting it again.")
            return page
        memory.previous, memory.repeats = fingerprint, 0
        return page + 1


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


@dataclass
class WarnWhenIgnored(DefaultErrorHandler):
    """A DefaultErrorHandler whose IGNORE decisions are logged as warnings.

    Skipping a forbidden course's enrollments is the right call, but the CDK logs ignored
    responses at INFO, where nobody looks; a skipped resource must be visible.
    """

    def interpret_response(
        self, response_or_exception: Optional[Union[requests.Response, Exception]]
    ) -> ErrorResolution:
        resolution = super().interpret_response(response_or_exception)
        if resolution.response_action == ResponseAction.IGNORE:
            logger.warning(resolution.error_message or "Skipping a resource Northpass refused.")
        return resolution
