"""App routing through a real server: params, 404/405/HEAD/OPTIONS, mounts, sync handlers."""

from __future__ import annotations

import threading
import uuid

from conftest import ConnectFactory, ServeFactory

import aserve
from aserve.testing import TestClient


def make_app() -> aserve.App:
    app = aserve.App()

    @app.get("/")
    async def home(request: aserve.Request) -> aserve.Response:
        return aserve.PlainTextResponse("home")

    @app.get("/items/{item_id:int}")
    async def get_item(request: aserve.Request) -> aserve.Response:
        return aserve.JSONResponse({"id": request.path_params["item_id"]})

    @app.delete("/items/{item_id:int}")
    async def delete_item(request: aserve.Request) -> aserve.Response:
        return aserve.Response(status=204)

    @app.get("/price/{value:float}")
    async def price(request: aserve.Request) -> aserve.Response:
        return aserve.JSONResponse({"value": request.path_params["value"]})

    @app.get("/users/{name}")
    async def user(request: aserve.Request) -> aserve.Response:
        return aserve.PlainTextResponse(request.path_params["name"])

    @app.get("/files/{rest:path}")
    async def files(request: aserve.Request) -> aserve.Response:
        return aserve.PlainTextResponse(request.path_params["rest"])

    @app.get("/obj/{key:uuid}")
    async def obj(request: aserve.Request) -> aserve.Response:
        key = request.path_params["key"]
        assert isinstance(key, uuid.UUID)
        return aserve.PlainTextResponse(key.hex)

    @app.route("/form", methods=["get", "POST"])
    async def form(request: aserve.Request) -> aserve.Response:
        return aserve.PlainTextResponse(request.method)

    @app.put("/put")
    async def put(request: aserve.Request) -> aserve.Response:
        return aserve.PlainTextResponse("put " + (await request.text()))

    @app.patch("/patch")
    async def patch(request: aserve.Request) -> aserve.Response:
        return aserve.PlainTextResponse("patched")

    return app


async def test_routes_and_converters() -> None:
    async with TestClient(make_app()) as client:
        assert (await client.get("/")).text == "home"
        assert (await client.get("/items/42")).json() == {"id": 42}
        assert (await client.delete("/items/42")).status_code == 204
        assert (await client.get("/price/2.5")).json() == {"value": 2.5}
        assert (await client.get("/users/ann%20lee")).text == "ann lee"
        assert (await client.get("/files/a/b/c.txt")).text == "a/b/c.txt"
        key = uuid.uuid4()
        assert (await client.get(f"/obj/{key}")).text == key.hex
        assert (await client.get("/form")).text == "GET"
        assert (await client.post("/form")).text == "POST"
        assert (await client.put("/put", content=b"it")).text == "put it"
        assert (await client.patch("/patch")).text == "patched"


async def test_a_bad_conversion_is_404_not_500() -> None:
    async with TestClient(make_app()) as client:
        for path in ("/items/abc", "/items/1.5", "/price/x", "/obj/nope", "/items/" + "9" * 5000):
            response = await client.get(path)
            assert response.status_code == 404, path
            assert response.text == "Not Found\n"


async def test_unknown_path_is_404() -> None:
    async with TestClient(make_app()) as client:
        response = await client.get("/nowhere")
    assert response.status_code == 404
    assert response.headers["content-type"] == "text/plain; charset=utf-8"


async def test_wrong_method_is_405_with_allow() -> None:
    async with TestClient(make_app()) as client:
        static = await client.post("/")
        patterned = await client.put("/items/3")
    assert static.status_code == 405
    assert static.headers["allow"] == "GET, HEAD, OPTIONS"
    assert patterned.status_code == 405
    assert patterned.headers["allow"] == "GET, HEAD, DELETE, OPTIONS"


async def test_head_is_served_from_get_without_a_body(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    async with serve(make_app()) as server:
        client = await connect(server.port)
        await client.send(b"HEAD /items/7 HTTP/1.1\r\nHost: t\r\n\r\n")
        reply = await client.response("HEAD")
    assert reply.status == 200
    assert reply.body == b""
    assert reply.header("content-length") == "8"  # the length a GET body would have


async def test_options_answers_allow() -> None:
    async with TestClient(make_app()) as client:
        static = await client.options("/form")
        patterned = await client.options("/items/1")
        missing = await client.options("/nowhere")
    assert static.status_code == 200
    assert static.headers["allow"] == "GET, HEAD, POST, OPTIONS"
    assert static.content == b""
    assert patterned.headers["allow"] == "GET, HEAD, DELETE, OPTIONS"
    assert missing.status_code == 404


async def test_an_explicit_options_route_wins() -> None:
    app = aserve.App()

    @app.route("/x", methods=["OPTIONS"])
    async def options(request: aserve.Request) -> aserve.Response:
        return aserve.PlainTextResponse("mine")

    async with TestClient(app) as client:
        assert (await client.options("/x")).text == "mine"


async def test_sync_handlers_run_in_a_worker_thread() -> None:
    app = aserve.App()
    loop_thread = threading.get_ident()

    @app.get("/sync/{n:int}")
    def sync_handler(request: aserve.Request) -> aserve.Response:
        return aserve.JSONResponse(
            {"n": request.path_params["n"], "on_loop": threading.get_ident() == loop_thread}
        )

    async with TestClient(app) as client:
        response = await client.get("/sync/5")
    assert response.json() == {"n": 5, "on_loop": False}


async def test_callable_objects_are_handlers() -> None:
    class Greeter:
        async def __call__(self, request: aserve.Request) -> aserve.Response:
            return aserve.PlainTextResponse("hi")

    app = aserve.App()
    app.add_route("/hi", Greeter())
    async with TestClient(app) as client:
        assert (await client.get("/hi")).text == "hi"


async def test_mount_a_sub_app_and_a_plain_handler() -> None:
    api = aserve.App()

    @api.get("/items/{item_id:int}")
    async def item(request: aserve.Request) -> aserve.Response:
        return aserve.JSONResponse(
            {
                "id": request.path_params["item_id"],
                "path": request.path,
                "root_path": request.root_path,
                "route_path": request.route_path,
            }
        )

    @api.get("/")
    async def api_root(request: aserve.Request) -> aserve.Response:
        return aserve.PlainTextResponse("api root")

    async def raw(request: aserve.Request) -> aserve.Response:
        return aserve.PlainTextResponse(f"{request.root_path}|{request.route_path}")

    app = make_app()
    app.mount("/api", api, name="api")
    app.mount("/raw/", raw)
    async with TestClient(app) as client:
        assert (await client.get("/api/items/3")).json() == {
            "id": 3,
            "path": "/api/items/3",
            "root_path": "/api",
            "route_path": "/items/3",
        }
        assert (await client.get("/api")).text == "api root"
        assert (await client.get("/api/")).text == "api root"
        assert (await client.get("/raw/deep/er")).text == "/raw|/deep/er"
        missing = await client.get("/api/nope")
        assert missing.status_code == 404
        assert (await client.get("/apiary")).status_code == 404
    assert app.url_path_for("api:item", item_id=9) == "/api/items/9"


async def test_routes_given_to_the_constructor() -> None:
    async def one(request: aserve.Request) -> aserve.Response:
        return aserve.PlainTextResponse("one")

    def two(request: aserve.Request) -> aserve.Response:
        return aserve.PlainTextResponse("two")

    app = aserve.App(
        routes=[aserve.Route("/one", one, ["GET"]), aserve.Route("/two", two, ["POST"])]
    )
    async with TestClient(app) as client:
        assert (await client.get("/one")).text == "one"
        assert (await client.post("/two")).text == "two"


async def test_url_path_for_by_name() -> None:
    app = make_app()

    @app.get("/named/{slug}", name="custom")
    async def named(request: aserve.Request) -> aserve.Response:
        return aserve.PlainTextResponse("x")

    assert app.url_path_for("get_item", item_id=3) == "/items/3"
    assert app.url_path_for("custom", slug="a b") == "/named/a%20b"
    assert app.url_path_for("home") == "/"


async def test_request_app_is_the_app() -> None:
    app = aserve.App()

    @app.get("/")
    async def home(request: aserve.Request) -> aserve.Response:
        assert request.app is app
        return aserve.PlainTextResponse(str(request.app.url_path_for("home")))

    async with TestClient(app) as client:
        assert (await client.get("/")).text == "/"


async def test_keep_alive_across_app_answers(serve: ServeFactory, connect: ConnectFactory) -> None:
    async with serve(make_app()) as server:
        client = await connect(server.port)
        await client.send(
            b"GET /items/1 HTTP/1.1\r\nHost: t\r\n\r\n"
            b"GET /missing HTTP/1.1\r\nHost: t\r\n\r\n"
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"
            b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
        )
        statuses = [(await client.response()).status for _ in range(4)]
        # Error answers of the App do not close the connection: it serves one more.
        await client.send(b"GET /users/x HTTP/1.1\r\nHost: t\r\n\r\n")
        statuses.append((await client.response()).status)
    assert statuses == [200, 404, 405, 200, 200]
