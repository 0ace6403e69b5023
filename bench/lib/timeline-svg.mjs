// An SVG line chart of values over time (e.g. total PSS of a process tree), one line per series,
// with optional shaded phases. Written by hand, like svg.mjs (no plotting dependency).
const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#17becf', '#7f7f7f'];
const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;');

/** A round step for an axis spanning `span`, giving about `n` ticks. */
function niceStep(span, n) {
  const raw = span / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 2.5, 5, 10]) if (raw <= m * mag) return m * mag;
  return 10 * mag;
}

/**
 * @param {{ title: string, xLabel: string, yLabel: string,
 *   series: Array<{ label: string, points: Array<[number, number]>, dashed?: boolean }>,
 *   phases?: Array<{ label: string, from: number, to: number }> }} chart
 */
export function timelineSvg({ title, xLabel, yLabel, series, phases = [] }) {
  const W = 760;
  const H = 400;
  const pad = { l: 70, r: 20, t: 36, b: 46 };
  const legendH = 20 * Math.ceil(series.length / 2) + 10;
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = series.flatMap((s) => s.points.map((p) => p[1]));
  const xMax = Math.max(1, ...xs, ...phases.map((p) => p.to));
  const yMax = Math.max(1, ...ys) * 1.08;
  const x = (v) => pad.l + (v / xMax) * (W - pad.l - pad.r);
  const y = (v) => pad.t + (1 - v / yMax) * (H - pad.t - pad.b);
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H + legendH}" font-family="sans-serif" font-size="11">`,
    '<rect width="100%" height="100%" fill="white"/>',
    `<text x="${W / 2}" y="20" text-anchor="middle" font-weight="bold" font-size="13">${esc(title)}</text>`,
  ];
  for (const p of phases) {
    out.push(
      `<rect x="${x(p.from)}" y="${pad.t}" width="${Math.max(0, x(p.to) - x(p.from))}" height="${H - pad.t - pad.b}" fill="#f2f2f2"/>`,
      `<text x="${(x(p.from) + x(p.to)) / 2}" y="${pad.t + 14}" text-anchor="middle" fill="#666">${esc(p.label)}</text>`,
    );
  }
  const yStep = niceStep(yMax, 6);
  for (let v = 0; v <= yMax; v += yStep) {
    out.push(`<line x1="${pad.l}" x2="${W - pad.r}" y1="${y(v)}" y2="${y(v)}" stroke="#ddd"/>`);
    out.push(
      `<text x="${pad.l - 6}" y="${y(v) + 4}" text-anchor="end">${Math.round(v).toLocaleString('en-US')}</text>`,
    );
  }
  const xStep = niceStep(xMax, 8);
  for (let v = 0; v <= xMax; v += xStep) {
    out.push(`<line x1="${x(v)}" x2="${x(v)}" y1="${H - pad.b}" y2="${H - pad.b + 4}" stroke="#666"/>`);
    out.push(`<text x="${x(v)}" y="${H - pad.b + 16}" text-anchor="middle">${Math.round(v)}</text>`);
  }
  out.push(
    `<line x1="${pad.l}" x2="${W - pad.r}" y1="${H - pad.b}" y2="${H - pad.b}" stroke="#666"/>`,
    `<line x1="${pad.l}" x2="${pad.l}" y1="${pad.t}" y2="${H - pad.b}" stroke="#666"/>`,
    `<text x="${(pad.l + W - pad.r) / 2}" y="${H - 10}" text-anchor="middle">${esc(xLabel)}</text>`,
    `<text transform="translate(16,${(pad.t + H - pad.b) / 2}) rotate(-90)" text-anchor="middle">${esc(yLabel)}</text>`,
  );
  series.forEach((s, k) => {
    const color = COLORS[k % COLORS.length];
    const pts = s.points.map(([a, b]) => `${x(a).toFixed(1)},${y(b).toFixed(1)}`).join(' ');
    out.push(
      `<polyline fill="none" stroke="${color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6,4"' : ''} points="${pts}"/>`,
    );
    const lx = 20 + (k % 2) * (W / 2);
    const ly = H + 14 + Math.floor(k / 2) * 20;
    out.push(
      `<line x1="${lx}" x2="${lx + 26}" y1="${ly}" y2="${ly}" stroke="${color}" stroke-width="3"${s.dashed ? ' stroke-dasharray="6,4"' : ''}/>`,
      `<text x="${lx + 34}" y="${ly + 4}">${esc(s.label)}</text>`,
    );
  });
  out.push('</svg>');
  return out.join('\n');
}
