// Spells (/spells): the gallery of spells you can cast (yours and the
// public ones, with their number of casts), casting one through the form
// generated from its exposed inputs with live progress from the cast's event
// stream, and a builder for new spells whose preview draws, live, the form
// a cast of the draft shows (the server derives its inputs). Every rule
// (tools, mappings, types, prices) is the server's; a refused spell shows
// every problem it names.

import { ApiError, api, el, listOf, main, mediaUrl, refreshBalance, showError, toast } from './app.js';
import { inputsOf, toolForm } from './form.js';
import { progressBar } from './pages.js';

const enc = encodeURIComponent;
const VISIBILITY = { private: 'private', unlisted: 'unlisted: anyone with its name', public: 'public' };

async function spells() {
  const m = main('Spells');
  m.append(el('p', { class: 'muted' },
    'A spell is a chain of tools cast as one: each step takes the one before it as input. Cast one below, or build your own.'));
  const me = document.body.dataset.account;
  const gallery = el('ul', { class: 'collections', id: 'spell-list' });
  const castBox = el('section', { id: 'cast', 'aria-live': 'polite' });
  const tools = listOf(await api('GET', '/api/v1/tools'), 'tools');
  const refresh = async () => {
    const list = (await api('GET', '/api/v1/spells')).spells || [];
    gallery.replaceChildren();
    for (const s of list) gallery.append(spellCard(s, me, castBox));
    if (!list.length) gallery.append(el('li', { class: 'muted' }, 'No spells yet: build the first one below.'));
  };
  await refresh();
  m.append(el('h2', {}, 'Spells you can cast'), gallery, castBox, el('h2', {}, 'Build a spell'), builder(tools, refresh));
}

/** One spell in the gallery: name, owner (you or public), steps, casts, and a Cast button. */
function spellCard(s, me, castBox) {
  const mine = me === s.owner_id;
  const who = mine ? `yours, ${VISIBILITY[s.visibility] || s.visibility}` : 'public';
  const steps = s.steps.map((st) => st.tool).join(' → ');
  const cast = el('button', { type: 'button', class: 'primary', dataset: { cast: s.slug }, disabled: !!s.broken }, 'Cast');
  cast.addEventListener('click', () => castForm(s, castBox));
  return el('li', { class: 'card spell', dataset: { spell: s.slug } },
    el('h3', {}, s.name), el('p', {}, s.description || ''),
    el('p', { class: 'muted' }, `${steps} · ${who} · cast ${s.casts} time${s.casts === 1 ? '' : 's'}`),
    s.broken ? el('p', { class: 'error' }, `Broken: ${s.broken}`) : '',
    cast);
}

/** The form of a spell's exposed inputs; casting follows the cast live. */
function castForm(s, box) {
  const spellAsTool = { id: s.slug, name: s.name, inputs: s.inputs };
  box.replaceChildren(el('h2', {}, `Cast ${s.name}`));
  const send = async (inputs, confirmed) => api('POST', '/api/v1/casts', { spell: s.slug, inputs, confirmed });
  const form = toolForm(spellAsTool, {}, 'Cast', async (inputs) => {
    let c;
    try {
      c = await send(inputs, false);
    } catch (e) {
      if (e instanceof ApiError && e.code === 'confirmation_required') {
        if (!window.confirm(`${e.message}\n\nCast it anyway?`)) throw new Error('Not cast.');
        c = await send(inputs, true);
      } else {
        // The server names a spell's inputs as `inputs.NAME`: put each by its field.
        if (e.fields) e.fields = e.fields.map((f) => ({ ...f, field: f.field.replace(/^inputs\./, '') }));
        throw e;
      }
    }
    refreshBalance();
    follow(c, box);
  });
  if (!inputsOf(spellAsTool).length) form.prepend(el('p', { class: 'muted' }, 'This spell takes no inputs.'));
  box.append(form);
  form.scrollIntoView({ block: 'nearest' });
}

/** Follows a cast over `GET /api/v1/casts/{id}/events` until its result. */
function follow(c, box) {
  box.querySelectorAll('.cast-run').forEach((n) => n.remove());
  const bar = progressBar();
  const status = el('p', { id: 'cast-status', role: 'status' }, c.progress_text);
  const result = el('div', { class: 'results', id: 'cast-result' });
  const cancel = el('button', { type: 'button', class: 'danger' }, 'Cancel');
  const run = el('div', { class: 'card cast-run', dataset: { castId: c.id } }, status, bar.node, cancel, result);
  box.append(run);
  bar.set(c.progress || 0);
  cancel.addEventListener('click', async () => {
    try {
      await api('POST', `/api/v1/casts/${enc(c.id)}/cancel`);
    } catch (e) {
      showError(e);
    }
  });
  const source = new EventSource(`/api/v1/casts/${enc(c.id)}/events`);
  const parse = (ev) => {
    try {
      return JSON.parse(ev.data);
    } catch {
      return null;
    }
  };
  source.addEventListener('status', (ev) => {
    const d = parse(ev);
    if (!d) return;
    status.textContent = d.status === 'failed' && d.error ? `${d.progress_text}: ${d.error}` : d.progress_text;
    run.dataset.status = d.status;
    if (d.status !== 'running') {
      cancel.remove();
      // A success's `result` event follows; the stream ends by itself.
      if (d.status !== 'succeeded') source.close();
      refreshBalance();
      if (d.status === 'cancelled') toast('Cast cancelled; the points of the steps not run were returned.');
    }
  });
  source.addEventListener('progress', (ev) => {
    const d = parse(ev);
    if (!d) return;
    bar.set(d.fraction || 0);
    status.textContent = d.progress_text;
  });
  source.addEventListener('result', (ev) => {
    const d = parse(ev);
    if (!d) return;
    bar.set(1);
    for (const o of d.outputs || []) {
      result.append(el('a', { href: mediaUrl(o.id), target: '_blank', rel: 'noopener' },
        el('img', { src: mediaUrl(o.id, true), alt: `Result of ${c.spell_name}`, class: 'result-image' })));
    }
    source.close();
  });
}

/** The spell builder: name it, add steps, set each input, save; the preview beside it. */
function builder(tools, saved) {
  const form = el('form', { class: 'card', id: 'new-spell', novalidate: true },
    el('div', { class: 'field' }, el('label', { for: 's-name' }, 'Name'),
      el('input', { id: 's-name', name: 'name', required: true, maxlength: 80, placeholder: 'Shrink and mirror' })),
    el('div', { class: 'field' }, el('label', { for: 's-slug' }, 'Short name (what people cast it by)'),
      el('input', { id: 's-slug', name: 'slug', required: true, maxlength: 48, placeholder: 'shrink-mirror' })),
    el('div', { class: 'field' }, el('label', { for: 's-description' }, 'Description'),
      el('input', { id: 's-description', name: 'description', maxlength: 500 })),
    el('div', { class: 'field' }, el('label', { for: 's-visibility' }, 'Who can cast it'),
      el('select', { id: 's-visibility', name: 'visibility' },
        Object.entries(VISIBILITY).map(([v, label]) => el('option', { value: v }, label)))));
  const steps = el('ol', { class: 'spell-steps', id: 'spell-steps' });
  const add = el('button', { type: 'button', id: 'add-step' }, 'Add step');
  const errors = el('ul', { class: 'error', id: 'spell-errors', role: 'alert' });
  const save = el('button', { type: 'submit', class: 'primary' }, 'Save spell');
  const preview = el('section', { class: 'spell-preview', id: 'spell-preview', 'aria-live': 'polite' });
  form.append(steps, add, errors, el('div', { class: 'actions' }, save));
  const name = form.elements.name;
  const slug = form.elements.slug;
  const draft = () => ({
    slug: slug.value.trim(),
    name: name.value.trim(),
    description: form.elements.description.value.trim() || undefined,
    visibility: form.elements.visibility.value,
    steps: [...steps.children].map((li) => li.spellStep()),
  });
  // The preview follows every change (a burst of typing is one request; an
  // answer that arrives after a newer one was asked is dropped).
  let asked = 0;
  let timer;
  const refreshPreview = () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const n = ++asked;
      const body = draft();
      if (!body.steps.some((st) => st.tool)) {
        preview.replaceChildren(el('p', { class: 'muted' }, 'Add a step to see the form a cast of it shows.'));
        return;
      }
      let r;
      try {
        r = await api('POST', '/api/v1/spells/preview', body);
      } catch (e) {
        if (n === asked) preview.replaceChildren(el('p', { class: 'error' }, e.message));
        return;
      }
      if (n === asked) showPreview(preview, body.name, r);
    }, 250);
  };
  form.addEventListener('input', refreshPreview);
  form.addEventListener('change', refreshPreview);
  refreshPreview();
  name.addEventListener('input', () => {
    if (slug.dataset.edited) return;
    slug.value = name.value.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 48);
  });
  slug.addEventListener('input', () => (slug.dataset.edited = '1'));
  add.addEventListener('click', () => {
    steps.append(stepEditor(tools, steps.children.length + 1));
    refreshPreview();
  });
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    errors.replaceChildren();
    const body = draft();
    save.disabled = true;
    try {
      const s = await api('POST', '/api/v1/spells', body);
      toast(`Saved spell ${s.name}.`);
      await saved();
    } catch (e) {
      showError(e);
      // Every problem, each with its step and field.
      for (const f of e.fields || []) errors.append(el('li', { dataset: { field: f.field } }, `${f.field}: ${f.reason}`));
    } finally {
      save.disabled = false;
    }
  });
  // The preview is beside the builder's form, not in it (its own form's
  // typing is not a change of the draft).
  return el('div', { class: 'spell-builder' }, form,
    el('section', { class: 'card', 'aria-labelledby': 'spell-preview-title' },
      el('h3', { id: 'spell-preview-title' }, 'Preview: the form casters get'), preview));
}

/**
 * The preview of a draft: its exposed inputs drawn by the same form code a
 * cast uses (ids prefixed, so they never clash with the cast form's), with
 * the problems a save would answer below.
 */
function showPreview(box, name, r) {
  const inputs = r.inputs || [];
  const nodes = [];
  if (inputs.length) {
    const form = toolForm({ id: 'preview', name: name || 'Your spell', inputs }, {}, 'Cast', async () => {});
    form.querySelectorAll('[id]').forEach((n) => (n.id = `preview-${n.id}`));
    form.querySelectorAll('label[for]').forEach((n) => n.setAttribute('for', `preview-${n.getAttribute('for')}`));
    form.querySelectorAll('[aria-describedby]').forEach((n) =>
      n.setAttribute('aria-describedby', n.getAttribute('aria-describedby').split(' ').map((x) => `preview-${x}`).join(' ')));
    const submit = form.querySelector('button[type=submit]');
    submit.disabled = true;
    submit.title = 'Save the spell to cast it';
    form.addEventListener('submit', (ev) => ev.preventDefault());
    nodes.push(form);
  } else {
    nodes.push(el('p', { class: 'muted' }, 'Casting it asks for nothing.'));
  }
  const problems = r.problems || [];
  if (problems.length) {
    nodes.push(el('p', { class: 'muted' }, 'Before it can be saved:'),
      el('ul', { class: 'muted', id: 'spell-preview-problems' },
        problems.map((f) => el('li', { dataset: { field: f.field } }, `${f.field}: ${f.reason}`))));
  }
  box.replaceChildren(...nodes);
}

/** One step: its tool and, for each of the tool's inputs, where its value comes from. */
function stepEditor(tools, n) {
  const li = el('li', { class: 'spell-step', dataset: { step: n } });
  const id = `step${n}-tool`;
  const pick = el('select', { id, class: 'step-tool' }, el('option', { value: '' }, 'Choose a tool'),
    tools.map((t) => el('option', { value: t.id }, t.name || t.id)));
  const rows = el('div', { class: 'step-inputs' });
  const remove = el('button', { type: 'button', class: 'small' }, 'Remove');
  remove.addEventListener('click', () => {
    const list = li.parentElement;
    li.remove();
    [...list.children].forEach((x, i) => {
      x.dataset.step = i + 1;
      x.querySelector('h3').textContent = `Step ${i + 1}`;
    });
    list.dispatchEvent(new Event('change', { bubbles: true }));
  });
  li.append(el('h3', {}, `Step ${n}`), el('div', { class: 'field' }, el('label', { for: id }, 'Tool'), pick), rows, remove);
  let inputs = [];
  pick.addEventListener('change', async () => {
    rows.replaceChildren();
    inputs = [];
    if (!pick.value) return;
    const t = await api('GET', `/api/v1/tools/${enc(pick.value)}`).then((r) => r.tool || r);
    inputs = inputsOf(t);
    for (const d of inputs) rows.append(inputRow(d, Number(li.dataset.step)));
    // The tool's inputs are in: the preview follows.
    li.dispatchEvent(new Event('change', { bubbles: true }));
  });
  li.spellStep = () => {
    const step = { tool: pick.value, params: {}, inputs_from: {} };
    for (const d of inputs) {
      const mode = rows.querySelector(`[name="mode-${CSS.escape(d.name)}"]`).value;
      const value = rows.querySelector(`[name="value-${CSS.escape(d.name)}"]`).value.trim();
      if (mode === 'fixed') step.params[d.name] = typed(d, value);
      else if (mode === 'input') step.inputs_from[d.name] = `input.${value || d.name}`;
      else if (mode.startsWith('step')) step.inputs_from[d.name] = `${mode}.output[0]`;
    }
    return step;
  };
  return li;
}

/** How one tool input gets its value: the tool's default, a fixed value, an earlier step's image, or an exposed input. */
function inputRow(d, n) {
  const modes = [['default', d.required && d.default == null ? 'not set' : 'tool default'], ['fixed', 'fixed value'],
    ['input', 'exposed input']];
  if (d.type === 'image') for (let i = 1; i < n; i++) modes.push([`step${i}`, `from step ${i} output`]);
  const mode = el('select', { name: `mode-${d.name}`, 'aria-label': `${d.name}: where its value comes from` },
    modes.map(([v, label]) => el('option', { value: v }, label)));
  const value = el('input', { name: `value-${d.name}`, 'aria-label': `${d.name}: value or input name`, hidden: true });
  const sync = () => {
    value.hidden = !(mode.value === 'fixed' || mode.value === 'input');
    value.placeholder = mode.value === 'input' ? `input name (default ${d.name})` : d.choices ? d.choices.join(', ') : d.type;
  };
  mode.addEventListener('change', sync);
  // An image input takes the step before's image by default; the first step's is exposed.
  if (d.type === 'image') mode.value = n > 1 ? `step${n - 1}` : 'input';
  sync();
  return el('div', { class: 'field spell-input', dataset: { input: d.name } },
    el('span', { class: 'label' }, `${d.name} (${d.type}${d.required ? ', required' : ''})`), mode, value);
}

/** A fixed value as the tool's input type wants it. */
function typed(d, v) {
  if (d.type === 'integer' || d.type === 'seed') return /^-?\d+$/.test(v) ? parseInt(v, 10) : v;
  if (d.type === 'number') return v !== '' && Number.isFinite(Number(v)) ? Number(v) : v;
  if (d.type === 'boolean') return v === 'true' || v === 'yes' || v === '1';
  return v;
}

export const pages = { spells };
