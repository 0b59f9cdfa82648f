"""The router alone: path patterns, converters, lookup results, url building. No server."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

import aserve
from aserve.routing import (
    FOUND,
    MOUNTED,
    NOT_ALLOWED,
    NOT_FOUND,
    CompiledPath,
    Mount,
    NoMatchFound,
    Route,
    Router,
)


async def endpoint(request: aserve.Request) -> aserve.Response:
    return aserve.Response()


async def other(request: aserve.Request) -> aserve.Response:
    return aserve.Response()


def router_with(*routes: tuple[str, list[str]]) -> Router:
    router = Router()
    for path, methods in routes:
        router.add(Route(path, endpoint, methods))
    return router


@pytest.mark.parametrize(
    ("pattern", "path", "params"),
    [
        ("/items/{item_id:int}", "/items/42", {"item_id": 42}),
        ("/items/{item_id:int}", "/items/x", None),
        ("/items/{item_id:int}", "/items/-1", None),
        ("/price/{value:float}", "/price/9.5", {"value": 9.5}),
        ("/price/{value:float}", "/price/9", {"value": 9.0}),
        ("/price/{value:float}", "/price/nan", None),
        ("/users/{name}", "/users/ann", {"name": "ann"}),
        ("/users/{name}", "/users/ann/x", None),
        ("/users/{name}", "/users/", None),
        ("/files/{rest:path}", "/files/a/b.txt", {"rest": "a/b.txt"}),
        ("/files/{rest:path}", "/files/", {"rest": ""}),
        (
            "/obj/{key:uuid}",
            "/obj/12345678-1234-5678-1234-567812345678",
            {"key": uuid.UUID("12345678-1234-5678-1234-567812345678")},
        ),
        ("/obj/{key:uuid}", "/obj/12345678", None),
        ("/a/{x}/b/{y:int}", "/a/one/b/2", {"x": "one", "y": 2}),
        ("/dots.{ext}", "/dots.json", {"ext": "json"}),
        ("/dots.{ext}", "/dotsxjson", None),
    ],
)
def test_compiled_path_matches_and_converts(
    pattern: str, path: str, params: dict[str, Any] | None
) -> None:
    assert CompiledPath(pattern).match(path) == params


def test_compiled_path_regex_is_anchored_and_escaped() -> None:
    compiled = CompiledPath("/items/{item_id:int}")
    assert compiled.regex_source == r"/items/(?P<item_id>[0-9]+)"
    assert CompiledPath("/a.b").match("/axb") is None


def test_an_int_past_the_digit_limit_is_no_match_not_an_error() -> None:
    assert CompiledPath("/n/{n:int}").match("/n/" + "9" * 5000) is None


@pytest.mark.parametrize(
    "bad",
    ["items", "/x/{1abc}", "/x/{a}/{a}", "/x/{a:nope}", "/x/{a", "/x/a}"],
)
def test_bad_route_paths_fail_when_registered(bad: str) -> None:
    with pytest.raises(ValueError):
        CompiledPath(bad)


def test_exact_paths_are_a_dict_lookup() -> None:
    router = router_with(*((f"/r{i}", ["GET"]) for i in range(200)))
    assert len(router.static) == 200
    kind, found, params, methods = router.resolve("GET", "/r150")
    assert (kind, found, params) == (FOUND, endpoint, {})
    assert methods is router.static["/r150"]


def test_head_is_served_by_get_and_allow_lists_options() -> None:
    router = router_with(("/x", ["GET", "POST"]))
    assert router.resolve("HEAD", "/x")[0] == FOUND
    kind, _, _, methods = router.resolve("DELETE", "/x")
    assert kind == NOT_ALLOWED
    assert methods is not None and methods.allow == "GET, HEAD, POST, OPTIONS"


def test_explicit_head_wins_over_get() -> None:
    router = Router()
    router.add(Route("/x", endpoint, ["GET"]))
    router.add(Route("/x", other, ["HEAD"]))
    assert router.resolve("HEAD", "/x")[1] is other


def test_the_same_method_and_path_twice_is_refused() -> None:
    router = router_with(("/x", ["GET"]))
    with pytest.raises(ValueError, match="already routed"):
        router.add(Route("/x", other, ["GET"]))


def test_patterns_sharing_a_path_merge_their_methods() -> None:
    router = Router()
    router.add(Route("/items/{id:int}", endpoint, ["GET"]))
    router.add(Route("/items/{id:int}", other, ["DELETE"]))
    assert router.resolve("DELETE", "/items/3")[:3] == (FOUND, other, {"id": 3})
    assert router.resolve("GET", "/items/3")[:3] == (FOUND, endpoint, {"id": 3})


def test_a_later_pattern_is_found_when_the_first_candidate_has_the_wrong_method() -> None:
    router = Router()
    router.add(Route("/items/{id:int}", endpoint, ["GET"]))
    router.add(Route("/items/{name}", other, ["POST"]))
    assert router.resolve("POST", "/items/3")[:3] == (FOUND, other, {"name": "3"})
    kind, _, _, methods = router.resolve("PUT", "/items/3")
    assert kind == NOT_ALLOWED
    assert methods is not None and methods.allow == "GET, HEAD, POST, OPTIONS"


def test_first_registered_pattern_wins() -> None:
    router = Router()
    router.add(Route("/items/{name}", other, ["GET"]))
    router.add(Route("/items/{id:int}", endpoint, ["GET"]))
    assert router.resolve("GET", "/items/3")[:3] == (FOUND, other, {"name": "3"})


def test_conversion_failure_falls_through_to_the_next_pattern() -> None:
    router = Router()
    router.add(Route("/n/{n:int}", endpoint, ["GET"]))
    router.add(Route("/n/{s}", other, ["GET"]))
    huge = "9" * 5000
    assert router.resolve("GET", "/n/" + huge)[:3] == (FOUND, other, {"s": huge})


def test_no_route_is_not_found() -> None:
    router = router_with(("/x", ["GET"]), ("/y/{id:int}", ["GET"]))
    assert router.resolve("GET", "/z")[0] == NOT_FOUND
    assert router.resolve("GET", "/y/abc")[0] == NOT_FOUND


def test_mounts_come_after_routes_longest_prefix_first() -> None:
    router = router_with(("/api/special", ["GET"]))
    outer, inner = Mount("/api", endpoint), Mount("/api/v2", other)
    router.mount(outer)
    router.mount(inner)
    assert router.resolve("GET", "/api/special")[0] == FOUND
    assert router.resolve("GET", "/api/v2/x")[:2] == (MOUNTED, inner)
    assert router.resolve("GET", "/api/v2")[:2] == (MOUNTED, inner)
    assert router.resolve("GET", "/api/v20")[:2] == (MOUNTED, outer)
    assert router.resolve("GET", "/apix")[0] == NOT_FOUND


def test_url_path_for_builds_and_quotes() -> None:
    router = Router()
    router.add(Route("/items/{item_id:int}", endpoint, ["GET"], name="item"))
    router.add(Route("/users/{name}", endpoint, ["GET"], name="user"))
    router.add(Route("/files/{rest:path}", endpoint, ["GET"], name="file"))
    router.add(Route("/", endpoint, ["GET"], name="home"))
    assert router.url_path_for("item", {"item_id": 7}) == "/items/7"
    assert router.url_path_for("user", {"name": "a b/c"}) == "/users/a%20b%2Fc"
    assert router.url_path_for("file", {"rest": "a/b c"}) == "/files/a/b%20c"
    assert router.url_path_for("home", {}) == "/"
    with pytest.raises(NoMatchFound):
        router.url_path_for("item", {})
    with pytest.raises(NoMatchFound):
        router.url_path_for("item", {"item_id": "x"})
    with pytest.raises(NoMatchFound):
        router.url_path_for("item", {"item_id": -1})
    with pytest.raises(NoMatchFound):
        router.url_path_for("nope", {})


def test_route_name_defaults_to_the_function_name() -> None:
    assert Route("/x", endpoint, ["GET"]).name == "endpoint"
