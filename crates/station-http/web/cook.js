// Cook: generative collections on the web (issue 24). Your cooks (/cook);
// a collection's recipe editor — the trait tree as a form and as JSON, every
// problem the API names shown at its field — with the price quote, start,
// pause, resume, stop, re-cook and live progress (/collections/{id}/cook);
// and the review grid: claim a batch, accept (keep) or reject (cull) each
// piece with the keyboard (arrows, a, r) or a click, with the review's
// progress (/collections/{id}/review). Every rule is the core's, through
// the REST API.

import { api, el, main, showError, toast } from './app.js';

const enc = encodeURIComponent;

function bar(fraction, label) {
  const pct = Math.round(Math.max(0, Math.min(1, fraction || 0)) * 100);
  const fill = el('div', { class: 'bar' });
  // Through the CSSOM: the CSP refuses style attributes.
  fill.style.width = `${pct}%`;
  return el('div', { class: 'progress', role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': pct, 'aria-label': label }, fill);
}

/** /cook: your cooks, and a new cooked collection. */
async function cooks() {
  const m = main('Cook');
  m.append(el('p', { class: 'muted' }, 'A cook makes a whole collection from a recipe: a tool, its parameters and a tree of traits drawn by weight. Review the pieces, keep the best, export them with NFT metadata.'));
  const list = await api('GET', '/api/v1/cooks');
  const ul = el('ul', { class: 'collections', id: 'cook-list' });
  for (const c of list.items) {
    ul.append(el('li', { class: 'card', dataset: { cook: c.id } },
      el('h2', {}, el('a', { href: `/collections/${enc(c.id)}/cook` }, c.name)),
      el('p', { class: 'cook-progress' }, c.cook.progress_text),
      bar(c.cook.progress, `${c.name} made`),
      el('p', {}, el('a', { href: `/collections/${enc(c.id)}/review` }, 'Review pieces'))));
  }
  if (!list.items.length) ul.append(el('li', { class: 'muted' }, 'No cooks yet. Name a new one below, then write its recipe.'));
  const form = el('form', { class: 'card', id: 'new-cook' }, el('h2', {}, 'New cooked collection'),
    el('div', { class: 'field' }, el('label', { for: 'nc-name' }, 'Name'), el('input', { id: 'nc-name', name: 'name', required: true, maxlength: 100 })),
    el('button', { type: 'submit', class: 'primary' }, 'Create and write its recipe'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      const c = await api('POST', '/api/v1/collections', { name: form.elements.name.value });
      location.href = `/collections/${enc(c.id)}/cook`;
    } catch (e) {
      showError(e, form);
    }
  });
  m.append(ul, form);
}

const EMPTY = {
  tool: '', params: { prompt: 'a cat wearing [[Hat]]' }, supply: 10,
  categories: [{ name: 'Hat', traits: [{ name: 'Crown', value: 'a golden crown', weight: 1 }, { name: 'Cap', value: 'a red cap', weight: 3 }] }],
  name_template: '{{collection}} #{{number}}', description: '', reviewers: [],
};

function field(label, input, hint) {
  return el('div', { class: 'field' }, el('label', { for: input.id }, label), input, hint ? el('p', { class: 'hint muted' }, hint) : null);
}

/** One trait's row of a category. */
function traitRow(ci, ti, t, onChange) {
  const at = `categories[${ci}].traits[${ti}]`;
  const tr = el('tr', { class: 'trait' },
    el('td', {}, el('input', { name: `${at}.name`, value: t.name ?? '', 'aria-label': `Category ${ci + 1} trait ${ti + 1} name`, required: true })),
    el('td', {}, el('input', { name: `${at}.value`, value: t.value ?? '', 'aria-label': `Category ${ci + 1} trait ${ti + 1} value` })),
    el('td', {}, el('input', { name: `${at}.weight`, type: 'number', step: 'any', value: t.weight ?? 1, 'aria-label': `Category ${ci + 1} trait ${ti + 1} weight` })));
  const rm = el('button', { type: 'button', class: 'remove', 'aria-label': `Remove trait ${ti + 1} of category ${ci + 1}` }, '✕');
  rm.addEventListener('click', () => onChange((r) => r.categories[ci].traits.splice(ti, 1)));
  tr.append(el('td', {}, rm));
  return tr;
}

/** One category: weighted traits, or a generated range. */
function categoryBox(ci, c, onChange) {
  const at = `categories[${ci}]`;
  const isRange = c.type === 'range';
  const box = el('fieldset', { class: 'category card', dataset: { category: ci } }, el('legend', {}, `Category ${ci + 1}`));
  const type = el('select', { name: `${at}.type`, id: `cat${ci}-type` },
    el('option', { value: 'traits', selected: !isRange }, 'Traits with weights'),
    el('option', { value: 'range', selected: isRange }, 'A range of numbers'));
  type.addEventListener('change', () => onChange((r) => {
    const name = r.categories[ci].name;
    r.categories[ci] = type.value === 'range' ? { name, type: 'range', start: 1, end: r.supply || 10, step: 1, zero_pad: 0, unique: false } : { name, traits: [{ name: 'One', value: '', weight: 1 }] };
  }));
  box.append(field('Name (write [[Name]] in a parameter)', el('input', { id: `cat${ci}-name`, name: `${at}.name`, value: c.name ?? '' })), field('Kind', type));
  if (isRange) {
    for (const [k, label] of [['start', 'Start'], ['end', 'End'], ['step', 'Step'], ['zero_pad', 'Digits (zero padded)']]) {
      box.append(field(label, el('input', { id: `cat${ci}-${k}`, name: `${at}.${k}`, type: 'number', value: c[k] ?? '' })));
    }
    box.append(el('div', { class: 'field' }, el('label', {}, el('input', { type: 'checkbox', name: `${at}.unique`, checked: !!c.unique }), ' Unique: no two pieces get the same number')));
  } else {
    const body = el('tbody', {});
    (c.traits || []).forEach((t, ti) => body.append(traitRow(ci, ti, t, onChange)));
    box.append(el('table', { class: 'traits' }, el('thead', {}, el('tr', {}, el('th', {}, 'Trait'), el('th', {}, 'Value (text put in)'), el('th', {}, 'Weight'), el('th', {}, ''))), body));
    const add = el('button', { type: 'button', class: 'add-trait' }, 'Add trait');
    add.addEventListener('click', () => onChange((r) => r.categories[ci].traits.push({ name: '', value: '', weight: 1 })));
    box.append(add);
  }
  const rm = el('button', { type: 'button', class: 'remove-category danger' }, 'Remove category');
  rm.addEventListener('click', () => onChange((r) => r.categories.splice(ci, 1)));
  box.append(rm);
  return box;
}

function num(v) {
  if (v === '' || v === undefined || v === null) return undefined;
  const n = Number(v);
  return Number.isFinite(n) ? n : v;
}

/** The recipe the form shows (params as parsed JSON, or the raw text when it is not). */
function readForm(form) {
  const v = (name) => (form.elements[name] ? form.elements[name].value : undefined);
  const r = {};
  const maker = v('maker');
  if (maker === 'spell') r.spell = v('spell').trim();
  else r.tool = v('tool').trim();
  const raw = v('params').trim();
  try {
    r.params = raw ? JSON.parse(raw) : {};
  } catch {
    r.params = raw;
  }
  r.supply = num(v('supply'));
  r.categories = [...form.querySelectorAll('fieldset.category')].map((box) => {
    const ci = box.dataset.category;
    const at = `categories[${ci}]`;
    const name = v(`${at}.name`);
    if (v(`${at}.type`) === 'range') {
      return { name, type: 'range', start: num(v(`${at}.start`)), end: num(v(`${at}.end`)), step: num(v(`${at}.step`)), zero_pad: num(v(`${at}.zero_pad`)), unique: form.elements[`${at}.unique`].checked };
    }
    const traits = [...box.querySelectorAll('tr.trait')].map((tr) => {
      const [n, val, w] = tr.querySelectorAll('input');
      const t = { name: n.value, weight: num(w.value) };
      if (val.value) t.value = val.value;
      return t;
    });
    return { name, traits };
  });
  r.name_template = v('name_template');
  r.description = v('description');
  r.reviewers = v('reviewers').split(',').map((x) => x.trim()).filter(Boolean);
  return r;
}

/** Shows each problem at its field (or the nearest field above it) and in a list. */
function showProblems(form, list, fields) {
  form.querySelectorAll('.field-error').forEach((n) => n.remove());
  form.querySelectorAll('[aria-invalid]').forEach((n) => n.removeAttribute('aria-invalid'));
  list.replaceChildren();
  for (const f of fields) {
    list.append(el('li', { dataset: { field: f.field } }, `${f.field}: ${f.reason}`));
    let path = f.field;
    let input = null;
    while (path && !(input = form.querySelector(`[name="${CSS.escape(path)}"]`))) {
      const cut = Math.max(path.lastIndexOf('.'), path.lastIndexOf('['));
      path = cut > 0 ? path.slice(0, cut) : '';
    }
    if (!input) continue;
    input.setAttribute('aria-invalid', 'true');
    const note = el('p', { class: 'field-error', dataset: { for: f.field } }, f.reason);
    const box = input.closest('.field');
    if (box) box.append(note);
    else input.after(note);
  }
}

/** The recipe editor, quote, controls and live progress of one collection's cook. */
async function cook() {
  const id = document.body.dataset.collection;
  const c = await api('GET', `/api/v1/collections/${enc(id)}`);
  const m = main(`Cook: ${c.name}`);
  m.append(el('p', {}, el('a', { href: `/collections/${enc(id)}` }, 'The collection'), ' · ', el('a', { href: `/collections/${enc(id)}/review` }, 'Review pieces'), ' · ', el('a', { href: '/cook' }, 'All cooks')));
  let recipe;
  try {
    recipe = await api('GET', `/api/v1/collections/${enc(id)}/recipe`);
  } catch (e) {
    if (e.status !== 404) throw e;
    recipe = structuredClone(EMPTY);
  }
  const status = el('section', { class: 'card', id: 'cook-status', 'aria-live': 'polite' }, el('h2', {}, 'Cooking'));
  const form = el('form', { class: 'card recipe', id: 'recipe', novalidate: true });
  const errors = el('ul', { class: 'error', id: 'recipe-errors', role: 'alert' });
  const json = el('textarea', { id: 'recipe-json', rows: 14, spellcheck: 'false', 'aria-label': 'The recipe as JSON' });
  const quote = el('p', { id: 'cook-quote', 'aria-live': 'polite' });
  let current = recipe;
  const render = (r) => {
    current = r;
    const maker = r.spell ? 'spell' : 'tool';
    const makerSel = el('select', { id: 'r-maker', name: 'maker' },
      el('option', { value: 'tool', selected: maker === 'tool' }, 'A tool'), el('option', { value: 'spell', selected: maker === 'spell' }, 'A spell'));
    const tool = el('input', { id: 'r-tool', name: 'tool', value: r.tool || '', list: 'tool-ids', hidden: maker !== 'tool' });
    const spell = el('input', { id: 'r-spell', name: 'spell', value: r.spell || '', hidden: maker !== 'spell' });
    makerSel.addEventListener('change', () => {
      tool.hidden = makerSel.value !== 'tool';
      spell.hidden = makerSel.value !== 'spell';
    });
    const cats = el('div', { id: 'categories' });
    const change = (fn) => {
      const next = readForm(form);
      fn(next);
      render(next);
    };
    (r.categories || []).forEach((cat, ci) => cats.append(categoryBox(ci, cat, change)));
    const addCat = el('button', { type: 'button', id: 'add-category' }, 'Add category');
    addCat.addEventListener('click', () => change((x) => x.categories.push({ name: `Category${x.categories.length + 1}`, traits: [{ name: 'One', value: '', weight: 1 }] })));
    const params = el('textarea', { id: 'r-params', name: 'params', rows: 4, spellcheck: 'false' });
    params.value = typeof r.params === 'string' ? r.params : JSON.stringify(r.params || {}, null, 2);
    form.replaceChildren(el('h2', {}, 'Recipe'),
      field('Each piece is made by', makerSel),
      el('div', { class: 'field' }, el('label', { for: 'r-tool' }, 'Tool or spell'), tool, spell),
      field('Parameters (JSON; [[Category]] is replaced by the piece’s trait)', params),
      field('Supply: pieces to make', el('input', { id: 'r-supply', name: 'supply', type: 'number', min: 1, value: r.supply ?? '' })),
      el('h3', {}, 'Trait tree'), cats, addCat,
      field('Name of each piece', el('input', { id: 'r-name', name: 'name_template', value: r.name_template || '' }), '{{collection}}, {{number}} and {{Category}} are filled in.'),
      field('Description of each piece', el('input', { id: 'r-desc', name: 'description', value: r.description || '' })),
      field('Reviewers besides you (comma separated: account ids or identities like telegram:123)', el('input', { id: 'r-reviewers', name: 'reviewers', value: (r.reviewers || []).join(', ') })),
      errors,
      el('div', { class: 'actions' }, el('button', { type: 'submit', class: 'primary', id: 'save-recipe' }, 'Save recipe')));
    json.value = JSON.stringify(readForm(form), null, 2);
  };
  form.addEventListener('input', () => {
    json.value = JSON.stringify(readForm(form), null, 2);
  });
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const r = readForm(form);
    if (typeof r.params === 'string') {
      showProblems(form, errors, [{ field: 'params', reason: 'is not valid JSON (write an object like {"prompt": "…"})' }]);
      return;
    }
    try {
      const saved = await api('PUT', `/api/v1/collections/${enc(id)}/recipe`, r);
      render(saved);
      showProblems(form, errors, []);
      toast('Recipe saved');
      await refreshQuote();
    } catch (e) {
      if (e.fields && e.fields.length) showProblems(form, errors, e.fields);
      else showError(e);
    }
  });
  const useJson = el('button', { type: 'button', id: 'use-json' }, 'Use this JSON in the form');
  useJson.addEventListener('click', () => {
    try {
      render(JSON.parse(json.value));
      showProblems(form, errors, []);
    } catch (e) {
      toast(`The JSON cannot be read: ${e.message}`, 'error');
    }
  });
  const jsonCard = el('details', { class: 'card', id: 'json-view' }, el('summary', {}, 'JSON view'), json, useJson);
  const refreshQuote = async () => {
    try {
      const q = await api('GET', `/api/v1/collections/${enc(id)}/recipe/quote`);
      quote.textContent = `Price: ${q.text}.`;
      quote.dataset.total = q.total ?? '';
    } catch (e) {
      quote.textContent = e.status === 404 || e.status === 400 ? 'Save a recipe to see its price.' : e.message;
    }
  };
  const tools = await api('GET', '/api/v1/tools').catch(() => null);
  const ids = ((tools && (tools.items || tools.tools)) || []).map((t) => t.id);
  m.append(el('datalist', { id: 'tool-ids' }, ids.map((t) => el('option', { value: t }))));
  render(current);
  m.append(status, form, jsonCard);
  await refreshQuote();
  status.append(quote);
  const line = el('p', { id: 'cook-progress' });
  const progress = el('div', {});
  const counts = el('p', { class: 'muted', id: 'cook-counts' });
  const controls = el('div', { class: 'actions', id: 'cook-controls' });
  status.append(progress, line, counts, controls);
  let timer;
  const act = async (method, path, body) => {
    try {
      show(await api(method, path, body));
    } catch (e) {
      showError(e);
    }
  };
  const button = (label, onClick, cls) => {
    const b = el('button', { type: 'button', class: cls, dataset: { action: label.toLowerCase().replace(/[^a-z-]/g, '') } }, label);
    b.addEventListener('click', onClick);
    return b;
  };
  const show = (ck) => {
    clearTimeout(timer);
    if (!ck) {
      line.textContent = 'Not cooked yet.';
      progress.replaceChildren();
      counts.textContent = '';
      const seed = el('input', { id: 'cook-seed', type: 'number', min: 0, placeholder: 'random', 'aria-label': 'Cook seed (optional)' });
      controls.replaceChildren(el('label', { for: 'cook-seed' }, 'Seed '), seed,
        button('Start cooking', () => act('POST', `/api/v1/collections/${enc(id)}/cook`, seed.value ? { seed: Number(seed.value) } : {}), 'primary'));
      return;
    }
    status.dataset.status = ck.status;
    line.textContent = ck.progress_text;
    progress.replaceChildren(bar(ck.progress, 'Pieces made'));
    counts.textContent = `${ck.done} made · ${ck.failed} failed · ${ck.in_flight} in progress · ${ck.pending} waiting · ${ck.accepted} accepted · ${ck.rejected} rejected · seed ${ck.seed}`;
    const ctl = (a) => () => act('POST', `/api/v1/collections/${enc(id)}/cook/${a}`);
    const btns = [];
    if (ck.status === 'running') btns.push(button('Pause', ctl('pause')), button('Stop', ctl('stop'), 'danger'));
    if (ck.status === 'paused') btns.push(button('Resume', ctl('resume'), 'primary'), button('Stop', ctl('stop'), 'danger'));
    if ((ck.status === 'stopped' || ck.status === 'done') && ck.stopped + ck.failed > 0) btns.push(button('Re-cook missing pieces', ctl('recook'), 'primary'));
    if (ck.done > 0) btns.push(el('a', { href: `/collections/${enc(id)}/review`, class: 'button' }, 'Review'));
    controls.replaceChildren(...btns);
    // Live progress: asked again every second while pieces are out.
    if (ck.status === 'running' || ck.in_flight > 0) {
      timer = setTimeout(async () => {
        try {
          show(await api('GET', `/api/v1/collections/${enc(id)}/cook`));
        } catch (e) {
          line.textContent = e.message;
        }
      }, 1000);
    }
  };
  try {
    show(await api('GET', `/api/v1/collections/${enc(id)}/cook`));
  } catch (e) {
    if (e.status !== 404) throw e;
    show(null);
  }
}

/** The review grid: a claimed batch, decided with the keyboard or clicks. */
async function review() {
  const id = document.body.dataset.collection;
  const c = await api('GET', `/api/v1/collections/${enc(id)}`);
  const m = main(`Review: ${c.name}`);
  m.append(el('p', { class: 'muted', id: 'review-help' }, 'Arrows move between pieces; a accepts (keeps) the piece in focus, r rejects (culls) it. Each batch is yours for 5 minutes: no other reviewer sees these pieces meanwhile.'));
  const state = el('p', { id: 'review-progress', 'aria-live': 'polite' });
  const meter = el('div', {});
  const grid = el('ul', { class: 'gallery review-grid', id: 'review-grid', role: 'grid', 'aria-label': 'Pieces to review' });
  const more = el('button', { type: 'button', id: 'claim-more', class: 'primary' }, 'Claim the next batch');
  m.append(state, meter, grid, el('p', {}, more, ' ', el('a', { href: `/collections/${enc(id)}/cook` }, 'Back to the cook')));
  const progress = async () => {
    const ck = await api('GET', `/api/v1/collections/${enc(id)}/cook`);
    const reviewed = ck.accepted + ck.rejected;
    state.textContent = `${reviewed} of ${ck.done} made pieces reviewed: ${ck.accepted} accepted, ${ck.rejected} rejected.`;
    state.dataset.reviewed = reviewed;
    meter.replaceChildren(bar(ck.done ? reviewed / ck.done : 0, 'Pieces reviewed'));
  };
  const decide = async (li, decision) => {
    if (li.dataset.busy) return;
    li.dataset.busy = '1';
    try {
      const p = await api('POST', `/api/v1/collections/${enc(id)}/pieces/${enc(li.dataset.piece)}/decision`, { decision });
      li.dataset.review = p.review;
      li.querySelector('.verdict').textContent = p.review === 'accepted' ? '✅ accepted' : '❌ rejected';
      await progress();
      const next = grid.querySelector('li.piece[data-review="unreviewed"]');
      if (next && document.activeElement === li) {
        li.tabIndex = -1;
        next.tabIndex = 0;
        next.focus();
      }
    } catch (e) {
      showError(e);
    } finally {
      delete li.dataset.busy;
    }
  };
  const claim = async () => {
    const batch = await api('POST', `/api/v1/collections/${enc(id)}/review/claims`, { count: 12 });
    grid.replaceChildren();
    for (const p of batch.items) {
      const traits = p.traits.map((t) => `${t.category}: ${t.name}`).join(', ');
      const li = el('li', { class: 'piece', tabindex: -1, role: 'gridcell', dataset: { piece: p.id, number: p.number, review: p.review }, 'aria-label': `Piece ${p.number}: ${traits}` },
        el('img', { src: p.thumbnail_url, alt: `Piece ${p.number}: ${traits}`, loading: 'lazy' }),
        el('p', { class: 'caption' }, `#${p.number} · ${traits}`),
        el('p', { class: 'verdict' }, ''));
      const yes = el('button', { type: 'button', class: 'accept', 'aria-label': `Accept piece ${p.number}` }, '✅ Keep');
      const no = el('button', { type: 'button', class: 'reject danger', 'aria-label': `Reject piece ${p.number}` }, '❌ Cull');
      yes.addEventListener('click', () => decide(li, 'accept'));
      no.addEventListener('click', () => decide(li, 'reject'));
      li.append(el('div', { class: 'actions' }, yes, no));
      grid.append(li);
    }
    if (!batch.items.length) grid.append(el('li', { class: 'muted', id: 'review-empty' }, 'Nothing to review now: every made piece is reviewed or held by another reviewer.'));
    const first = grid.querySelector('li.piece');
    if (first) first.tabIndex = 0;
    if (first) first.focus();
    await progress();
  };
  grid.addEventListener('keydown', (ev) => {
    const li = ev.target.closest('li.piece');
    if (!li || ev.target.tagName === 'BUTTON' && (ev.key === 'Enter' || ev.key === ' ')) return;
    const cells = [...grid.querySelectorAll('li.piece')];
    const i = cells.indexOf(li);
    const cols = Math.max(1, Math.round(grid.clientWidth / Math.max(1, li.offsetWidth)));
    const move = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: cols, ArrowUp: -cols }[ev.key];
    if (move) {
      ev.preventDefault();
      const next = cells[Math.max(0, Math.min(cells.length - 1, i + move))];
      li.tabIndex = -1;
      next.tabIndex = 0;
      next.focus();
    } else if (ev.key === 'a') {
      ev.preventDefault();
      decide(li, 'accept');
    } else if (ev.key === 'r') {
      ev.preventDefault();
      decide(li, 'reject');
    }
  });
  more.addEventListener('click', () => claim().catch(showError));
  try {
    await claim();
  } catch (e) {
    if (e.status === 400 || e.status === 404) {
      state.textContent = e.status === 404 ? 'This collection has no cook yet.' : e.message;
      return;
    }
    throw e;
  }
}

export const pages = { cooks, cook, review };
