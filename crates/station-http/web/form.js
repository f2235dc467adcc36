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
    case 'number': {
      const step = d.step ?? (d.type === 'integer' ? 1 : 'any');
      if (d.min !== undefined && d.min !== null && d.max !== undefined && d.max !== null) {
        const range = el('input', {
          type: 'range', id, name: d.name, min: d.min, max: d.max, step, 'aria-describedby': described,
        });
        range.value = v ?? d.min;
        const num = el('input', {
          type: 'number', min: d.min, max: d.max, step, class: 'range-value', 'aria-label': `${humanName(d.name)} value`,
        });
        num.value = range.value;
        range.addEventListener('input', () => (num.value = range.value));
        num.addEventListener('input', () => (range.value = num.value));
        box.append(label, el('div', { class: 'range-row' }, range, num), help);
      } else {
        const num = el('input', { type: 'number', id, name: d.name, step, min: d.min, max: d.max, 'aria-describedby': described });
        num.value = v ?? '';
        box.append(label, num, help);
      }
      break;
    }
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

/** A file picker that also takes drops and pastes, uploads at once and previews. */
function imageDrop(d, id, value) {
  const hidden = el('input', { type: 'hidden', name: d.name, dataset: { image: '1' } });
  const preview = el('img', { class: 'preview', alt: `${humanName(d.name)} preview`, hidden: true });
  const status = el('span', { class: 'drop-status', role: 'status' });
  const file = el('input', { type: 'file', id, accept: 'image/png,image/jpeg,image/webp,image/gif', class: 'file' });
  const zone = el('div', { class: 'drop', tabindex: '0', 'aria-label': `Drop an image for ${humanName(d.name)}` },
    el('p', {}, 'Drop an image here, or ', el('span', { class: 'linkish' }, 'choose a file')), file, preview, status);
  const show = (mid) => {
    hidden.value = mid ? `media:${mid}` : '';
    if (mid) {
      preview.src = mediaUrl(mid);
      preview.hidden = false;
    }
  };
  if (value && mediaId(value)) show(mediaId(value));
  const upload = async (f) => {
    if (!f) return;
    if (!f.type.startsWith('image/')) {
      status.textContent = `${f.name} is not an image`;
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
      hidden.value = '';
      status.textContent = `Upload failed: ${e.message}`;
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
 */
export function toolForm(tool, values, submitLabel, onSubmit) {
  const inputs = inputsOf(tool);
  const form = el('form', { class: 'tool-form', novalidate: true, 'aria-label': `${tool.name || tool.id} parameters` });
  const advanced = el('details', { class: 'advanced' }, el('summary', {}, 'Advanced'));
  for (const d of inputs) {
    const c = control(tool, d, values ? values[d.name] : undefined);
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
  const submit = el('button', { type: 'submit', class: 'primary' }, submitLabel);
  form.append(el('div', { class: 'actions' }, submit));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    form.querySelectorAll('.field-error').forEach((n) => n.remove());
    submit.disabled = true;
    try {
      await onSubmit(formValues(tool, form), form);
    } catch (err) {
      showError(err, form);
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

/** The form's values typed per input; empty optional fields are left out. */
export function formValues(tool, form) {
  const out = {};
  for (const d of inputsOf(tool)) {
    const input = form.querySelector(`[name="${CSS.escape(d.name)}"]`);
    if (!input) continue;
    const raw = input.value;
    switch (d.type) {
      case 'boolean':
        out[d.name] = input.checked;
        break;
      case 'integer':
      case 'seed':
        if (raw !== '') out[d.name] = parseInt(raw, 10);
        else if (d.type === 'seed') out[d.name] = -1;
        break;
      case 'number':
        if (raw !== '') out[d.name] = parseFloat(raw);
        break;
      default:
        if (raw !== '') out[d.name] = raw;
    }
  }
  return out;
}
