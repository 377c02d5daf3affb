"""source_northpass/fast_paths.py: each shortcut gives the answer the library would give."""

import random
from datetime import datetime, timezone

import pytest

from airbyte_cdk.sources.declarative.datetime.datetime_parser import DatetimeParser
from source_northpass import fast_paths
from source_northpass.fast_paths import NORTHPASS_DATETIME, parse_northpass_datetime
from unit_tests.harness import fresh_python

CDK_PARSE = getattr(DatetimeParser.parse, "cdk_parse", DatetimeParser.parse)  # unpatched

EDGE_CASES = [
    "2020-03-31T17:15:17Z",
    "1970-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "2024-02-29T12:00:00Z",  # leap day
    "2023-02-29T12:00:00Z",  # not a leap year
    "2020-02-30T00:00:00Z",
    "0000-01-01T00:00:00Z",
    "2020-00-10T00:00:00Z",
    "2020-13-10T00:00:00Z",
    "2020-01-00T00:00:00Z",
    "2020-01-32T00:00:00Z",
    "2020-01-01T24:00:00Z",
    "2020-01-01T00:60:00Z",
    "2020-01-01T00:00:60Z",  # strptime reads a leap second, datetime refuses it
    "2020-01-01T00:00:61Z",
    "2020-1-01T00:00:00Z",  # strptime accepts one-digit fields: left to it
    "2020-01-01T00:00:0Z",
    "2020-01-01T00:00:00z",
    "2020-01-01 00:00:00Z",
    "2020-01-01T00:00:00+00:00",
    "2020-01-01T00:00:00.000Z",
    "2020-01-01T00:00:00",
    "+020-01-01T00:00:00Z",
    "2020-+1-01T00:00:00Z",
    "2020-01-01T0 :00:00Z",
    "2020-0١-01T00:00:00Z",  # an Arabic-Indic digit: not ASCII, left to strptime
    "２020-01-01T00:00:00Z",
    "",
    "not a date at all!!!",
]


def cdk_answer(value):
    try:
        return CDK_PARSE(DatetimeParser(), value, NORTHPASS_DATETIME)
    except ValueError as error:
        return error


def random_stamps(count: int, seed: int = 7):
    """Strings of the shape with random digits, some with one character swapped for another."""
    rng = random.Random(seed)
    noise = "0123456789-:TZz +.١"
    for _ in range(count):
        text = list(
            f"{rng.randint(0, 9999):04d}-{rng.randint(0, 14):02d}-{rng.randint(0, 33):02d}T"
            f"{rng.randint(0, 25):02d}:{rng.randint(0, 61):02d}:{rng.randint(0, 62):02d}Z"
        )
        if rng.random() < 0.3:
            text[rng.randrange(len(text))] = rng.choice(noise)
        yield "".join(text)


@pytest.mark.parametrize("value", EDGE_CASES)
def test_fast_parse_agrees_with_the_cdk_parser_or_leaves_the_value_to_it(value):
    fast, cdk = parse_northpass_datetime(value), cdk_answer(value)
    if isinstance(cdk, ValueError):
        assert fast is None
    elif fast is not None:
        assert fast == cdk and fast.tzinfo == cdk.tzinfo == timezone.utc


def test_fast_parse_agrees_with_the_cdk_parser_on_random_stamps():
    read_fast = refused = 0
    for value in random_stamps(20_000):
        fast, cdk = parse_northpass_datetime(value), cdk_answer(value)
        if isinstance(cdk, ValueError):
            assert fast is None, value
            refused += 1
        elif fast is not None:
            assert fast == cdk, value
            read_fast += 1
    assert read_fast > 5_000 and refused > 5_000  # both sides of the comparison were exercised


def test_a_northpass_stamp_is_read_without_the_cdk_parser(monkeypatch):
    def cdk_parse(self, date, format):
        raise AssertionError(f"the CDK parser was asked for {date!r}")

    monkeypatch.setattr(DatetimeParser, "parse", cdk_parse)
    fast_paths.cursor_datetimes()
    parser = DatetimeParser()
    assert parser.parse("2020-03-31T17:15:17Z", NORTHPASS_DATETIME) == datetime(2020, 3, 31, 17, 15, 17, tzinfo=timezone.utc)
    with pytest.raises(AssertionError, match="2020-3-31"):
        parser.parse("2020-3-31T17:15:17Z", NORTHPASS_DATETIME)


def test_installed_parser_answers_like_the_cdk_and_raises_its_errors(monkeypatch):
    monkeypatch.setattr(DatetimeParser, "parse", CDK_PARSE)
    assert fast_paths.cursor_datetimes()
    assert fast_paths.cursor_datetimes()  # a second install keeps one layer
    assert DatetimeParser.parse.cdk_parse is CDK_PARSE
    parser = DatetimeParser()
    for value in EDGE_CASES:
        expected = cdk_answer(value)
        if isinstance(expected, ValueError):
            with pytest.raises(ValueError) as raised:
                parser.parse(value, NORTHPASS_DATETIME)
            assert str(raised.value) == str(expected)
        else:
            assert parser.parse(value, NORTHPASS_DATETIME) == expected
    # other formats are the CDK's business
    assert parser.parse("2020-03-31", "%Y-%m-%d") == datetime(2020, 3, 31, tzinfo=timezone.utc)
    assert parser.parse("1585674917", "%s") == datetime(2020, 3, 31, 17, 15, 17, tzinfo=timezone.utc)


PROXY_ENVIRONMENTS = [
    {},
    {"HTTPS_PROXY": "http://proxy.example:3128"},
    {"https_proxy": "http://proxy.example:3128", "http_proxy": "http://plain.example:8080"},
    {"HTTPS_PROXY": "http://proxy.example:3128", "NO_PROXY": "api.northpass.com"},
    {"HTTPS_PROXY": "http://proxy.example:3128", "no_proxy": ".example.com,127.0.0.1"},
    {"ALL_PROXY": "socks5://proxy.example:1080", "NO_PROXY": "*"},
]
URLS = [
    "https://api.northpass.com/v2/people?page=1",
    "https://api.northpass.com/v2/courses",
    "http://127.0.0.1:8080/v2/people",
    "https://proxy.example.com/northpass/v2/people",
]


@pytest.fixture
def requests_proxies(monkeypatch):
    """requests' own get_environ_proxies, counting its calls, with the shortcut installed over it."""
    from requests import sessions

    read = getattr(sessions.get_environ_proxies, "requests_read", sessions.get_environ_proxies)
    calls = []

    def counted(url, no_proxy=None):
        calls.append(url)
        return read(url, no_proxy=no_proxy)

    monkeypatch.setattr(sessions, "get_environ_proxies", counted)
    assert fast_paths.proxies_read_once()
    assert fast_paths.proxies_read_once()  # a second install keeps one layer
    return read, calls


@pytest.mark.parametrize("environment", PROXY_ENVIRONMENTS)
def test_proxies_are_the_ones_requests_finds_in_the_environment(monkeypatch, requests_proxies, environment):
    from requests import sessions

    read, calls = requests_proxies
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    session = sessions.Session()
    for url in URLS * 2:
        for no_proxy in (None, "northpass.com"):
            assert sessions.get_environ_proxies(url, no_proxy=no_proxy) == read(url, no_proxy=no_proxy)
        settings = session.merge_environment_settings(url, {}, None, None, None)
        assert settings["proxies"] == read(url)
    # each scheme and host (and no_proxy) was looked up once, though every URL was asked for four times
    assert len(calls) == len({(u.split("/")[0], u.split("/")[2]) for u in URLS}) * 2


def test_the_entry_point_installs_the_fast_paths():
    out = fresh_python(
        """
        import source_northpass.run
        from airbyte_cdk.sources.declarative.datetime.datetime_parser import DatetimeParser
        from requests import sessions
        print(getattr(DatetimeParser.parse, "northpass_fast_path", False),
              getattr(sessions.get_environ_proxies, "northpass_read_once", False))
        """
    )
    assert out.strip() == "True True"
