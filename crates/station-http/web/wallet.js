// Wallets: your linked addresses, linking one (a browser wallet signs the
// EIP-4361 message through its EIP-1193 provider, or you paste a signature
// made elsewhere, or you send a magic deposit), where to send deposits, and
// your deposits with their confirmations counting up. All through the REST
// API; every rule is the server's.

import { ApiError, api, el, main, refreshBalance, showError, toast, when } from './app.js';

const enc = encodeURIComponent;

/** Hex of the UTF-8 bytes of `text` (what personal_sign takes). */
function hexOf(text) {
  return '0x' + [...new TextEncoder().encode(text)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

async function wallet() {
  const m = main('Wallet');
  const data = await api('GET', '/api/v1/wallets');
  if (!data.chains.length) {
    m.append(el('p', {}, 'This Station takes no crypto payments: no chains are set up.'));
    return;
  }
  const chainSelect = el('select', { id: 'w-chain', name: 'chain_id' },
    data.chains.map((c) => el('option', { value: c.chain_id }, `${c.name} (chain ${c.chain_id})`)));
  const chainOf = () => data.chains.find((c) => String(c.chain_id) === chainSelect.value) || data.chains[0];

  // Linked wallets.
  const linked = el('ul', { id: 'wallet-list', class: 'wallets' });
  const drawLinked = (wallets) => {
    linked.replaceChildren();
    for (const w of wallets) {
      const unlink = el('button', { type: 'button', class: 'danger' }, 'Unlink');
      unlink.addEventListener('click', async () => {
        try {
          await api('DELETE', `/api/v1/wallets/${w.chain_id}/${enc(w.address)}`);
          toast('Unlinked');
          drawLinked((await api('GET', '/api/v1/wallets')).wallets);
        } catch (e) {
          showError(e);
        }
      });
      linked.append(el('li', { class: 'card' }, el('code', {}, w.address), ` on ${w.chain} · linked by ${w.method} · ${when(w.linked_at)} `, unlink));
    }
    if (!wallets.length) linked.append(el('li', { class: 'muted' }, 'No wallet linked yet.'));
  };
  drawLinked(data.wallets);

  // Linking.
  const address = el('input', { id: 'w-address', name: 'address', placeholder: '0x…', maxlength: 42, autocomplete: 'off' });
  const status = el('p', { id: 'w-status', role: 'status' });
  const connect = el('button', { type: 'button', class: 'primary', id: 'w-connect' }, 'Connect browser wallet and sign');
  const manual = el('button', { type: 'button', id: 'w-manual' }, 'Get the message to sign elsewhere');
  const magic = el('button', { type: 'button', id: 'w-magic' }, 'Link by deposit instead');
  const form = el('div', { class: 'card', id: 'link-wallet' }, el('h2', {}, 'Link a wallet'),
    el('div', { class: 'field' }, el('label', { for: 'w-chain' }, 'Chain'), chainSelect),
    el('div', { class: 'field' }, el('label', { for: 'w-address' }, 'Address (filled in by a browser wallet)'), address),
    el('p', {}, connect, ' ', manual, ' ', magic), status);
  const verify = async (nonce, signature) => {
    const w = await api('POST', '/api/v1/wallets/verify', { nonce, signature });
    status.replaceChildren('✅ Linked ', el('code', {}, w.address), ` on ${w.chain}.`);
    drawLinked((await api('GET', '/api/v1/wallets')).wallets);
    refreshBalance();
  };
  connect.addEventListener('click', async () => {
    // Looked up at the click: a wallet extension may inject its provider late.
    if (!window.ethereum) {
      status.textContent = 'No browser wallet (such as MetaMask) was found in this browser: install one, or get the message to sign elsewhere.';
      return;
    }
    try {
      const accounts = await window.ethereum.request({ method: 'eth_requestAccounts' });
      if (!accounts || !accounts.length) throw new Error('the wallet shared no account');
      address.value = accounts[0];
      const ch = await api('POST', '/api/v1/wallets/challenges', { chain_id: chainOf().chain_id, address: accounts[0] });
      status.textContent = 'Sign the message in your wallet…';
      const signature = await window.ethereum.request({ method: 'personal_sign', params: [hexOf(ch.message), accounts[0]] });
      await verify(ch.nonce, signature);
    } catch (e) {
      status.textContent = e.message || String(e);
      showError(e, form);
    }
  });
  manual.addEventListener('click', async () => {
    try {
      const ch = await api('POST', '/api/v1/wallets/challenges', { chain_id: chainOf().chain_id, address: address.value.trim() });
      const sig = el('input', { id: 'w-signature', name: 'signature', placeholder: '0x…', autocomplete: 'off' });
      const done = el('button', { type: 'button', class: 'primary' }, 'Link');
      done.addEventListener('click', async () => {
        try {
          await verify(ch.nonce, sig.value.trim());
        } catch (e) {
          showError(e, form);
        }
      });
      status.replaceChildren(el('p', {}, `Sign this message with personal_sign (good once, until ${when(ch.expires_at)}):`),
        el('pre', { id: 'w-message' }, ch.message),
        el('div', { class: 'field' }, el('label', { for: 'w-signature' }, 'Signature'), sig), done);
    } catch (e) {
      showError(e, form);
    }
  });
  magic.addEventListener('click', async () => {
    try {
      const q = await api('POST', '/api/v1/wallets/quotes', { chain_id: chainOf().chain_id, address: address.value.trim() });
      status.replaceChildren(el('p', {}, 'Send exactly ', el('strong', {}, q.amount_text), ` on ${q.chain} from `, el('code', {}, q.from_address),
        ' to ', el('code', {}, q.deposit_address), ` before ${when(q.expires_at)}. The wallet is linked when it arrives from that address; the amount becomes points.`));
    } catch (e) {
      showError(e, form);
    }
  });

  // Where to send deposits, and your deposits.
  const rates = el('div', { id: 'deposit-info' });
  for (const c of data.chains) {
    rates.append(el('div', { class: 'card' }, el('h2', {}, `Deposit on ${c.name}`),
      el('p', {}, 'Send to ', el('code', {}, c.deposit_address), ` from a linked wallet; credited after ${c.confirmations} confirmation${c.confirmations === 1 ? '' : 's'}.`),
      el('ul', {}, c.assets.map((a) => el('li', {}, `${a.symbol}: ${a.points_per_unit} points per ${a.symbol}, at least ${a.minimum}`)))));
  }
  const deposits = el('table', { id: 'deposits' });
  const drawDeposits = async () => {
    const list = (await api('GET', '/api/v1/wallets/deposits')).deposits;
    deposits.replaceChildren(el('tr', {}, ['When', 'Amount', 'From', 'State'].map((h) => el('th', {}, h))));
    for (const d of list) {
      const state = d.state === 'pending' ? `${Math.min(d.confirmations, d.confirmations_needed)} of ${d.confirmations_needed} confirmations`
        : d.state === 'credited' || d.state === 'linked' ? `+${d.points} points` : d.state.replace('_', ' ');
      deposits.append(el('tr', {}, el('td', {}, when(d.seen_at)), el('td', {}, d.amount_text), el('td', {}, el('code', {}, d.from_address)), el('td', {}, state)));
    }
    if (!list.length) deposits.append(el('tr', {}, el('td', { colspan: 4, class: 'muted' }, 'No deposits yet.')));
    return list.some((d) => d.state === 'pending');
  };
  m.append(el('h2', {}, 'Your wallets'), linked, form, rates, el('h2', {}, 'Your deposits'), deposits);
  // Confirmations count up while a deposit waits.
  const tick = async () => {
    try {
      if (await drawDeposits()) setTimeout(tick, 5000);
    } catch {
      setTimeout(tick, 15000);
    }
  };
  tick();
}

/** POSTs JSON to a sign-in endpoint (no session yet: no CSRF token, no redirect on 401). */
async function signInCall(path, body) {
  const r = await fetch(path, {
    method: 'POST',
    headers: { Accept: 'application/json', 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
    credentials: 'same-origin',
  });
  const data = await r.json().catch(() => null);
  if (!r.ok) throw new ApiError(r.status, data);
  return data;
}

/** What went wrong, in words: the reasons of the fields, else the message. */
function reasonOf(e) {
  if (e.fields && e.fields.length) {
    const text = e.fields.map((f) => f.reason).join('; ');
    return text.charAt(0).toUpperCase() + text.slice(1) + '.';
  }
  return e.message || String(e);
}

/**
 * The sign-in page's "Sign in with your wallet": the browser wallet shares
 * an address, Station issues a message for it, the wallet signs it, and a
 * verified signature opens the session (the server sets the cookie).
 */
export async function signIn() {
  const box = document.getElementById('wallet-sign-in');
  if (!box) return;
  const button = document.getElementById('ws-connect');
  const chain = document.getElementById('ws-chain');
  const status = document.getElementById('ws-status');
  button.addEventListener('click', async () => {
    if (!window.ethereum) {
      status.textContent = 'No browser wallet (such as MetaMask) was found in this browser. Install one, or sign in with a link from the bot.';
      return;
    }
    button.disabled = true;
    try {
      status.textContent = 'Choose an account in your wallet…';
      const accounts = await window.ethereum.request({ method: 'eth_requestAccounts' });
      if (!accounts || !accounts.length) throw new Error('Your wallet shared no account.');
      const ch = await signInCall('/signin/wallet/challenge', { chain_id: Number(chain.value), address: accounts[0] });
      status.textContent = 'Sign the message in your wallet…';
      const signature = await window.ethereum.request({ method: 'personal_sign', params: [hexOf(ch.message), accounts[0]] });
      status.textContent = 'Checking the signature…';
      const next = new URLSearchParams(location.search).get('next') || undefined;
      const done = await signInCall('/signin/wallet/verify', { nonce: ch.nonce, signature, next });
      status.textContent = 'Signed in.';
      location.href = done.next;
    } catch (e) {
      status.textContent = reasonOf(e);
    } finally {
      button.disabled = false;
    }
  });
}

export const pages = { wallet };
