// Calls to bulwark's API from the page. The session cookie authenticates every call; the
// X-Bulwark-Csrf header, which another site's page cannot set, lets state-changing ones in.

export class Unauthorized extends Error {}

export async function call(method, path, body) {
  const init = { method, credentials: 'same-origin', headers: { 'X-Bulwark-Csrf': '1' } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { error: text }; }
  if (res.status === 401) throw new Unauthorized((data && data.error) || 'not logged in');
  if (!res.ok) {
    const err = new Error((data && data.error) || `${res.status} ${res.statusText}`);
    err.status = res.status;
    throw err;
  }
  return data;
}

export const get = (path) => call('GET', path);
export const post = (path, body) => call('POST', path, body);
export const del = (path) => call('DELETE', path);
