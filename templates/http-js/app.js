// The HTTP handler of {{project-name}}: a wasi:http 0.2 component.
//
// `tern build` turns this module into app.wasm with jco componentize
// (ComponentizeJS, which embeds the StarlingMonkey JavaScript engine). Each
// request arrives as a `fetch` event, in a fresh instance, with the web's
// Request and Response classes.

addEventListener("fetch", (event) => event.respondWith(handle(event.request)));

async function handle(request) {
  const url = new URL(request.url);
  return new Response(
    `Hello from JavaScript!\nYou asked for ${url.pathname}${url.search}\n`,
    { headers: { "content-type": "text/plain; charset=utf-8" } },
  );
}
