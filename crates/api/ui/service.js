// Service (debug): per replica requests per second, error ratio, p50 / p99, in-flight,
// EWMA cost, ejections, CPU and RSS over time from /v1/series?service= (appended once a
// second with `since`), the service's live events, and a replica's logs.

import { get } from './api.js';
import { h, text, keyed, num, pct, bytes, clock } from './dom.js';
import { spark } from './chart.js';

const CAPACITY = 600;
const FIELDS = ['rps', 'error_ratio', 'p50_ms', 'p99_ms', 'inflight', 'ewma_ms', 'cpu', 'rss_bytes', 'ejected', 'restarts'];
let el = {};
let name = null;
let data = null; // { replicas: { INDEX: { t: [], rps: [], ... } } }
let last = 0;
let timer = null;

export function mount(root, store) {
  const names = store.status.services.map((s) => s.name);
  name = names.includes(store.route[1]) ? store.route[1] : names[0];
  data = { replicas: {} };
  last = 0;
  const pick = h('select', { id: 'service-pick' }, names.map((n) => h('option', { value: n }, n)));
  pick.value = name;
  pick.addEventListener('change', () => { location.hash = `#/service/${encodeURIComponent(pick.value)}`; });
  const body = h('tbody');
  const heads = ['replica', 'rps', 'errors', 'p50', 'p99', 'in-flight', 'EWMA', 'ejected', 'CPU', 'RSS',
    'rps', 'p99', 'CPU', 'RSS'];
  const replica = h('select', { id: 'log-replica' });
  const logs = h('pre', { class: 'log', id: 'logs' });
  const note = h('p', { class: 'muted', id: 'series-note' });
  replica.addEventListener('change', () => loadLogs(replica.value));
  el = { body, logs, replica, note, events: h('ul', { class: 'events', id: 'service-events' }), shown: 0 };
  root.append(
    h('h2', {}, 'Service ', pick), note,
    h('table', { id: 'replica-series' }, h('thead', {}, h('tr', {}, heads.map((x) => h('th', {}, x)))), body),
    h('div', { class: 'cols' },
      h('div', {}, h('h2', {}, 'Live events'), el.events),
      h('div', {}, h('h2', {}, 'Logs of replica ', replica, ' ',
        h('button', { onclick: () => loadLogs(replica.value) }, 'Refresh')), logs)));
  poll();
  timer = setInterval(poll, 1000);
}

export function unmount() {
  clearInterval(timer);
  timer = null;
  el = {};
}

async function loadLogs(index) {
  if (!el.logs || index === '') return;
  try {
    const lines = await get(`/v1/logs/${encodeURIComponent(name)}?replica=${index}`);
    el.logs.textContent = lines.slice(-200).map((l) => `${clock(l.at_ms)} ${l.stream} ${l.text}`).join('\n');
    el.logs.scrollTop = el.logs.scrollHeight;
  } catch (e) {
    el.logs.textContent = `cannot read the logs: ${e.message}`;
  }
}

// Appends the samples after `last`; keeps at most CAPACITY per replica.
async function poll() {
  let s;
  try {
    s = await get(`/v1/series?service=${encodeURIComponent(name)}${last ? `&since=${last}` : ''}`);
  } catch (e) {
    if (el.note) text(el.note, `series unavailable: ${e.message}`);
    return;
  }
  if (!el.note) return;
  text(el.note, `the last ${s.capacity} samples, one every ${s.interval_ms / 1000} s`);
  for (const [idx, r] of Object.entries(s.replicas || {})) {
    const mine = data.replicas[idx] || (data.replicas[idx] = { t: [] });
    mine.t.push(...r.t);
    for (const f of FIELDS) {
      const col = mine[f] || (mine[f] = []);
      col.push(...(r[f] || r.t.map(() => null)));
      if (col.length > CAPACITY) col.splice(0, col.length - CAPACITY);
    }
    if (mine.t.length > CAPACITY) mine.t.splice(0, mine.t.length - CAPACITY);
    if (r.t.length) last = Math.max(last, r.t[r.t.length - 1]);
  }
  if (s.t && s.t.length) last = Math.max(last, s.t[s.t.length - 1]);
  draw();
}

function row() {
  const cells = Array.from({ length: 10 }, (_, i) => h('td', { class: i ? 'num' : '' }));
  const charts = Array.from({ length: 4 }, () => h('canvas', { class: 'spark' }));
  const tr = h('tr', {}, cells, charts.map((c) => h('td', {}, c)));
  tr._charts = charts;
  return tr;
}

function lastOf(col) { return col && col.length ? col[col.length - 1] : null; }

function updateRow(tr, { idx, s }) {
  const c = tr.children;
  const v = (f) => lastOf(s[f]);
  text(c[0], `${name}/${idx}`);
  tr.dataset.samples = String(s.t.length);
  text(c[1], num(v('rps'), 1));
  text(c[2], pct(v('error_ratio'), 2));
  text(c[3], v('p50_ms') === null ? null : `${num(v('p50_ms'), 1)} ms`);
  text(c[4], v('p99_ms') === null ? null : `${num(v('p99_ms'), 1)} ms`);
  text(c[5], v('inflight'));
  text(c[6], v('ewma_ms') === null ? null : `${num(v('ewma_ms'), 2)} ms`);
  text(c[7], v('ejected') ? 'yes' : 'no');
  text(c[8], v('cpu') === null ? null : num(v('cpu'), 2));
  text(c[9], bytes(v('rss_bytes')));
  spark(tr._charts[0], s.rps || []);
  spark(tr._charts[1], s.p99_ms || [], { color: '#d29922' });
  spark(tr._charts[2], s.cpu || [], { color: '#a371f7' });
  spark(tr._charts[3], s.rss_bytes || [], { color: '#3fb950' });
}

function draw() {
  const items = Object.entries(data.replicas)
    .sort((a, b) => Number(a[0]) - Number(b[0]))
    .map(([idx, s]) => ({ idx, s }));
  keyed(el.body, items, (x) => x.idx, row, updateRow);
}

export function update(store, batch) {
  if (!el.body) return;
  const svc = store.status.services.find((s) => s.name === name);
  if (svc && el.replica.childElementCount !== svc.replicas.length) {
    const keep = el.replica.value;
    el.replica.replaceChildren(...svc.replicas.map((r) => h('option', { value: String(r.index) }, String(r.index))));
    if (keep) el.replica.value = keep;
    if (!el.logs.textContent) loadLogs(el.replica.value);
  }
  // Oldest first, each prepended: the newest ends on top.
  const list = batch.length ? batch : store.events.slice().reverse();
  for (const ev of list.filter((e) => e.service === name)) {
    const who = ev.index !== undefined ? `/${ev.index} ` : ' ';
    el.events.prepend(h('li', {}, `${clock(ev.at_ms)} ${name}${who}${ev.type.replace(/_/g, ' ')} ${ev.reason || ''}`));
  }
  while (el.events.childElementCount > 100) el.events.lastElementChild.remove();
}
