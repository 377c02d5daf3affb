"""A read's first requests, sent while Python is still importing the CDK.

Why: a read spends its first 0.6-0.7 s importing the CDK and building the source before it can
send anything, and the request budget then paces every request from that moment: the sync is
(its requests) / (10 a second) after it, the budget idle before. Some requests do not depend on
anything the CDK computes, so they can go while it is imported, about 0.2 s after the process
starts: the first page of each list the catalog selects, and once a parent list's first page
is in, the first page of its children's lists (each course's enrollments). The budget is told
when they went, and the CDK then has that many fewer requests to make. `make bench` (3,000
people, 80 ms): wall/floor 1.14 -> 1.08, incremental 1.17 -> 1.06, the same requests.

Why Python, and why here: this runs before the CDK exists (`main.py` starts it before the
import), so it cannot be said in the manifest, nor in components.py (which imports the CDK and
is the one file Airbyte's manifest runner injects; there nothing is sent early, and everything
works the same, only later).

What is asked, read from the manifest (URL base, paths, page size, headers and the budget's
rates are rendered from it, so they follow it):
- for each selected stream defined as `updated_at_stream`, its first request as `_KeysetWalk`
  (components.py) makes it: `page=1`, `limit`, `sort=updated_at` and
  `filter[updated_at][gteq]` = the later of the stream's state (incremental) and start_date;
- for each selected stream listed per parent record (a `SubstreamPartitionRouter` on an
  `updated_at_stream`, neither incremental), the parent's first page as above (from start_date:
  a parent is read in full), then for each record on it the child's first request as the
  manifest's paginator makes it (`page=1`, `limit`; nothing with `NoPagination`).
They go no faster than the manifest's `api_budget` allows, and not at all once the CDK sends.

How they are used: the CDK's rate-limited session (`LimiterMixin.send`) is wrapped. Its first
send records the early requests in the request budget at the times they were sent (so the CDK
counts them exactly as if it had sent them itself; its other workers' first sends wait until
that is done), and from then on nothing more is sent early. A request of the CDK's that is the same (method, URL with its query in any order, API key) as
an early one gets that answer, waiting for it if it is still on its way, instead of asking again;
identical requests asked within a second of the first share it (as `_SharedFetches` shares a
page two readers ask for at once), later ones ask Northpass. Anything but a 200 is not given:
the CDK asks again itself, with its own error handling. An early request the CDK never makes
costs a slot of the budget's first second, nothing else. `integration_tests/test_end_to_end.py`
checks that in full, incremental and start_date reads every early request is used.

Safety: nothing is sent for a config the spec refuses (the CDK then says why, having sent
nothing), unless the base URL is https or http to this machine (the rule of
`BaseUrlValidation` in components.py, which runs later), nor when the environment names a proxy
(the CDK then asks, through it). Nothing is printed but one log line, with how many went early:
a failure here only means that the CDK asks for that page itself. `NORTHPASS_EARLY_REQUESTS=off`
in the environment turns it off (`scripts/bench.py --no-early`, and its CPU-bound mode, which
measures the CDK's records per second).
"""

import argparse
import ipaddress
import json
import logging
import os
import re
import threading
import time
from collections import deque
from concurrent.futures import Future
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Deque, Dict, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import parse_qsl, urlencode, urlsplit

MANIFEST_PATH = Path(__file__).resolve().parent.parent / "manifest.yaml"
KEYSET_STREAM = "#/definitions/updated_at_stream"
TIMEOUT_SECONDS = 30.0
SHARE_SECONDS = 1.0
MAX_IN_FLIGHT = 10  # early requests waiting for their answer at once (a high requests_per_second)
MAX_EARLY = 100  # early requests in all: answers are held until the CDK asks
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)  # _KeysetWalk: no filter at or before this
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}
_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy")
SWITCH = "NORTHPASS_EARLY_REQUESTS"  # "off": the CDK sends every request itself

Key = Tuple[str, str, str, Tuple[Tuple[str, str], ...], str]
Answer = Tuple[int, str, List[Tuple[str, str]], bytes]  # status, reason, headers, body


def request_key(method: str, url: str, api_key: str) -> Key:
    """What makes two requests the same: method, scheme and host, path, query in any order, key."""
    parts = urlsplit(url)
    query = tuple(sorted(parse_qsl(parts.query, keep_blank_values=True)))
    return (method.upper(), f"{parts.scheme}://{parts.netloc}".lower(), parts.path, query, api_key)


class _Early:
    """One early request: whether it went and when (epoch milliseconds, the budget's clock, taken
    once its bytes are written: never earlier than Northpass saw it), and its answer."""

    __slots__ = ("sending", "dropped", "sent_ms", "answer", "taken_at")

    def __init__(self) -> None:
        self.sending = False
        self.dropped = False  # not sent: the CDK started first, or no connection
        self.sent_ms: Optional[int] = None
        self.answer: "Future[Optional[Answer]]" = Future()
        self.taken_at: Optional[float] = None


class Plan:
    """What to ask early for one read: first pages, and children to ask for per parent record."""

    def __init__(self, headers: Dict[str, str], auth_header: str, rates: List[Tuple[int, int]]) -> None:
        self.headers = headers
        self.auth_header = auth_header
        self.rates = rates  # (limit, interval in ms), as the manifest's api_budget says
        self.first: List[str] = []  # URLs, in the order to ask
        self.children: Dict[str, List[Callable[[str], str]]] = {}  # parent URL -> child URL per id


class Prefetch:
    """One process's early requests: sent by `start` before the CDK is imported, given to the
    CDK by the send `install` wraps."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._early: Dict[Key, _Early] = {}
        self._closed = False  # the CDK has started sending: nothing more goes early
        self._closing = threading.Lock()  # held by the first CDK send until the budget knows
        self._budget_told = False
        self._auth_header = "X-Api-Key"

    # -- before the CDK --------------------------------------------------------------------
    def start(self, argv: Sequence[str], manifest_path: Path = MANIFEST_PATH) -> Optional[threading.Thread]:
        """Plan and send a read's first requests in the background; None if there is nothing to do."""
        if list(argv[:1]) != ["read"] or os.environ.get(SWITCH, "").lower() in ("off", "0", "false", "no"):
            return None
        if any(os.environ.get(v) or os.environ.get(v.upper()) for v in _PROXY_VARIABLES):
            return None
        thread = threading.Thread(target=self._run, args=(list(argv), manifest_path), name="northpass-prefetch", daemon=True)
        thread.start()
        return thread

    def _run(self, argv: List[str], manifest_path: Path) -> None:
        try:
            planned = plan(argv, manifest_path)
        except Exception:  # an input the CDK reads (and reports on) itself
            return
        if planned is None:
            return
        self._auth_header = planned.auth_header
        queue: Deque[str] = deque(planned.first)
        pending = [0]  # parents whose answer is awaited

        def expand(url: str, answer: Optional[Answer]) -> None:
            ids = _ids(answer[3]) if answer is not None and answer[0] == 200 else []
            children = [child(record_id) for record_id in ids for child in planned.children[url]]
            with self._lock:
                pending[0] -= 1
                queue.extend(children)
                self._lock.notify_all()

        mine: List[_Early] = []
        while True:
            with self._lock:
                if not queue and pending[0] and not self._closed:
                    self._lock.wait(TIMEOUT_SECONDS)
                    continue
                if not queue or self._closed or len(mine) >= MAX_EARLY:
                    return
                stamps = sorted(e.sent_ms for e in mine if e.sent_ms is not None)
                unstamped = sum(1 for e in mine if e.sent_ms is None and not e.dropped)
                wait = _wait_ms(stamps, unstamped, planned.rates, _now_ms())
                if not wait and sum(1 for e in mine if not e.answer.done()) >= MAX_IN_FLIGHT:
                    wait = TIMEOUT_SECONDS * 1000  # woken when an answer arrives
                if wait:  # no room in the budget yet (woken early by a send, an answer or the CDK)
                    self._lock.wait(wait / 1000)
                    continue
                url = queue.popleft()
                key = request_key("GET", url, planned.headers[planned.auth_header])
                if key in self._early:
                    continue
                early = self._early[key] = _Early()
                mine.append(early)
                is_parent = url in planned.children
                pending[0] += is_parent
            done = (lambda answer, url=url: expand(url, answer)) if is_parent else None
            threading.Thread(target=self._fetch, args=(key, url, planned.headers, early, done), daemon=True).start()

    def _fetch(
        self, key: Key, url: str, headers: Mapping[str, str], early: _Early, done: Optional[Callable[[Optional[Answer]], None]]
    ) -> None:
        import http.client

        answer: Optional[Answer] = None
        connection: Optional[http.client.HTTPConnection] = None
        try:
            parts = urlsplit(url)
            if parts.scheme == "https":
                connection = http.client.HTTPSConnection(parts.netloc, timeout=TIMEOUT_SECONDS, context=_ssl_context())
            else:
                connection = http.client.HTTPConnection(parts.netloc, timeout=TIMEOUT_SECONDS)
            connection.connect()
            with self._lock:
                early.sending = not self._closed
            if early.sending:
                try:
                    connection.request("GET", f"{parts.path}?{parts.query}" if parts.query else parts.path, headers=dict(headers))
                finally:
                    with self._lock:
                        early.sent_ms = _now_ms()
                        self._lock.notify_all()
                reply = connection.getresponse()
                answer = (reply.status, reply.reason, reply.getheaders(), reply.read())
        except Exception:
            answer = None
        finally:
            if connection is not None:
                connection.close()
            early.answer.set_result(answer)
            with self._lock:
                if not early.sending:
                    early.dropped = True
                    self._early.pop(key, None)
                self._lock.notify_all()
        if done is not None:
            done(answer)

    # -- once the CDK runs -----------------------------------------------------------------
    def close(self, budget: Any, request: Any) -> None:
        """The CDK's first send: nothing more goes early, and the budget learns what went. Every
        send calls this first: the others wait until the budget knows (the CDK starts several
        workers at once, and one slipping past before would see an empty budget)."""
        if self._budget_told:
            return
        with self._closing:
            if not self._budget_told:
                self._tell(budget, request)
                self._budget_told = True

    def _tell(self, budget: Any, request: Any) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify_all()
            deadline = time.monotonic() + 5
            while any(e.sending and e.sent_ms is None for e in self._early.values()) and time.monotonic() < deadline:
                self._lock.wait(0.01)  # a request being written: its time is about to be known
            stamps = sorted(e.sent_ms or _now_ms() for e in self._early.values() if e.sending)
        if stamps:
            logging.getLogger("airbyte").info(
                f"{len(stamps)} request(s) sent while the connector started (first pages of the selected "
                "lists); the request budget counts them."
            )
        if stamps and not _record_sent(budget, stamps):
            # A budget this module cannot tell the past: count them as sent now, which is later
            # than they went (so no window ever holds more than the budget allows).
            for _ in stamps:
                budget.acquire_call(request)

    def take(self, request: Any) -> Any:
        """The early answer to this request as a requests.Response, or None."""
        if not self._early:
            return None
        key = request_key(request.method or "", request.url or "", str(request.headers.get(self._auth_header, "")))
        now = time.monotonic()
        with self._lock:
            for stale in [k for k, e in self._early.items() if e.taken_at is not None and now - e.taken_at > SHARE_SECONDS]:
                del self._early[stale]  # given, and no longer shared: its page is not kept
            early = self._early.get(key)
            if early is None:
                return None
            if early.taken_at is None:
                early.taken_at = now
        try:
            answer = early.answer.result(timeout=TIMEOUT_SECONDS + 5)
        except Exception:
            return None
        if answer is None or answer[0] != 200:
            with self._lock:
                self._early.pop(key, None)
            return None
        return _response(request, answer)

    def install(self) -> None:
        """Wrap the CDK's rate-limited session: its first send closes, an early answer is used."""
        from airbyte_cdk.sources.streams.call_rate import LimiterMixin

        if getattr(LimiterMixin.send, "northpass_prefetch", False):
            return
        cdk_send = LimiterMixin.send
        prefetch = self

        def send(session: Any, request: Any, **kwargs: Any) -> Any:
            prefetch.close(session._api_budget, request)
            response = prefetch.take(request)
            if response is None:
                return cdk_send(session, request, **kwargs)
            session._api_budget.update_from_response(request, response)
            return response

        send.northpass_prefetch = True  # type: ignore[attr-defined]
        send.cdk_send = cdk_send  # type: ignore[attr-defined]
        LimiterMixin.send = send  # type: ignore[method-assign]


PREFETCH = Prefetch()


# -- planning ------------------------------------------------------------------------------
def plan(argv: Sequence[str], manifest_path: Path = MANIFEST_PATH) -> Optional[Plan]:
    """The early requests of `read` with these arguments, or None."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--config")
    parser.add_argument("--catalog")
    parser.add_argument("--state")
    args, _ = parser.parse_known_args(list(argv[1:]))
    if not args.config or not args.catalog:
        return None
    config = json.loads(Path(args.config).read_text())
    catalog = json.loads(Path(args.catalog).read_text())
    states = _stream_states(json.loads(Path(args.state).read_text())) if args.state else {}
    if not isinstance(config, dict) or not isinstance(config.get("api_key"), str) or not config["api_key"]:
        return None

    import yaml
    from jinja2.sandbox import SandboxedEnvironment
    from jsonschema import Draft7Validator

    manifest = yaml.load(manifest_path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    if not Draft7Validator(manifest["spec"]["connection_specification"]).is_valid(config):
        return None  # the CDK refuses it, with the message, before any request
    environment = SandboxedEnvironment()

    def render(template: Any, **context: Any) -> str:
        return environment.from_string(str(template)).render(config=config, **context)

    definitions = manifest["definitions"]
    requester = definitions["requester"]
    base = render(requester["url_base"]).rstrip("/")
    if not _safe_base(base):
        return None
    authenticator = requester["authenticator"]
    headers = {str(k): str(v) for k, v in (requester.get("request_headers") or {}).items()}
    headers[authenticator["header"]] = render(authenticator["api_token"])
    rates = [(int(render(r["limit"])), _milliseconds(r["interval"])) for r in manifest["api_budget"]["policies"][0]["rates"]]
    if not rates or min(limit for limit, _ in rates) < 1:
        return None
    result = Plan(headers, authenticator["header"], rates)
    limit = int(render(definitions["page_size"]))
    cursor_field = definitions["updated_at_stream"]["incremental_sync"]["cursor_field"]
    paginator = _resolve(definitions["paginator"], manifest)

    def first_page(stream: Mapping[str, Any], *starts: Any) -> Optional[str]:
        path = (stream.get("$parameters") or {}).get("path")
        if stream.get("$ref") != KEYSET_STREAM or not isinstance(path, str) or "{" in path:
            return None
        params: Dict[str, Any] = {"limit": limit, "page": 1, "sort": cursor_field}
        lower = _lower_bound(*starts)
        if lower:
            params[f"filter[{cursor_field}][gteq]"] = lower
        return f"{base}/{path}?{urlencode(params)}"

    def child_url(path: str, field: str, query: str) -> Callable[[str], str]:
        template = environment.from_string(path)
        return lambda record_id: f"{base}/{template.render(config=config, stream_partition={field: record_id})}{query}"

    for configured in catalog.get("streams", []):
        name = configured["stream"]["name"]
        stream = definitions["streams"].get(name) or {}
        incremental = configured.get("sync_mode") == "incremental"
        state = (states.get(name) or {}).get(cursor_field) if incremental else None
        url = first_page(stream, state, config.get("start_date"))
        if url is not None:
            result.first.append(url)
            continue
        resolved = _resolve(stream, manifest)
        retriever = resolved.get("retriever") or {}
        router = retriever.get("partition_router") or {}
        parents = router.get("parent_stream_configs") or []
        path = (resolved.get("$parameters") or {}).get("path")
        if (
            router.get("type") != "SubstreamPartitionRouter"
            or len(parents) != 1
            or parents[0].get("parent_key") != "id"
            or parents[0].get("incremental_dependency")
            or resolved.get("incremental_sync")
            or not isinstance(path, str)
        ):
            continue
        parent_name = ((parents[0].get("stream") or {}).get("$parameters") or {}).get("name")
        parent_url = first_page(definitions["streams"].get(parent_name) or {}, config.get("start_date"))
        pages = retriever.get("paginator")
        if pages == paginator:
            query = "?" + urlencode({"limit": limit, "page": 1})
        elif pages == {"type": "NoPagination"}:
            query = ""
        else:
            continue
        if parent_url is None:
            continue
        if parent_url not in result.first:
            result.first.append(parent_url)
        result.children.setdefault(parent_url, []).append(child_url(path, parents[0]["partition_field"], query))
    return result


def _lookup(ref: str, manifest: Mapping[str, Any]) -> Any:
    node: Any = manifest
    for part in ref.lstrip("#/").split("/"):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _resolve(node: Any, manifest: Mapping[str, Any]) -> Any:
    """A manifest node with its `$ref`s replaced, a node's own keys over its reference's, as the
    CDK's ManifestReferenceResolver merges them. That one is not called: importing its module
    imports the CDK's sources package, 0.79 s, the very wait this module is here to fill."""
    if isinstance(node, list):
        return [_resolve(item, manifest) for item in node]
    if not isinstance(node, dict):
        return node
    own = {k: _resolve(v, manifest) for k, v in node.items() if k != "$ref"}
    if "$ref" not in node:
        return own
    target = _resolve(_lookup(str(node["$ref"]), manifest), manifest)
    return {**target, **own} if isinstance(target, dict) else target


def _milliseconds(duration: Any) -> int:
    match = re.fullmatch(r"PT(\d+(?:\.\d+)?)S", str(duration))
    if match is None:
        raise ValueError(f"not a duration in seconds: {duration}")
    return round(float(match.group(1)) * 1000)


def _stream_states(state: Any) -> Dict[str, Mapping[str, Any]]:
    """Per-stream states of a read's state file (the protocol's list of STREAM messages)."""
    found: Dict[str, Mapping[str, Any]] = {}
    for message in state if isinstance(state, list) else []:
        stream = (message or {}).get("stream") or {}
        name = (stream.get("stream_descriptor") or {}).get("name")
        if message.get("type") == "STREAM" and name and isinstance(stream.get("stream_state"), dict):
            found[name] = stream["stream_state"]
    return found


def _lower_bound(*starts: Any) -> Optional[str]:
    """`_KeysetWalk`'s lower bound: the latest of the state and start_date (as the CDK's cursor
    takes it), to the UTC second; none at or before the epoch. It reads dates as components.py's
    `parse_datetime` does (that module imports the CDK); a guess read differently would only be
    asked again, which the end-to-end no-repeat tests with start_date and state would show."""
    moments = [_EPOCH]
    for value in starts:
        if not value:
            continue
        text = str(value).strip()
        if len(text) == 10:
            moment = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=timezone.utc)
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
            moment = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
        moments.append(moment.astimezone(timezone.utc))
    latest = max(moments)
    return None if latest <= _EPOCH else latest.strftime("%Y-%m-%dT%H:%M:%SZ")


def _safe_base(url: str) -> bool:
    """https, or plain http to this machine only: BaseUrlValidation's rule, which cannot be
    imported from here without the CDK; a test checks that the two answer alike."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.username or parts.password or parts.query or parts.fragment or not host:
        return False
    if parts.scheme == "https":
        return True
    if parts.scheme != "http":
        return False
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- sending and answering -----------------------------------------------------------------
def _now_ms() -> int:
    return int(time.time() * 1000)  # the clock of the CDK's budget (pyrate_limiter's TimeClock)


def _wait_ms(stamps: List[int], unstamped: int, rates: List[Tuple[int, int]], now: int) -> int:
    """Milliseconds until one more request fits every rate, counting as the CDK's budget counts
    (every request at or after `now - interval`); a request on its way but not yet stamped
    counts in every window until it is (the wait is then short: its stamp wakes the caller)."""
    wait = 0
    for limit, interval in rates:
        inside = [stamp for stamp in stamps if stamp >= now - interval]
        if len(inside) + unstamped < limit:
            continue
        if len(inside) < limit:
            wait = max(wait, 50)
        else:
            wait = max(wait, inside[-limit] + interval + 1 - now)
    return wait


def _ssl_context() -> Any:
    """Certificates checked as requests checks them: REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE, else certifi's."""
    import ssl

    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if not bundle:
        import certifi

        bundle = certifi.where()
    if os.path.isdir(bundle):
        return ssl.create_default_context(capath=bundle)
    return ssl.create_default_context(cafile=bundle)


def _ids(body: bytes) -> List[str]:
    """The ids of a JSON:API list page's records."""
    try:
        data = json.loads(body).get("data")
    except Exception:
        return []
    return [str(r["id"]) for r in data if isinstance(r, dict) and r.get("id")] if isinstance(data, list) else []


def _response(request: Any, answer: Answer) -> Any:
    import requests
    from requests.structures import CaseInsensitiveDict
    from requests.utils import get_encoding_from_headers

    status, reason, headers, body = answer
    response = requests.Response()
    response.status_code = status
    response.reason = reason
    response.headers = CaseInsensitiveDict(headers)
    response.encoding = get_encoding_from_headers(response.headers)
    response._content = body
    response.url = request.url
    response.request = request
    return response


def _record_sent(budget: Any, stamps: List[int]) -> bool:
    """Put requests sent at these times (epoch ms) into the CDK's moving-window budget. False if
    the budget is not of the shape this knows (the caller then counts them as sent now)."""
    try:
        from pyrate_limiter import InMemoryBucket, RateItem

        buckets = [policy._bucket for policy in budget._policies]
        if not buckets or not all(isinstance(b, InMemoryBucket) and not b.items for b in buckets):
            return False
        for bucket in buckets:
            for stamp in stamps:
                if not bucket.put(RateItem("northpass-prefetch", stamp, 1)):
                    return False
        return True
    except Exception:
        return False
