// A Spin app in JavaScript, built with the Spin JavaScript SDK's build
// tool (`j2w` from `@spinframework/build-tools` on npm) and its wasi:http
// trigger package, as Spin's http-js template does: a `fetch` event
// handler. `GET /PATH` greets; `POST /echo` answers the body in capitals.

addEventListener("fetch", (event) => {
  event.respondWith(handle(event.request));
});

async function handle(request) {
  const url = new URL(request.url);
  if (request.method === "POST" && url.pathname === "/echo") {
    const body = await request.text();
    return new Response(body.toUpperCase(), {
      status: 201,
      headers: { "content-type": "text/plain" },
    });
  }
  return new Response(`Hello from JavaScript! You asked for ${url.pathname}`, {
    headers: { "content-type": "text/plain" },
  });
}
