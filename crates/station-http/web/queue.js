// "My queue" on every signed-in page: the account's queued and running
// generations with their queue position, progress and a Cancel button.
// It is read from the API when a page opens (so it is back after a refresh
// or on another page) and every few seconds while anything waits; a page
// that queues a job says so with a `station:submitted` event.

import { api, el, job, listOf, refreshBalance, showError, toast } from './app.js';

const ACTIVE = ['running', 'dispatched', 'queued'];
const EVERY_MS = 2000;

let panel;
let list;
let timer = null;
/** The highest progress shown per job: a late read never moves a bar back. */
const shown = new Map();
/** Jobs in the queue at the last read. */
let previous = new Set();

async function activeJobs() {
  const pages = await Promise.all(ACTIVE.map((s) => api('GET', `/api/v1/generations?status=${s}&limit=20`)));
  const jobs = pages.flatMap((p) => listOf(p, 'generations', 'jobs').map(job));
  // Queued jobs need their position, which only the single read has.
  return Promise.all(jobs.map(async (j) => {
    if (j.status !== 'queued') return j;
    try {
      return job(await api('GET', `/api/v1/generations/${encodeURIComponent(j.id)}`));
    } catch {
      return j;
    }
  }));
}

function label(j) {
  if (j.status === 'queued') {
    const p = j.queue_position;
    return p === undefined || p === null ? 'queued' : p === 0 ? 'next in line' : `queued, ${p} ahead`;
  }
  if (j.status === 'dispatched') return 'starting';
  return j.cancel_requested ? 'stopping' : 'running';
}

function row(j) {
  const pct = Math.max(shown.get(j.id) || 0, Math.round((j.progress || 0) * 100));
  shown.set(j.id, pct);
  const cancel = el('button', { type: 'button', class: 'secondary small', 'aria-label': `Cancel ${j.tool_id}` }, '✕ Cancel');
  cancel.addEventListener('click', async () => {
    cancel.disabled = true;
    try {
      await api('POST', `/api/v1/generations/${encodeURIComponent(j.id)}/cancel`);
      toast('Cancelling it…');
      refresh();
    } catch (e) {
      showError(e);
      cancel.disabled = false;
    }
  });
  return el('li', { class: 'queue-item', dataset: { job: j.id, status: j.status } },
    el('a', { href: `/jobs/${encodeURIComponent(j.id)}` }, j.tool_id),
    el('span', { class: 'queue-state' }, label(j)),
    el('span', {
      class: 'queue-progress', role: 'progressbar', 'aria-label': `${j.tool_id} progress`,
      'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': pct,
    }, el('span', { class: 'bar', dataset: { pct } })),
    el('span', { class: 'queue-pct' }, `${pct} %`),
    cancel);
}

/** Reads the queue now and shows it; keeps reading while anything waits. */
export async function refresh() {
  if (!panel) return;
  clearTimeout(timer);
  timer = null;
  let jobs;
  try {
    jobs = await activeJobs();
  } catch {
    timer = setTimeout(refresh, EVERY_MS * 3);
    return;
  }
  // A job that left the queue was charged or had its points returned.
  const now = new Set(jobs.map((j) => j.id));
  if ([...previous].some((id) => !now.has(id))) {
    refreshBalance();
    setTimeout(refreshBalance, 1500);
  }
  previous = now;
  list.replaceChildren(...jobs.map(row));
  // Bar widths through a property: the CSP allows no style attributes.
  list.querySelectorAll('.queue-progress .bar').forEach((b) => b.style.setProperty('width', `${b.dataset.pct}%`));
  panel.hidden = jobs.length === 0;
  panel.querySelector('.queue-count').textContent = `${jobs.length}`;
  if (jobs.length) timer = setTimeout(refresh, EVERY_MS);
}

/** Adds the panel under the page header and reads the queue. */
export function startQueue() {
  const header = document.querySelector('header.top');
  if (!header || panel) return;
  list = el('ul', { class: 'queue-list' });
  panel = el('aside', { id: 'queue-panel', class: 'queue-panel', 'aria-label': 'My queue', hidden: true },
    el('h2', { class: 'queue-title' }, 'My queue ', el('span', { class: 'queue-count' }, '0')), list);
  header.after(panel);
  window.addEventListener('station:submitted', () => refresh());
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden) refresh();
  });
  refresh();
}
