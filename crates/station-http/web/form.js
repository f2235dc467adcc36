// A form generated from a tool's inputs: text areas, sliders with min/max/step,
// selects for enums, a seed with a dice button, image drop zones with previews,
// and advanced inputs folded in a <details>. Every control has a <label>.

import { api, el, mediaUrl, showError, toast } from './app.js';

/** The tool's inputs as definitions with their `name`, in display order. */
export function inputsOf(tool) {
  // The API lists inputs in display order; a map (tool file order) puts the primary input first.
  let list = tool.inputs || [];
  if (!Array.isArray(list)) {
    list = Object.entries(list).map(([name, d]) => ({ name, ...d }));
    list.sort((a, b) => (b.primary ? 1 : 0) - (a.primary ? 1 : 0));
  }
  return list.map((d) => ({ ...d, type: d.type || d.kind }));
}

const RANDOM_SEED_MAX = 4294967295;

/** The media id in a `media:<id>` reference (or the id itself). */
function mediaId(v) {
  return typeof v === 'string' ? v.replace(/^media:/, '') : '';
}

function humanName(name) {
  return name.replace(/[_-]+/g, ' ').replace(/^./, (c) => c.toUpperCase());
}

function control(tool, d, value) {
  const id = `in-${d.name}`;
  const label = el('label', { for: id }, humanName(d.name), d.required ? el('span', { class: 'req', 'aria-hidden': 'true' }, ' *') : null);
  // (DOM append would write a null as the text "null".)
  const help = d.description ? el('p', { class: 'help', id: `${id}-help` }, d.description) : '';
  const described = d.description ? `${id}-help` : undefined;
  const v = value !== undefined && value !== null ? value : d.default;
  const box = el('div', { class: `field field-${d.type}`, dataset: { input: d.name, type: d.type } });
  switch (d.type) {
    case 'text': {
      const ta = el('textarea', {
        id, name: d.name, rows: d.primary ? 4 : 2, required: !!d.required,
        maxlength: d.max_length, 'aria-describedby': described,
      });
      ta.value = v ?? '';
      box.append(label, ta, help);
      break;
    }
    case 'integer':
    case 'number':
      numberControl(d, id, v, label, help, described, box);
      break;
    case 'boolean': {
      const cb = el('input', { type: 'checkbox', id, name: d.name, 'aria-describedby': described });
      cb.checked = !!v;
      box.append(el('div', { class: 'check-row' }, cb, label), help);
      break;
    }
    case 'enum': {
      const sel = el('select', { id, name: d.name, 'aria-describedby': described },
        (d.choices || []).map((c) => el('option', { value: c, selected: c === v }, c)));
      box.append(label, sel, help);
      break;
    }
    case 'model': {
      // The models the backends offer now, by label and base model; the last
      // one chosen for this kind of model is remembered in this browser.
      const names = d.choices || [];
      const labels = d.choice_labels || names;
      const key = `station.model.${d.model_kind || 'model'}`;
      let chosen = value !== undefined && value !== null ? value : null;
      if (chosen === null) {
        try {
          const last = localStorage.getItem(key);
          if (last && names.includes(last)) chosen = last;
        } catch (_) { /* storage may be off */ }
      }
      if (chosen === null) chosen = d.default ?? names[0];
      const sel = el('select', { id, name: d.name, 'aria-describedby': described },
        names.map((c, i) => el('option', { value: c, selected: c === chosen }, labels[i] || c)));
      sel.addEventListener('change', () => {
        try { localStorage.setItem(key, sel.value); } catch (_) { /* storage may be off */ }
        applyBaseDefaults(tool, sel);
      });
      box.append(label, sel, help);
      if (!names.length) box.append(el('p', { class: 'help' }, 'No backend offers a model for this right now.'));
      break;
    }
    case 'seed': {
      const num = el('input', { type: 'number', id, name: d.name, min: -1, max: RANDOM_SEED_MAX, step: 1, 'aria-describedby': described, placeholder: 'random' });
      num.value = v === undefined || v === null || v === -1 ? '' : v;
      const dice = el('button', { type: 'button', class: 'dice', 'aria-label': 'Roll a random seed', title: 'Roll a random seed' }, '🎲');
      dice.addEventListener('click', () => {
        const a = new Uint32Array(1);
        crypto.getRandomValues(a);
        num.value = a[0];
      });
      box.append(label, el('div', { class: 'seed-row' }, num, dice), help);
      break;
    }
    case 'image':
      box.append(label, imageDrop(d, id, v), help);
      break;
    default: {
      const input = el('input', { type: 'text', id, name: d.name, 'aria-describedby': described });
      input.value = v ?? '';
      box.append(label, input, help);
    }
  }
  return box;
}

/** Sets the inputs the tool's `base_model_defaults` names for the base model of the model chosen in `sel`. */
function applyBaseDefaults(tool, sel) {
  const d = inputsOf(tool).find((x) => x.name === sel.name);
  const names = (d && d.choices) || [];
  const bases = (d && d.choice_base_models) || [];
  const base = bases[names.indexOf(sel.value)];
  const defaults = (tool.base_model_defaults || {})[base];
  if (!defaults) return;
  for (const [name, v] of Object.entries(defaults)) {
    const box = sel.form && sel.form.querySelector(`[data-input="${CSS.escape(name)}"]`);
    if (!box) continue;
    box.querySelectorAll('input, select, textarea').forEach((n) => {
      if (n.type === 'checkbox') n.checked = !!v;
      else if (n.type !== 'hidden' && n.type !== 'file') n.value = v;
    });
  }
}

function has(x) {
  return x !== undefined && x !== null;
}

/**
 * A number box; with a default and both bounds, a slider beside it. The box
 * carries the value (an empty box sends nothing), so the slider never
 * invents one and a typed value out of range is said next to the field
 * instead of being clamped silently.
 */
function numberControl(d, id, v, label, help, described, box) {
  const step = d.step ?? (d.type === 'integer' ? 1 : 'any');
  const num = el('input', {
    type: 'number', id, name: d.name, step, min: d.min, max: d.max, 'aria-describedby': described,
    placeholder: has(d.default) ? undefined : 'not set',
  });
  num.value = v ?? '';
  const note = el('p', { class: 'field-note', role: 'status', hidden: true });
  const check = () => {
    const x = num.value === '' ? NaN : Number(num.value);
    const low = has(d.min) && x < d.min;
    const high = has(d.max) && x > d.max;
    note.hidden = !(low || high);
    note.textContent = low ? `The smallest allowed is ${d.min}.` : high ? `The largest allowed is ${d.max}.` : '';
  };
  num.addEventListener('input', check);
  if (has(d.default) && has(d.min) && has(d.max)) {
    const range = el('input', {
      type: 'range', min: d.min, max: d.max, step, 'aria-label': `${humanName(d.name)} slider`,
    });
    range.value = num.value === '' ? d.default : num.value;
    range.addEventListener('input', () => {
      num.value = range.value;
      check();
    });
    num.addEventListener('input', () => {
      if (num.value !== '') range.value = num.value;
    });
    num.classList.add('range-value');
    box.append(label, el('div', { class: 'range-row' }, range, num), note, help);
  } else {
    box.append(label, num, note, help);
  }
}

/** A file picker that also takes drops and pastes, uploads at once and previews. */
function imageDrop(d, id, value) {
  const hidden = el('input', { type: 'hidden', name: d.name, dataset: { image: '1' } });
  const preview = el('img', { class: 'preview', alt: `${humanName(d.name)} preview`, hidden: true });
  const status = el('span', { class: 'drop-status', role: 'status' });
  // One control: the zone is the button; the file input is kept for
  // keyboards, screen readers and drivers, but not drawn.
  const file = el('input', { type: 'file', id, accept: 'image/png,image/jpeg,image/webp,image/gif', class: 'file visually-hidden' });
  const zone = el('div', { class: 'drop', tabindex: '0', 'aria-label': `Drop an image for ${humanName(d.name)}` },
    el('p', {}, 'Drop an image here, or ', el('span', { class: 'linkish' }, 'choose a file')), file, preview, status);
  const show = (mid) => {
    hidden.value = mid ? `media:${mid}` : '';
    if (mid) {
      preview.src = mediaUrl(mid);
      preview.hidden = false;
    }
  };
  if (value && mediaId(value)) {
    show(mediaId(value));
    status.textContent = 'Using the image you picked; drop or choose another to replace it.';
  }
  const clear = (why) => {
    hidden.value = '';
    preview.hidden = true;
    preview.removeAttribute('src');
    status.textContent = why;
    delete zone.dataset.uploaded;
  };
  zone.addEventListener('click', (e) => {
    if (e.target !== file) file.click();
  });
  const upload = async (f) => {
    if (!f) return;
    if (!f.type.startsWith('image/')) {
      clear(`${f.name} is not an image`);
      return;
    }
    preview.src = URL.createObjectURL(f);
    preview.hidden = false;
    status.textContent = 'Uploading…';
    zone.classList.add('busy');
    try {
      const fd = new FormData();
      fd.append('file', f, f.name);
      const r = await api('POST', '/api/v1/media', fd);
      const m = r.media || r;
      hidden.value = `media:${m.id}`;
      status.textContent = `Uploaded ${f.name}`;
      zone.dataset.uploaded = m.id;
    } catch (e) {
      clear(`Upload failed: ${e.message}`);
      toast(e.message, 'error');
    } finally {
      zone.classList.remove('busy');
    }
  };
  file.addEventListener('change', () => upload(file.files[0]));
  zone.addEventListener('dragover', (e) => {
    e.preventDefault();
    zone.classList.add('over');
  });
  zone.addEventListener('dragleave', () => zone.classList.remove('over'));
  zone.addEventListener('drop', (e) => {
    e.preventDefault();
    zone.classList.remove('over');
    upload(e.dataTransfer.files[0]);
  });
  zone.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' || e.key === ' ') {
      e.preventDefault();
      file.click();
    }
  });
  return el('div', { class: 'image-input' }, zone, hidden);
}

/**
 * The form for `tool`, prefilled with `values`. `onSubmit(params, form)` is
 * called with the parameters typed as the tool wants them.
 *
 * `options.baseline`: what Station uses for a field left out (the account's
 * saved settings over the tool's defaults). When given, the form starts from
 * it where `values` says nothing, and sends only the fields whose value
 * differs from it, so saved settings keep applying to untouched fields.
 * Without it (the settings page) every filled field is sent.
 */
export function toolForm(tool, values, submitLabel, onSubmit, options = {}) {
  const inputs = inputsOf(tool);
  const baseline = options.baseline;
  const form = el('form', { class: 'tool-form', novalidate: true, 'aria-label': `${tool.name || tool.id} parameters` });
  const advanced = el('details', { class: 'advanced' }, el('summary', {}, 'Advanced'));
  for (const d of inputs) {
    const given = values ? values[d.name] : undefined;
    const c = control(tool, d, has(given) ? given : baseline ? baseline[d.name] : undefined);
    (d.advanced ? advanced : form).append(c);
  }
  if (advanced.children.length > 1) form.append(advanced);
  // The other inputs start from the defaults of the chosen model's base model
  // (unless a tweak prefilled them).
  form.querySelectorAll('.field-model select').forEach((sel) => {
    const governed = Object.values(tool.base_model_defaults || {}).flatMap((x) => Object.keys(x));
    const prefilled = values && governed.some((k) => values[k] !== undefined);
    if (!prefilled) applyBaseDefaults(tool, sel);
  });
  aspectPresets(form, inputs);
  const submit = el('button', { type: 'submit', class: 'primary', title: `${submitLabel} (Ctrl+Enter)` }, submitLabel);
  const actions = el('div', { class: 'actions' });
  if (options.batch) {
    actions.append(el('label', { for: 'batch-count', class: 'batch' }, 'Images',
      el('input', { type: 'number', id: 'batch-count', min: 1, max: options.batch, step: 1, value: 1 })));
  }
  actions.append(submit);
  form.append(actions);
  // Ctrl+Enter (Cmd+Enter on a Mac) submits from anywhere in the form.
  form.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      if (!submit.disabled) form.requestSubmit(submit);
    }
  });
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    form.querySelectorAll('.field-error').forEach((n) => n.remove());
    submit.disabled = true;
    try {
      await onSubmit(formValues(tool, form, baseline), form, batchCount(form, options.batch));
    } catch (err) {
      showError(err, form);
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

/** How many jobs the batch box asks for, 1 to `max`. */
function batchCount(form, max) {
  const box = form.querySelector('#batch-count');
  const n = box ? parseInt(box.value, 10) : 1;
  return Math.max(1, Math.min(max || 1, Number.isFinite(n) ? n : 1));
}

const ASPECTS = [['1:1', 1, 1], ['4:3', 4, 3], ['3:4', 3, 4], ['16:9', 16, 9], ['9:16', 9, 16], ['3:2', 3, 2], ['2:3', 2, 3]];

/**
 * Aspect-ratio buttons above `width` and `height` inputs with defaults: each
 * keeps about the same number of pixels, rounded to the inputs' step.
 */
function aspectPresets(form, inputs) {
  const w = inputs.find((d) => d.name === 'width');
  const h = inputs.find((d) => d.name === 'height');
  if (!w || !h || !has(w.default) || !has(h.default)) return;
  const wBox = form.querySelector('[name="width"]');
  const hBox = form.querySelector('[name="height"]');
  const field = wBox && wBox.closest('.field');
  if (!field || !hBox) return;
  const round = (v, d) => {
    const step = Number(d.step) || 8;
    const r = Math.round(v / step) * step;
    return Math.max(has(d.min) ? d.min : step, Math.min(has(d.max) ? d.max : r, r));
  };
  const row = el('div', { class: 'aspects', role: 'group', 'aria-label': 'Aspect ratio' });
  for (const [name, a, b] of ASPECTS) {
    const btn = el('button', { type: 'button', class: 'small', dataset: { aspect: name } }, name);
    btn.addEventListener('click', () => {
      const area = (Number(wBox.value) || w.default) * (Number(hBox.value) || h.default);
      const unit = Math.sqrt(area / (a * b));
      for (const [box, d, v] of [[wBox, w, unit * a], [hBox, h, unit * b]]) {
        box.value = round(v, d);
        box.dispatchEvent(new Event('input', { bubbles: true }));
      }
      row.querySelectorAll('button').forEach((x) => x.setAttribute('aria-pressed', x === btn ? 'true' : 'false'));
    });
    row.append(btn);
  }
  field.before(el('div', { class: 'field' }, el('span', { class: 'label' }, 'Aspect ratio'), row));
}

/** The same value as Station compares them (numbers and text alike). */
function same(a, b) {
  return has(a) && has(b) && String(a) === String(b);
}

/**
 * The form's values typed per input; empty optional fields are left out.
 * With `baseline`, fields equal to it are left out too (see `toolForm`).
 */
export function formValues(tool, form, baseline) {
  const out = {};
  for (const d of inputsOf(tool)) {
    const input = form.querySelector(`[name="${CSS.escape(d.name)}"]`);
    if (!input) continue;
    const raw = input.value;
    let value;
    switch (d.type) {
      case 'boolean':
        value = input.checked;
        break;
      case 'integer':
        if (raw !== '') value = parseInt(raw, 10);
        break;
      case 'seed':
        // An empty seed box is a random seed.
        value = raw !== '' ? parseInt(raw, 10) : -1;
        break;
      case 'number':
        if (raw !== '') value = parseFloat(raw);
        break;
      default:
        if (raw !== '') value = raw;
    }
    if (value === undefined) continue;
    // The model is always sent: the other fields' defaults follow it.
    if (baseline && d.type !== 'model') {
      let base = has(baseline[d.name]) ? baseline[d.name] : d.default;
      if (d.type === 'seed' && !has(base)) base = -1;
      if (d.type === 'boolean' && !has(base)) base = false;
      if (same(value, base)) continue;
    }
    out[d.name] = value;
  }
  return out;
}
