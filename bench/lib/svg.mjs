// An SVG chart of the precision results: detection rate by block length, one panel per timeout,
// one line per detector. Written by hand (no plotting dependency).
const COLORS = ['#d62728', '#1f77b4', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b'];
const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;');

export function precisionSvg(rows, factors) {
  const timeouts = [...new Set(rows.map((r) => r.timeoutMs))];
  const peers = [...new Set(rows.map((r) => r.peer))];
  const labels = Object.fromEntries(rows.map((r) => [r.peer, r.label]));
  const W = 300;
  const H = 220;
  const pad = { l: 46, r: 12, t: 30, b: 40 };
  const width = W * timeouts.length;
  const height = H + 22 * peers.length + 20;
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="white"/>`,
  ];
  const x = (i) => pad.l + (i / (factors.length - 1)) * (W - pad.l - pad.r);
  const y = (v) => pad.t + (1 - v) * (H - pad.t - pad.b);
  timeouts.forEach((T, p) => {
    const ox = p * W;
    out.push(`<g transform="translate(${ox},0)">`);
    out.push(`<text x="${W / 2}" y="16" text-anchor="middle" font-weight="bold">timeout ${T} ms</text>`);
    // The band where a report is wrong (<= 0.9x) and where it is required (>= 1.05x).
    const i09 = factors.indexOf(0.9);
    const i105 = factors.indexOf(1.05);
    out.push(`<rect x="${x(0)}" y="${y(1)}" width="${x(i09) - x(0)}" height="${y(0) - y(1)}" fill="#fdecea"/>`);
    out.push(
      `<rect x="${x(i105)}" y="${y(1)}" width="${x(factors.length - 1) - x(i105)}" height="${y(0) - y(1)}" fill="#eaf6ea"/>`,
    );
    for (const v of [0, 0.5, 1]) {
      out.push(`<line x1="${pad.l}" x2="${W - pad.r}" y1="${y(v)}" y2="${y(v)}" stroke="#ccc"/>`);
      out.push(`<text x="${pad.l - 6}" y="${y(v) + 4}" text-anchor="end">${v * 100}%</text>`);
    }
    factors.forEach((f, i) => {
      out.push(`<text x="${x(i)}" y="${H - pad.b + 16}" text-anchor="middle">${f}x</text>`);
    });
    out.push(`<text x="${W / 2}" y="${H - 8}" text-anchor="middle">block length / timeout</text>`);
    peers.forEach((peer, k) => {
      const pts = factors
        .map((f, i) => {
          const r = rows.find((row) => row.peer === peer && row.timeoutMs === T && row.factor === f);
          return r && r.rate !== null ? `${x(i)},${y(r.rate) + (k - peers.length / 2) * 1.5}` : null;
        })
        .filter(Boolean);
      out.push(
        `<polyline fill="none" stroke="${COLORS[k % COLORS.length]}" stroke-width="2" points="${pts.join(' ')}"/>`,
      );
    });
    out.push('</g>');
  });
  peers.forEach((peer, k) => {
    const yy = H + 14 + k * 22;
    out.push(`<line x1="20" x2="44" y1="${yy}" y2="${yy}" stroke="${COLORS[k % COLORS.length]}" stroke-width="3"/>`);
    out.push(`<text x="52" y="${yy + 4}">${esc(labels[peer])}</text>`);
  });
  out.push(
    `<text x="${width - 10}" y="${height - 6}" text-anchor="end" fill="#666">detection rate (share of blocks reported); red band: must not report, green: must report</text>`,
  );
  out.push('</svg>');
  return out.join('\n');
}
