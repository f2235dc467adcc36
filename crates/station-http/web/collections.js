// Collections: your list, one collection (drag to reorder, remove, rename,
// share links, ZIP export with progress), the public read-only page of a
// shared, unlisted or public collection (grid and lightbox, no sign-in), and
// the "➕ Collection" button result views use. Everything through the REST API.

import { api, el, main, showError, toast, when } from './app.js';

const enc = encodeURIComponent;

/** Your collections and a form to make one. */
async function collections() {
  const m = main('Collections');
  const form = el('form', { class: 'card', id: 'new-collection' },
    el('h2', {}, 'New collection'),
    el('div', { class: 'field' }, el('label', { for: 'c-name' }, 'Name'), el('input', { id: 'c-name', name: 'name', required: true, maxlength: 100 })),
    el('div', { class: 'field' }, el('label', { for: 'c-desc' }, 'Description'), el('textarea', { id: 'c-desc', name: 'description', maxlength: 2000 })),
    el('div', { class: 'field' }, el('label', { for: 'c-vis' }, 'Who may see it'), visibilitySelect('c-vis', 'private')),
    el('button', { type: 'submit', class: 'primary' }, 'Create'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      const c = await api('POST', '/api/v1/collections', {
        name: form.elements.name.value, description: form.elements.description.value, visibility: form.elements.visibility.value,
      });
      location.href = `/collections/${enc(c.id)}`;
    } catch (e) {
      showError(e, form);
    }
  });
  const list = await api('GET', '/api/v1/collections');
  const grid = el('ul', { class: 'collections', id: 'collection-list' });
  for (const c of list.items) {
    grid.append(el('li', { class: 'card' },
      c.cover_thumbnail_url ? el('img', { src: c.cover_thumbnail_url, alt: '', class: 'cover' }) : el('div', { class: 'cover empty' }, 'No images yet'),
      el('h2', {}, el('a', { href: `/collections/${enc(c.id)}` }, c.name)),
      el('p', { class: 'muted' }, `${c.items} item${c.items === 1 ? '' : 's'} · ${labelOf(c.visibility)}`)));
  }
  if (!list.items.length) grid.append(el('li', { class: 'muted' }, 'No collections yet. Make one here, or press “➕ Collection” under a result.'));
  m.append(grid, form);
}

function labelOf(v) {
  return { private: 'only you', unlisted: 'anyone with the link', public: 'everyone' }[v] || v;
}

function visibilitySelect(id, value) {
  const s = el('select', { id, name: 'visibility' });
  for (const v of ['private', 'unlisted', 'public']) s.append(el('option', { value: v, selected: v === value }, `${v} — ${labelOf(v)}`));
  return s;
}

/** One collection: items (drag to reorder), settings, share links, export. */
async function collection() {
  const id = document.body.dataset.collection;
  const c = await api('GET', `/api/v1/collections/${enc(id)}`);
  const m = main(c.name);
  if (c.description) m.append(el('p', {}, c.description));
  m.append(el('p', { class: 'muted' }, `By ${c.owner} · ${labelOf(c.visibility)}`,
    c.public_url ? [' · ', el('a', { href: c.public_url }, 'public page')] : null,
    c.can_edit ? [' · ', el('a', { href: `/collections/${enc(id)}/cook`, id: 'cook-link' }, 'Cook (recipe and review)')] : null));
  const grid = el('ol', { class: 'gallery collection-items', id: 'items' });
  m.append(grid);
  const draw = (col) => {
    grid.replaceChildren();
    for (const it of col.items) {
      const li = el('li', { class: 'item', draggable: col.can_edit ? 'true' : undefined, dataset: { item: it.id } },
        it.thumbnail_url ? el('img', { src: it.thumbnail_url, alt: it.prompt || 'Result image', loading: 'lazy' })
          : el('div', { class: 'lora' }, '🧩 ', it.lora_name || it.lora || 'removed'),
        el('p', { class: 'caption' }, `${it.position}. `, it.prompt || it.tool || ''));
      if (col.can_edit) {
        const rm = el('button', { type: 'button', class: 'remove', 'aria-label': `Remove item ${it.position}` }, '✕');
        rm.addEventListener('click', async () => {
          try {
            await api('DELETE', `/api/v1/collections/${enc(id)}/items/${enc(it.id)}`);
            draw(await api('GET', `/api/v1/collections/${enc(id)}`));
          } catch (e) {
            showError(e);
          }
        });
        li.append(rm);
      }
      grid.append(li);
    }
    if (!col.items.length) grid.append(el('li', { class: 'muted' }, 'Empty. Press “➕ Collection” under a result to add it here.'));
  };
  draw(c);
  if (!c.can_edit) return;
  // Drag and drop: the new order is sent as a whole.
  let dragged = null;
  grid.addEventListener('dragstart', (ev) => {
    dragged = ev.target.closest('li.item');
  });
  grid.addEventListener('dragover', (ev) => ev.preventDefault());
  grid.addEventListener('drop', async (ev) => {
    ev.preventDefault();
    const target = ev.target.closest('li.item');
    if (!dragged || !target || dragged === target) return;
    const after = [...grid.children].indexOf(dragged) < [...grid.children].indexOf(target);
    target.parentNode.insertBefore(dragged, after ? target.nextSibling : target);
    const items = [...grid.querySelectorAll('li.item')].map((li) => li.dataset.item);
    try {
      draw(await api('PUT', `/api/v1/collections/${enc(id)}/order`, { items }));
      toast('Order saved');
    } catch (e) {
      showError(e);
    }
  });
  // Settings.
  const form = el('form', { class: 'card', id: 'edit-collection' }, el('h2', {}, 'Settings'),
    el('div', { class: 'field' }, el('label', { for: 'e-name' }, 'Name'), el('input', { id: 'e-name', name: 'name', value: c.name, maxlength: 100 })),
    el('div', { class: 'field' }, el('label', { for: 'e-desc' }, 'Description'), el('textarea', { id: 'e-desc', name: 'description', maxlength: 2000 }, c.description)),
    el('div', { class: 'field' }, el('label', { for: 'e-vis' }, 'Who may see it'), visibilitySelect('e-vis', c.visibility)),
    el('button', { type: 'submit', class: 'primary' }, 'Save'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      await api('PATCH', `/api/v1/collections/${enc(id)}`, {
        name: form.elements.name.value, description: form.elements.description.value, visibility: form.elements.visibility.value,
      });
      location.reload();
    } catch (e) {
      showError(e, form);
    }
  });
  m.append(form, await shareCard(id), exportCard(id));
}

/** Share links: make one (days, accounts that may add), list, revoke. */
async function shareCard(id) {
  const card = el('section', { class: 'card', id: 'shares' }, el('h2', {}, 'Share links'));
  const form = el('form', {},
    el('div', { class: 'field' }, el('label', { for: 's-days' }, 'Expires after (days)'), el('input', { id: 's-days', name: 'expires_in', type: 'number', min: 1, max: 365, value: 7 })),
    el('div', { class: 'field' }, el('label', { for: 's-add' }, 'Accounts that may add (optional, comma separated)'), el('input', { id: 's-add', name: 'can_add' })),
    el('button', { type: 'submit' }, 'Make a link'));
  const made = el('p', { class: 'made', 'aria-live': 'polite' });
  const list = el('ul', { class: 'shares' });
  const load = async () => {
    const s = await api('GET', `/api/v1/collections/${enc(id)}/shares`);
    list.replaceChildren();
    for (const sh of s.items) {
      const li = el('li', {}, `${sh.permission === 'add' ? 'Can add' : 'View only'} · ${sh.state} · until ${when(sh.expires_at)} `);
      if (sh.state === 'live') {
        const b = el('button', { type: 'button' }, 'Revoke');
        b.addEventListener('click', async () => {
          await api('DELETE', `/api/v1/collections/${enc(id)}/shares/${enc(sh.id)}`).catch(showError);
          load();
        });
        li.append(b);
      }
      list.append(li);
    }
  };
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const days = Number(form.elements.expires_in.value || 7);
    const canAdd = form.elements.can_add.value.split(',').map((x) => x.trim()).filter(Boolean);
    try {
      const s = await api('POST', `/api/v1/collections/${enc(id)}/shares`, { expires_in: Math.round(days * 86400), can_add: canAdd });
      const url = new URL(s.url, location.origin).href;
      made.replaceChildren('Send this link (shown once): ', el('a', { href: url }, url));
      load();
    } catch (e) {
      showError(e, form);
    }
  });
  await load();
  card.append(form, made, list);
  return card;
}

/** ZIP export with live progress and its download link. */
function exportCard(id) {
  const card = el('section', { class: 'card', id: 'export' }, el('h2', {}, 'Export'),
    el('p', { class: 'muted' }, 'A ZIP of the images (original files) with metadata.json: prompt, parameters, model, LoRAs, seed and creator of each.'));
  const b = el('button', { type: 'button' }, 'Export as ZIP');
  const bar = el('progress', { max: 1, value: 0, hidden: true });
  const out = el('p', { 'aria-live': 'polite' });
  b.addEventListener('click', async () => {
    b.disabled = true;
    try {
      let e = await api('POST', `/api/v1/collections/${enc(id)}/exports`);
      bar.hidden = false;
      while (e.status === 'queued' || e.status === 'running') {
        bar.value = e.progress;
        out.textContent = `Building: ${e.done} of ${e.total} items`;
        await new Promise((r) => setTimeout(r, 1000));
        e = await api('GET', `/api/v1/exports/${enc(e.id)}`);
      }
      bar.value = 1;
      if (e.status === 'succeeded') out.replaceChildren(el('a', { href: e.download_url, class: 'button primary' }, 'Download ZIP'), ` (link works until ${when(e.expires_at)})`);
      else out.textContent = `Export failed: ${e.error}`;
    } catch (e) {
      showError(e);
    } finally {
      b.disabled = false;
    }
  });
  card.append(b, bar, out);
  return card;
}

/** The public page: grid and lightbox, no sign-in. */
async function shared() {
  const key = document.body.dataset.key;
  const m = document.getElementById('main');
  let c;
  try {
    c = await api('GET', `/api/v1/shared/${enc(key)}`);
  } catch (e) {
    m.replaceChildren(el('h1', {}, 'Not found'), el('p', { role: 'alert' }, e.message));
    return;
  }
  document.title = `${c.name} · Station`;
  m.replaceChildren(el('h1', {}, c.name), c.description ? el('p', {}, c.description) : '', el('p', { class: 'muted' }, `By ${c.owner} · ${c.items.length} items`));
  const grid = el('ul', { class: 'gallery', id: 'shared-grid' });
  for (const it of c.items) {
    if (!it.thumbnail_url) {
      grid.append(el('li', { class: 'lora' }, '🧩 ', it.lora_name || it.lora || ''));
      continue;
    }
    const btn = el('button', { type: 'button', class: 'thumb', 'aria-label': `Open image ${it.position}` },
      el('img', { src: it.thumbnail_url, alt: it.prompt || `Image ${it.position}`, loading: 'lazy' }));
    btn.addEventListener('click', () => openLightbox(it));
    grid.append(el('li', {}, btn));
  }
  m.append(grid);
}

function openLightbox(it) {
  let d = document.getElementById('lightbox');
  if (!d) {
    d = el('dialog', { id: 'lightbox', class: 'lightbox', 'aria-label': 'Image' });
    document.body.append(d);
  }
  const close = el('button', { type: 'button', class: 'close', 'aria-label': 'Close' }, '✕');
  close.addEventListener('click', () => d.close());
  d.replaceChildren(close, el('img', { src: it.image_url, alt: it.prompt || 'Image', class: 'lightbox-image' }),
    el('div', { class: 'lightbox-info' }, el('h2', {}, `#${it.position}`), it.prompt ? el('p', {}, it.prompt) : '',
      el('p', { class: 'muted' }, `${it.width}×${it.height}`, it.tool ? ` · ${it.tool}` : '')));
  d.showModal();
}

/**
 * "➕ Collection" under a result: choose one of your collections (or name a
 * new one) and every image of generation `jobId` goes into it.
 */
export function addToCollectionButton(jobId) {
  const b = el('button', { type: 'button', class: 'add-collection' }, '➕ Collection');
  b.addEventListener('click', async () => {
    let d = document.getElementById('add-collection');
    if (!d) {
      d = el('dialog', { id: 'add-collection', class: 'card', 'aria-label': 'Add to a collection' });
      document.body.append(d);
    }
    const list = await api('GET', '/api/v1/collections').catch((e) => (showError(e), null));
    if (!list) return;
    const select = el('select', { name: 'collection', id: 'ac-collection' },
      list.items.map((c) => el('option', { value: c.id }, c.name)), el('option', { value: '' }, 'New collection…'));
    const name = el('input', { name: 'name', id: 'ac-name', placeholder: 'Name of the new collection', maxlength: 100 });
    const form = el('form', {}, el('h2', {}, 'Add to a collection'),
      el('div', { class: 'field' }, el('label', { for: 'ac-collection' }, 'Collection'), select),
      el('div', { class: 'field' }, el('label', { for: 'ac-name' }, 'New collection'), name),
      el('div', { class: 'actions' }, el('button', { type: 'submit', class: 'primary' }, 'Add'), el('button', { type: 'button', value: 'cancel' }, 'Cancel')));
    form.querySelector('button[value=cancel]').addEventListener('click', () => d.close());
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      try {
        let cid = select.value;
        if (!cid) cid = (await api('POST', '/api/v1/collections', { name: name.value })).id;
        const r = await api('POST', `/api/v1/collections/${enc(cid)}/items`, { generation: jobId });
        d.close();
        toast(r.added.length ? `Added to ${r.collection.name}` : `Already in ${r.collection.name}`);
      } catch (e) {
        showError(e, form);
      }
    });
    d.replaceChildren(form);
    d.showModal();
  });
  return b;
}

export const pages = { collections, collection, shared };
