// Turns bench/compare.sh's results.tsv into the Markdown report: medians over the rounds, the
// ratios against the targets, the half-load added latency. Usage (by compare.sh):
//   node summarize.js results.tsv "<load before>" "<load after>" duration conns rounds
'use strict';
const fs = require('fs');

const [file, loadBefore, loadAfter, duration, conns, rounds, half] = process.argv.slice(2);
const lines = fs.readFileSync(file, 'utf8').trim().split('\n');
const head = lines.shift().split('\t');
const rows = lines.map((l) => Object.fromEntries(l.split('\t').map((v, i) => [head[i], v])));

const median = (xs) => {
  const s = xs.map(Number).sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)] : NaN;
};
const groups = new Map();
for (const r of rows) {
  const k = `${r.name}@${r.rate}`;
  if (!groups.has(k)) groups.set(k, []);
  groups.get(k).push(r);
}
const med = (name, rate, col) => {
  const g = groups.get(`${name}@${rate}`);
  return g ? median(g.map((r) => r[col])) : NaN;
};
const maxOf = (name, rate, col) => {
  const g = groups.get(`${name}@${rate}`);
  return g ? Math.max(...g.map((r) => Number(r[col]))) : NaN;
};
const sum = (name, rate, col) => {
  const g = groups.get(`${name}@${rate}`);
  return g ? g.reduce((a, r) => a + Number(r[col]), 0) : 0;
};
const names = [...new Set(rows.map((r) => r.name))];
const LABEL = {
  direct: '(a) upstream direct',
  nginx: '(b) nginx proxy_pass, keepalive 64',
  'tollgate-sqlite': '(c) tollgate, SQLite fsync=batch',
  'tollgate-memory': '(c) tollgate, memory store',
  express: '(d) Express + twilio.webhook()',
  hop: '(e) bare hop on tollgate\'s HTTP stack (verifies nothing)',
};
const f = (x, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : '–');
const mib = (kb) => f(kb / 1024, 1);
const out = [];
const p = (s = '') => out.push(s);

p(`Load average (1/5/15 min) before: ${loadBefore}; after: ${loadAfter}. ` +
  `${rounds} rounds of ${duration} s per configuration, ${conns} keep-alive connections; medians over the rounds.`);
p();
p('### As fast as it answers (closed loop)');
p();
p('| target | rps | p50 ms | p99 ms | p99.9 ms | server CPU µs/req | upstream CPU µs/req | server RSS MiB (peak) | non-2xx / errors / replayed | rps per round |');
p('|---|---:|---:|---:|---:|---:|---:|---:|---:|---|');
for (const n of names) {
  if (!groups.has(`${n}@max`)) continue;
  const g = groups.get(`${n}@max`);
  const bad = `${sum(n, 'max', 'answered') - sum(n, 'max', 'ok')} / ${sum(n, 'max', 'errors')} / ${sum(n, 'max', 'replayed')}`;
  p(`| ${LABEL[n] || n} | ${f(med(n, 'max', 'rps'))} | ${f(med(n, 'max', 'p50'), 2)} | ${f(med(n, 'max', 'p99'), 2)} | ` +
    `${f(med(n, 'max', 'p999'), 2)} | ${f(med(n, 'max', 'cpu_us'), 1)} | ${n === 'direct' ? '(= server)' : f(med(n, 'max', 'up_cpu_us'), 1)} | ` +
    `${mib(med(n, 'max', 'rss_kb'))} (${mib(maxOf(n, 'max', 'hwm_kb'))}) | ${bad} | ${g.map((r) => r.rps).join(', ')} |`);
}
p();
const rps = (n) => med(n, 'max', 'rps');
p('### Ratios and targets');
p();
p('| | measured | target | met? |');
p('|---|---:|---:|---|');
for (const c of ['tollgate-sqlite', 'tollgate-memory']) {
  if (!groups.has(`${c}@max`)) continue;
  const tag = c === 'tollgate-sqlite' ? 'SQLite' : 'memory';
  const row = (what, x, target, ok) => p(`| ${what} | ${x} | ${target} | ${ok ? 'yes' : 'no'} |`);
  const cb = rps(c) / rps('nginx');
  const cd = rps(c) / rps('express');
  const ca = rps(c) / rps('direct');
  if (Number.isFinite(cb)) row(`(c ${tag}) / (b) nginx, rps`, `${f(cb * 100)} %`, '≥ 100 %', cb >= 1);
  if (Number.isFinite(cd)) row(`(c ${tag}) / (d) Express, rps`, `${f(cd, 1)}×`, '≥ 10×', cd >= 10);
  if (Number.isFinite(ca)) row(`(c ${tag}) / (a) direct, rps`, `${f(ca, 2)}×`, '(for reference)', true);
  const hwm = maxOf(c, 'max', 'hwm_kb');
  const ce = rps(c) / rps('hop');
  if (Number.isFinite(ce)) row(`(c ${tag}) / (e) bare hop, rps`, `${f(ce * 100)} %`, '(for reference)', true);
  row(`(c ${tag}) peak RSS under load`, `${mib(hwm)} MiB`, '≤ 64 MiB', hwm <= 64 * 1024);
}
if (groups.has('hop@max') && groups.has('nginx@max')) {
  const eb = rps('hop') / rps('nginx');
  p(`| (e) bare hop / (b) nginx, rps | ${f(eb * 100)} % | (the stack's floor) | – |`);
}
const rates = [...new Set([...groups.keys()].map((k) => k.split('@')[1]).filter((r) => r !== 'max'))];
for (const halfRate of rates) {
  p();
  p(halfRate === half
    ? `### At half of (a)'s peak: ${halfRate} rps offered (open loop)`
    : `### At half of the slowest tollgate's peak: ${halfRate} rps offered (open loop)`);
  p();
  p('| target | achieved rps | p50 ms | p99 ms | p99.9 ms | server CPU µs/req | p99 added over (a) ms | sent > 1 ms late |');
  p('|---|---:|---:|---:|---:|---:|---:|---:|');
  const a99 = med('direct', halfRate, 'p99');
  for (const n of names) {
    if (!groups.has(`${n}@${halfRate}`)) continue;
    const added = n === 'direct' ? '–' : f(med(n, halfRate, 'p99') - a99, 2);
    p(`| ${LABEL[n] || n} | ${f(med(n, halfRate, 'rps'))} | ${f(med(n, halfRate, 'p50'), 2)} | ${f(med(n, halfRate, 'p99'), 2)} | ` +
      `${f(med(n, halfRate, 'p999'), 2)} | ${f(med(n, halfRate, 'cpu_us'), 1)} | ${added} | ` +
      `${f((100 * med(n, halfRate, 'late')) / med(n, halfRate, 'answered'), 1)} % |`);
  }
  p();
  for (const c of ['tollgate-sqlite', 'tollgate-memory']) {
    if (!groups.has(`${c}@${halfRate}`)) continue;
    const added = med(c, halfRate, 'p99') - a99;
    const late = med(c, halfRate, 'late') / med(c, halfRate, 'answered');
    const verdict = halfRate === half ? ` (target ≤ 1 ms: ${added <= 1 ? 'met' : 'missed'})` : ' (for reference; the target is set at half of (a)\'s peak)';
    p(`- ${LABEL[c]}: p99 added at ${halfRate} rps ${f(added, 2)} ms${verdict}` +
      `${late > 0.5 ? '; it did not keep up with the offered rate, so this is mostly queueing' : ''}.`);
  }
}
console.log(out.join('\n'));
