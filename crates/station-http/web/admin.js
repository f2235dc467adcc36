// The admin dashboard: backends with health and load, the queue (depth and
// oldest job), recent failures, users, granting points, usage and revenue
// (charts drawn as inline SVG here), feature flags and the audit log.

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

// Feature flags: who each is on for, with quick switches, and a form to set one.
async function featureFlags(box, users) {
  const data = await api('GET', '/api/v1/admin/flags');
  const names = (data.features || []).map(([n]) => n);
  const rows = [];
  async function change(method, name, payload) {
    try {
      await api(method, `/api/v1/admin/flags/${encodeURIComponent(name)}`, payload);
      toast(method === 'DELETE' ? `${name} removed: on for everyone.` : `${name} set.`);
      box.replaceChildren(el('h2', {}, 'Feature flags'));
      await featureFlags(box, users);
    } catch (err) {
      showError(err, box);
    }
  }
  for (const f of data.flags || []) {
    const quick = f.state === 'off'
      ? el('button', { type: 'button', onclick: () => change('PUT', f.name, { state: 'on' }) }, 'Turn on')
      : el('button', { type: 'button', onclick: () => change('PUT', f.name, { state: 'off' }) }, 'Turn off');
    rows.push(el('tr', { dataset: { flag: f.name } },
      el('td', {}, el('code', {}, f.name)), el('td', {}, f.summary), el('td', {}, f.switches),
      el('td', {}, f.description || ''),
      el('td', {}, quick, ' ', el('button', { type: 'button', onclick: () => change('DELETE', f.name) }, 'Remove'))));
  }
  if (rows.length) {
    box.append(table('Feature flags', ['Flag', 'On for', 'Switches', 'Description', ''], rows));
  } else {
    box.append(el('p', {}, 'No flags set: everything is on for everyone.'));
  }
  const name = el('input', { id: 'flag-name', name: 'name', required: true, list: 'flag-names', placeholder: 'training, tool.txt2img, platform.discord' });
  const state = el('select', { id: 'flag-state', name: 'state' },
    el('option', { value: 'off' }, 'Off for everyone'), el('option', { value: 'on' }, 'On for everyone'),
    el('option', { value: 'some' }, 'On for some'));
  const percent = el('input', { id: 'flag-percent', name: 'percent', type: 'number', min: 0, max: 100, step: 1, placeholder: '0' });
  const accounts = el('select', { id: 'flag-accounts', name: 'accounts', multiple: true },
    users.map((u) => el('option', { value: u.id }, u.name)));
  const platforms = ['telegram', 'discord', 'terminal', 'web', 'api'].map((p) =>
    el('label', {}, el('input', { type: 'checkbox', name: 'platforms', value: p }), ` ${p}`));
  const admins = el('input', { id: 'flag-admins', name: 'admins', type: 'checkbox' });
  const description = el('input', { id: 'flag-description', name: 'description', maxlength: 200 });
  const some = el('fieldset', { hidden: true }, el('legend', {}, 'On for'),
    el('div', { class: 'field' }, el('label', { for: 'flag-percent' }, 'Share of accounts (%)'), percent),
    el('div', { class: 'field' }, el('label', { for: 'flag-accounts' }, 'Accounts'), accounts),
    el('div', { class: 'field' }, el('span', {}, 'Platforms'), ...platforms),
    el('div', { class: 'field' }, el('label', {}, admins, ' Administrators')));
  state.addEventListener('change', () => { some.hidden = state.value !== 'some'; });
  const form = el('form', { 'aria-label': 'Set a feature flag' },
    el('datalist', { id: 'flag-names' }, names.map((n) => el('option', { value: n }))),
    el('div', { class: 'field' }, el('label', { for: 'flag-name' }, 'Flag'), name),
    el('div', { class: 'field' }, el('label', { for: 'flag-state' }, 'State'), state),
    some,
    el('div', { class: 'field' }, el('label', { for: 'flag-description' }, 'What it is for'), description),
    el('div', { class: 'actions' }, el('button', { type: 'submit', class: 'primary' }, 'Set flag')));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const payload = { state: state.value, description: description.value || null };
    if (state.value === 'some') {
      payload.percent = percent.value ? parseInt(percent.value, 10) : 0;
      payload.accounts = [...accounts.selectedOptions].map((o) => o.value);
      payload.platforms = platforms.map((l) => l.querySelector('input')).filter((i) => i.checked).map((i) => i.value);
      payload.admins = admins.checked;
    }
    await change('PUT', name.value.trim(), payload);
  });
  box.append(el('h3', {}, 'Set a flag'), form);
}

const SVG = 'http://www.w3.org/2000/svg';

/** An SVG element (own drawing: no chart library, no CDN). */
function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  for (const c of children.flat()) if (c) node.append(c);
  return node;
}

/** A bar chart of one value per day; each bar has a tooltip with its figure. */
function dayChart(title, days, value, label) {
  const w = 640; const h = 160; const pad = 24;
  const max = Math.max(1, ...days.map(value));
  const step = (w - pad) / Math.max(1, days.length);
  const bars = days.map((d, i) => {
    const v = value(d);
    const bh = Math.round((h - pad) * (v / max));
    return svg('rect', { x: Math.round(pad + i * step + step * 0.1), y: h - pad - bh, width: Math.max(1, Math.round(step * 0.8)), height: bh, class: 'bar' },
      svg('title', {}, document.createTextNode(`${d.date}: ${label(v)}`)));
  });
  const first = days[0]?.date || ''; const last = days[days.length - 1]?.date || '';
  return el('figure', { class: 'chart' },
    svg('svg', { viewBox: `0 0 ${w} ${h}`, role: 'img', 'aria-label': `${title}, ${first} to ${last}, at most ${label(max)} a day` },
      svg('line', { x1: pad, y1: h - pad, x2: w, y2: h - pad, class: 'axis' }),
      svg('text', { x: 0, y: 12, class: 'tick' }, document.createTextNode(String(max))),
      svg('text', { x: pad, y: h - 6, class: 'tick' }, document.createTextNode(first)),
      svg('text', { x: w, y: h - 6, class: 'tick', 'text-anchor': 'end' }, document.createTextNode(last)),
      bars),
    el('figcaption', {}, title));
}

function secs(ms) {
  if (ms === null || ms === undefined) return '—';
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}

// Usage and revenue: jobs and points per day, breakdowns, busiest accounts, failures.
async function usage(box) {
  const period = el('select', { id: 'stats-days', 'aria-label': 'Period' },
    [7, 30, 90].map((d) => el('option', { value: d }, `Last ${d} days`)));
  const csv = el('a', { id: 'stats-csv', href: '/api/v1/admin/stats?days=7&format=csv', download: '' }, 'Download CSV');
  const body = el('div', {});
  async function load() {
    const days = period.value;
    csv.href = `/api/v1/admin/stats?days=${days}&format=csv`;
    const s = await api('GET', `/api/v1/admin/stats?days=${days}`);
    const t = s.total || {};
    const ended = (t.succeeded || 0) + (t.failed || 0);
    const rate = ended ? ` (${((t.failed / ended) * 100).toFixed(1)} % of those that ended)` : '';
    const breakdown = (title, rows) => (rows && rows.length
      ? table(title, [title, 'Jobs', 'Failed', 'Avg wait', 'Avg run'], rows.map((r) => el('tr', {},
        el('td', {}, r.label), el('td', {}, String(r.jobs)), el('td', {}, String(r.failed)),
        el('td', {}, secs(r.avg_wait_ms)), el('td', {}, secs(r.avg_run_ms)))))
      : null);
    body.replaceChildren(
      el('dl', { class: 'balance' },
        el('dt', {}, 'Jobs'), el('dd', { id: 'stats-jobs' }, String(t.jobs || 0)),
        el('dt', {}, 'Failed'), el('dd', {}, `${t.failed || 0}${rate}`),
        el('dt', {}, 'Average wait / run'), el('dd', {}, `${secs(t.avg_wait_ms)} / ${secs(t.avg_run_ms)}`),
        el('dt', {}, 'Points spent'), el('dd', { id: 'stats-spent' }, String(s.points_spent || 0)),
        el('dt', {}, 'Points granted'), el('dd', {}, String(s.points_granted || 0))),
      dayChart('Jobs per day', s.days || [], (d) => d.jobs, (v) => `${v} jobs`),
      dayChart('Points spent per day', s.days || [], (d) => d.points_spent, (v) => `${v} points`),
      breakdown('Tool', s.by_tool), breakdown('Model', s.by_model), breakdown('Platform', s.by_platform),
      (s.top_accounts || []).length ? table('Busiest accounts', ['Account', 'Jobs', 'Points spent'], s.top_accounts.map((a) =>
        el('tr', {}, el('td', {}, a.name), el('td', {}, String(a.jobs)), el('td', {}, String(a.points_spent))))) : null,
      (s.failures || []).length ? table('Why jobs failed', ['Reason', 'Jobs', 'Example'], s.failures.map((f) =>
        el('tr', {}, el('td', {}, f.code), el('td', {}, String(f.jobs)), el('td', {}, f.example || '')))) : null);
  }
  period.addEventListener('change', () => load().catch((e) => showError(e, box)));
  box.append(el('div', { class: 'actions' }, period, ' ', csv), body);
  await load();
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
  const stats = await section('Usage', 'admin-usage', usage);
  const flags = await section('Feature flags', 'admin-flags', (box) => featureFlags(box, users));
  const audit = await section('Audit log', 'admin-audit', auditLog);
  m.append(el('div', { class: 'dashboard' }, parts, grant, stats, flags, audit));
}
