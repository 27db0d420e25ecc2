// example:text/markup (../wit/text.wit) in JavaScript: a small Markdown
// subset to HTML, and URL slugs. No dependencies; `npm run build` turns it
// into library.wasm, a component that exports the interface and imports
// nothing.

/** `render`'s error case: thrown, it becomes `err(render-error)`. */
class RenderError extends Error {
  constructor(line, message) {
    super(`line ${line}: ${message}`);
    this.payload = { line, message };
  }
}

const FENCE = /^```\s*([\w+-]*)\s*$/;
const HEADING = /^(#{1,6})\s+(.*?)(?:\s+#+)?\s*$/;
const QUOTE = /^>\s?/;
const ITEM = /^(?:([-*])|(\d{1,9})\.)\s+(.*)$/;

function render(source) {
  const lines = source.replace(/\r\n?/g, "\n").split("\n");
  return blocks(lines, 1, new Map())
    .map((block) => block + "\n")
    .join("");
}

/** `lines`, the first of them line `first` of the source, as HTML blocks. */
function blocks(lines, first, ids) {
  const html = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const lineNo = first + i;
    let m;
    if (line.trim() === "") {
      i++;
    } else if ((m = FENCE.exec(line))) {
      const end = lines.findIndex((l, j) => j > i && /^```\s*$/.test(l));
      if (end < 0) throw new RenderError(lineNo, "code fence is never closed");
      const lang = m[1] ? ` class="language-${escapeHtml(m[1])}"` : "";
      const code = lines.slice(i + 1, end).map((l) => escapeHtml(l) + "\n").join("");
      html.push(`<pre><code${lang}>${code}</code></pre>`);
      i = end + 1;
    } else if ((m = HEADING.exec(line))) {
      const level = m[1].length;
      html.push(`<h${level} id="${uniqueId(m[2], ids)}">${inline(m[2], lineNo)}</h${level}>`);
      i++;
    } else if (QUOTE.test(line)) {
      const quoted = takeWhile(lines, i, (l) => QUOTE.test(l));
      const inner = blocks(quoted.map((l) => l.replace(QUOTE, "")), lineNo, ids);
      html.push(`<blockquote>\n${inner.join("\n")}\n</blockquote>`);
      i += quoted.length;
    } else if ((m = ITEM.exec(line))) {
      const ordered = m[2] !== undefined;
      const items = takeWhile(lines, i, (l) => {
        const item = ITEM.exec(l);
        return item !== null && (item[2] !== undefined) === ordered;
      });
      const tag = ordered ? "ol" : "ul";
      const start = ordered && m[2] !== "1" ? ` start="${Number(m[2])}"` : "";
      const lis = items.map((l, j) => `<li>${inline(ITEM.exec(l)[3], lineNo + j)}</li>`);
      html.push(`<${tag}${start}>\n${lis.join("\n")}\n</${tag}>`);
      i += items.length;
    } else {
      const para = takeWhile(lines, i, (l, j) => j === i || !startsBlock(l));
      html.push(`<p>${para.map((l, j) => inline(l.trim(), lineNo + j)).join("\n")}</p>`);
      i += para.length;
    }
  }
  return html;
}

function startsBlock(line) {
  return line.trim() === "" || [FENCE, HEADING, QUOTE, ITEM].some((re) => re.test(line));
}

/** The lines from `start` on for which `keep(line, index)` holds. */
function takeWhile(lines, start, keep) {
  let end = start;
  while (end < lines.length && keep(lines[end], end)) end++;
  return lines.slice(start, end);
}

/** One line of text with its inline markup as HTML. */
function inline(text, lineNo) {
  // Code spans are taken as they are; everything else is escaped first, so
  // the patterns below only ever see (and produce) well-formed HTML.
  return text
    .split(/(`[^`]+`)/)
    .map((part, k) => {
      if (k % 2 === 1) return `<code>${escapeHtml(part.slice(1, -1))}</code>`;
      return escapeHtml(part)
        .replace(/\[([^\]]+)\]\(((?:[^()\s]|\([^()\s]*\))+)\)/g, (_, label, href) => {
          if (!safeHref(href)) {
            throw new RenderError(lineNo, `link to "${unescapeHtml(href)}" is not http(s), mailto or relative`);
          }
          // `*` would be taken for emphasis below.
          return `<a href="${href.replaceAll("*", "%2A")}">${label}</a>`;
        })
        .replace(/\*\*([^*\s](?:[^*]*[^*\s])?)\*\*/g, "<strong>$1</strong>")
        .replace(/\*([^*\s](?:[^*]*[^*\s])?)\*/g, "<em>$1</em>");
    })
    .join("");
}

/** Whether a link to `href` is harmless: http(s), mailto or relative. */
function safeHref(href) {
  const url = unescapeHtml(href);
  // Browsers drop control characters a scheme check would trip over.
  if (/[\0-\x1f\x7f]/.test(url)) return false;
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url);
  return scheme === null || ["http", "https", "mailto"].includes(scheme[1].toLowerCase());
}

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

function unescapeHtml(html) {
  return html.replace(/&(amp|lt|gt|quot|#39);/g, (entity) =>
    Object.keys(ESCAPES).find((c) => ESCAPES[c] === entity),
  );
}

/** A slug for a heading, `-2`, `-3`, ... added if the page already has it. */
function uniqueId(title, ids) {
  const slug = slugify(title.replace(/[`*]|\]\([^)]*\)|\[/g, "")) || "section";
  const seen = ids.get(slug) ?? 0;
  ids.set(slug, seen + 1);
  return seen === 0 ? slug : `${slug}-${seen + 1}`;
}

// Latin letters with diacritics and the ASCII they become in slugs. A table,
// as slug libraries have: the engine in the component (StarlingMonkey, built
// without ICU) has neither `String.prototype.normalize` nor `\p{...}`.
const FOLDS = new Map(
  [
    ["àáâãäåāăą", "a"], ["æ", "ae"], ["çćĉċč", "c"], ["ďđð", "d"], ["èéêëēĕėęě", "e"],
    ["ĝğġģ", "g"], ["ĥħ", "h"], ["ìíîïĩīĭįı", "i"], ["ĵ", "j"], ["ķ", "k"],
    ["ĺļľŀł", "l"], ["ñńņňŉ", "n"], ["òóôõöøōŏő", "o"], ["œ", "oe"], ["ŕŗř", "r"],
    ["śŝşš", "s"], ["ß", "ss"], ["ţťŧ", "t"], ["þ", "th"], ["ùúûüũūŭůűų", "u"],
    ["ŵ", "w"], ["ýÿŷ", "y"], ["źżž", "z"],
  ].flatMap(([letters, ascii]) => [...letters].map((letter) => [letter, ascii])),
);

function slugify(title) {
  return title
    .toLowerCase()
    .replace(/[^\0-\x7f]/g, (c) => FOLDS.get(c) ?? "-")
    .replace(/[^a-z0-9]+/g, "-")
    .replace(/^-+|-+$/g, "");
}

export const markup = { render, slugify };
