// The login form: a pasted API token, or the one-time code of a `bulwark dashboard` link
// (`/ui/login#code=…`), exchanged for a session cookie (HttpOnly: the page never sees it).

import { post } from './api.js';
import { h } from './dom.js';

async function exchange(body) {
  const who = await post('/ui/session', body);
  sessionStorage.setItem('bulwark-who', `${who.name} (${who.role})`);
  sessionStorage.setItem('bulwark-role', who.role);
}

// Uses the code in the address, if any, and takes it out of the address and the history.
// Resolves true when it handled the start (logged in or showed the form).
export async function fromLink(start) {
  const m = location.hash.match(/code=([0-9a-fA-F]+)/);
  if (!m) return false;
  history.replaceState(null, '', '/ui/#/overview');
  try {
    await exchange({ code: m[1] });
    start();
  } catch (e) {
    show(document.getElementById('main'), `Login link refused: ${e.message}`, start);
  }
  return true;
}

export function show(root, message, start) {
  const error = h('p', { class: 'error', id: 'login-error' }, message || '');
  const input = h('input', {
    id: 'login-token', type: 'password', autocomplete: 'off',
    placeholder: 'API token (or run `bulwark dashboard` for a link)',
  });
  const form = h('form', { id: 'login-form' },
    h('h2', {}, 'Log in to bulwark'),
    h('p', { class: 'muted' }, 'Run ', h('code', {}, 'bulwark dashboard'),
      ' for a one-time login link, or paste an API token.'),
    input,
    h('button', { type: 'submit', id: 'login-submit' }, 'Log in'),
    error);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      await exchange({ token: input.value });
      start();
    } catch (err) {
      error.textContent = err.message;
    }
  });
  root.replaceChildren(h('div', { class: 'login' }, form));
  input.focus();
}
