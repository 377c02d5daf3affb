"""course_enrollments: one list per course, with course_id on each record; forbidden courses skipped."""

import requests_mock

from unit_tests.harness import log_lines, record_data, run_read
from unit_tests.northpass_builders import (
    NorthpassRequest,
    config,
    course,
    enrollment,
    error,
    ok,
    page,
    resource_id,
    status,
)


def _courses(http, numbers):
    return NorthpassRequest.courses().with_limit(100).with_page(1).with_sort("updated_at").mock(
        http, ok(page([course(n) for n in numbers]))
    )


def test_full_refresh_reads_each_course_enrollments_with_course_id_on_every_record():
    with requests_mock.Mocker() as http:
        _courses(http, [1, 2])
        NorthpassRequest.course_enrollments(1).with_limit(100).with_page(1).mock(
            http, ok(page([enrollment(1, n) for n in range(100)], True))
        )
        NorthpassRequest.course_enrollments(1).with_limit(100).with_page(2).mock(
            http, ok(page([enrollment(1, n) for n in range(100, 120)]))
        )
        NorthpassRequest.course_enrollments(2).with_limit(100).with_page(1).mock(
            http, ok(page([enrollment(2, n) for n in range(3)]))
        )
        output = run_read(config(), ["course_enrollments"])

    records = record_data(output, "course_enrollments")
    assert len(records) == 123
    by_course = {}
    for record in records:
        by_course.setdefault(record["course_id"], []).append(record)
    assert {k: len(v) for k, v in by_course.items()} == {resource_id("courses", 1): 120, resource_id("courses", 2): 3}
    assert records[0]["person_id"] == resource_id("people", 0)


def test_forbidden_course_is_skipped_with_a_warning_naming_it_and_the_sync_goes_on():
    with requests_mock.Mocker() as http:
        _courses(http, [1, 2, 3])
        NorthpassRequest.course_enrollments(1).with_limit(100).with_page(1).mock(http, ok(page([enrollment(1, 1)])))
        NorthpassRequest.course_enrollments(2).with_limit(100).with_page(1).mock(http, status(403, error(403, "Forbidden")))
        NorthpassRequest.course_enrollments(3).with_limit(100).with_page(1).mock(http, status(404, error(404, "Not Found")))
        output = run_read(config(), ["course_enrollments"])

    assert not output.errors
    assert [r["course_id"] for r in record_data(output)] == [resource_id("courses", 1)]
    warnings = log_lines(output, "WARN")
    assert any(resource_id("courses", 2) in w and "403" in w for w in warnings)
    assert any(resource_id("courses", 3) in w and "404" in w for w in warnings)


def test_courses_and_enrollments_in_one_sync_emit_every_course_once():
    with requests_mock.Mocker() as http:
        courses = NorthpassRequest.courses().with_limit(100).with_page(1).with_sort("updated_at").mock(
            http, ok(page([course(1), course(2)]))
        )
        for n in (1, 2):
            NorthpassRequest.course_enrollments(n).with_limit(100).with_page(1).mock(http, ok(page([enrollment(n, 1)])))
        output = run_read(config(), ["courses", "course_enrollments"])

    assert sorted(r["id"] for r in record_data(output, "courses")) == [resource_id("courses", 1), resource_id("courses", 2)]
    assert len(record_data(output, "course_enrollments")) == 2
    assert courses.call_count == 2, "the courses stream and the enrollments' parent each read the page"
