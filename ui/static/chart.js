// A small SVG line chart of runs per bucket, drawn by hand: no library.

const svgNS = 'http://www.w3.org/2000/svg';

function el(tag, attrs, text) {
  const e = document.createElementNS(svgNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// series are [{key, label, cls}] of the buckets' members to draw.
export function lineChart(buckets, series, { width = 720, height = 200 } = {}) {
  const pad = { left: 40, right: 12, top: 12, bottom: 28 };
  const w = width - pad.left - pad.right;
  const h = height - pad.top - pad.bottom;
  let max = 1;
  for (const b of buckets) for (const s of series) max = Math.max(max, b[s.key]);
  const totals = series.map((s) => buckets.reduce((n, b) => n + b[s.key], 0));
  const svg = el('svg', {
    viewBox: `0 0 ${width} ${height}`, class: 'chart', role: 'img',
    'aria-label': 'Runs per minute over the last hour: ' +
      series.map((s, i) => `${totals[i]} ${s.label.toLowerCase()}`).join(', ') + '.',
  });
  const x = (i) => pad.left + (buckets.length <= 1 ? w / 2 : (i * w) / (buckets.length - 1));
  const y = (v) => pad.top + h - (v * h) / max;
  // Axes and a few horizontal guides.
  for (const v of [0, Math.round(max / 2), max]) {
    svg.append(el('line', { x1: pad.left, x2: pad.left + w, y1: y(v), y2: y(v), class: 'grid' }));
    svg.append(el('text', { x: pad.left - 6, y: y(v) + 4, class: 'axis', 'text-anchor': 'end' }, String(v)));
  }
  const ticks = Math.min(6, buckets.length);
  for (let t = 0; t < ticks; t++) {
    const i = Math.round((t * (buckets.length - 1)) / Math.max(1, ticks - 1));
    const d = new Date(buckets[i].start);
    const label = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });
    const anchor = t === 0 ? 'start' : t === ticks - 1 ? 'end' : 'middle';
    svg.append(el('text', { x: x(i), y: height - 8, class: 'axis', 'text-anchor': anchor }, label));
  }
  for (const s of series) {
    const points = buckets.map((b, i) => `${x(i).toFixed(1)},${y(b[s.key]).toFixed(1)}`).join(' ');
    svg.append(el('polyline', { points, class: 'line ' + s.cls }));
  }
  // One invisible column per bucket, titled, for tooltips.
  const colW = buckets.length ? w / buckets.length : w;
  buckets.forEach((b, i) => {
    const r = el('rect', { x: x(i) - colW / 2, y: pad.top, width: colW, height: h, class: 'hit' });
    const when = new Date(b.start).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });
    r.append(el('title', {}, when + ' — ' + series.map((s) => `${s.label}: ${b[s.key]}`).join(', ')));
    svg.append(r);
  });
  return svg;
}
