// LoRA training: your datasets and trainings (/training), and one dataset
// (/training/{slug}): add photos with captions, choose settings, see the
// price, train, and follow the run live until the LoRA is ready. Every rule
// (slots, duplicates, ranges, prices) is the server's; errors name the field.

import { api, el, main, mediaUrl, refreshBalance, showError, toast, when } from './app.js';
import { progressBar } from './pages.js';

const enc = encodeURIComponent;

const STATUS = {
  draft: 'needs more photos',
  ready: 'ready to train',
  locked: 'training now',
  running: 'training',
  succeeded: 'ready to use',
  failed: 'failed',
  cancelled: 'cancelled',
};

/** Your datasets, your trainings and a form to start a new LoRA. */
async function training() {
  const m = main('Training');
  m.append(el('p', { class: 'muted' },
    'Train a LoRA on photos of one subject or style. It is private to you; put its trigger word in a prompt to use it.'));
  const form = el('form', { class: 'card', id: 'new-dataset' },
    el('h2', {}, 'New LoRA'),
    el('div', { class: 'field' }, el('label', { for: 'd-name' }, 'Name'),
      el('input', { id: 'd-name', name: 'name', required: true, maxlength: 80, placeholder: 'Tom Cat' })),
    el('div', { class: 'field' }, el('label', { for: 'd-trigger' }, 'Trigger word (optional)'),
      el('input', { id: 'd-trigger', name: 'trigger_word', maxlength: 48, placeholder: 'from the name: tom-cat' })),
    el('button', { type: 'submit', class: 'primary' }, 'Create'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const body = { name: form.elements.name.value };
    if (form.elements.trigger_word.value.trim()) body.trigger_word = form.elements.trigger_word.value.trim();
    try {
      const d = await api('POST', '/api/v1/datasets', body);
      location.href = `/training/${enc(d.slug)}`;
    } catch (e) {
      showError(e, form);
    }
  });
  const [datasets, trainings] = await Promise.all([api('GET', '/api/v1/datasets'), api('GET', '/api/v1/trainings')]);
  const list = el('ul', { class: 'collections', id: 'dataset-list' });
  for (const d of datasets) {
    list.append(el('li', { class: 'card' },
      el('h2', {}, el('a', { href: `/training/${enc(d.slug)}` }, d.name)),
      el('p', { class: 'muted' }, `Trigger word ${d.trigger_word} · ${STATUS[d.status] || d.status}`)));
  }
  if (!datasets.length) list.append(el('li', { class: 'muted' }, 'No datasets yet: name your first LoRA below.'));
  m.append(el('h2', {}, 'Your datasets'), list, form);
  if (trainings.length) {
    const runs = el('ul', { class: 'trainings', id: 'training-list' });
    for (const t of trainings) runs.append(trainingRow(t));
    m.append(el('h2', {}, 'Your trainings'), runs);
  }
}

/** One training in a list: the LoRA, where it stands, and a live bar while it runs. */
function trainingRow(t) {
  const status = el('span', { class: 'status' }, describe(t));
  const li = el('li', { class: 'card training', dataset: { training: t.id } },
    el('strong', {}, t.lora), ' · ', status, el('span', { class: 'muted' }, ` · ${t.price} points · ${when(t.created_at)}`));
  if (t.status === 'running') follow(t, li, status);
  else if (t.status === 'succeeded') showSamples(t, li);
  return li;
}

/** The sample images of a trained LoRA (training.samples), read again while some are being drawn. */
function showSamples(t, box) {
  let grid = box.querySelector('.samples');
  const draw = (now) => {
    const samples = now.samples || [];
    if (!samples.length) return false;
    if (!grid) {
      grid = el('ul', { class: 'gallery samples', 'aria-label': `Samples of ${now.lora}` });
      box.append(el('p', { class: 'muted' }, `Samples with ${now.lora}:`), grid);
    }
    grid.replaceChildren();
    for (const s of samples) {
      for (const m of s.images) {
        grid.append(el('li', { class: 'item' }, el('img', { src: mediaUrl(m, true), alt: s.prompt, title: s.prompt, loading: 'lazy' })));
      }
      if (['queued', 'dispatched', 'running'].includes(s.status)) grid.append(el('li', { class: 'muted' }, 'drawing a sample…'));
      if (s.status === 'failed') grid.append(el('li', { class: 'muted' }, 'a sample failed'));
    }
    return samples.some((s) => ['queued', 'dispatched', 'running'].includes(s.status));
  };
  let waiting = draw(t);
  let reads = 0;
  const poll = setInterval(async () => {
    reads += 1;
    try {
      waiting = draw(await api('GET', `/api/v1/trainings/${enc(t.id)}`));
    } catch {
      /* the next read tries again */
    }
    // Samples are queued just after the LoRA is ready: look for a while.
    if (!waiting && (reads > 5 || (t.samples || []).length)) clearInterval(poll);
  }, 2000);
}

function describe(t) {
  if (t.status === 'running') return t.status_text || 'training';
  if (t.status === 'succeeded') return `ready: put ${t.lora} in a prompt`;
  if (t.status === 'failed') return `failed${t.error ? `: ${t.error}` : ''}; your points were returned`;
  return STATUS[t.status] || t.status;
}

/** Follows a running training over its event stream (falls back to reading it while the stream is down). */
function follow(t, box, status) {
  const bar = progressBar();
  bar.set(t.progress || 0);
  box.append(bar.node);
  const cancel = el('button', { type: 'button', class: 'danger' }, 'Cancel');
  cancel.addEventListener('click', async () => {
    try {
      await api('POST', `/api/v1/trainings/${enc(t.id)}/cancel`);
      toast('Stopping the training…');
    } catch (e) {
      showError(e);
    }
  });
  box.append(cancel);
  // The run's notes, as chat gets them: its start, each milestone reached
  // (the highest one when several passed unseen) and its end, once each.
  // ComfyUI's trainer reports steps, not loss, so no loss is shown.
  const notes = el('ul', { class: 'training-notes', 'aria-live': 'polite' });
  box.append(notes);
  const told = new Set();
  const note = (key, text) => {
    if (told.has(key)) return;
    told.add(key);
    notes.append(el('li', {}, text));
  };
  const started = (of) => note('start', `Started${of ? `: ${of} steps` : ''}.`);
  const progressed = (e) => {
    const f = e.step && e.of ? e.step / e.of : e.fraction || 0;
    started(e.of);
    const m = (t.milestones || []).filter((p) => f * 100 >= p).pop();
    if (m) note(`m${m}`, `${m} % trained${e.step && e.of ? ` (step ${e.step} of ${e.of})` : ''}.`);
  };
  if (t.progress > 0) progressed({ fraction: t.progress });
  let poll = null;
  let ended = false;
  const source = new EventSource(`/api/v1/trainings/${enc(t.id)}/events`);
  const refresh = async () => {
    try {
      const now = await api('GET', `/api/v1/trainings/${enc(t.id)}`);
      status.textContent = describe(now);
      if (now.status !== 'running') end(now);
      else bar.set(now.progress || 0);
    } catch {
      /* the next event or read tries again */
    }
  };
  const end = (now) => {
    if (ended) return;
    ended = true;
    source.close();
    if (poll) clearInterval(poll);
    cancel.remove();
    // A run that ended before its events were heard did start: said first.
    if (now.status === 'succeeded') started();
    if (now.status === 'succeeded') note('end', 'Done: your LoRA is ready.');
    else if (now.status === 'failed') note('end', `Failed${now.error ? `: ${now.error}` : ''}. Your points were returned.`);
    if (now.status === 'succeeded') {
      bar.set(1);
      box.append(el('p', { class: 'done', role: 'status' }, '✅ Your LoRA ', el('strong', {}, now.lora),
        ' is ready. Put ', el('code', {}, now.lora), ' in a prompt to use it.'));
      showSamples(now, box);
    }
    refreshBalance();
  };
  const onEvent = (ev) => {
    let e;
    try {
      e = JSON.parse(ev.data);
    } catch {
      return;
    }
    if (ev.type === 'progress') {
      bar.set(e.fraction || 0);
      progressed(e);
      if (e.label) status.textContent = e.label;
    } else if (ev.type === 'status') {
      if (e.status_text) status.textContent = e.status_text;
      if (e.status === 'running') started();
      if (['succeeded', 'failed', 'cancelled'].includes(e.status)) refresh();
    } else if (ev.type === 'result') {
      refresh();
    }
  };
  for (const k of ['status', 'progress', 'result']) source.addEventListener(k, onEvent);
  source.addEventListener('error', () => {
    if (!poll && !ended) poll = setInterval(refresh, 3000);
  });
  source.addEventListener('open', () => {
    if (poll) clearInterval(poll);
    poll = null;
    refresh();
  });
}

/** One dataset: photos with captions, settings with the price, and its training. */
async function dataset() {
  const slug = document.body.dataset.dataset;
  let d = await api('GET', `/api/v1/datasets/${enc(slug)}`);
  const m = main(d.name);
  const intro = el('p', { class: 'muted', id: 'dataset-status' });
  const grid = el('ol', { class: 'gallery dataset-images', id: 'images' });
  const upload = el('form', { class: 'card', id: 'add-images' },
    el('h2', {}, 'Add photos'),
    el('div', { class: 'field' }, el('label', { for: 'files' }, 'Photos (PNG, JPEG, WebP)'),
      el('input', { id: 'files', name: 'file', type: 'file', accept: 'image/png,image/jpeg,image/webp,image/gif', multiple: true, required: true })),
    el('div', { class: 'field' }, el('label', { for: 'caption' }, 'Caption for these photos (optional)'),
      el('input', { id: 'caption', name: 'caption', maxlength: 1000, placeholder: 'sitting on a sofa' })),
    el('button', { type: 'submit', class: 'primary' }, 'Add'),
    el('p', { class: 'muted', id: 'upload-progress', role: 'status' }));
  const settings = el('form', { class: 'card', id: 'train-settings' });
  // Automatic captions by the operator's caption tool: one paid job per photo.
  const overwrite = el('input', { id: 'c-overwrite', name: 'overwrite', type: 'checkbox' });
  const autoButton = el('button', { type: 'submit', id: 'auto-captions' }, 'Write captions automatically');
  const captionStatus = el('p', { class: 'muted', id: 'caption-status', role: 'status' });
  const captionBar = progressBar();
  captionBar.node.hidden = true;
  const auto = el('form', { class: 'card', id: 'auto-caption' },
    el('h2', {}, 'Captions'),
    el('p', { class: 'muted' }, 'A caption tool can describe each photo for you; you can edit every caption afterwards.'),
    el('div', { class: 'field' }, el('label', { for: 'c-overwrite' }, overwrite, ' Also replace captions already written')),
    autoButton, captionBar.node, captionStatus);
  m.append(intro, grid, upload, auto, settings);

  const draw = () => {
    const n = d.images ? d.images.length : 0;
    intro.textContent = `Trigger word ${d.trigger_word} · ${n} of ${d.max_images} photos (at least ${d.min_images}) · ${STATUS[d.status] || d.status}`;
    grid.replaceChildren();
    for (const img of d.images || []) {
      const caption = el('input', { name: 'caption', value: img.caption, maxlength: 1000, 'aria-label': `Caption of photo ${img.position}` });
      caption.addEventListener('change', async () => {
        try {
          const r = await api('PUT', `/api/v1/datasets/${enc(slug)}/images/${img.position}`, { caption: caption.value });
          caption.value = r.caption;
          toast('Caption saved');
        } catch (e) {
          showError(e);
        }
      });
      grid.append(el('li', { class: 'item' },
        el('img', { src: mediaUrl(img.media, true), alt: img.caption, loading: 'lazy' }),
        el('div', { class: 'field' }, caption)));
    }
    if (!n) grid.append(el('li', { class: 'muted' }, 'No photos yet. Different poses, backgrounds and light work best.'));
    upload.hidden = d.status === 'locked' || n >= d.max_images;
  };
  draw();

  // Follows a captioning run until its jobs end, then shows the captions.
  let captionPoll = null;
  const followCaptions = (run) => {
    captionStatus.textContent = run.summary;
    captionBar.node.hidden = !run.running;
    captionBar.set(run.progress || 0);
    autoButton.disabled = run.running;
    const failed = run.items.filter((i) => i.status === 'failed' && i.error);
    if (!run.running && failed.length) {
      captionStatus.textContent += ` · ${failed.map((i) => `photo ${i.position}: ${i.error}`).join('; ')}`;
    }
    if (run.running && !captionPoll) {
      captionPoll = setInterval(async () => {
        try {
          followCaptions(await api('GET', `/api/v1/datasets/${enc(slug)}/captions`));
        } catch {
          /* the next read tries again */
        }
      }, 1500);
    } else if (!run.running && captionPoll) {
      clearInterval(captionPoll);
      captionPoll = null;
      refreshBalance();
      api('GET', `/api/v1/datasets/${enc(slug)}`).then((fresh) => {
        d = fresh;
        draw();
      });
    }
  };
  auto.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    auto.querySelectorAll('.field-error').forEach((n) => n.remove());
    try {
      const run = await api('POST', `/api/v1/datasets/${enc(slug)}/captions`, { overwrite: overwrite.checked });
      toast(`Writing ${run.images} caption${run.images === 1 ? '' : 's'} · ${run.price} points`);
      refreshBalance();
      followCaptions(run);
    } catch (e) {
      captionStatus.textContent = e.message;
      showError(e, auto);
    }
  });
  auto.hidden = d.status === 'locked';
  api('GET', `/api/v1/datasets/${enc(slug)}/captions`).then(followCaptions, () => {});

  upload.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const files = [...upload.elements.file.files];
    const note = document.getElementById('upload-progress');
    let added = 0;
    for (const [i, f] of files.entries()) {
      note.textContent = `Adding photo ${i + 1} of ${files.length}…`;
      const fd = new FormData();
      fd.append('file', f, f.name);
      if (upload.elements.caption.value.trim()) fd.append('caption', upload.elements.caption.value.trim());
      try {
        await api('POST', `/api/v1/datasets/${enc(slug)}/images`, fd);
        added += 1;
      } catch (e) {
        showError({ message: `${f.name}: ${e.message}`, fields: e.fields }, upload);
      }
    }
    note.textContent = `${added} of ${files.length} photo${files.length === 1 ? '' : 's'} added.`;
    upload.reset();
    d = await api('GET', `/api/v1/datasets/${enc(slug)}`);
    draw();
    quote();
  });

  // Settings: steps, rank, learning rate; the price is asked from the server at every change.
  const steps = el('input', { id: 't-steps', name: 'steps', type: 'number', min: 1, step: 1, value: 1000 });
  const rank = el('input', { id: 't-rank', name: 'rank', type: 'number', min: 1, step: 1, placeholder: 'default' });
  const lr = el('input', { id: 't-lr', name: 'learning_rate', type: 'number', step: 'any', placeholder: 'default' });
  const price = el('p', { id: 'price', role: 'status' });
  const train = el('button', { type: 'submit', class: 'primary', id: 'train' }, 'Train');
  settings.append(el('h2', {}, 'Train'),
    el('div', { class: 'field' }, el('label', { for: 't-steps' }, 'Steps'), steps),
    el('div', { class: 'field' }, el('label', { for: 't-rank' }, 'Rank'), rank),
    el('div', { class: 'field' }, el('label', { for: 't-lr' }, 'Learning rate'), lr),
    price, train);
  const body = () => {
    const s = {};
    if (steps.value) s.steps = Number(steps.value);
    if (rank.value) s.rank = Number(rank.value);
    if (lr.value) s.learning_rate = Number(lr.value);
    return { dataset: slug, settings: s };
  };
  const quote = async () => {
    settings.querySelectorAll('.field-error').forEach((n) => n.remove());
    try {
      const q = await api('POST', '/api/v1/trainings/quote', body());
      price.textContent = `${q.steps} steps on ${q.base_model} · ${q.price} points (you have ${q.available}). The LoRA will be called ${q.lora}.`
        + (q.estimate_seconds == null ? '' : ` Priced by time: ${q.explanation}.`);
      train.disabled = q.price > q.available;
      train.textContent = `Train · ${q.price} points`;
    } catch (e) {
      price.textContent = e.message;
      train.disabled = true;
      showError(e, settings);
    }
  };
  for (const input of [steps, rank, lr]) input.addEventListener('change', quote);
  settings.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      const t = await api('POST', '/api/v1/trainings', body());
      toast('Training started');
      refreshBalance();
      settings.replaceChildren(el('h2', {}, 'Training'), trainingRow(t));
      upload.hidden = true;
    } catch (e) {
      showError(e, settings);
    }
  });
  if (d.status === 'locked') {
    // A trained LoRA is named after its dataset (tom-cat, or tom-cat-2 when taken).
    const ours = (t) => t.lora === slug || t.lora.startsWith(`${slug}-`);
    const running = (await api('GET', '/api/v1/trainings')).filter((t) => t.status === 'running' && ours(t));
    settings.replaceChildren(el('h2', {}, 'Training'), ...running.map(trainingRow));
  } else {
    quote();
  }
}

export const pages = { training, dataset };
