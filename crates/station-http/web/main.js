// Entry point: fills the page named by <body data-page>. Kept apart from
// app.js so that every module shares one instance of the helpers (a module
// is instantiated once per URL).

import { ApiError, el, refreshBalance } from './app.js';

async function start() {
  const page = document.body.dataset.page;
  if (page === 'signin') {
    if (document.getElementById('wallet-sign-in')) (await import('./wallet.js')).signIn();
    return;
  }
  if (page === 'error') return;
  if (page === 'shared') {
    // The public page of a collection: no account, so no balance or queue.
    const m = await import('./collections.js');
    await m.pages.shared();
    return;
  }
  refreshBalance();
  import('./queue.js').then((q) => q.startQueue()).catch(() => {});
  try {
    if (page === 'admin') {
      const m = await import('./admin.js');
      await m.admin();
    } else if (page === 'wallet') {
      const m = await import('./wallet.js');
      await m.pages.wallet();
    } else if (page === 'training' || page === 'dataset') {
      const m = await import('./training.js');
      await m.pages[page]();
    } else if (page === 'spells') {
      const m = await import('./spells.js');
      await m.pages.spells();
    } else if (page === 'cooks' || page === 'cook' || page === 'review') {
      const m = await import('./cook.js');
      await m.pages[page]();
    } else if (page === 'collections' || page === 'collection') {
      const m = await import('./collections.js');
      await m.pages[page]();
    } else {
      const m = await import('./pages.js');
      const fn = m.pages[page];
      if (fn) await fn();
    }
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return;
    const m = document.getElementById('main');
    m.replaceChildren(el('h1', {}, 'Something went wrong'), el('p', { class: 'error', role: 'alert' }, e.message || String(e)));
  }
}

start();
