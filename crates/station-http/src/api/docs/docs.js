// Renders /api/v1/openapi.json as a reference page: operations grouped by
// tag with parameters, request bodies and responses, then every schema.
"use strict";

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function refName(ref) { return ref.split("/").pop(); }

// The descriptions are Markdown (from the handlers' doc comments): `code`,
// **bold**, [links](url) and paragraphs are drawn; everything else is text.
function inline(text) {
  const frag = document.createDocumentFragment();
  const re = /`([^`]+)`|\*\*([^*]+)\*\*|\[([^\]]+)\]\(([^)\s]+)\)/g;
  let last = 0;
  for (const m of text.matchAll(re)) {
    frag.append(text.slice(last, m.index));
    if (m[1] !== undefined) frag.append(el("code", {}, m[1]));
    else if (m[2] !== undefined) frag.append(el("strong", {}, m[2]));
    else if (/^(https?:\/\/|\/|#)/.test(m[4])) frag.append(el("a", { href: m[4] }, m[3]));
    else frag.append(m[3]);
    last = m.index + m[0].length;
  }
  frag.append(text.slice(last));
  return frag;
}

function md(text) {
  const box = el("div", { class: "md" });
  for (const para of String(text || "").split(/\n\s*\n/)) {
    if (para.trim()) box.append(el("p", {}, inline(para.replace(/\s*\n\s*/g, " ").trim())));
  }
  return box;
}

/** A description without a first paragraph that only repeats the summary. */
function rest(op) {
  const d = op.description || "";
  const s = (op.summary || "").trim();
  return s && d.trim().startsWith(s) ? d.trim().slice(s.length) : d;
}

function typeText(s) {
  if (!s) return "";
  if (s.$ref) { const n = refName(s.$ref); return el("a", { href: "#schema-" + n }, n); }
  if (s.type === "array") { const i = typeText(s.items); return el("span", {}, "array of ", i); }
  if (s.oneOf || s.anyOf) {
    const parts = (s.oneOf || s.anyOf).map(typeText);
    const span = el("span", {});
    parts.forEach((p, i) => { if (i) span.append(" | "); span.append(p); });
    return span;
  }
  let t = Array.isArray(s.type) ? s.type.join(" | ") : (s.type || "any");
  if (s.format) t += " (" + s.format + ")";
  if (s.enum) t += ": " + s.enum.join(", ");
  return t;
}

function schemaTable(s) {
  if (!s || !s.properties) return el("p", {}, typeText(s));
  const req = new Set(s.required || []);
  const rows = Object.entries(s.properties).map(([name, p]) =>
    el("tr", {}, el("td", {}, el("code", {}, name), req.has(name) ? " *" : ""), el("td", {}, typeText(p)),
      el("td", {}, md(p.description))));
  return el("div", { class: "table-wrap" }, el("table", {}, el("tr", {}, el("th", {}, "field"), el("th", {}, "type"), el("th", {}, "description")), ...rows));
}

function content(c) {
  const box = el("div", {});
  for (const [type, media] of Object.entries(c || {})) {
    box.append(el("p", {}, el("code", {}, type), " ", media.schema ? typeText(media.schema) : ""));
  }
  return box;
}

function operation(path, method, op) {
  const d = el("details", { class: "op", id: (op.operationId || method + path) });
  // Summaries often begin with "`GET /path`:", which the line already shows.
  const head = "`" + method.toUpperCase() + " " + path + "`";
  let summary = (op.summary || "").trim();
  if (summary.startsWith(head)) summary = summary.slice(head.length).replace(/^[:\s—-]+/, "");
  summary = summary.replace(/^./, (c) => c.toUpperCase());
  d.append(el("summary", {}, el("span", { class: "method " + method }, method), " ", el("span", { class: "path" }, path),
    summary ? el("span", { class: "summary" }, inline(summary)) : ""));
  if (rest(op).trim()) d.append(md(rest(op)));
  const params = op.parameters || [];
  if (params.length) {
    d.append(el("h4", {}, "Parameters"));
    d.append(el("div", { class: "table-wrap" }, el("table", {}, el("tr", {}, el("th", {}, "name"), el("th", {}, "in"), el("th", {}, "type"), el("th", {}, "description")),
      ...params.map((p) => el("tr", {}, el("td", {}, el("code", {}, p.name), p.required ? " *" : ""), el("td", {}, p.in),
        el("td", {}, typeText(p.schema)), el("td", {}, md(p.description)))))));
  }
  if (op.requestBody) { d.append(el("h4", {}, "Request body"), content(op.requestBody.content)); }
  d.append(el("h4", {}, "Responses"));
  d.append(el("div", { class: "table-wrap" }, el("table", {}, ...Object.entries(op.responses || {}).map(([code, r]) =>
    el("tr", {}, el("td", {}, el("code", {}, code)), el("td", {}, md(r.description)), el("td", {}, content(r.content)))))));
  return d;
}

async function main() {
  const paths = document.getElementById("paths");
  let doc;
  try {
    const res = await fetch("/api/v1/openapi.json");
    doc = await res.json();
  } catch (e) {
    paths.textContent = "Could not load /api/v1/openapi.json: " + e;
    return;
  }
  document.getElementById("title").textContent = doc.info.title;
  document.getElementById("version").textContent = "version " + doc.info.version + " · OpenAPI " + doc.openapi;
  document.getElementById("intro").append(md(doc.info.description));
  const byTag = new Map();
  for (const [path, item] of Object.entries(doc.paths || {})) {
    for (const method of ["get", "post", "put", "patch", "delete"]) {
      const op = item[method];
      if (!op) continue;
      const tag = (op.tags && op.tags[0]) || "other";
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push([path, method, op]);
    }
  }
  paths.textContent = "";
  const toc = document.getElementById("toc");
  for (const [tag, ops] of byTag) {
    toc.append(el("a", { href: "#tag-" + tag }, tag));
    paths.append(el("h2", { id: "tag-" + tag }, tag));
    for (const [path, method, op] of ops) paths.append(operation(path, method, op));
  }
  const schemas = document.getElementById("schemas");
  schemas.append(el("h2", {}, "Schemas"));
  for (const [name, s] of Object.entries((doc.components && doc.components.schemas) || {})) {
    schemas.append(el("h3", { id: "schema-" + name }, name), md(s.description), schemaTable(s));
  }
}

main();
