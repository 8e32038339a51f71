// Small DOM helpers: build elements, and keep a table's rows keyed so that an update
// touches only the cells that changed (no full re-render at 1000 replicas).

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') el.className = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c !== null && c !== undefined) el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

// Sets a node's text only when it differs (a write is a layout invalidation).
export function text(el, value) {
  const s = value === null || value === undefined ? '–' : String(value);
  if (el.textContent !== s) el.textContent = s;
}

export function cls(el, name) {
  if (el.className !== name) el.className = name;
}

// Rows of `tbody` keyed by `key(item)`: `create(item)` makes a row once, `update(row, item)`
// refreshes it in place; rows of items gone are removed. Order follows `items`.
export function keyed(tbody, items, key, create, update) {
  const rows = tbody._rows || (tbody._rows = new Map());
  const seen = new Set();
  let prev = null;
  for (const item of items) {
    const k = key(item);
    seen.add(k);
    let row = rows.get(k);
    if (!row) {
      row = create(item);
      row.dataset.key = k;
      rows.set(k, row);
    }
    update(row, item);
    const want = prev ? prev.nextSibling : tbody.firstChild;
    if (want !== row) tbody.insertBefore(row, want);
    prev = row;
  }
  for (const [k, row] of rows) {
    if (!seen.has(k)) { row.remove(); rows.delete(k); }
  }
}

export function fmtMs(ms) {
  if (ms === null || ms === undefined) return '–';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 120) return `${s.toFixed(1)} s`;
  if (s < 7200) return `${(s / 60).toFixed(1)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

export function pct(x, digits = 2) {
  return x === null || x === undefined ? '–' : `${(x * 100).toFixed(digits)} %`;
}

export function num(x, digits = 1) {
  return x === null || x === undefined ? '–' : Number(x).toFixed(digits);
}

export function bytes(n) {
  if (n === null || n === undefined) return '–';
  const mib = n / (1024 * 1024);
  return mib >= 1024 ? `${(mib / 1024).toFixed(1)} GiB` : `${mib.toFixed(1)} MiB`;
}

export function clock(ms) {
  return new Date(ms).toLocaleTimeString();
}

// Asks before an action; resolves true when confirmed.
export function confirmAction(message) {
  const dialog = document.getElementById('confirm');
  document.getElementById('confirm-text').textContent = message;
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
    dialog.returnValue = '';
    dialog.showModal();
  });
}
