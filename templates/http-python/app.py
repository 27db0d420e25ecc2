"""The HTTP handler of {{project-name}}: a wasi:http 0.2 component.

`tern build` turns this module into app.wasm with componentize-py; Tern calls
`IncomingHandler.handle` once per request, in a fresh instance.
"""

from componentize_py_types import Ok
from wit_world import exports
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        path = request.path_with_query() or "/"
        text = f"Hello from Python!\nYou asked for {path}\n"

        headers = Fields.from_list([("content-type", b"text/plain; charset=utf-8")])
        response = OutgoingResponse(headers)
        response.set_status_code(200)
        body = response.body()
        ResponseOutparam.set(response_out, Ok(response))

        # A single write may carry at most 4096 bytes; send larger bodies in chunks.
        data = text.encode()
        with body.write() as stream:
            for start in range(0, len(data), 4096):
                stream.blocking_write_and_flush(data[start : start + 4096])
        OutgoingBody.finish(body, None)
