// The admin dashboard: backends with health and load, the queue (depth and
// oldest job), recent failures, users, and granting points.

import { api, el, listOf, main, showError, toast, when } from './app.js';

function table(caption, heads, rows) {
  return el('div', { class: 'table-wrap' }, el('table', {},
    el('caption', {}, caption),
    el('thead', {}, el('tr', {}, heads.map((h) => el('th', { scope: 'col' }, h)))),
    el('tbody', {}, rows)));
}

function ago(ms) {
  if (!ms) return '';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  return s < 90 ? `${s} s ago` : s < 5400 ? `${Math.round(s / 60)} min ago` : `${Math.round(s / 3600)} h ago`;
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

/** Fills the dashboard. */
export async function admin() {
  const m = main('Admin');
  const parts = await Promise.all([
    section('Backends', 'admin-backends', async (box) => {
      const list = listOf(await api('GET', '/api/v1/admin/backends'), 'backends');
      box.append(table('Backends', ['Name', 'Service', 'Health', 'Load', 'Detail'], list.map((b) =>
        el('tr', { dataset: { backend: b.name } },
          el('td', {}, b.name), el('td', {}, b.service || ''),
          el('td', { class: b.healthy ? 'ok' : 'bad' }, b.healthy ? 'healthy' : 'down'),
          el('td', {}, b.running !== undefined ? `${b.running}/${b.capacity ?? b.max_concurrent ?? '?'}` : String(b.load ?? '')),
          el('td', {}, b.detail || b.url || '')))));
      if (!list.length) box.append(el('p', {}, 'No backends configured: add one with station backends add.'));
    }),
    section('Queue', 'admin-queue', async (box) => {
      const q = await api('GET', '/api/v1/admin/queue');
      const services = listOf(q, 'services');
      const rows = services.length ? services : [q];
      box.append(table('Queue', ['Service', 'Queued', 'Running', 'Oldest queued'], rows.map((s) =>
        el('tr', {}, el('td', {}, s.service || 'all'), el('td', {}, String(s.queued ?? s.depth ?? 0)),
          el('td', {}, String(s.running ?? 0)), el('td', {}, ago(s.oldest_queued_at ?? s.oldest_at))))));
      const failures = listOf(q.recent_failures || q.failures || []);
      box.append(el('h3', {}, 'Recent failures'));
      box.append(failures.length
        ? table('Recent failures', ['When', 'Tool', 'Error'], failures.map((f) => el('tr', {},
          el('td', {}, when(f.finished_at || f.created_at)), el('td', {}, f.tool_id || ''), el('td', {}, f.error || f.error_code || ''))))
        : el('p', {}, 'None.'));
    }),
    section('Users', 'admin-users', async (box) => {
      const users = listOf(await api('GET', '/api/v1/admin/users?limit=100'), 'users', 'accounts');
      box.append(table('Users', ['Name', 'Role', 'State', 'Balance', 'Id'], users.map((u) => {
        const a = u.account || u;
        const pts = u.points || u;
        return el('tr', { dataset: { account: a.id } }, el('td', {}, a.name), el('td', {}, a.role),
          el('td', {}, a.suspended ? 'suspended' : 'active'), el('td', {}, String(pts.balance ?? '')), el('td', {}, el('code', {}, a.id)));
      })));
    }),
    section('Grant points', 'admin-grants', async (box) => {
      const who = el('input', { id: 'grant-account', name: 'account', required: true, placeholder: 'account id or provider:subject' });
      const amount = el('input', { id: 'grant-amount', name: 'amount', type: 'number', min: 1, required: true });
      const note = el('input', { id: 'grant-note', name: 'note', maxlength: 200 });
      const form = el('form', { 'aria-label': 'Grant points' },
        el('div', { class: 'field' }, el('label', { for: 'grant-account' }, 'Account'), who),
        el('div', { class: 'field' }, el('label', { for: 'grant-amount' }, 'Points'), amount),
        el('div', { class: 'field' }, el('label', { for: 'grant-note' }, 'Note'), note),
        el('div', { class: 'actions' }, el('button', { type: 'submit', class: 'primary' }, 'Grant')));
      form.addEventListener('submit', async (e) => {
        e.preventDefault();
        form.querySelectorAll('.field-error').forEach((n) => n.remove());
        try {
          await api('POST', '/api/v1/admin/grants', { account: who.value, amount: parseInt(amount.value, 10), note: note.value || undefined });
          toast(`Granted ${amount.value} points.`);
          form.reset();
        } catch (err) {
          showError(err, form);
        }
      });
      box.append(form);
    }),
  ]);
  m.append(el('div', { class: 'dashboard' }, parts));
}
