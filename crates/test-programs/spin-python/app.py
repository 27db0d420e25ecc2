"""A Spin app written against the Spin Python SDK 3.4 (spin-sdk on PyPI),
the way its documentation shows: `GET /PATH` greets, `PUT /kv/KEY` stores
the body in the default key-value store and `GET /kv/KEY` reads it back,
`GET /greeting` answers the component variable `greeting`."""

from spin_sdk import http, key_value, variables
from spin_sdk.http import Request, Response


class IncomingHandler(http.IncomingHandler):
    def handle_request(self, request: Request) -> Response:
        path = request.uri.split("?")[0]
        if path.startswith("/kv/"):
            key = path[len("/kv/"):]
            with key_value.open_default() as store:
                if request.method == "PUT":
                    store.set(key, request.body or b"")
                    return text(201, "stored")
                value = store.get(key)
                if value is None:
                    return text(404, "no such key")
                return Response(200, {"content-type": "text/plain"}, value)
        if path == "/greeting":
            return text(200, variables.get("greeting"))
        return text(200, f"Hello from Python! You asked for {request.uri}")


def text(status: int, body: str) -> Response:
    return Response(status, {"content-type": "text/plain"}, bytes(body, "utf-8"))
