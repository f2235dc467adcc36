// Station web app: helpers shared by every page script (main.js starts the page).
// Every page is a server-rendered shell; <body data-page> says which one and
// a function of pages.js or admin.js fills <main> by calling the REST API.
// No inline scripts or handlers anywhere: the CSP allows scripts from 'self' only.

const csrfMeta = document.querySelector('meta[name="csrf-token"]');
/** The session's CSRF token, sent as X-CSRF-Token on every state-changing request. */
export const csrf = csrfMeta ? csrfMeta.content : '';

/** An error from the API, with its stable code and per-field reasons. */
export class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || `request failed with HTTP ${status}`);
    this.status = status;
    this.code = e.code || 'http_' + status;
    this.fields = e.fields || [];
  }
}

/**
 * Calls the API. `body` may be a plain object (sent as JSON) or FormData.
 * Sends the CSRF token on POST/PUT/PATCH/DELETE. A 401 means the session
 * ended: the browser goes to the sign-in page.
 */
export async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (method !== 'GET' && method !== 'HEAD') headers['X-CSRF-Token'] = csrf;
  let payload;
  if (body instanceof FormData) payload = body;
  else if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  const r = await fetch(path, { method, headers, body: payload, credentials: 'same-origin' });
  if (r.status === 401) {
    location.href = '/signin?reason=expired&next=' + encodeURIComponent(location.pathname + location.search);
    throw new ApiError(401, null);
  }
  if (r.status === 204) return null;
  const text = await r.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!r.ok) throw new ApiError(r.status, data);
  return data;
}

/**
 * Builds an element: el('a', {href: '/x', class: 'btn'}, 'text', child…).
 * Text goes in as text nodes, never as HTML.
 */
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') node.addEventListener(k.slice(2), v);
    else if (k === 'class') node.className = v;
    else if (k === 'dataset') Object.assign(node.dataset, v);
    else if (v === true) node.setAttribute(k, '');
    else node.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

/** The page's <main>, emptied, with a heading. */
export function main(title) {
  const m = document.getElementById('main');
  m.replaceChildren();
  if (title) {
    document.title = `${title} · Station`;
    m.append(el('h1', {}, title));
  }
  return m;
}

let toastTimer;
/** A short message at the bottom of the screen (read out by screen readers). */
export function toast(text, kind) {
  const t = document.getElementById('toast');
  if (!t) return;
  t.textContent = text;
  t.className = 'show ' + (kind || '');
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (t.className = ''), 5000);
}

/** Shows an API error: the message and, next to each named field, its reason. */
export function showError(e, form) {
  toast(e.message || String(e), 'error');
  if (!form) return;
  form.querySelectorAll('.field-error').forEach((n) => n.remove());
  for (const f of e.fields || []) {
    const input = form.querySelector(`[name="${CSS.escape(f.field)}"]`);
    const box = input ? input.closest('.field') : null;
    const where = box || form;
    where.append(el('p', { class: 'field-error', role: 'alert' }, `${f.field}: ${f.reason}`));
  }
}

/** Lists come as {items|…: [...]} or bare arrays; this finds the array. */
export function listOf(data, ...keys) {
  if (Array.isArray(data)) return data;
  for (const k of keys.concat(['items', 'data', 'results'])) if (data && Array.isArray(data[k])) return data[k];
  return [];
}

/** A job as the API returns it, with params and outputs parsed. */
export function job(data) {
  const j = data && (data.generation || data.job || data);
  if (!j) return j;
  for (const k of ['params', 'outputs']) {
    if (typeof j[k] === 'string') {
      try {
        j[k] = JSON.parse(j[k]);
      } catch {
        /* keep the text */
      }
    }
  }
  if (!Array.isArray(j.outputs)) j.outputs = j.outputs ? [].concat(j.outputs) : [];
  j.outputs = j.outputs.map((o) => (typeof o === 'string' ? o : o.id));
  j.tool_id = j.tool_id || j.tool;
  if (j.error && typeof j.error === 'object') j.error = j.error.message || j.error.code;
  return j;
}

/** URL of a stored media item (its thumbnail with thumb=true). */
export function mediaUrl(id, thumb) {
  return `/api/v1/media/${encodeURIComponent(id)}` + (thumb ? '/thumbnail' : '');
}

/** Unix ms as local date and time. */
export function when(ms) {
  return ms ? new Date(ms).toLocaleString() : '';
}

/** Refreshes the points balance in the header. */
export async function refreshBalance() {
  const b = document.getElementById('balance');
  if (!b) return;
  try {
    const p = await api('GET', '/api/v1/points');
    const pts = (p && (p.points || p)) || {};
    const avail = pts.available ?? pts.balance;
    b.textContent = `${avail} points`;
    b.dataset.available = avail;
  } catch {
    b.textContent = 'points';
  }
}
