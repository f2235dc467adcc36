// The admin dashboard: backends with health and load, the queue (depth and
// oldest job), recent failures, users, and granting points.

import { api, el, listOf, main, showError, toast, when } from './app.js';

/** A table; its caption is for screen readers (each section has a visible heading). */
function table(caption, heads, rows) {
  return el('div', { class: 'table-wrap' }, el('table', {},
    el('caption', { class: 'visually-hidden' }, caption),
    el('thead', {}, el('tr', {}, heads.map((h) => el('th', { scope: 'col' }, h)))),
    el('tbody', {}, rows)));
}

function age(ms) {
  if (ms === null || ms === undefined) return '';
  const s = Math.max(0, Math.round(ms / 1000));
  return s < 90 ? `${s} s` : s < 5400 ? `${Math.round(s / 60)} min` : `${Math.round(s / 3600)} h`;
}

async function section(title, id, fill) {
  const box = el('section', { id, 'aria-label': title }, el('h2', {}, title));
  try {
    await fill(box);
  } catch (e) {
    box.append(el('p', { class: 'error', role: 'alert' }, e.message));
  }
  return box;
}

function backends(box, data) {
  const rows = [];
  for (const s of listOf(data, 'services')) {
    for (const b of s.backends || []) {
      rows.push(el('tr', { dataset: { backend: b.name } },
        el('td', {}, b.name), el('td', {}, s.service),
        el('td', { class: b.healthy ? 'ok' : 'bad' }, b.healthy ? 'healthy' : 'down'),
        el('td', {}, String(b.active ?? 0)), el('td', {}, b.detail || '')));
    }
    rows.push(el('tr', { class: 'total' }, el('td', {}, el('strong', {}, `${s.service} total`)), el('td', {}, s.service), el('td', {}, ''),
      el('td', {}, `${s.active ?? 0} of ${s.capacity ?? '?'}`), el('td', {}, '')));
  }
  box.append(table('Backends', ['Name', 'Service', 'Health', 'Running jobs', 'Detail'], rows));
  if (!rows.length) box.append(el('p', {}, 'No services configured: add a ComfyUI backend with station backends add.'));
}

function queue(box, q) {
  const counts = Object.entries(q.by_status || {}).map(([k, v]) => `${v} ${k}`).join(', ');
  box.append(el('dl', { class: 'balance' },
    el('dt', {}, 'Waiting'), el('dd', { id: 'queue-depth' }, String(q.depth ?? 0)),
    el('dt', {}, 'Oldest waiting for'), el('dd', {}, q.oldest_queued_age_ms !== null && q.oldest_queued_age_ms !== undefined ? age(q.oldest_queued_age_ms) : '—'),
    el('dt', {}, 'By status'), el('dd', {}, counts || '—')));
  const running = q.running || [];
  box.append(el('h3', {}, 'Running now'));
  box.append(running.length
    ? table('Running now', ['Since', 'Tool', 'Backend', 'State', 'Progress'], running.map((j) => el('tr', {},
      el('td', {}, when(j.created_at)), el('td', {}, j.tool), el('td', {}, j.backend || ''),
      el('td', {}, j.status), el('td', {}, `${Math.round((j.progress || 0) * 100)} %`))))
    : el('p', {}, 'None.'));
  const failures = q.recent_failures || [];
  box.append(el('h3', {}, 'Recent failures'));
  box.append(failures.length
    ? table('Recent failures', ['When', 'Tool', 'Backend', 'Error', 'Attempts'], failures.map((f) => el('tr', {},
      el('td', {}, when(f.finished_at)), el('td', {}, f.tool), el('td', {}, f.backend || ''),
      el('td', {}, f.error || f.error_code || ''), el('td', {}, String(f.attempts)))))
    : el('p', {}, 'None.'));
}

// The latest administrative actions, newest first; "Older" pages back.
async function auditLog(box) {
  const rows = el('tbody', {});
  const more = el('button', { type: 'button', hidden: true }, 'Older');
  let before = null;
  async function load() {
    const page = await api('GET', `/api/v1/admin/audit?limit=20${before ? `&before=${before}` : ''}`);
    for (const a of listOf(page)) {
      rows.append(el('tr', { dataset: { audit: String(a.id) } },
        el('td', {}, when(a.at)), el('td', {}, a.actor), el('td', {}, a.via),
        el('td', {}, a.summary), el('td', {}, a.target), el('td', {}, a.detail)));
    }
    before = page.next;
    more.hidden = !before;
  }
  await load();
  more.addEventListener('click', () => load().catch((e) => showError(e, box)));
  box.append(el('div', { class: 'table-wrap' }, el('table', {},
    el('caption', {}, 'Audit log (never changed or removed)'),
    el('thead', {}, el('tr', {}, ['When', 'Who', 'Through', 'What', 'To', 'Details'].map((h) => el('th', { scope: 'col' }, h)))),
    rows)));
  if (!rows.children.length) box.append(el('p', {}, 'No administrative actions yet.'));
  box.append(more);
}

/** Fills the dashboard. */
export async function admin() {
  const m = main('Admin');
  let users = [];
  const parts = await Promise.all([
    section('Backends', 'admin-backends', async (box) => backends(box, await api('GET', '/api/v1/admin/backends'))),
    section('Queue', 'admin-queue', async (box) => queue(box, await api('GET', '/api/v1/admin/queue'))),
    section('Users', 'admin-users', async (box) => {
      users = listOf(await api('GET', '/api/v1/admin/users?limit=200'));
      box.append(table('Users', ['Name', 'Role', 'State', 'Balance', 'Identities'], users.map((u) =>
        el('tr', { dataset: { account: u.id } }, el('td', {}, u.name), el('td', {}, u.role),
          el('td', {}, u.suspended ? 'suspended' : 'active'), el('td', {}, String(u.balance)),
          el('td', {}, (u.identities || []).join(', '))))));
    }),
  ]);
  const grant = await section('Grant points', 'admin-grants', async (box) => {
    const who = el('select', { id: 'grant-account', name: 'account', required: true },
      users.map((u) => el('option', { value: u.id }, `${u.name} (${(u.identities || [])[0] || u.id})`)));
    const amount = el('input', { id: 'grant-amount', name: 'amount', type: 'number', min: 1, step: 1, required: true });
    const reason = el('input', { id: 'grant-reason', name: 'reason', maxlength: 200, required: true, placeholder: 'kept in the ledger' });
    const form = el('form', { 'aria-label': 'Grant points' },
      el('div', { class: 'field' }, el('label', { for: 'grant-account' }, 'Account'), who),
      el('div', { class: 'field' }, el('label', { for: 'grant-amount' }, 'Points'), amount),
      el('div', { class: 'field' }, el('label', { for: 'grant-reason' }, 'Reason'), reason),
      el('div', { class: 'actions' }, el('button', { type: 'submit', class: 'primary' }, 'Grant')));
    // One key per filled-in form: a double click grants once.
    let key = crypto.randomUUID();
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      form.querySelectorAll('.field-error').forEach((n) => n.remove());
      try {
        const r = await api('POST', `/api/v1/admin/users/${encodeURIComponent(who.value)}/grant`,
          { amount: parseInt(amount.value, 10), reason: reason.value, idempotency_key: key });
        toast(r.applied ? `Granted ${amount.value} points; balance now ${r.balance}.` : 'Already granted.');
        key = crypto.randomUUID();
        // The users table shows the new balance; the picker keeps the account.
        const account = who.value;
        const cell = document.querySelector(`#admin-users tr[data-account="${CSS.escape(account)}"] td:nth-child(4)`);
        if (cell && r.balance !== undefined) cell.textContent = String(r.balance);
        form.reset();
        who.value = account;
      } catch (err) {
        showError(err, form);
      }
    });
    box.append(form);
  });
  const audit = await section('Audit log', 'admin-audit', auditLog);
  m.append(el('div', { class: 'dashboard' }, parts, grant, audit));
}
