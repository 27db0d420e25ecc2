// `npm test`: the library in Node, before it becomes a component.
import assert from "node:assert/strict";
import { test } from "node:test";

import { markup } from "./markup.js";

test("renders blocks and inline markup", () => {
  const source = [
    "# Hello, *world*",
    "",
    "Some **bold** `<code>` and a [link](https://example.com/?a=1&b=2).",
    "",
    "- one",
    "- two",
    "",
    "> quoted",
    "",
    "```js",
    "a < b",
    "```",
    "## Hello, world",
  ].join("\n");
  assert.equal(
    markup.render(source),
    [
      '<h1 id="hello-world">Hello, <em>world</em></h1>',
      '<p>Some <strong>bold</strong> <code>&lt;code&gt;</code> and a <a href="https://example.com/?a=1&amp;b=2">link</a>.</p>',
      "<ul>\n<li>one</li>\n<li>two</li>\n</ul>",
      "<blockquote>\n<p>quoted</p>\n</blockquote>",
      '<pre><code class="language-js">a &lt; b\n</code></pre>',
      '<h2 id="hello-world-2">Hello, world</h2>',
      "",
    ].join("\n"),
  );
  assert.equal(markup.render(""), "");
});

test("refuses unclosed fences and unsafe links, with the line", () => {
  assert.throws(() => markup.render("text\n\n```\ncode"), { payload: { line: 3, message: "code fence is never closed" } });
  assert.throws(() => markup.render("ok\n[x](javascript:alert(1))"), {
    payload: { line: 2, message: 'link to "javascript:alert(1)" is not http(s), mailto or relative' },
  });
});

test("slugifies", () => {
  assert.equal(markup.slugify("Crème Brûlée, 2nd try!"), "creme-brulee-2nd-try");
  assert.equal(markup.slugify("Straße — ÉCOLE"), "strasse-ecole");
  assert.equal(markup.slugify("!!!"), "");
});
