// The signed-in pages: tool gallery, tool form, live progress and result,
// history, settings, points and API keys.

import { ApiError, api, el, job, listOf, main, mediaUrl, refreshBalance, showError, toast, when } from './app.js';
import { inputsOf, toolForm } from './form.js';
import { addToCollectionButton } from './collections.js';

const TERMINAL = ['succeeded', 'failed', 'cancelled'];
const query = new URLSearchParams(location.search);

async function loadTools() {
  return listOf(await api('GET', '/api/v1/tools'), 'tools');
}

function priceOf(tool) {
  if (typeof tool.price !== 'number') return '';
  return tool.per_second ? `up to ${tool.price} points (charged per second)` : `${tool.price} point${tool.price === 1 ? '' : 's'}`;
}

/** Tool gallery, grouped by category. With ?media=ID: tools that take an image. */
async function tools() {
  const useMedia = query.get('media');
  const m = main(useMedia ? 'Use as input: pick a tool' : 'Tools');
  let list = await loadTools();
  if (useMedia) {
    list = list.filter((t) => (t.image_inputs || []).length > 0);
    m.append(el('p', {}, el('img', { src: mediaUrl(useMedia, true), alt: 'The image to use', class: 'use-thumb' })));
  }
  const groups = new Map();
  for (const t of list) {
    const cat = t.category || 'other';
    if (!groups.has(cat)) groups.set(cat, []);
    groups.get(cat).push(t);
  }
  for (const [cat, ts] of groups) {
    const grid = el('ul', { class: 'cards', 'aria-label': cat });
    for (const t of ts) {
      const href = `/tools/${encodeURIComponent(t.id)}` + (useMedia ? `?media=${encodeURIComponent(useMedia)}` : '');
      grid.append(el('li', { class: 'card', dataset: { tool: t.id } },
        el('a', { href }, el('h3', {}, t.name || t.id), el('p', {}, t.description || ''),
          el('span', { class: 'price' }, priceOf(t)))));
    }
    m.append(el('section', {}, el('h2', {}, cat.replace(/-/g, ' ')), grid));
  }
  if (!list.length) m.append(el('p', {}, 'No tools are available to you yet.'));
}

/** Submits, asking to confirm when the price is above the account's threshold. */
async function submitJob(body) {
  try {
    return job(await api('POST', '/api/v1/generations', body));
  } catch (e) {
    if (e instanceof ApiError && e.code === 'confirmation_required') {
      if (!window.confirm(`${e.message}\n\nRun it anyway?`)) throw new Error('Not started.');
      return job(await api('POST', '/api/v1/generations', { ...body, confirmed: true }));
    }
    throw e;
  }
}

/** One tool's generated form. ?from=JOB prefills it (tweak); ?media=ID fills the image. */
async function tool() {
  const id = document.body.dataset.tool;
  const t = await api('GET', `/api/v1/tools/${encodeURIComponent(id)}`).then((r) => r.tool || r);
  const m = main(t.name || t.id);
  m.append(el('p', { class: 'lead' }, t.description || ''), el('p', { class: 'price' }, `Price: ${priceOf(t)}`));
  let values = {};
  if (query.get('from')) {
    const src = job(await api('GET', `/api/v1/generations/${encodeURIComponent(query.get('from'))}`));
    values = { ...(src.params || {}) };
    m.append(el('p', { class: 'notice' }, 'Tweaking an earlier generation: change what you like and run it.'));
  }
  if (query.get('media')) {
    const img = inputsOf(t).find((d) => d.type === 'image');
    if (img) values[img.name] = `media:${query.get('media')}`;
  }
  // Fields left untouched are not sent: Station fills them from the saved settings.
  const saved = await api('GET', `/api/v1/settings/${encodeURIComponent(t.id)}`).catch(() => null);
  const baseline = { ...((saved && saved.params) || {}) };
  // The result appears beside the form (below it on a phone), with the
  // earlier results of this browser session under it.
  const current = el('section', { class: 'current', id: 'current', 'aria-label': 'Result', tabindex: '-1' },
    el('p', { class: 'empty-result' }, 'Your result appears here.'));
  const strip = el('ul', { class: 'gallery session-strip', id: 'session-strip', 'aria-label': 'Earlier in this session' });
  const earlier = el('section', { class: 'session', hidden: true }, el('h2', {}, 'Earlier in this session'), strip);
  let stopFollowing = () => {};
  let pollTimer = null;
  /** Shows generation `j` as the current result and follows it. */
  const show = (j) => {
    stopFollowing();
    current.dataset.job = j.id;
    const box = el('div', { class: 'followed' });
    current.replaceChildren(
      el('p', { class: 'lead' }, el('a', { href: `/jobs/${encodeURIComponent(j.id)}` }, j.tool_id), ` · ${when(j.created_at)}`), box);
    stopFollowing = follow(box, j, {
      onRerun: (n) => {
        remember(n);
        show(n);
      },
      onEnd: (f) => {
        remember(f);
        drawStrip();
      },
    });
    drawStrip();
  };
  /** The session's other generations, newest first; unfinished ones are read again every few seconds. */
  const drawStrip = () => {
    const others = sessionJobs().filter((x) => x.id !== current.dataset.job);
    earlier.hidden = others.length === 0;
    strip.replaceChildren(...others.map((x) => {
      const thumb = x.thumb
        ? el('img', { src: mediaUrl(x.thumb, true), alt: `${x.tool} result`, loading: 'lazy' })
        : el('span', { class: `placeholder ${x.status}` }, x.status);
      const open = el('button', { type: 'button', class: 'thumb', 'aria-label': `Show ${x.tool} from ${when(x.created)}` }, thumb);
      open.addEventListener('click', async () => {
        try {
          show(job(await api('GET', `/api/v1/generations/${encodeURIComponent(x.id)}`)));
          current.scrollIntoView({ block: 'nearest' });
        } catch (e) {
          showError(e);
        }
      });
      return el('li', { dataset: { job: x.id, status: x.status } }, open,
        el('span', { class: 'caption' }, x.prompt ? el('span', { class: 'prompt' }, x.prompt) : null, `${x.tool} · ${when(x.created)}`));
    }));
    clearTimeout(pollTimer);
    if (others.some((x) => !TERMINAL.includes(x.status))) pollTimer = setTimeout(readUnfinished, 2000);
  };
  const readUnfinished = async () => {
    const open = sessionJobs().filter((x) => x.id !== current.dataset.job && !TERMINAL.includes(x.status));
    for (const x of open) {
      try {
        remember(job(await api('GET', `/api/v1/generations/${encodeURIComponent(x.id)}`)));
      } catch (e) {
        if (e instanceof ApiError && e.status === 404) forget(x.id);
      }
    }
    drawStrip();
  };
  // A batch is that many jobs, each queued (and paid) on its own; the
  // first is followed here, the others wait in the strip.
  const form = toolForm(t, values, 'Generate', async (params, _form, count) => {
    const first = await submitJob({ tool: t.id, params });
    remember(first);
    show(first);
    window.dispatchEvent(new Event('station:submitted'));
    const r = current.getBoundingClientRect();
    if (r.top < 0 || r.top > window.innerHeight - 80) current.scrollIntoView({ block: 'start' });
    for (let i = 1; i < count; i++) {
      remember(await submitJob({ tool: t.id, params }));
      drawStrip();
    }
    if (count > 1) window.dispatchEvent(new Event('station:submitted'));
  }, { baseline, batch: 8 });
  m.append(el('div', { class: 'workbench' },
    el('div', { class: 'workbench-form' }, form),
    el('div', { class: 'workbench-result' }, current, earlier)));
  // After a reload: this tool's latest generation of the session is the current one again.
  const latest = values && Object.keys(values).length ? null : sessionJobs().find((x) => x.tool === t.id);
  if (latest) {
    try {
      show(job(await api('GET', `/api/v1/generations/${encodeURIComponent(latest.id)}`)));
    } catch {
      forget(latest.id);
      drawStrip();
    }
  } else drawStrip();
}

/** Where this browser tab keeps its session's generations (newest first), per account signed in. */
const SESSION_KEY = `station.session.${(document.querySelector('.who .name') || {}).textContent || ''}`;
const SESSION_MAX = 48;

/** The generations made in this tab's session: id, tool, status, first output, prompt, time. */
function sessionJobs() {
  try {
    const list = JSON.parse(sessionStorage.getItem(SESSION_KEY) || '[]');
    return Array.isArray(list) ? list : [];
  } catch {
    return [];
  }
}

function saveSession(list) {
  try {
    sessionStorage.setItem(SESSION_KEY, JSON.stringify(list.slice(0, SESSION_MAX)));
  } catch { /* storage may be off or full */ }
}

/** Adds or updates `j` in the session (a new one goes first). */
function remember(j) {
  const entry = {
    id: j.id, tool: j.tool_id, status: j.status, thumb: j.outputs[0] || null, prompt: promptOf(j), created: j.created_at,
  };
  const list = sessionJobs();
  const at = list.findIndex((x) => x.id === j.id);
  if (at >= 0) list[at] = entry;
  else list.unshift(entry);
  saveSession(list);
}

function forget(id) {
  saveSession(sessionJobs().filter((x) => x.id !== id));
}

export function progressBar() {
  const bar = el('div', { class: 'bar' });
  const outer = el('div', {
    class: 'progress', role: 'progressbar', 'aria-label': 'Progress', 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': 0,
  }, bar);
  const label = el('span', { class: 'progress-label', id: 'progress-label' }, '0 %');
  return {
    node: el('div', { class: 'progress-wrap' }, outer, label),
    shown: 0,
    /** Shows `fraction`, never less than already shown (events and reads can arrive out of order). */
    set(fraction) {
      const pct = Math.max(this.shown, 0, Math.min(100, Math.round(fraction * 100)));
      this.shown = pct;
      bar.style.width = `${pct}%`;
      outer.setAttribute('aria-valuenow', pct);
      label.textContent = `${pct} %`;
    },
  };
}

/** The server's wording of where a job stands ("waiting for a GPU (3 ahead)"), capitalised. */
function statusText(j) {
  if (j.status_text && j.status !== 'failed') return j.status_text.charAt(0).toUpperCase() + j.status_text.slice(1);
  switch (j.status) {
    case 'queued':
      return j.queue_position !== undefined && j.queue_position !== null
        ? `Queued: ${j.queue_position} ahead of you` : 'Queued';
    case 'dispatched':
      return 'Starting…';
    case 'running':
      return j.label ? `Running: ${j.label}` : 'Running';
    case 'succeeded':
      return 'Done';
    case 'failed':
      return `Failed: ${j.error || 'unknown error'}`;
    case 'cancelled':
      return 'Cancelled';
    default:
      return j.status;
  }
}

/** A generation on its own page: live progress with previews, then the result and its actions. */
async function jobPage() {
  const id = document.body.dataset.job;
  let j;
  try {
    j = job(await api('GET', `/api/v1/generations/${encodeURIComponent(id)}`));
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 404)) throw e;
    main('Generation not found').append(el('p', {}, 'There is no such generation among yours. ',
      el('a', { href: '/history' }, 'Your history'), ' lists them.'));
    return;
  }
  const m = main('Generation');
  const box = el('div', { class: 'followed', dataset: { job: j.id } });
  m.append(el('p', { class: 'lead' }, el('a', { href: `/tools/${encodeURIComponent(j.tool_id)}` }, j.tool_id), ` · ${when(j.created_at)}`), box);
  follow(box, j);
}

/**
 * Follows generation `j` in `box`: its status, progress with live previews
 * and Cancel while it waits or runs, then the result and its actions. Live
 * events drive it; the row is read every few seconds only while the event
 * stream is down, and the bar never shows less than it did. Options:
 * `onRerun(newJob)` takes a rerun (else the browser goes to its page),
 * `onEnd(job)` hears how it ended. Returns a function that stops following.
 */
function follow(box, j, opts = {}) {
  const id = j.id;
  const status = el('p', { class: 'status', id: 'job-status', role: 'status' }, statusText(j));
  const progress = progressBar();
  const preview = el('img', { class: 'live-preview', alt: 'Preview of the image being made', hidden: true });
  const cancel = el('button', { type: 'button', class: 'secondary' }, '✕ Cancel');
  const live = el('section', { class: 'live', 'aria-label': 'Progress' }, status, progress.node, preview, el('div', { class: 'actions' }, cancel));
  const result = el('section', { class: 'result', 'aria-label': 'Result' });
  box.replaceChildren(live, result);
  progress.set(j.progress || 0);
  cancel.addEventListener('click', async () => {
    try {
      await api('POST', `/api/v1/generations/${encodeURIComponent(id)}/cancel`);
      toast('Stopping it…');
    } catch (e) {
      showError(e);
    }
  });

  let done = false;
  let source;
  let poll = null;
  const stopPolling = () => {
    clearInterval(poll);
    poll = null;
  };
  const stop = () => {
    done = true;
    if (source) source.close();
    stopPolling();
  };
  const finish = () => {
    stop();
    live.querySelector('.actions').hidden = true;
    preview.hidden = true;
    if (j.status === 'succeeded') progress.set(1);
    status.textContent = statusText(j);
    renderResult(result, j, opts.onRerun);
    refreshBalance();
    if (opts.onEnd) opts.onEnd(j);
  };
  const refresh = async () => {
    if (done) return;
    try {
      // The row knows no step label: keep the one the stream gave.
      j = { ...job(await api('GET', `/api/v1/generations/${encodeURIComponent(id)}`)), label: j.label };
    } catch {
      return;
    }
    if (done) return;
    if (TERMINAL.includes(j.status)) finish();
    else {
      status.textContent = statusText(j);
      if (j.progress) progress.set(j.progress);
    }
  };
  if (TERMINAL.includes(j.status)) {
    finish();
    return stop;
  }
  // Live events: `progress`, `preview`, `status` (with the queue position), `result`.
  source = new EventSource(`/api/v1/generations/${encodeURIComponent(id)}/events`);
  const onEvent = (ev) => {
    if (done) return;
    let e;
    try {
      e = JSON.parse(ev.data);
    } catch {
      return;
    }
    if (ev.type === 'progress') {
      progress.set(e.fraction || 0);
      j.status = 'running';
      if (e.label) j.label = e.label;
      status.textContent = statusText(j);
    } else if (ev.type === 'preview') {
      preview.src = e.data_url || (e.media_id ? mediaUrl(e.media_id) : preview.src);
      preview.hidden = false;
    } else if (ev.type === 'status') {
      j = {
        ...j,
        status: e.status,
        status_text: e.status_text,
        queue_position: e.queue_position,
        backend_ahead: e.backend_ahead,
        error: e.error || j.error,
      };
      if (TERMINAL.includes(e.status)) refresh();
      else {
        status.textContent = statusText(j);
        if (e.progress) progress.set(e.progress);
      }
    } else if (ev.type === 'result') {
      refresh();
    }
  };
  for (const t of ['status', 'progress', 'preview', 'result']) source.addEventListener(t, onEvent);
  // The row is read every few seconds only while the stream is down (the
  // browser reconnects it); once it is back, one read catches up.
  let dropped = false;
  source.addEventListener('error', () => {
    dropped = true;
    if (!poll && !done) poll = setInterval(refresh, 3000);
  });
  source.addEventListener('open', () => {
    stopPolling();
    if (dropped) refresh();
    dropped = false;
  });
  return stop;
}

/** The result images and the same actions as in chat. */
function renderResult(box, j, onRerun) {
  box.replaceChildren();
  if (j.status !== 'succeeded') {
    box.append(el('div', { class: 'actions' }, rerunButton(j, onRerun), el('a', { class: 'button', href: `/tools/${encodeURIComponent(j.tool_id)}?from=${encodeURIComponent(j.id)}` }, '✎ Tweak')));
    return;
  }
  const figures = el('div', { class: 'outputs' });
  for (const [i, mid] of j.outputs.entries()) {
    figures.append(el('figure', {},
      el('img', { src: mediaUrl(mid), alt: `Result ${i + 1} of ${j.tool_id}`, class: 'result-image' }),
      el('figcaption', {}, el('a', { href: mediaUrl(mid), download: `${j.tool_id}-${j.id.slice(0, 13)}-${i + 1}`, class: 'button' }, '⬇ Download'),
        el('a', { href: `/tools?media=${encodeURIComponent(mid)}`, class: 'button' }, '⇪ Use as input'))));
  }
  const info = el('details', { class: 'info' }, el('summary', {}, 'Info'),
    el('dl', {},
      el('dt', {}, 'Tool'), el('dd', {}, j.tool_id),
      el('dt', {}, 'Started'), el('dd', {}, when(j.started_at || j.created_at)),
      el('dt', {}, 'Finished'), el('dd', {}, when(j.finished_at)),
      el('dt', {}, 'Took'), el('dd', {}, j.finished_at && j.started_at ? `${((j.finished_at - j.started_at) / 1000).toFixed(1)} s` : ''),
      el('dt', {}, 'Parameters'), el('dd', {}, paramsTable(j.params))));
  const stars = el('div', { class: 'stars', role: 'group', 'aria-label': 'Rate this result' });
  // Stars light up to the chosen one; the chosen one is the pressed button.
  const light = (n) => stars.querySelectorAll('button').forEach((x, k) => {
    x.setAttribute('aria-pressed', k + 1 === n ? 'true' : 'false');
    x.classList.toggle('lit', k < n);
  });
  for (let n = 1; n <= 5; n++) {
    const b = el('button', { type: 'button', 'aria-label': `${n} star${n > 1 ? 's' : ''}`, 'aria-pressed': j.rating === n ? 'true' : 'false', class: j.rating >= n ? 'lit' : undefined }, '★');
    b.addEventListener('click', async () => {
      try {
        await api('POST', `/api/v1/generations/${encodeURIComponent(j.id)}/rating`, { stars: n });
        light(n);
        toast(`Rated ${'★'.repeat(n)}`);
      } catch (e) {
        showError(e);
      }
    });
    stars.append(b);
  }
  box.append(figures,
    el('div', { class: 'actions' }, rerunButton(j, onRerun),
      el('a', { class: 'button', href: `/tools/${encodeURIComponent(j.tool_id)}?from=${encodeURIComponent(j.id)}` }, '✎ Tweak'),
      addToCollectionButton(j.id), stars),
    info);
}

/** Parameters as a table: name and value; the applied LoRAs by name and weight. */
function paramsTable(params) {
  const rows = [];
  for (const [k, v] of Object.entries(params || {})) {
    if (k === '_loras') {
      const list = Array.isArray(v) ? v.map((l) => `${l.name || l.slug || l.filename} (${l.weight ?? 1})`).join(', ') : '';
      if (list) rows.push(['LoRAs', list]);
      continue;
    }
    if (k.startsWith('_')) continue;
    const shown = typeof v === 'string' && v.startsWith('media:') ? 'an uploaded image' : typeof v === 'object' ? JSON.stringify(v) : String(v);
    rows.push([k.replace(/[_-]+/g, ' '), shown]);
  }
  return el('table', { class: 'params' }, el('tbody', {}, rows.map(([k, v]) => el('tr', {}, el('th', { scope: 'row' }, k), el('td', {}, v)))));
}

/** Rerun: a new generation with the same parameters, given to `onRerun` (else opened on its page). */
function rerunButton(j, onRerun) {
  const b = el('button', { type: 'button', class: 'primary', id: 'rerun' }, '↻ Rerun');
  b.addEventListener('click', async () => {
    b.disabled = true;
    try {
      let n;
      try {
        n = job(await api('POST', `/api/v1/generations/${encodeURIComponent(j.id)}/rerun`));
      } catch (e) {
        if (!(e instanceof ApiError && e.code === 'confirmation_required')) throw e;
        if (!window.confirm(`${e.message}\n\nRun it anyway?`)) return;
        n = job(await api('POST', `/api/v1/generations/${encodeURIComponent(j.id)}/rerun`, { confirmed: true }));
      }
      window.dispatchEvent(new Event('station:submitted'));
      if (onRerun) onRerun(n);
      else location.href = `/jobs/${encodeURIComponent(n.id)}`;
    } catch (e) {
      showError(e);
    } finally {
      b.disabled = false;
    }
  });
  return b;
}

/** The words a generation was asked with: its prompt, else its first text. */
function promptOf(j) {
  const p = j.params || {};
  const key = Object.keys(p).find((k) => /prompt|text|caption/i.test(k) && !/negative/i.test(k) && typeof p[k] === 'string');
  const text = key ? p[key] : '';
  return text.length > 90 ? `${text.slice(0, 87)}…` : text;
}

/** The model a generation ran with (its file name without the extension), if it names one. */
function modelOf(j) {
  const p = j.params || {};
  const m = ['model', 'checkpoint', 'ckpt_name', 'unet_name'].map((k) => p[k]).find((v) => typeof v === 'string' && v);
  return m ? m.replace(/\.(safetensors|ckpt|pt|pth|bin|gguf)$/i, '') : '';
}

/** A dialog with a generation's image, details and parameters. */
function lightbox(j) {
  let d = document.getElementById('lightbox');
  if (!d) {
    d = el('dialog', { id: 'lightbox', class: 'lightbox', 'aria-label': 'Generation details' });
    document.body.append(d);
  }
  const close = el('button', { type: 'button', class: 'close', 'aria-label': 'Close' }, '✕');
  close.addEventListener('click', () => d.close());
  const took = j.finished_at && j.started_at ? `${((j.finished_at - j.started_at) / 1000).toFixed(1)} s` : '';
  const first = j.outputs[0];
  d.replaceChildren(close,
    first ? el('img', { src: mediaUrl(first), alt: `${j.tool_id} result`, class: 'lightbox-image' })
      : el('p', { class: `placeholder ${j.status}` }, j.status),
    el('div', { class: 'lightbox-info' },
      el('h2', {}, j.tool_id),
      el('dl', {},
        el('dt', {}, 'Status'), el('dd', {}, j.status),
        el('dt', {}, 'Created'), el('dd', {}, when(j.created_at)),
        el('dt', {}, 'Took'), el('dd', {}, took || '—'),
        el('dt', {}, 'Rating'), el('dd', {}, j.rating ? '★'.repeat(j.rating) : 'not rated')),
      paramsTable(j.params),
      el('div', { class: 'actions' },
        el('a', { class: 'button primary', href: `/tools/${encodeURIComponent(j.tool_id)}?from=${encodeURIComponent(j.id)}` }, 'Copy to form'),
        el('a', { class: 'button', href: `/jobs/${encodeURIComponent(j.id)}` }, 'Open'),
        j.status === 'succeeded' ? addToCollectionButton(j.id) : null,
        first ? el('a', { class: 'button', href: mediaUrl(first), download: `${j.tool_id}-${j.id.slice(0, 13)}` }, 'Download') : null)));
  d.showModal();
}

/** The most generations one ZIP download holds (the server's limit). */
const MAX_ZIP = 100;

/**
 * Every generation, newest first, loading more as you scroll: filters by
 * tool, status and time, a search in the parameters (prompts), a lightbox
 * with the details, and a selection to download as one ZIP or hide.
 */
async function history() {
  const m = main('History');
  const list = await loadTools().catch(() => []);
  const labelled = (id, text, control) => el('div', { class: 'field' }, el('label', { for: id }, text), control);
  const tool = el('select', { id: 'h-tool' }, el('option', { value: '' }, 'All tools'),
    list.map((t) => el('option', { value: t.id }, t.name || t.id)));
  const status = el('select', { id: 'h-status' },
    [['', 'Any status'], ['succeeded', 'Done'], ['failed', 'Failed'], ['cancelled', 'Cancelled'], ['running', 'Running'], ['queued', 'Queued']]
      .map(([v, l]) => el('option', { value: v }, l)));
  // Models offered now (those no backend has any more can still be searched for by name).
  const models = listOf(await api('GET', '/api/v1/models').catch(() => null), 'models').filter((x) => x.kind !== 'lora');
  const model = el('select', { id: 'h-model' }, el('option', { value: '' }, 'Any model'),
    models.map((x) => el('option', { value: x.name }, x.label || x.name)));
  const since = el('select', { id: 'h-since' },
    [['', 'Any time'], ['1', 'Last 24 hours'], ['7', 'Last 7 days'], ['30', 'Last 30 days']].map(([v, l]) => el('option', { value: v }, l)));
  const search = el('input', { type: 'search', id: 'h-search', placeholder: 'Words of the prompt…' });
  const filters = el('form', { class: 'filters', role: 'search', 'aria-label': 'Filter your generations' },
    labelled('h-search', 'Search', search), labelled('h-tool', 'Tool', tool),
    models.length ? labelled('h-model', 'Model', model) : null,
    labelled('h-status', 'Status', status), labelled('h-since', 'When', since));
  filters.addEventListener('submit', (e) => e.preventDefault());
  const count = el('span', { id: 'selected-count' });
  const hide = el('button', { type: 'button', class: 'danger', id: 'hide-selected' }, '✕ Hide selected');
  const none = el('button', { type: 'button' }, 'Clear selection');
  // The ZIP is streamed by the server; the browser saves it as it arrives.
  const zip = el('a', { class: 'button', id: 'download-selected', download: '' }, '⬇ Download as ZIP');
  const tooMany = el('span', { class: 'field-note', hidden: true }, `At most ${MAX_ZIP} at a time.`);
  const selection = el('div', { class: 'selection actions', hidden: true }, count, zip, tooMany, hide, none);
  const grid = el('ul', { class: 'gallery', 'aria-label': 'Your generations' });
  const sentinel = el('p', { class: 'more', role: 'status' }, 'Loading…');
  m.append(filters, selection, grid, sentinel);
  const selected = new Set();
  /** The selected ones that have an image (only those go in a ZIP). */
  const imaged = new Set();
  const showSelection = () => {
    selection.hidden = selected.size === 0;
    count.textContent = `${selected.size} selected`;
    const fits = selected.size <= MAX_ZIP;
    tooMany.hidden = fits;
    zip.hidden = !fits || imaged.size === 0;
    zip.href = `/api/v1/generations/download?ids=${[...imaged].map(encodeURIComponent).join(',')}`;
  };
  let cursor = null;
  let loading = false;
  let end = false;
  let round = 0;
  const more = async () => {
    if (loading || end) return;
    loading = true;
    const mine = round;
    try {
      const qs = new URLSearchParams({ limit: '24' });
      if (cursor) qs.set('before', cursor);
      if (tool.value) qs.set('tool', tool.value);
      if (model.value) qs.set('model', model.value);
      if (status.value) qs.set('status', status.value);
      if (since.value) qs.set('since', String(Date.now() - Number(since.value) * 86400000));
      if (search.value.trim()) qs.set('q', search.value.trim());
      const data = await api('GET', `/api/v1/generations?${qs}`);
      if (mine !== round) return;
      const items = listOf(data, 'generations', 'jobs').map(job);
      for (const j of items) {
        const thumb = j.outputs.length
          ? el('img', { src: mediaUrl(j.outputs[0], true), alt: `${j.tool_id} result`, loading: 'lazy' })
          : el('span', { class: `placeholder ${j.status}` }, j.status);
        const open = el('button', { type: 'button', class: 'thumb', 'aria-label': `Details of ${j.tool_id} from ${when(j.created_at)}` }, thumb);
        open.addEventListener('click', () => lightbox(j));
        const pick = el('input', { type: 'checkbox', class: 'pick', 'aria-label': `Select ${j.tool_id} from ${when(j.created_at)}` });
        pick.addEventListener('change', () => {
          if (pick.checked) selected.add(j.id);
          else selected.delete(j.id);
          if (pick.checked && j.outputs.length) imaged.add(j.id);
          else imaged.delete(j.id);
          showSelection();
        });
        const prompt = promptOf(j);
        grid.append(el('li', { dataset: { job: j.id, status: j.status } }, open, pick,
          el('span', { class: 'caption' }, prompt ? el('span', { class: 'prompt' }, prompt) : null,
            modelOf(j) ? el('span', { class: 'model' }, modelOf(j)) : null, `${j.tool_id} · ${when(j.created_at)}`)));
      }
      cursor = data && data.next;
      end = !cursor || !items.length;
      const filtered = tool.value || model.value || status.value || since.value || search.value.trim();
      sentinel.textContent = end
        ? (grid.children.length ? 'That is everything.' : filtered ? 'Nothing matches these filters.' : 'Nothing yet: pick a tool to make something.')
        : '';
    } catch (e) {
      sentinel.textContent = e.message;
      end = true;
    } finally {
      if (mine === round) loading = false;
    }
    // Keep filling until the page scrolls.
    if (mine === round && !end && sentinel.getBoundingClientRect().top < window.innerHeight) more();
  };
  const restart = () => {
    round += 1;
    grid.replaceChildren();
    selected.clear();
    imaged.clear();
    showSelection();
    cursor = null;
    end = false;
    loading = false;
    sentinel.textContent = 'Loading…';
    more();
  };
  for (const s of [tool, model, status, since]) s.addEventListener('change', restart);
  let typing;
  search.addEventListener('input', () => {
    clearTimeout(typing);
    typing = setTimeout(restart, 300);
  });
  none.addEventListener('click', () => {
    grid.querySelectorAll('input.pick').forEach((c) => (c.checked = false));
    selected.clear();
    imaged.clear();
    showSelection();
  });
  hide.addEventListener('click', async () => {
    if (!window.confirm(`Hide ${selected.size} generation(s) from your history?`)) return;
    for (const id of [...selected]) {
      try {
        await api('DELETE', `/api/v1/generations/${encodeURIComponent(id)}`);
        grid.querySelector(`li[data-job="${CSS.escape(id)}"]`)?.remove();
        selected.delete(id);
        imaged.delete(id);
      } catch (e) {
        showError(e);
        break;
      }
    }
    showSelection();
    toast('Hidden from your history.');
  });
  new IntersectionObserver((entries) => entries.some((e) => e.isIntersecting) && more()).observe(sentinel);
  await more();
}

/** Saved parameters per tool: what the form starts with. */
async function settings() {
  const m = main('Settings');
  m.append(el('p', { class: 'lead' }, 'Saved values are used whenever you run the tool without setting them (here, in chat or through the API).'));
  const list = await loadTools();
  const select = el('select', { id: 'settings-tool', name: 'tool' }, list.map((t) => el('option', { value: t.id }, t.name || t.id)));
  const holder = el('div', { class: 'settings-form' });
  m.append(el('div', { class: 'field' }, el('label', { for: 'settings-tool' }, 'Tool'), select), holder);
  const show = async () => {
    const id = select.value;
    if (!id) return;
    const t = await api('GET', `/api/v1/tools/${encodeURIComponent(id)}`).then((r) => r.tool || r);
    const saved = await api('GET', `/api/v1/settings/${encodeURIComponent(id)}`).catch(() => ({}));
    const values = (saved && saved.params) || {};
    // Images and seeds belong to one run, not to saved settings.
    const usable = { ...t, inputs: inputsOf(t).filter((d) => d.type !== 'image' && d.type !== 'seed') };
    holder.replaceChildren(toolForm(usable, values, 'Save settings', async (params) => {
      await api('PUT', `/api/v1/settings/${encodeURIComponent(id)}`, { params });
      toast('Settings saved.');
    }));
  };
  select.addEventListener('change', show);
  if (query.get('tool')) select.value = query.get('tool');
  await show();
}

const LEDGER_KINDS = {
  grant: 'Points given', hold: 'Held for a generation', capture: 'Paid', release: 'Returned',
  transfer: 'Transfer', adjust: 'Adjustment', sponsor: 'Sponsored',
};

const LEDGER_NOTES = {
  no_backend: 'No backend could run it.', timeout: 'It took too long and was stopped.', cancelled: 'It was cancelled.',
  execution_error: 'It failed on the backend.', invalid_input: 'Its inputs could not be used.',
  starting_grant: 'Welcome points.', succeeded: 'It finished.', failed: 'It failed.',
};

/** A ledger row's change in words: the balance's, else what was held or returned. */
function ledgerChange(r) {
  if (r.amount) return [(r.amount > 0 ? '+' : '') + r.amount, r.amount < 0 ? 'neg' : 'pos'];
  if (r.held > 0) return [`${r.held} held`, 'held'];
  if (r.held < 0) return [`${-r.held} returned`, 'held'];
  if (r.allowance) return [`${Math.abs(r.allowance)} free points ${r.allowance > 0 ? 'used' : 'back'}`, 'held'];
  return ['0', ''];
}

/** A stored note as a sentence (codes such as `no_backend` are for programs). */
function ledgerNote(reason) {
  if (!reason) return '';
  if (LEDGER_NOTES[reason]) return LEDGER_NOTES[reason];
  if (/^[a-z0-9_]+$/.test(reason)) return reason.replace(/_/g, ' ').replace(/^./, (c) => c.toUpperCase()) + '.';
  return reason;
}

/** Balance and the ledger. */
async function points() {
  const m = main('Points');
  const p = await api('GET', '/api/v1/points');
  const b = (p && (p.points || p)) || {};
  m.append(el('dl', { class: 'balance' },
    el('dt', {}, 'Balance'), el('dd', { id: 'points-balance' }, String(b.balance ?? '')),
    el('dt', {}, 'Held for running jobs'), el('dd', {}, String(b.held ?? 0)),
    el('dt', {}, 'Available'), el('dd', { id: 'points-available' }, String(b.available ?? b.balance ?? ''))));
  const data = await api('GET', '/api/v1/points/history?limit=100');
  const rows = listOf(data);
  const table = el('table', { class: 'ledger' },
    el('caption', {}, 'Ledger (newest first)'),
    el('thead', {}, el('tr', {}, ['When', 'Change', 'What', 'Note'].map((h) => el('th', { scope: 'col' }, h)))),
    el('tbody', {}, rows.map((r) => {
      const [text, cls] = ledgerChange(r);
      const note = ledgerNote(r.reason);
      return el('tr', { dataset: { kind: r.kind } },
        el('td', {}, when(r.created_at)),
        el('td', { class: cls }, text),
        el('td', {}, LEDGER_KINDS[r.kind] || r.kind),
        el('td', {}, r.generation ? el('a', { href: `/jobs/${encodeURIComponent(r.generation)}` }, note || 'the generation') : note));
    })));
  m.append(el('div', { class: 'table-wrap' }, table));
}

/** API keys: create (shown once), list, revoke. */
async function keys() {
  const m = main('API keys');
  m.append(el('p', { class: 'lead' }, 'Keys let programs use the API as you: send one as "Authorization: Bearer KEY". ',
    el('a', { href: '/api/v1/docs', id: 'api-docs-link' }, 'API reference')));
  const name = el('input', { id: 'key-name', name: 'name', required: true, maxlength: 64, placeholder: 'e.g. my script' });
  const days = el('input', { id: 'key-days', name: 'expires_in_days', type: 'number', min: 1, max: 3650, placeholder: 'never' });
  const form = el('form', { class: 'key-form', 'aria-label': 'New API key' },
    el('div', { class: 'field' }, el('label', { for: 'key-name' }, 'Name'), name),
    el('div', { class: 'field' }, el('label', { for: 'key-days' }, 'Expires after (days)'), days),
    el('div', { class: 'actions' }, el('button', { type: 'submit', class: 'primary' }, 'Create key')));
  const shown = el('div', { class: 'new-key', id: 'new-key', hidden: true });
  const table = el('tbody', { id: 'keys' });
  m.append(form, shown, el('div', { class: 'table-wrap' }, el('table', {},
    el('caption', {}, 'Your keys'),
    el('thead', {}, el('tr', {}, ['Name', 'Key', 'Created', 'Last used', 'State', ''].map((h) => el('th', { scope: 'col' }, h)))),
    table)));
  const load = async () => {
    const list = listOf(await api('GET', '/api/v1/account/keys'), 'keys');
    table.replaceChildren(...list.map((k) => {
      const state = k.revoked_at ? 'revoked' : k.expires_at && k.expires_at < Date.now() ? 'expired' : 'active';
      const revoke = el('button', { type: 'button', class: 'danger', 'aria-label': `Revoke ${k.name}` }, 'Revoke');
      revoke.addEventListener('click', async () => {
        if (!window.confirm(`Revoke the key "${k.name}"? Programs using it stop working.`)) return;
        try {
          await api('DELETE', `/api/v1/account/keys/${encodeURIComponent(k.id)}`);
          toast('Key revoked.');
          await load();
        } catch (e) {
          showError(e);
        }
      });
      return el('tr', { dataset: { key: k.id, state } },
        el('td', {}, k.name), el('td', {}, el('code', {}, `${k.prefix || ''}…`)), el('td', {}, when(k.created_at)),
        el('td', {}, when(k.last_used_at) || 'never'), el('td', { class: 'state' }, state),
        el('td', {}, state === 'active' ? revoke : ''));
    }));
  };
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    form.querySelectorAll('.field-error').forEach((n) => n.remove());
    const body = { name: name.value };
    if (days.value) body.expires_in_days = parseInt(days.value, 10);
    try {
      const r = await api('POST', '/api/v1/account/keys', body);
      const copy = el('button', { type: 'button' }, 'Copy');
      copy.addEventListener('click', () => navigator.clipboard.writeText(r.key).then(() => toast('Copied.')));
      shown.replaceChildren(el('p', {}, el('strong', {}, 'Your new key — copy it now, it is shown only once:')),
        el('p', {}, el('code', { id: 'new-key-text' }, r.key), ' ', copy));
      shown.hidden = false;
      form.reset();
      await load();
    } catch (err) {
      showError(err, form);
    }
  });
  await load();
}

/** Page name (from <body data-page>) → function that fills it. */
export const pages = { tools, tool, job: jobPage, history, settings, points, keys };
