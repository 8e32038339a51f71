// Overview (executive): every service, its SLOs with budget left and burn rates,
// availability, MTTD / MTTR / MTBF and incidents over the period, with small charts of
// requests per second and budget left from /v1/series.

import { get } from './api.js';
import { h, text, cls, keyed, fmtMs, pct, num } from './dom.js';
import { spark } from './chart.js';

let root = null;
let cards = null;
let timer = null;
let series = null; // { NAME: { t: [...], rps: [...], ... } } or null when unavailable
let seriesNote = null;
let last = 0; // the newest sample's time: later polls ask only for what follows

export function mount(el) {
  seriesNote = h('p', { class: 'muted', id: 'series-note' });
  cards = h('div', { class: 'cards', id: 'overview' });
  root = el;
  root.append(h('h2', {}, 'Services'), seriesNote, cards);
  series = null;
  last = 0;
  pollSeries();
  timer = setInterval(pollSeries, 1000);
}

export function unmount() {
  clearInterval(timer);
  timer = null;
}

async function pollSeries() {
  try {
    const s = await get(`/v1/series${last ? `?since=${last}` : ''}`);
    series = series || {};
    for (const [name, cols] of Object.entries(s.services || {})) {
      const mine = series[name] || (series[name] = {});
      for (const [k, v] of Object.entries(cols)) {
        const col = mine[k] || (mine[k] = []);
        col.push(...v);
        if (col.length > s.capacity) col.splice(0, col.length - s.capacity);
      }
      if (cols.t && cols.t.length) last = Math.max(last, cols.t[cols.t.length - 1]);
    }
    text(seriesNote, `charts: the last ${s.capacity} samples, one every ${s.interval_ms / 1000} s`);
  } catch (e) {
    series = null;
    text(seriesNote, `charts unavailable: ${e.message}`);
  }
  window.dispatchEvent(new CustomEvent('bulwark:series'));
  drawCharts();
}

function drawCharts() {
  if (!cards || !series) return;
  for (const card of cards.children) {
    const s = series[card.dataset.key];
    if (!s) continue;
    card.dataset.samples = String((s.t || []).length);
    spark(card._rps, s.rps || [], { color: '#58a6ff' });
    spark(card._budget, s.budget_left || [], { color: '#3fb950', max: 1 });
  }
}

function createCard(svc) {
  const fig = (label) => {
    const v = h('b');
    return [h('div', {}, h('span', {}, label), v), v];
  };
  const [ready, readyV] = fig('replicas ready');
  const [avail, availV] = fig('availability');
  const [inc, incV] = fig('incidents (open)');
  const [mttd, mttdV] = fig('MTTD');
  const [mttr, mttrV] = fig('MTTR');
  const [mtbf, mtbfV] = fig('MTBF');
  const [auto, autoV] = fig('fixed by bulwark');
  const [obs, obsV] = fig('observed');
  const slos = h('tbody');
  const rps = h('canvas', { class: 'chart' });
  const budget = h('canvas', { class: 'chart' });
  const card = h('section', { class: 'card' },
    h('div', { class: 'big' }, svc.name),
    h('div', { class: 'figures' }, ready, avail, inc, obs, mttd, mttr, mtbf, auto),
    h('table', {}, h('thead', {}, h('tr', {},
      h('th', {}, 'SLO'), h('th', { class: 'num' }, 'objective'), h('th', { class: 'num' }, 'SLI'),
      h('th', {}, 'budget left'), h('th', {}, 'burn rate per window'), h('th', {}, 'alerts'))), slos),
    h('h3', {}, 'requests / s'), rps,
    h('h3', {}, 'error budget left'), budget);
  Object.assign(card, { _v: { readyV, availV, incV, mttdV, mttrV, mtbfV, autoV, obsV }, _slos: slos, _rps: rps, _budget: budget });
  return card;
}

function sloRow() {
  const bar = h('i');
  const row = h('tr', {}, h('td'), h('td', { class: 'num' }), h('td', { class: 'num' }),
    h('td', {}, h('span', { class: 'bar' }, bar), ' ', h('span')), h('td'), h('td'));
  row._bar = bar;
  return row;
}

function updateSlo(row, r) {
  const c = row.children;
  text(c[0], r.slo);
  text(c[1], `${r.objective_percent} %`);
  text(c[2], pct(r.sli, 3));
  const left = Math.max(0, Math.min(1, r.error_budget_remaining));
  row._bar.style.width = `${(left * 100).toFixed(1)}%`;
  row._bar.style.background = left > 0.5 ? 'var(--ok)' : left > 0.2 ? 'var(--warn)' : 'var(--bad)';
  text(c[3].lastChild, pct(r.error_budget_remaining, 1));
  text(c[4], r.windows.map((w) => `${w.window} ${num(w.burn_rate, 2)}×`).join('  '));
  const states = Object.entries(r.alerts).map(([sev, st]) => `${sev}: ${st}`).join(', ');
  text(c[5], states || 'none');
  cls(c[5], Object.values(r.alerts).includes('firing') ? 'bad' : 'ok');
}

function updateCard(card, svc, store) {
  const v = card._v;
  const rel = store.incidents.reliability.find((x) => x.service === svc.name) || {};
  text(v.readyV, `${svc.ready} / ${svc.desired}`);
  cls(v.readyV, svc.ready < svc.desired ? 'warn' : 'ok');
  text(v.availV, rel.availability === undefined ? null : pct(rel.availability, 3));
  text(v.incV, rel.incidents === undefined ? null : `${rel.incidents} (${rel.open})`);
  text(v.mttdV, fmtMs(rel.mttd_ms));
  text(v.mttrV, fmtMs(rel.mttr_ms));
  text(v.mtbfV, fmtMs(rel.mtbf_ms));
  text(v.autoV, rel.automated);
  text(v.obsV, fmtMs(rel.observed_ms));
  const slos = store.slo.filter((r) => r.service === svc.name);
  keyed(card._slos, slos, (r) => r.slo, sloRow, updateSlo);
}

export function update(store) {
  keyed(cards, store.status.services, (s) => s.name, createCard, (card, svc) => updateCard(card, svc, store));
}
