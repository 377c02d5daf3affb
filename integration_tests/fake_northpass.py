"""A fake Northpass v2 API: a real HTTP server on 127.0.0.1, standard library only.

Used in-process by the integration tests (``with FakeNorthpass(school) as server``), and as a
process by ``make demo`` and the benchmark (``python -m integration_tests.fake_northpass``).
Everything is deterministic for a given seed.

Data (``School``)
    ``school.people``, ``.courses``, ``.groups``, ``.learning_paths``, ``.categories``, ``.quizzes``:
    dict id -> stored resource. Nested lists: ``school.enrollments[course_id]``,
    ``.activities[course_id]``, ``.learning_path_enrollments[learning_path_id]``,
    ``.course_progresses[person_id]``, ``.transcripts[person_id]`` (lists of stored resources) and
    ``.course_properties[course_id]`` (attributes dict, or None: that course answers 403).
    A stored resource is ``{"id", "type", "attributes", "relationships", "links"}`` whose
    ``links.self`` is a path; the server makes it absolute and serves other links as they are (a
    completed transcript item's ``certificate``). A transcript has an item per course and learning
    path enrollment; one learner took a course twice (``attempt_number`` 2). ``school.events``, the
    activity feed, is a list of ``{"type", "attributes": {"created_at"}, "relationships": {"person",
    "activity"}}`` (no id, no links): ``events`` over the data's years, among them (from 20) two pairs
    of exact duplicates, and ``event_burst`` more in one second. ``/v2/properties/courses`` lists each
    readable course's properties with its ``course_versions[course_id]`` (``version_number``,
    ``npcu``), then ``school.archived_course_properties`` (rows of versions ``/v2/courses`` does not list).
    Hold ``school.lock`` to read while a server runs. ``school.clock`` is an epoch second after all
    generated data. Every mutation method bumps ``school.version``; the server caches the sorted
    top-level lists per version, so after editing records directly call ``school.touch()``.
    ``add_events()`` appends events (at tick()s by default); ``complete()`` completes a course in a
    transcript and adds its event, leaving the person's ``updated_at`` as it was. Kinds added after
    the first ones draw from generators of their own: what a seed generated before never changes.

Server behaviour (``FakeNorthpass``)
    Order of checks per request: rate limit (429), ``latency`` sleep, method (405),
    ``X-Api-Key`` (401), injected fault, ``forbid()`` rule, route (404), query (400).
    ``jitter`` J makes each request's latency uniform in ``latency`` ± J;
    ``limit_after_latency`` sleeps before the rate limit is checked, as a server whose
    network delay lies in front of its limiter: requests then reach it out of step.
    ``limiter`` is how "``rate_limit`` requests per second" is counted: ``window`` (default: at
    most that many in any moving second), ``fixed`` (per second of the clock, a counter reset
    on each whole second) or ``bucket`` (a token bucket refilled at ``rate_limit`` per second
    holding at most ``burst`` tokens; ``burst`` 1 is a strict one-request-per-interval limiter).
    Default order of every list: ``created_at`` ascending, then ``id``; resources without
    ``created_at`` use ``enrolled_at`` (enrollments, learning path enrollments, transcripts) or
    ``started_at`` (course progresses); events list newest first (``-created_at``). Records
    without an id tie in the order they were added, the last first when the sort's first key
    descends: the default order of events is ``sort=created_at`` reversed. In any sort, nulls come
    first ascending.
    ``cont`` (and a bare ``filter[attr]=x``) is case-insensitive; an unknown predicate is a
    400, an unknown attribute is ignored. Numbers compare as numbers, everything else as
    strings. ``GET /_stats`` needs no key, is not rate limited and is not logged.
    ``ignore_filters``/``ignore_sort`` answer as if those parameters were absent (a lenient
    server); ``refuse_filters``/``refuse_sort`` answer any of them with a 400 (a strict one).
    Where Northpass may differ from the connector's guesses: ``nulls_last`` (a sort puts nulls
    last ascending, first descending, as Postgres does), ``learning_paths_at`` (``learning-paths``,
    the default, ``learning_paths`` or ``both``; the other spelling is a 404), ``group_people_at``
    (``people``, ``memberships``: membership rows naming the person, or ``both``), ``forbid()``
    (a list the plan lacks), ``school.undate()`` (records with a null or no ``updated_at``),
    ``properties_list`` (False: ``/v2/properties/courses`` is a 404, only the per-course endpoint
    answers) and ``course_progresses_at`` (False: every ``/v2/people/{id}/course_progresses`` is a 404);
    ``fault_rate`` answers that share of requests with a 5xx or a reset, at random.
    ``query_cost`` C adds a list page's own query time, as a real API's grows with the list and the
    page: C seconds per 10,000 records listed plus C per 100 records returned (on top of latency).
"""
from __future__ import annotations

import argparse
import calendar
import copy
import hmac
import json
import os
import random
import re
import signal
import socket
import struct
import sys
import threading
import time
import uuid
from bisect import bisect_left, bisect_right
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

DATA_START = calendar.timegm((2019, 1, 1, 0, 0, 0))
DATA_END = calendar.timegm((2024, 12, 31, 23, 59, 59))
CLOCK_START = calendar.timegm((2025, 1, 1, 0, 0, 0))

FIRST_NAMES = ["Ada", "Alan", "Grace", "Linus", "Margaret", "Dennis", "Barbara", "Ken", "Frances",
               "Edsger", "Radia", "Donald", "Hedy", "John", "Katherine", "Tim", "Sophie", "Niklaus"]
LAST_NAMES = ["Lovelace", "Turing", "Hopper", "Torvalds", "Hamilton", "Ritchie", "Liskov", "Thompson",
              "Allen", "Dijkstra", "Perlman", "Knuth", "Lamarr", "Backus", "Johnson", "Wilson", "Wirth"]
TOPICS = ["Onboarding", "Security Awareness", "Product Basics", "Sales Playbook", "Customer Success",
          "Compliance", "Leadership", "Data Privacy", "API Integration", "Support Tools"]
LEVELS = ["Intro to", "Advanced", "Essential", "Hands-on", "Mastering"]
GROUP_NAMES = ["Sales", "Support", "Engineering", "Partners", "Customers EMEA", "Customers US", "Managers"]
CATEGORY_NAMES = ["Getting Started", "Compliance", "Product", "Soft Skills", "Technical", "Certification"]
PATH_NAMES = ["New Hire", "Partner Certification", "Admin Track", "Sales Enablement", "Support Academy"]
ACTIVITY_TYPES = ["video", "quiz", "text", "scorm", "assignment"]
QUIZ_TYPES = {"graded": "Final exam", "survey": "Feedback survey", "knowledge_check": "Knowledge check"}
EVENT_TYPES = ["learner_viewed_activity_events", "learner_completed_activity_events",
               "learner_started_course_events", "learner_completed_course_events"]


def iso(seconds: int) -> str:
    """Epoch second -> ``2020-03-31T17:15:17Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def epoch(stamp: str) -> int:
    """``2020-03-31T17:15:17Z`` -> epoch second."""
    return calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _ref(type_: str, id_: str) -> dict:
    return {"type": type_, "id": id_}


def _resource(id_: str, type_: str, attributes: dict, relationships: dict, self_path: str) -> dict:
    return {"id": id_, "type": type_, "attributes": attributes,
            "relationships": relationships, "links": {"self": self_path}}


def _membership(group_id: str, person: dict) -> dict:
    """A row of /v2/groups/{id}/memberships: the membership, naming its person."""
    mid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"membership/{group_id}/{person['id']}"))
    return _resource(mid, "memberships", {"created_at": person["attributes"].get("created_at")},
                     {"person": {"data": _ref("people", person["id"])}, "group": {"data": _ref("groups", group_id)}},
                     f"/v2/groups/{group_id}/memberships/{mid}")


def _numbered(names: list, i: int) -> str:
    """Cycle through names, numbering the second and later rounds."""
    name = names[i % len(names)]
    return name if i < len(names) else f"{name} {i // len(names) + 1}"


def _progress(rng: random.Random) -> int:
    roll = rng.random()
    return 0 if roll < 0.3 else 100 if roll < 0.6 else rng.randint(1, 99)


def _status(progress: int, zero: str = "not_started") -> str:
    return zero if progress == 0 else "completed" if progress == 100 else "in_progress"


def _course_properties(rng: random.Random) -> dict:
    return {"credit_value": round(rng.uniform(0.5, 10.0), 1),
            "properties": {"level": rng.choice(["beginner", "intermediate", "advanced"]),
                           "duration_minutes": rng.randint(10, 240),
                           "language": rng.choice(["en", "de", "fr", "es"])}}


def _property_row(course_id: str, attributes: dict) -> dict:
    """A row of /v2/properties/courses: one course version's properties (no relationships, no links)."""
    rid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"course_properties/{course_id}/{attributes['version_number']}"))
    return {"id": rid, "type": "course_properties", "attributes": {"course_id": course_id, **attributes}}


def _event(rng: random.Random, pid: str, activities: list, at: str, type_: str | None = None) -> dict:
    """A record of /v2/events: no id, no links. ``type_`` (default: random) by ``pid`` on one of ``activities``."""
    aid = rng.choice(activities) if activities else None
    return {"type": type_ or rng.choice(EVENT_TYPES), "attributes": {"created_at": at},
            "relationships": {"person": {"data": _ref("people", pid)},
                              "activity": {"data": aid and _ref("activities", aid)}}}


def _certify(item: dict) -> None:
    item["links"]["certificate"] = f"https://cdn.example.com/certificates/{item['id']}.pdf"


def _transcript_item(rng: random.Random, pid: str, resource_type: str, resource_id: str, name: str,
                     enrollment: dict, version: int, attempt: int = 1) -> dict:
    """A row of /v2/transcripts/{pid}, from the attributes of a course or learning path enrollment."""
    iid, progress, completed = _uuid(rng), enrollment["progress"], enrollment["completed_at"]
    enrolled = epoch(enrollment["enrolled_at"])
    started = rng.randint(enrolled, epoch(completed) if completed else DATA_END) if progress else None
    item = _resource(iid, "transcript_items", {
        "resource_id": resource_id, "resource_type": resource_type, "name": name,
        "progress_status": _status(progress, "enrolled"), "progress": progress,
        "enrolled_at": enrollment["enrolled_at"], "started_at": started and iso(started), "completed_at": completed,
        "last_active_at": completed or (started and iso(rng.randint(started, DATA_END))),
        "attempt_number": attempt, "version_number": version,
    }, {}, f"/v2/transcripts/{pid}/{iid}")
    if progress == 100:
        _certify(item)
    return item


class School:
    """The in-memory school: generated records, a fake clock and mutations, behind one lock."""

    def __init__(self, seed: int = 0):
        self.lock = threading.RLock()
        self.seed = seed
        self._rng = random.Random(seed)
        self._mutation_rng = random.Random(f"mutations-{seed}")
        self.clock = CLOCK_START
        self.id = _uuid(self._rng)
        self.people: dict[str, dict] = {}
        self.courses: dict[str, dict] = {}
        self.groups: dict[str, dict] = {}
        self.learning_paths: dict[str, dict] = {}
        self.categories: dict[str, dict] = {}
        self.enrollments: dict[str, list] = {}
        self.activities: dict[str, list] = {}
        self.learning_path_enrollments: dict[str, list] = {}
        self.course_progresses: dict[str, list] = {}
        self.course_properties: dict[str, dict | None] = {}
        self.quizzes: dict[str, dict] = {}
        self.events: list[dict] = []
        self.transcripts: dict[str, list] = {}
        self.course_versions: dict[str, dict] = {}
        self.archived_course_properties: list[dict] = []
        self._rngs: dict[str, random.Random] = {}
        self._person_seq = 0
        self.version = 0  # bumped by every change to the data; the server's list caches key on it

    def touch(self) -> None:
        """Record a change to the data. The mutation methods call it; call it yourself (holding
        ``lock``) after editing records or collections directly, or the server may serve stale lists."""
        with self.lock:
            self.version += 1

    def _rng_for(self, kind: str) -> random.Random:
        """The generator of a kind of record added after the first ones (quizzes, events, ...): its own,
        so that adding it changed nothing else a seed generates."""
        return self._rngs.setdefault(kind, random.Random(f"{kind}-{self.seed}"))

    # ----------------------------------------------------------------- generation
    @classmethod
    def generate(cls, people: int = 300, courses: int = 12, enrollments: int = 400, groups: int = 6,
                 learning_paths: int = 3, categories: int = 4, activities_per_course: int = 3,
                 seed: int = 7, recent_share: float = 0.0, quizzes: int = 5, events: int = 0,
                 event_burst: int = 0, archived_course_versions: int = 2) -> "School":
        """A school; ``recent_share`` of its people were updated in the last 90 days of its data, as a
        school's updates bunch in recent months. ``events`` spread over the data, plus ``event_burst``
        in one second; from 20 events, two pairs of them are exact duplicates."""
        school = cls(seed)
        rng = school._rng
        created: dict[str, int] = {}  # epoch of created_at, to keep later dates after it

        def stamps() -> tuple[str, str, int]:
            c = rng.randint(DATA_START, DATA_END)
            return iso(c), iso(rng.randint(c, DATA_END)), c

        def named(kind: str, into: dict, names, count: int) -> list:
            """`count` resources of one kind that have just a name and their dates."""
            for i in range(count):
                rid = _uuid(rng)
                c_at, u_at, _ = stamps()
                into[rid] = _resource(rid, kind, {
                    "name": _numbered(names, i), "created_at": c_at, "updated_at": u_at,
                }, {}, f"/v2/{kind}/{rid}")
            return list(into)

        category_ids = named("categories", school.categories, CATEGORY_NAMES, categories)

        for i in range(courses):
            cid = _uuid(rng)
            c_at, u_at, created[cid] = stamps()
            name = f"{rng.choice(LEVELS)} {_numbered(TOPICS, i)}"
            cats = rng.sample(category_ids, min(len(category_ids), rng.randint(0, 2)))
            school.courses[cid] = _resource(cid, "courses", {
                "name": name, "status": "live" if rng.random() < 0.8 else "draft",
                "permalink": re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") + "-" + cid[:8],
                "created_at": c_at, "updated_at": u_at, "enrollments_count": 0,
                "credential_achievement_count": 0,
                "list_image_url": f"https://cdn.example.com/courses/{cid}/list.png",
                "full_description": f"<p>{name}: everything you need to know.</p>",
                "unpublished_changes": rng.random() < 0.2,
            }, {"categories": {"data": [_ref("categories", c) for c in cats]}}, f"/v2/courses/{cid}")
            school.enrollments[cid] = []
            school.activities[cid] = []
            for position in range(1, activities_per_course + 1):
                aid = _uuid(rng)
                a_created = rng.randint(created[cid], DATA_END)
                school.activities[cid].append(_resource(aid, "activities", {
                    "title": f"{name} - part {position}", "activity_type": rng.choice(ACTIVITY_TYPES),
                    "position": position, "created_at": iso(a_created),
                    "updated_at": iso(rng.randint(a_created, DATA_END)),
                }, {"course": {"data": _ref("courses", cid)}}, f"/v2/courses/{cid}/activities/{aid}"))
        course_ids = list(school.courses)
        forbidden = set(rng.sample(course_ids, round(len(course_ids) * 0.2)))
        for cid in course_ids:
            school.course_properties[cid] = None if cid in forbidden else _course_properties(rng)

        group_ids = named("groups", school.groups, GROUP_NAMES, groups)

        for _ in range(people):
            c = rng.randint(DATA_START, DATA_END)
            in_groups = rng.sample(group_ids, min(len(group_ids), rng.choice([0, 1, 1, 2])))
            updated = rng.randint(c, DATA_END)
            if recent_share and rng.random() < recent_share:
                updated = rng.randint(max(c, DATA_END - 90 * 86400), DATA_END)
            pid = school._add_person(rng, c, updated, in_groups)
            created[pid] = c
        person_ids = list(school.people)

        # Enrollments: unique (person, course) pairs; a fifth of the courses get none.
        empty = set(rng.sample(course_ids, len(course_ids) // 5))
        eligible = [c for c in course_ids if c not in empty]
        n = min(enrollments, len(eligible) * len(person_ids))
        if n * 2 >= len(eligible) * len(person_ids):
            pairs = rng.sample([(p, c) for c in eligible for p in person_ids], n)
        else:
            chosen: set = set()
            pairs = []
            while len(pairs) < n:
                pair = (rng.choice(person_ids), rng.choice(eligible))
                if pair not in chosen:
                    chosen.add(pair)
                    pairs.append(pair)
        for pid, cid in pairs:
            school._add_enrollment(rng, pid, cid, max(created[pid], created[cid]))
        for cid in course_ids:
            attrs = school.courses[cid]["attributes"]
            attrs["enrollments_count"] = len(school.enrollments[cid])
            attrs["credential_achievement_count"] = sum(
                e["attributes"]["progress"] == 100 for e in school.enrollments[cid])

        for i in range(learning_paths):
            lid = _uuid(rng)
            c_at, u_at, lp_created = stamps()
            school.learning_paths[lid] = _resource(lid, "learning_paths", {
                "name": _numbered(PATH_NAMES, i), "status": "live" if rng.random() < 0.8 else "draft",
                "created_at": c_at, "updated_at": u_at,
            }, {}, f"/v2/learning-paths/{lid}")
            school.learning_path_enrollments[lid] = []
            for pid in rng.sample(person_ids, rng.randint(0, min(len(person_ids), 25))):
                eid = _uuid(rng)
                enrolled = rng.randint(max(created[pid], lp_created), DATA_END)
                progress = _progress(rng)
                school.learning_path_enrollments[lid].append(_resource(eid, "learning_path_enrollments", {
                    "person_id": pid, "learning_path_id": lid, "progress": progress,
                    "enrolled_at": iso(enrolled),
                    "completed_at": iso(rng.randint(enrolled, DATA_END)) if progress == 100 else None,
                }, {"person": {"data": _ref("people", pid)},
                    "learning_path": {"data": _ref("learning_paths", lid)}},
                    f"/v2/learning-paths/{lid}/enrollments/{eid}"))

        school._generate_later_kinds(created, archived_course_versions, quizzes, events, event_burst)
        return school

    def _generate_later_kinds(self, created: dict, archived_course_versions: int, quizzes: int, events: int,
                              event_burst: int) -> None:
        """The kinds of record added after the first ones, each from its own generator and after all the
        others, so that what a seed generated before stays as it was. ``created``: id -> epoch created."""
        course_ids, person_ids = list(self.courses), list(self.people)
        rng, npcu = self._rng_for("properties"), [0, 0.5, 1, 2, 3]
        for cid in course_ids:
            self.course_versions[cid] = {"version_number": rng.randint(1, 4), "npcu": rng.choice(npcu)}
        self.archived_course_properties = [_property_row(_uuid(rng), {  # versions /v2/courses does not list
            "version_number": rng.randint(1, 3), "npcu": rng.choice(npcu), **_course_properties(rng)})
            for _ in range(archived_course_versions)]

        rng = self._rng_for("quizzes")
        for _ in range(quizzes if course_ids else 0):
            qid, cid, quiz_type = _uuid(rng), rng.choice(course_ids), rng.choice(list(QUIZ_TYPES))
            self.quizzes[qid] = _resource(qid, "quizzes", {
                "name": f"{self.courses[cid]['attributes']['name']}: {QUIZ_TYPES[quiz_type]}", "quiz_type": quiz_type,
                "legacy_id": rng.randint(1000, 99999) if rng.random() < 0.5 else None,
                "created_at": iso(rng.randint(created[cid], DATA_END)),
            }, {"course": {"data": _ref("courses", cid)}}, f"/v2/quizzes/{qid}")

        rng = self._rng_for("transcripts")
        self.transcripts = {pid: [] for pid in person_ids}
        for cid, course_enrollments in self.enrollments.items():
            name, latest = self.courses[cid]["attributes"]["name"], self.course_versions[cid]["version_number"]
            for e in course_enrollments:
                pid = e["attributes"]["person_id"]
                self.transcripts[pid].append(
                    _transcript_item(rng, pid, "course", cid, name, e["attributes"], rng.randint(1, latest)))
        taken = [(pid, item["attributes"]) for pid, items in self.transcripts.items() for item in items]
        if taken:  # a learner takes a course again, in its latest version
            pid, first = rng.choice(taken)
            cid = first["resource_id"]
            enrolled = rng.randint(epoch(first["last_active_at"] or first["enrolled_at"]), DATA_END)
            progress = _progress(rng)
            again = {"progress": progress, "enrolled_at": iso(enrolled),
                     "completed_at": iso(rng.randint(enrolled, DATA_END)) if progress == 100 else None}
            self.transcripts[pid].append(_transcript_item(
                rng, pid, "course", cid, first["name"], again, self.course_versions[cid]["version_number"], 2))
        for lid, path_enrollments in self.learning_path_enrollments.items():
            name = self.learning_paths[lid]["attributes"]["name"]
            for e in path_enrollments:
                pid = e["attributes"]["person_id"]
                self.transcripts[pid].append(_transcript_item(rng, pid, "learning_path", lid, name, e["attributes"], 1))

        rng, pools = self._rng_for("events"), self._activity_pools()

        def event(type_=None, at=None):
            pid = rng.choice(person_ids)
            return _event(rng, pid, pools.get(pid) or pools[None],
                          iso(rng.randint(created[pid], DATA_END) if at is None else at), type_)

        if person_ids:
            pairs = 2 if events >= 20 else 0
            feed = [event() for _ in range(events - 2 * pairs)]
            for _ in range(pairs):  # a learner viewing an activity twice in one second
                twice = event("learner_viewed_activity_events")
                feed += [twice, copy.deepcopy(twice)]
            burst = rng.randint(DATA_START, DATA_END)
            feed += [event(at=burst) for _ in range(event_burst)]
            self.events = sorted(feed, key=lambda e: e["attributes"]["created_at"])  # added as they happened

    def _add_person(self, rng: random.Random, created: int, updated: int, groups=()) -> str:
        self.version += 1
        self._person_seq += 1
        pid = _uuid(rng)
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        registered = rng.random() < 0.8
        self.people[pid] = _resource(pid, "people", {
            "email": f"{first}.{last}.{self._person_seq}@example.com".lower(),
            "first_name": first, "last_name": last, "full_name": f"{first} {last}",
            "name": f"{first} {last}", "created_at": iso(created), "updated_at": iso(updated),
            "activated_at": iso(rng.randint(created, updated)) if registered else None,
            "disabled": rng.random() < 0.05, "unsubscribed": rng.random() < 0.1,
            "registration_status": "registered" if registered else "invited",
            "custom_avatar_url": f"https://cdn.example.com/avatars/{pid}.png" if rng.random() < 0.3 else None,
            "invite_token": None if registered else f"{rng.getrandbits(128):032x}",
        }, {"groups": {"data": [_ref("groups", g) for g in groups]},
            "school": {"data": _ref("schools", self.id)}}, f"/v2/people/{pid}")
        self.course_progresses.setdefault(pid, [])
        return pid

    def _add_enrollment(self, rng: random.Random, pid: str, cid: str, not_before: int) -> None:
        self.version += 1
        enrolled = rng.randint(not_before, DATA_END)
        progress = _progress(rng)
        completed = iso(rng.randint(enrolled, DATA_END)) if progress == 100 else None
        eid, prid = _uuid(rng), _uuid(rng)
        people_and_course = {"person": {"data": _ref("people", pid)}, "course": {"data": _ref("courses", cid)}}
        self.enrollments[cid].append(_resource(eid, "enrollments", {
            "person_id": pid, "course_id": cid, "progress": progress, "enrolled_at": iso(enrolled),
            "completed_at": completed, "status": _status(progress),
        }, people_and_course, f"/v2/courses/{cid}/enrollments/{eid}"))
        started = iso(enrolled) if progress else None
        self.course_progresses[pid].append(_resource(prid, "course_progresses", {
            "course_id": cid, "person_id": pid, "progress": progress, "status": _status(progress),
            "started_at": started, "completed_at": completed,
            "updated_at": completed or started or iso(enrolled),
        }, dict(people_and_course), f"/v2/people/{pid}/course_progresses/{prid}"))

    def _activity_pools(self) -> dict:
        """person id -> the ids of the activities of the courses they are enrolled in; None -> every activity."""
        pools: dict = {None: [a["id"] for course in self.activities.values() for a in course]}
        for cid, enrollments in self.enrollments.items():
            for e in enrollments:
                pools.setdefault(e["attributes"]["person_id"], []).extend(a["id"] for a in self.activities[cid])
        return pools

    # ----------------------------------------------------------------- clock and mutations
    def tick(self) -> str:
        """Advance the clock by one second and return it as an ISO string."""
        with self.lock:
            self.clock += 1
            return iso(self.clock)

    def _stamp(self, when: str | int | None) -> str:
        if when is None:
            return self.tick()
        return iso(when) if isinstance(when, int) else when

    def _update(self, records: dict, id_: str | None, updated_at, attrs: dict) -> str:
        with self.lock:
            if id_ is None:
                id_ = self._mutation_rng.choice(sorted(records))
            record = records[id_]
            self.version += 1
            record["attributes"].update(attrs)
            record["attributes"]["updated_at"] = self._stamp(updated_at)
            return id_

    def update_person(self, id: str | None = None, updated_at=None, **attrs) -> str:
        """Set ``attrs`` verbatim on a person (random if id is None), stamp updated_at; return id."""
        return self._update(self.people, id, updated_at, attrs)

    def update_course(self, id: str | None = None, updated_at=None, **attrs) -> str:
        return self._update(self.courses, id, updated_at, attrs)

    def update_group(self, id: str | None = None, updated_at=None, **attrs) -> str:
        return self._update(self.groups, id, updated_at, attrs)

    def create_person(self, updated_at=None, **attrs) -> str:
        """Add a person with created_at = updated_at = ``updated_at`` (default: tick()); return id."""
        with self.lock:
            stamp = self._stamp(updated_at)
            pid = self._add_person(self._mutation_rng, epoch(stamp), epoch(stamp))
            self.people[pid]["attributes"].update(attrs)
            self.version += 1
            return pid

    def delete_person(self, id: str | None = None) -> str:
        """Remove a person (random if None); their enrollments stay, as orphans. Return the id."""
        with self.lock:
            if id is None:
                id = self._mutation_rng.choice(sorted(self.people))
            self.version += 1
            del self.people[id]
            self.course_progresses.pop(id, None)
            self.transcripts.pop(id, None)
            return id

    def undate(self, kind: str, count: int | None = None, absent: bool = False) -> list[str]:
        """Give ``count`` records of a top-level list (all if None) a null ``updated_at``, or none at
        all (``absent``): records a filter on it never matches. Return their ids."""
        with self.lock:
            records = getattr(self, kind)
            ids = sorted(records) if count is None else self._mutation_rng.sample(sorted(records), count)
            for id_ in ids:
                attributes = records[id_]["attributes"]
                if absent:
                    attributes.pop("updated_at", None)
                else:
                    attributes["updated_at"] = None
            self.version += 1
            return ids

    def bulk_import(self, n: int, timestamp=None) -> list[str]:
        """Create n people sharing created_at = updated_at = timestamp (default: one tick())."""
        with self.lock:
            stamp = self._stamp(timestamp)
            return [self.create_person(updated_at=stamp) for _ in range(n)]

    def course_property_rows(self) -> list[dict]:
        """The rows of /v2/properties/courses: each readable course's, then the archived versions'."""
        with self.lock:
            rows = [_property_row(cid, {**self.course_versions[cid], **properties})
                    for cid, properties in self.course_properties.items() if properties is not None]
            return rows + self.archived_course_properties

    def add_events(self, n: int, at=None, person_id: str | None = None) -> list[dict]:
        """Append n events of random types by ``person_id`` (default: each a random person), each at ``at``
        (default: each a tick()); return them."""
        with self.lock:
            rng, pools, people = self._rng_for("events"), self._activity_pools(), sorted(self.people)
            new = []
            for _ in range(n):
                pid = person_id or rng.choice(people)
                new.append(_event(rng, pid, pools.get(pid) or pools[None], self._stamp(at)))
            self.events += new
            self.version += 1
            return new

    def complete(self, person_id: str | None = None, resource_id: str | None = None, at=None) -> dict:
        """A learner completes a course of their transcript (a random unfinished one matching the ids)
        at ``at`` (default: tick()), their ``updated_at`` unchanged: the item gets progress 100 and a
        certificate, and a learner_completed_course_events event is added at that second. Return the item."""
        with self.lock:
            unfinished = [(pid, item) for pid, items in self.transcripts.items() if person_id in (None, pid)
                          for item in items if item["attributes"]["resource_type"] == "course"
                          and item["attributes"]["progress"] < 100
                          and resource_id in (None, item["attributes"]["resource_id"])]
            if not unfinished:
                raise LookupError(f"no unfinished course in a transcript, person {person_id}, course {resource_id}")
            rng = self._rng_for("transcripts")
            pid, item = rng.choice(unfinished)
            stamp = self._stamp(at)
            attributes = item["attributes"]
            attributes.update(progress=100, progress_status="completed", started_at=attributes["started_at"] or stamp,
                              completed_at=stamp, last_active_at=stamp)
            _certify(item)
            activities = [a["id"] for a in self.activities.get(attributes["resource_id"], [])]
            self.events.append(_event(rng, pid, activities, stamp, "learner_completed_course_events"))
            self.version += 1
            return item


# --------------------------------------------------------------------- query engine
FILTER_KEY = re.compile(r"filter\[([^\[\]]+)\](?:\[([^\[\]]+)\])?")
PREDICATES = {"eq", "not_eq", "cont", "gt", "gteq", "lt", "lteq", "in"}
DEFAULT_ORDER = {"enrollments": "enrolled_at", "learning_path_enrollments": "enrolled_at",
                 "course_progresses": "started_at", "transcript_items": "enrolled_at", "events": "-created_at"}


class QueryError(ValueError):
    """A query parameter the server refuses (answered 400)."""


def _field(record: dict, attr: str):
    return record.get("id") if attr == "id" else record["attributes"].get(attr)


def _known_attributes(records: list) -> set:
    known = {"id"}
    for record in records:
        known.update(record["attributes"])
    return known


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _text(value) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _equals(value, raw: str) -> bool:
    if value is None:
        return False
    if _is_number(value):
        try:
            return value == float(raw)
        except ValueError:
            return False
    return _text(value) == (raw.lower() if isinstance(value, bool) else raw)


def matches(value, predicate: str, raw: str) -> bool:
    """Does one attribute value satisfy ``filter[attr][predicate]=raw``?"""
    if predicate == "eq":
        return _equals(value, raw)
    if predicate == "not_eq":
        return not _equals(value, raw)
    if predicate == "in":
        return any(_equals(value, part.strip()) for part in raw.split(","))
    if value is None:
        return False
    if predicate == "cont":
        return raw.lower() in _text(value).lower()
    left, right = _text(value), raw
    if _is_number(value):
        try:
            left, right = value, float(raw)
        except ValueError:
            pass
    return {"gt": left > right, "gteq": left >= right, "lt": left < right, "lteq": left <= right}[predicate]


def parse_filters(query: dict) -> list[tuple[str, str, str]]:
    filters = []
    for key, value in query.items():
        m = FILTER_KEY.fullmatch(key)
        if m:
            predicate = m.group(2) or "cont"
            if predicate not in PREDICATES:
                raise QueryError(f"unknown filter predicate '{predicate}' in {key}")
            filters.append((m.group(1), predicate, value))
    return filters


def apply_filters(records: list, filters: list) -> list:
    known = _known_attributes(records)
    active = [f for f in filters if f[0] in known]  # a lenient server ignores unknown attributes
    return [r for r in records if all(matches(_field(r, a), p, v) for a, p, v in active)]


def _sort_keys(sort: str | None) -> list[tuple[str, bool]]:
    """``a,-b`` -> [("a", False), ("b", True)]: (attribute, descending)."""
    parts = (part.strip() for part in (sort or "").split(","))
    return [(part.lstrip("-+ "), part.startswith("-")) for part in parts if part]


def apply_sort(records: list, sort: str | None, default: str, nulls_last: bool = False) -> list:
    """Stable multi-key sort; unknown keys are ignored, none known means the ``default`` sort; the
    last tie-breaker is id ascending, or for records without an id (events) the order they were added
    in, the last first when the first key descends. Nulls sort first ascending (MySQL), or last
    (``nulls_last``, Postgres); the other end descending."""

    def _sort_value(value):
        return (2 if nulls_last else 0, "") if value is None else (1, value)

    known = _known_attributes(records)
    keys = [key for key in _sort_keys(sort) if key[0] in known] or _sort_keys(default)
    if all("id" in r for r in records):
        ordered = sorted(records, key=lambda r: r["id"])
    else:
        ordered = records[::-1] if keys[0][1] else list(records)
    for attr, descending in reversed(keys):
        ordered.sort(key=lambda r: _sort_value(_field(r, attr)), reverse=descending)
    return ordered


# The fast path for top-level lists. ``apply_filters`` and ``apply_sort`` above are the
# reference; what follows answers the same pages without filtering and sorting the whole
# collection on every request: orders are cached per school version, a range filter on an
# attribute narrows with bisect on that attribute's ascending order, and the remaining filters
# are applied lazily, only until the page and one more record are known.
RANGE_PREDICATES = {"eq", "gt", "gteq", "lt", "lteq"}


class _Order:
    """A collection in one sort order, with what bisect needs when the first key ascends."""

    def __init__(self, collection: "_Collection", keys: tuple):
        # apply_sort: by id (by_id), then a stable sort per key from the last. Sorting positions by a
        # column of values avoids a Python call per record; nulls sort at one end (apply_sort).
        rows = collection.by_id(keys[0][1])
        nulls = []
        for attr, descending in reversed(keys):
            column = collection.column(attr)
            if None in column:
                nulls = [i for i in rows if column[i] is None]
                rows = [i for i in rows if column[i] is not None]
            else:
                nulls = []
            rows = sorted(rows, key=column.__getitem__, reverse=descending)  # stable
            rows = rows + nulls if descending != collection.nulls_last else nulls + rows
        records = collection.records
        self.records = [records[i] for i in rows]
        self._pos: dict | None = None
        self.kind = None  # "str" or "num": the type of every non-null first-key value
        self.base, self.values = 0, []  # the non-null first-key values, from self.records[base]
        if keys[0][1]:  # descending: no bisect
            return
        base = 0 if collection.nulls_last else len(nulls)
        values = [column[i] for i in rows[base:base + len(rows) - len(nulls)]]
        if all(type(v) is str for v in values):
            self.kind = "str"
        elif all(_is_number(v) and v == v for v in values):
            self.kind = "num"
        else:
            return
        self.base, self.values = base, values

    @property
    def pos(self) -> dict:
        """id(record) -> index in this order (by identity: events have no id)."""
        if self._pos is None:
            self._pos = {id(r): i for i, r in enumerate(self.records)}
        return self._pos

    def range(self, predicate: str, raw: str) -> tuple[int, int] | None:
        """[lo, hi) of exactly the records matching the filter on the first key, or None when
        the filter cannot be answered by bisect (so ``matches`` must decide)."""
        if self.kind is None or predicate not in RANGE_PREDICATES:
            return None
        value = raw
        if self.kind == "num":
            try:
                value = float(raw)
            except ValueError:
                return None  # a number against a non-number compares as text: not monotone
            if value != value:
                return None
        values, base = self.values, self.base
        end = base + len(values)
        if predicate == "eq":
            return base + bisect_left(values, value), base + bisect_right(values, value)
        if predicate == "gt":
            return base + bisect_right(values, value), end
        if predicate == "gteq":
            return base + bisect_left(values, value), end
        if predicate == "lt":
            return base, base + bisect_left(values, value)
        return base, base + bisect_right(values, value)  # lteq


class _Collection:
    """What the server caches about one top-level collection at one school version."""

    def __init__(self, records: list, stamp: tuple, nulls_last: bool = False):
        self.stamp = stamp
        self.records = records
        self.nulls_last = nulls_last
        self._counts: dict[str, int] = {"id": len(records)}
        self._columns: dict[str, list] = {}
        self._by_id: list | None = None
        self._orders: dict[tuple, _Order | None] = {}

    def count(self, attr: str) -> int:
        """How many records have the attribute (as a key, even if null)."""
        if attr not in self._counts:
            self._counts[attr] = sum(1 for r in self.records if attr in r["attributes"])
        return self._counts[attr]

    def column(self, attr: str) -> list:
        """_field(record, attr) of every record, in self.records order."""
        if attr not in self._columns:
            self._columns[attr] = ([r.get("id") for r in self.records] if attr == "id"
                                   else [r["attributes"].get(attr) for r in self.records])
        return self._columns[attr]

    def by_id(self, descending: bool = False) -> list:
        """Positions in self.records, as apply_sort breaks ties: by id, or for records without one in
        their list order, the last first when the first key descends."""
        ids, positions = self.column("id"), range(len(self.records))
        if None in ids:
            return list(reversed(positions) if descending else positions)
        if self._by_id is None:
            self._by_id = sorted(positions, key=ids.__getitem__)
        return self._by_id

    def order(self, keys: tuple) -> _Order | None:
        """The collection sorted as apply_sort would by keys; None if the values do not sort."""
        if keys not in self._orders:
            try:
                self._orders[keys] = _Order(self, keys)
            except TypeError:  # mixed types: only the reference path can tell what a subset does
                self._orders[keys] = None
        return self._orders[keys]

    def sort_keys(self, sort: str | None, default: str) -> tuple | None:
        """apply_sort's keys, or None when they depend on which records the filters keep."""
        keys = []
        for attr, descending in _sort_keys(sort):
            count = self.count(attr)
            if count == len(self.records):
                keys.append((attr, descending))
            elif count:
                return None  # known only if a record having it survives the filters
        return tuple(keys) or tuple(_sort_keys(default))


def _select(collection: _Collection, filters: list, sort: str | None, default: str,
            start: int, stop: int, need: int) -> tuple[list, bool] | None:
    """The filtered, sorted records [start:stop], and whether there are more than ``need``;
    None when only the reference path can answer."""
    n = len(collection.records)
    keys = collection.sort_keys(sort, default) if n else None
    order = keys and collection.order(keys)
    if not order:
        return None
    active = [f for f in filters if collection.count(f[0])]  # apply_filters' known attributes
    lo, hi = 0, n
    remaining, best = [], None  # best: (size, filter, order, lo) from another attribute's order
    first_attr, first_descending = keys[0]
    for f in active:
        attr, predicate, raw = f
        if predicate not in RANGE_PREDICATES:
            remaining.append(f)
            continue
        if attr == first_attr and not first_descending:
            span = order.range(predicate, raw)
            if span:
                lo, hi = max(lo, span[0]), min(hi, span[1])
                continue
        remaining.append(f)
        other = collection.order(((attr, False),))
        span = other and other.range(predicate, raw)
        if span and (best is None or span[1] - span[0] < best[0]):
            best = (span[1] - span[0], f, other, span[0])
    hi = max(lo, hi)
    if best is not None:
        # Walking [lo, hi) in order checks about need * n / size records (each a few matches()
        # calls) if the other filter's matches spread evenly; taking those matches instead costs
        # one position lookup each, then a sort of the positions.
        size, f, other, start_other = best
        if size < 3 * min(hi - lo, need * n // max(size, 1)):
            pos = order.pos
            places = sorted(i for i in (pos[id(r)] for r in other.records[start_other:start_other + size])
                            if lo <= i < hi)
            remaining.remove(f)
            candidates = [order.records[i] for i in places]
            lo, hi = 0, len(candidates)
        else:
            candidates = order.records
    else:
        candidates = order.records
    if not remaining:
        return candidates[lo + start:min(hi, lo + stop)], hi - lo > need
    kept = []
    for i in range(lo, hi):
        record = candidates[i]
        if all(matches(_field(record, a), p, v) for a, p, v in remaining):
            kept.append(record)
            if len(kept) > need:
                break
    return kept[start:stop], len(kept) > need


def int_param(query: dict, name: str, default: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise QueryError(f"'{name}' must be a positive integer") from None
    if value < 1:
        raise QueryError(f"'{name}' must be a positive integer")
    return value


# --------------------------------------------------------------------- HTTP server
FAULT_KINDS = ("500", "502", "503", "html", "no_data", "reset", "slow", "repeat")
LIMITERS = ("window", "fixed", "bucket")  # how the rate limit counts (FakeNorthpass docstring)
HTML_PAGE = (b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway"
             b"</h1></center><hr><center>nginx</center></body></html>")


@dataclass
class RequestLog:
    method: str
    path: str
    query: dict
    status: int  # 0 while in flight, and for a "reset" fault (no answer at all)
    t: float  # time.monotonic() at arrival


@dataclass
class _Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict = field(default_factory=dict)
    list_page: bool = False
    cost: float = 0.0  # seconds the server spends on the query, slept before answering


def _json(status: int, document: dict, **kwargs) -> _Reply:
    return _Reply(status, json.dumps(document, separators=(",", ":")).encode(), **kwargs)


def _error(status: int, detail: str, headers: dict | None = None) -> _Reply:
    error = {"status": str(status), "title": HTTPStatus(status).phrase, "detail": detail}
    return _json(status, {"errors": [error]}, headers=headers or {})


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real API behind a load balancer
    server_version = "FakeNorthpass/1.0"
    timeout = 120
    disable_nagle_algorithm = True  # headers and body go out in two writes: avoid 40 ms delayed ACKs

    def version_string(self):
        return self.server_version

    def log_message(self, format, *args):  # quiet: no per-request logging
        pass

    def setup(self):
        super().setup()
        self.server.fake._track(self.connection, add=True)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.fake._track(self.connection, add=False)

    def do_GET(self):
        self.server.fake._handle(self)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET


class FakeNorthpass:
    """The HTTP server over a School. Use as a context manager, or start()/stop()."""

    def __init__(self, school: School, api_key: str = "test-key", max_limit: int = 100,
                 default_limit: int = 10, rate_limit: int | None = 10, latency: float = 0.0,
                 retry_after: bool = True, port: int = 0, host: str = "127.0.0.1",
                 jitter: float = 0.0, limit_after_latency: bool = False, limiter: str = "window",
                 burst: int | None = None):
        if limiter not in LIMITERS:
            raise ValueError(f"unknown limiter {limiter!r}; expected one of {LIMITERS}")
        self.school = school
        self.api_key = api_key
        self.max_limit = max_limit
        self.default_limit = default_limit
        self.rate_limit = rate_limit
        self.latency = latency
        self.jitter = jitter
        self.limit_after_latency = limit_after_latency
        self.limiter = limiter
        self.burst = burst if burst is not None else rate_limit
        self._tokens = (float(self.burst or 0), time.monotonic())  # the bucket: tokens, last refill
        self._second = (None, 0)  # the fixed window: which second, requests admitted in it
        self.retry_after = retry_after
        self.host, self.port = host, port
        self.slow_seconds = 3.0
        self.ignore_filters = False
        self.ignore_sort = False
        self.refuse_filters = False
        self.refuse_sort = False
        self.nulls_last = False  # how a sort places nulls: first ascending (MySQL), or last (Postgres)
        self.learning_paths_at = "learning-paths"  # the path spelling served: or "learning_paths", "both"
        self.group_people_at = "both"  # a group's people at /people, /memberships (membership rows) or both
        self.properties_list = True  # False: /v2/properties/courses (all courses' properties) is a 404
        self.course_progresses_at = True  # False: /v2/people/{id}/course_progresses is a 404
        self.fault_rate = 0.0  # the share of requests answered 500, 502, 503 or a reset, at random
        self.query_cost = 0.0  # a list page's own time: this many seconds per 10,000 listed + per 100 returned
        self._fault_rng = random.Random(0)
        self.on_request = None  # callable(server, RequestLog), run for each 200 list page
        self.callback_errors: list[BaseException] = []
        self.requests: list[RequestLog] = []
        self._faults: list[list] = []  # [compiled regex, kind, times left]
        self._forbidden: list[tuple] = []  # (compiled regex, status)
        self._window: deque = deque()  # arrival times of admitted requests, last second
        self._lock = threading.Lock()  # log, faults, rate limiter, open connections
        self._connections: set = set()
        self._collections: dict[str, _Collection] = {}  # list caches; guarded by school.lock
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> "FakeNorthpass":
        if self._httpd is None:
            self._httpd = _HTTPServer((self.host, self.port), _Handler)
            self._httpd.fake = self
            self.port = self._httpd.server_address[1]
            self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                            name="fake-northpass", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:  # idle keep-alive connections would outlive the server
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        httpd.server_close()
        self._thread.join(5)

    def __enter__(self) -> "FakeNorthpass":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the fake Northpass server is not running")
        return f"http://{self.host}:{self.port}"

    # ----------------------------------------------------------------- test controls
    def inject(self, path_regex: str, kind: str, times: int = 1) -> None:
        """Queue a fault for the next ``times`` requests whose path matches (re.search)."""
        kind = str(kind)
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS}")
        with self._lock:
            self._faults.append([re.compile(path_regex), kind, times])

    def forbid(self, path_regex: str, status: int = 403) -> None:
        """Answer every matching request (re.search on the path) with 403 or 404."""
        if status not in (403, 404):
            raise ValueError("forbid() answers 403 or 404")
        with self._lock:
            self._forbidden.append((re.compile(path_regex), status))

    def clear_faults(self) -> None:
        """Drop queued faults and forbid() rules."""
        with self._lock:
            self._faults.clear()
            self._forbidden.clear()

    def count(self, path: str | None = None, status: int | None = None) -> int:
        """Logged requests, by exact path or a prefix ending with '*', and/or by status."""
        with self._lock:
            log = list(self.requests)
        if path is not None:
            log = [r for r in log if (r.path.startswith(path[:-1]) if path.endswith("*") else r.path == path)]
        return sum(1 for r in log if status is None or r.status == status)

    def reset_log(self) -> None:
        with self._lock:
            self.requests.clear()

    def stats(self) -> dict:
        with self._lock:
            by_status: dict[str, int] = {}
            for r in self.requests:
                by_status[str(r.status)] = by_status.get(str(r.status), 0) + 1
            return {"requests": len(self.requests), "by_status": dict(sorted(by_status.items()))}

    # ----------------------------------------------------------------- request handling
    def _track(self, connection, add: bool) -> None:
        with self._lock:
            (self._connections.add if add else self._connections.discard)(connection)

    def _handle(self, handler: _Handler) -> None:
        split = urlsplit(handler.path)
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        length = int(handler.headers.get("Content-Length") or 0)
        if length:
            handler.rfile.read(length)  # drain a body so the keep-alive connection stays usable
        if handler.command == "GET" and split.path == "/_stats":
            return self._write(handler, _json(200, self.stats()))
        entry = RequestLog(handler.command, split.path, query, 0, time.monotonic())
        with self._lock:
            self.requests.append(entry)
        reply = self._answer(handler, split.path, query)
        if reply is None:
            return self._abort(handler)
        entry.status = reply.status
        if reply.list_page and reply.status == 200 and self.on_request is not None:
            # Before sending: whatever the callback changes is visible to the client's next request.
            try:
                self.on_request(self, entry)
            except Exception as exc:  # noqa: BLE001 - a test's callback must not kill the server
                self.callback_errors.append(exc)
        if reply.cost:
            time.sleep(reply.cost)  # outside every lock, as a database query would be
        self._write(handler, reply)

    def _answer(self, handler: _Handler, path: str, query: dict) -> _Reply | None:
        delay = self.latency + (random.uniform(-self.jitter, self.jitter) if self.jitter else 0.0)
        if self.limit_after_latency and delay > 0:
            time.sleep(delay)
        if not self._admit():
            return _error(429, "Rate limit exceeded", {"Retry-After": "1"} if self.retry_after else None)
        if not self.limit_after_latency and delay > 0:
            time.sleep(delay)
        if handler.command != "GET":
            return _error(405, f"{handler.command} is not supported", {"Allow": "GET"})
        key = handler.headers.get("X-Api-Key") or ""
        if not hmac.compare_digest(key.encode(), self.api_key.encode()):
            return _error(401, "Missing or invalid X-Api-Key header")
        fault = self._take_fault(path)
        if fault == "reset":
            return None
        if fault in ("500", "502", "503"):
            return _error(int(fault), "Injected fault")
        if fault == "html":
            return _Reply(200, HTML_PAGE, "text/html; charset=utf-8")
        if fault == "no_data":
            return _json(200, {"links": {"self": self.url + path}})
        if fault == "slow":
            time.sleep(self.slow_seconds)
        with self._lock:
            status = next((s for pattern, s in self._forbidden if pattern.search(path)), None)
        if status:
            return _error(status, f"Access to {path} is not allowed")
        try:
            with self.school.lock:
                return self._route(path, query, repeat=fault == "repeat")
        except QueryError as exc:
            return _error(400, str(exc))

    def _admit(self) -> bool:
        if not self.rate_limit:
            return True
        now = time.monotonic()
        with self._lock:
            if self.limiter == "bucket":
                tokens, refilled = self._tokens
                tokens = min(float(self.burst), tokens + (now - refilled) * self.rate_limit)
                admitted = tokens >= 1.0
                self._tokens = (tokens - 1.0 if admitted else tokens, now)
                return admitted
            if self.limiter == "fixed":
                second, count = self._second
                if second != int(now):
                    second, count = int(now), 0
                admitted = count < self.rate_limit
                self._second = (second, count + 1 if admitted else count)
                return admitted
            while self._window and now - self._window[0] >= 1.0:
                self._window.popleft()
            if len(self._window) >= self.rate_limit:
                return False
            self._window.append(now)
            return True

    def _take_fault(self, path: str) -> str | None:
        with self._lock:
            if self.fault_rate and self._fault_rng.random() < self.fault_rate:
                return self._fault_rng.choice(("500", "502", "503", "reset"))
            for fault in self._faults:
                if fault[0].search(path):
                    fault[2] -= 1
                    if fault[2] <= 0:
                        self._faults.remove(fault)
                    return fault[1]
        return None

    def _route(self, path: str, query: dict, repeat: bool) -> _Reply:
        s = self.school
        top = {"people": s.people, "courses": s.courses, "groups": s.groups,
               "learning_paths": s.learning_paths, "categories": s.categories, "quizzes": s.quizzes}
        nested = {("people", "course_progresses"): (s.course_progresses, "course_progresses"),
                  ("courses", "enrollments"): (s.enrollments, "enrollments"),
                  ("courses", "activities"): (s.activities, "activities"),
                  ("learning_paths", "enrollments"): (s.learning_path_enrollments, "learning_path_enrollments")}
        parts = path.strip("/").split("/")
        if parts[0] != "v2" or len(parts) < 2:
            return _error(404, f"No route matches {path}")
        if parts[1] in ("learning-paths", "learning_paths") and self.learning_paths_at not in ("both", parts[1]):
            return _error(404, f"No route matches {path}")
        seg = ["learning_paths" if parts[1] == "learning-paths" else parts[1], *parts[2:]]
        if len(seg) == 1 and seg[0] in top:
            return self._list(top[seg[0]], seg[0], path, query, repeat, cached=seg[0])
        if seg == ["events"]:
            return self._list(s.events, "events", path, query, repeat, cached="events")
        if len(seg) == 2 and seg[0] == "transcripts":
            if seg[1] not in s.people:
                return _error(404, f"No people record with id {seg[1]}")
            return self._list(list(s.transcripts.get(seg[1], [])), "transcript_items", path, query, repeat)
        if seg == ["properties", "courses"] and self.properties_list:
            return self._list(s.course_property_rows(), "course_properties", path, query, repeat)
        if len(seg) == 2 and seg[0] in top:
            record = top[seg[0]].get(seg[1])
            if record is None:
                return _error(404, f"No {seg[0]} record with id {seg[1]}")
            return _json(200, {"data": self._render(record), "links": {"self": self.url + path}})
        if len(seg) == 3 and seg[:2] == ["properties", "courses"]:
            if seg[2] not in s.courses:
                return _error(404, f"No course with id {seg[2]}")
            properties = s.course_properties.get(seg[2])
            if properties is None:
                return _error(403, "You are not allowed to read the properties of this course")
            return _json(200, {"data": {"id": seg[2], "type": "course_properties", "attributes": properties},
                               "links": {"self": self.url + path}})
        if len(seg) == 3 and seg[0] in top:
            parent_id, child = seg[1], seg[2]
            is_members = seg[0] == "groups" and child in ("people", "memberships")
            if (is_members and self.group_people_at not in ("both", child)) or (
                    (seg[0], child) == ("people", "course_progresses") and not self.course_progresses_at):
                return _error(404, f"No route matches {path}")
            if (seg[0], child) in nested or is_members:
                if parent_id not in top[seg[0]]:
                    return _error(404, f"No {seg[0]} record with id {parent_id}")
                if is_members:
                    members = [p for p in s.people.values()
                               if any(g["id"] == parent_id for g in p["relationships"]["groups"]["data"])]
                    if child == "memberships":
                        members = [_membership(parent_id, p) for p in members]
                    return self._list(members, child, path, query, repeat)
                records, type_ = nested[(seg[0], child)]
                return self._list(list(records.get(parent_id, [])), type_, path, query, repeat)
        return _error(404, f"No route matches {path}")

    def _list(self, records, type_: str, path: str, query: dict, repeat: bool, cached: str | None = None) -> _Reply:
        """One page of a list. ``records``: a list, or for ``cached`` (the name of a top-level
        collection of the school) that collection, answered from the server's per-version cache."""
        page = int_param(query, "page", 1)
        limit = min(int_param(query, "limit", self.default_limit), self.max_limit)
        if self.refuse_filters and any(key.startswith("filter") for key in query):
            raise QueryError(f"Filter not allowed: {', '.join(k for k in query if k.startswith('filter'))}")
        if self.refuse_sort and "sort" in query:
            raise QueryError(f"Invalid sort criteria: {query['sort']}")
        filters = [] if self.ignore_filters else parse_filters(query)
        sort = None if self.ignore_sort else query.get("sort")
        default = DEFAULT_ORDER.get(type_, "created_at")
        shown = page - 1 if repeat and page > 1 else page  # "repeat": the previous page again
        start, stop = (shown - 1) * limit, shown * limit
        selected = None
        if cached is not None:
            selected = _select(self._collection(cached), filters, sort, default, start, stop, page * limit)
        if selected is None:
            records = list(records.values()) if isinstance(records, dict) else records
            records = apply_sort(apply_filters(records, filters), sort, default, self.nulls_last)
            selected = records[start:stop], page * limit < len(records)
        data = [self._render(r) for r in selected[0]]
        links = {"self": self._page_url(path, query, page)}
        if selected[1]:
            links["next"] = self._page_url(path, query, page + 1)
        if page > 1:
            links["prev"] = self._page_url(path, query, page - 1)
        cost = self.query_cost * (len(records) / 10_000 + len(data) / 100)
        return _json(200, {"data": data, "links": links}, list_page=True, cost=cost)

    def _collection(self, name: str) -> _Collection:
        """The cache of a top-level collection (a dict, or a list: events), rebuilt when the school
        changed. Call holding school.lock (as _route does): the version cannot move while the answer is built."""
        records = getattr(self.school, name)
        stamp = (self.school.version, id(records), len(records), self.nulls_last)
        collection = self._collections.get(name)
        if collection is None or collection.stamp != stamp:
            listed = list(records.values()) if isinstance(records, dict) else list(records)
            collection = self._collections[name] = _Collection(listed, stamp, self.nulls_last)
        return collection

    def _page_url(self, path: str, query: dict, page: int) -> str:
        params = dict(query)
        params["page"] = str(page)
        return f"{self.url}{path}?{urlencode(params, quote_via=quote, safe='[],')}"

    def _render(self, record: dict) -> dict:
        """The record as served: its ``links.self`` made absolute, other links kept; a record without
        an id or links (an event) is served without them."""
        rendered = dict(record)
        if "links" in record:
            rendered["links"] = {**record["links"], "self": self.url + record["links"]["self"]}
        return rendered

    def _write(self, handler: _Handler, reply: _Reply) -> None:
        handler.send_response(reply.status)
        handler.send_header("Content-Type", reply.content_type)
        handler.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(reply.body)

    @staticmethod
    def _abort(handler: _Handler) -> None:
        """Close with an RST and no answer: the client sees a connection reset."""
        handler.close_connection = True
        try:
            handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        handler.connection.close()


# --------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a fake Northpass v2 API on 127.0.0.1.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--port-file", help="write the bound port to this file")
    parser.add_argument("--people", type=int, default=3000)
    parser.add_argument("--courses", type=int, default=40)
    parser.add_argument("--enrollments", type=int, default=1200)
    parser.add_argument("--groups", type=int, default=20)
    parser.add_argument("--learning-paths", type=int, default=5)
    parser.add_argument("--categories", type=int, default=6)
    parser.add_argument("--activities-per-course", type=int, default=3)
    parser.add_argument("--quizzes", type=int, default=5)
    parser.add_argument("--events", type=int, default=0, help="activity feed records over the data's years")
    parser.add_argument("--event-burst", type=int, default=0, help="more events, all in one second")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--latency", type=float, default=0.08, help="seconds slept per request")
    parser.add_argument("--jitter", type=float, default=0.0, help="latency varies uniformly by +- this")
    parser.add_argument("--limit-after-latency", action="store_true", help="check the rate limit after the sleep")
    parser.add_argument("--rate-limit", type=int, default=10, help="requests per second, 0 = off")
    parser.add_argument("--limiter", choices=LIMITERS, default="window", help="how the rate limit counts")
    parser.add_argument("--burst", type=int, help="the bucket limiter's size (default: the rate limit)")
    parser.add_argument("--max-limit", type=int, default=100)
    parser.add_argument("--default-limit", type=int, default=10)
    parser.add_argument("--api-key", default="demo-key")
    parser.add_argument("--no-retry-after", action="store_true", help="send 429 without Retry-After")
    args = parser.parse_args(argv)

    school = School.generate(people=args.people, courses=args.courses, enrollments=args.enrollments,
                             groups=args.groups, learning_paths=args.learning_paths,
                             categories=args.categories, activities_per_course=args.activities_per_course,
                             quizzes=args.quizzes, events=args.events, event_burst=args.event_burst, seed=args.seed)
    server = FakeNorthpass(school, api_key=args.api_key, max_limit=args.max_limit,
                           default_limit=args.default_limit, rate_limit=args.rate_limit or None,
                           latency=args.latency, retry_after=not args.no_retry_after,
                           jitter=args.jitter, limit_after_latency=args.limit_after_latency,
                           limiter=args.limiter, burst=args.burst, port=args.port, host=args.host)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    server.start()
    if args.port_file:
        tmp = f"{args.port_file}.tmp"
        with open(tmp, "w") as f:
            f.write(f"{server.port}\n")
        os.replace(tmp, args.port_file)  # readers never see a half-written file
    print(f"fake northpass listening on {server.url}", flush=True)
    while not stopping.wait(0.2):
        pass
    server.stop()
    print(json.dumps(server.stats()), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
