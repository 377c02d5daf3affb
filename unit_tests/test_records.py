"""A JSON:API resource becomes one flat record, as the public Northpass connector emits it; the
CDK's DpathExtractor with DpathFlattenFields does the same only when no member collides."""

import requests
import requests_mock

from airbyte_cdk.sources.declarative.extractors.dpath_extractor import DpathExtractor
from airbyte_cdk.sources.declarative.transformations.dpath_flatten_fields import DpathFlattenFields

from source_northpass.components import JsonApiRecordExtractor

TYPICAL = {"id": "p1", "type": "people", "attributes": {"email": "a@example.com", "disabled": None},
           "relationships": {"groups": {"data": []}}, "links": {"self": "/v2/people/p1"}}
NULL_ATTRIBUTES = {"id": "p2", "type": "people", "attributes": None, "relationships": {}, "links": {}}
COLLIDING = {"id": "a1", "type": "activities", "attributes": {"id": 7, "type": "quiz", "title": "Quiz"},
             "relationships": {}, "links": {}}
NO_LINKS = {"id": "p3", "type": "people", "attributes": {"email": "c@example.com"}}


def _response(resources):
    with requests_mock.Mocker() as http:
        http.get("https://api.northpass.com/v2/people", json={"data": resources, "links": {}})
        return requests.get("https://api.northpass.com/v2/people")


def _ours(resource):
    (record,) = JsonApiRecordExtractor(parameters={}).extract_records(_response([resource]))
    return record


def _builtin(resource):
    (record,) = DpathExtractor(field_path=["data"], config={}, parameters={}).extract_records(_response([resource]))
    DpathFlattenFields(config={}, field_path=["attributes"], parameters={}, delete_origin_value=True).transform(record)
    return record


def test_attributes_are_lifted_and_the_json_api_members_kept_null_attributes_included():
    assert _ours(TYPICAL) == {"email": "a@example.com", "disabled": None, "id": "p1", "type": "people",
                              "relationships": {"groups": {"data": []}}, "links": {"self": "/v2/people/p1"}}
    assert _ours(NULL_ATTRIBUTES) == {"id": "p2", "type": "people", "relationships": {}, "links": {}}
    assert _ours(NO_LINKS) == {"email": "c@example.com", "id": "p3", "type": "people", "links": None,
                               "relationships": None}


def test_an_attribute_named_id_or_type_never_replaces_the_resources_own():
    assert _ours(COLLIDING) == {"id": "a1", "type": "activities", "title": "Quiz", "relationships": {}, "links": {}}


def test_the_builtin_flattening_agrees_on_a_typical_resource_only():
    """Why the extractor is not DpathExtractor + DpathFlattenFields: on a collision the built-in
    leaves every attribute nested, it keeps `attributes: null`, and a missing member stays missing."""
    assert _builtin(TYPICAL) == _ours(TYPICAL)
    assert _builtin(COLLIDING) == COLLIDING  # nothing lifted at all
    assert _builtin(NULL_ATTRIBUTES) == {**_ours(NULL_ATTRIBUTES), "attributes": None}
    assert _builtin(NO_LINKS) == {"email": "c@example.com", "id": "p3", "type": "people"}
