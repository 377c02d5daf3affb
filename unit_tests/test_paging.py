"""Page-number paging (course_enrollments and every list without updated_at): `page`/`limit`
until `links.next` is absent."""


import pytest
import requests
import requests_mock

from source_northpass.components import NextLinkPageNumber
from unit_tests.harness import log_lines, record_data, run_read
from unit_tests.northpass_builders import NorthpassRequest, config, course, enrollment, ok, page, resource_id


def _one_course(http):
    for limit in (100, 5, 2):  # the page_size values of these tests
        NorthpassRequest.courses().with_limit(limit).with_page(1).with_sort("updated_at").mock(http, ok(page([course(1)])))


def _enrollments(limit, number):
    return NorthpassRequest.course_enrollments(1).with_limit(limit).with_page(number)


def _ids(output):
    return [r["id"] for r in record_data(output, "course_enrollments")]


def test_reads_every_page_until_links_next_is_absent():
    with requests_mock.Mocker() as http:
        _one_course(http)
        first = _enrollments(100, 1).mock(http, ok(page([enrollment(1, n) for n in range(100)], has_next=True)))
        second = _enrollments(100, 2).mock(http, ok(page([enrollment(1, n) for n in range(100, 137)])))
        output = run_read(config(), ["course_enrollments"])

    assert _ids(output) == [resource_id("enrollments/1", n) for n in range(137)]
    assert (first.call_count, second.call_count) == (1, 1)


def test_short_page_with_a_next_link_is_not_the_end():
    # The server clamps limit=100 to 40 without saying so: only links.next ends the list.
    with requests_mock.Mocker() as http:
        _one_course(http)
        _enrollments(100, 1).mock(http, ok(page([enrollment(1, n) for n in range(40)], True)))
        _enrollments(100, 2).mock(http, ok(page([enrollment(1, n) for n in range(40, 80)], True)))
        _enrollments(100, 3).mock(http, ok(page([enrollment(1, n) for n in range(80, 95)])))
        output = run_read(config(), ["course_enrollments"])

    assert len(_ids(output)) == 95


def test_empty_page_without_next_link_ends_the_list():
    with requests_mock.Mocker() as http:
        _one_course(http)
        _enrollments(100, 1).mock(http, ok(page([])))
        output = run_read(config(), ["course_enrollments"])

    assert _ids(output) == []
    assert not output.errors


def test_page_size_is_sent_as_limit():
    with requests_mock.Mocker() as http:
        NorthpassRequest.courses().with_limit(250).with_page(1).with_sort("updated_at").mock(http, ok(page([course(1)])))
        request = _enrollments(250, 1).mock(http, ok(page([enrollment(1, 1)])))
        run_read(config(page_size=250), ["course_enrollments"])

    assert request.call_count == 1


def test_a_page_repeating_the_previous_one_is_requested_again():
    with requests_mock.Mocker() as http:
        _one_course(http)
        _enrollments(2, 1).mock(http, ok(page([enrollment(1, 1), enrollment(1, 2)], True)))
        second = _enrollments(2, 2).mock(
            http,
            ok(page([enrollment(1, 1), enrollment(1, 2)], True)),  # a stale cache answers page 1 again
            ok(page([enrollment(1, 3), enrollment(1, 4)], True)),
        )
        _enrollments(2, 3).mock(http, ok(page([enrollment(1, 5)])))
        output = run_read(config(page_size=2), ["course_enrollments"])

    assert set(_ids(output)) == {resource_id("enrollments/1", n) for n in range(1, 6)}
    assert second.call_count == 2
    assert any("repeated the previous page" in line for line in log_lines(output, "WARN"))


def test_a_page_that_keeps_repeating_fails_the_sync_instead_of_looping():
    with requests_mock.Mocker() as http:
        _one_course(http)
        _enrollments(2, 1).mock(http, ok(page([enrollment(1, 1), enrollment(1, 2)], True)))
        second = _enrollments(2, 2).mock(http, ok(page([enrollment(1, 1), enrollment(1, 2)], True)))
        output = run_read(config(page_size=2), ["course_enrollments"], expect_failure=True)

    assert second.call_count == 3
    messages = " ".join(e.trace.error.message for e in output.errors)
    assert f"page 2 of /v2/courses/{resource_id('courses', 1)}/enrollments" in messages


def test_empty_pages_that_keep_promising_a_next_page_fail_instead_of_looping():
    with requests_mock.Mocker() as http:
        _one_course(http)
        _enrollments(100, 1).mock(http, ok(page([enrollment(1, 1)], True)))
        _enrollments(100, 2).mock(http, ok(page([], True)))
        third = _enrollments(100, 3).mock(http, ok(page([], True)))
        output = run_read(config(), ["course_enrollments"], expect_failure=True)

    assert third.call_count == 3, "the empty page 3 repeats the empty page 2: asked again twice, then the stream fails"
    assert any("kept answering page 3" in e.trace.error.message for e in output.errors)


def _bare(resources):  # a server or proxy that drops the links member
    return {"data": resources}


@pytest.mark.parametrize(
    "page_size", [pytest.param(2, id="pages-as-full-as-page_size"), pytest.param(5, id="server-clamps-to-2")]
)
def test_pages_without_json_api_links_are_read_until_a_page_shorter_than_the_fullest(page_size):
    with requests_mock.Mocker() as http:
        _one_course(http)
        pages = [
            _enrollments(page_size, 1).mock(http, ok(_bare([enrollment(1, 1), enrollment(1, 2)]))),
            _enrollments(page_size, 2).mock(http, ok(_bare([enrollment(1, 3), enrollment(1, 4)]))),
            _enrollments(page_size, 3).mock(http, ok(_bare([enrollment(1, 5)]))),
        ]
        output = run_read(config(page_size=page_size), ["course_enrollments"])

    assert _ids(output) == [resource_id("enrollments/1", n) for n in range(1, 6)]
    assert [p.call_count for p in pages] == [1, 1, 1]
    assert not output.errors


def test_a_short_first_page_without_json_api_links_is_followed_by_one_more_request():
    with requests_mock.Mocker() as http:
        _one_course(http)
        pages = [
            _enrollments(5, 1).mock(http, ok(_bare([enrollment(1, 1), enrollment(1, 2)]))),
            _enrollments(5, 2).mock(http, ok(_bare([]))),
        ]
        output = run_read(config(page_size=5), ["course_enrollments"])

    assert _ids(output) == [resource_id("enrollments/1", n) for n in range(1, 3)]
    assert [p.call_count for p in pages] == [1, 1], "the first page may be clamped: only the next one tells"


def _answer(document):
    with requests_mock.Mocker() as http:
        http.get("https://x/v2/l", json=document)
        return requests.get("https://x/v2/l")


def test_without_links_the_streams_fullest_page_decides_which_short_pages_end_a_list():
    paginator = NextLinkPageNumber(config={}, page_size=5, parameters={})
    # (page, records on it) of lists read one after another by one stream, limit 5, no links member
    pages = [(1, 3), (2, 0), (1, 2), (1, 3), (2, 3), (3, 1), (1, 5), (2, 4), (1, 4)]
    tokens = [
        paginator.next_page_token(_answer(_bare([{"id": f"{k}-{i}"} for i in range(count)])), count, None, number)
        for k, (number, count) in enumerate(pages)
    ]
    assert tokens == [
        2,  # the stream's first page: 3 may be all a clamping server gives
        None,  # empty: the end
        None,  # 2, shorter than the 3 seen: this list's last page
        2,  # 3, as full as any page yet: may be clamped
        3,
        None,
        2,  # full at limit=5: the server gives 5 ...
        None,  # ... so 4 is a last page
        None,
    ]
