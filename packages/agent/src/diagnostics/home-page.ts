// GET / on the agent's admin port: one self-contained page (no external assets, no network beyond
// this admin port) that polls /diagnostics/summary and redraws itself every few seconds.

export const SUMMARY_PATH = '/diagnostics/summary';
export const REFRESH_MS = 5_000;

export function renderHomePage(): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mesh-agent sidecar</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2330;color:#fff;padding:10px 18px;display:flex;gap:18px;align-items:baseline}
header h1{font-size:18px;margin:0} #status{font-family:monospace;font-size:16px}
main{display:grid;grid-template-columns:repeat(auto-fit,minmax(460px,1fr));gap:14px;padding:14px}
section{background:#fff;border:1px solid #d8dce3;border-radius:6px;padding:10px 14px}
h2{font-size:15px;margin:0 0 8px} table{border-collapse:collapse;width:100%} td,th{text-align:left;padding:2px 6px;vertical-align:top;border-bottom:1px solid #eef0f3}
.OK,.healthy{color:#11772f;font-weight:600} .WARN{color:#a86200;font-weight:600} .FAIL,.unhealthy{color:#b3261e;font-weight:600}
.mono{font-family:monospace;font-size:12px} .small{font-size:12px;color:#5b6372} a{color:#1f5fbf}
svg{background:#fbfcfd;border:1px solid #eef0f3}
</style></head>
<body>
<header><h1>mesh-agent sidecar</h1><span id="status">loading…</span><span class="small" id="updated"></span></header>
<main>
<section id="components"><h2>Components</h2><table id="components-table"></table></section>
<section id="doctor"><h2>Doctor checks</h2><table id="checks-table"></table></section>
<section id="services"><h2>Mesh services and endpoints</h2><table id="services-table"></table></section>
<section id="rules"><h2>Traffic rules</h2><table id="rules-table"></table></section>
<section id="traffic"><h2>Requests and errors per cluster (last minutes)</h2><div id="charts"></div></section>
<section id="errors"><h2>Latest errors</h2><table id="errors-table"></table></section>
<section id="links"><h2>Admin endpoints</h2><div id="links-list" class="mono"></div></section>
</main>
<script>
const REFRESH_MS = ${REFRESH_MS};
const esc = (s) => String(s ?? '').replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]);
function row(cells, cls) { return '<tr' + (cls ? ' class="' + cls + '"' : '') + '>' + cells.map((c) => '<td>' + c + '</td>').join('') + '</tr>'; }
function chart(points) {
  const w = 420, h = 80, n = points.length;
  if (n < 2) return '<div class="small">collecting samples…</div>';
  const max = Math.max(1, ...points.map((p) => p.rps));
  const x = (i) => (i / (n - 1)) * (w - 4) + 2;
  const y = (v) => h - 4 - (v / max) * (h - 10);
  const line = (key) => points.map((p, i) => x(i).toFixed(1) + ',' + y(p[key]).toFixed(1)).join(' ');
  const minutes = ((points[n - 1].t - points[0].t) / 60000).toFixed(1);
  return '<div class="small">blue: requests/s, red: 5xx/s; peak ' + max + ' rq/s over the last ' + minutes + ' min</div>' +
    '<svg width="' + w + '" height="' + h + '" role="img" aria-label="request and error rate"><polyline fill="none" stroke="#1f5fbf" stroke-width="2" points="' + line('rps') + '"/>' +
    '<polyline fill="none" stroke="#b3261e" stroke-width="2" points="' + line('errorsPerSec') + '"/></svg>';
}
function render(s) {
  document.getElementById('status').textContent = s.status;
  document.getElementById('updated').textContent = 'updated ' + new Date(s.time).toLocaleTimeString();
  document.getElementById('components-table').innerHTML = '<tr><th>component</th><th>health</th><th>epoch</th><th>version</th><th>admin</th></tr>' +
    s.components.map((c) => row([esc(c.name), '<span class="' + (c.healthy ? 'healthy' : 'unhealthy') + '">' + (c.healthy ? 'healthy' : 'unhealthy') + '</span>', esc(c.epoch ?? '-'), esc(c.version ?? '-'), '<a href="' + esc(c.admin) + '/help">' + esc(c.admin) + '</a>'])).join('');
  document.getElementById('checks-table').innerHTML = s.checks.map((c) => row(['<span class="' + c.status + '">' + c.status + '</span>', esc(c.hop), esc(c.evidence) + (c.fix && c.status !== 'OK' ? '<div class="small">fix: ' + esc(c.fix) + '</div>' : '')])).join('');
  document.getElementById('services-table').innerHTML = '<tr><th>service</th><th>cluster</th><th>protocol</th><th>endpoints</th></tr>' +
    s.services.map((v) => row([esc(v.name) + (v.direction === 'in' ? ' <span class="small">(local)</span>' : ''), '<span class="mono">' + esc(v.cluster) + '</span>', '<span class="mono">' + esc(v.protocol) + '</span>',
      v.endpoints.map((e) => '<span class="mono">' + esc(e.address) + '</span> <span class="' + (e.healthy ? 'healthy' : 'unhealthy') + '">' + esc(e.flags) + '</span> <span class="small">' + e.rqTotal + ' rq</span>').join('<br>') || '<span class="FAIL">none</span>'])).join('');
  document.getElementById('rules-table').innerHTML = (s.rules || []).length ? '<tr><th>service</th><th>subsets</th><th>rules</th></tr>' +
    s.rules.map((r) => row([esc(r.service) + '<div class="small">from ' + esc(r.source) + '</div>', r.subsets.map(esc).join('<br>') || '-', r.lines.map((l) => '<span class="mono">' + esc(l) + '</span>').join('<br>')])).join('')
    : row(['<span class="small">no traffic rules: every service goes to all its instances (docs/traffic-rules.md)</span>']);
  const rates = Object.entries(s.rates);
  document.getElementById('charts').innerHTML = rates.length ? rates.map(([name, pts]) => {
    const last = pts[pts.length - 1] || { rps: 0, errorsPerSec: 0 };
    return '<div><span class="mono">' + esc(name) + '</span> <span class="small">' + last.rps + ' rq/s, ' + last.errorsPerSec + ' 5xx/s</span><br>' + chart(pts) + '</div>';
  }).join('') : '<div class="small">no cluster stats yet</div>';
  document.getElementById('errors-table').innerHTML = s.errors.length ? s.errors.map((e) => row([esc(e.component), '<span class="mono">' + esc(e.text) + '</span>', '<span class="small">' + esc(e.seen) + '</span>'])).join('') : row(['<span class="small">no errors recorded</span>']);
  document.getElementById('links-list').innerHTML = s.links.map((l) => l.method === 'GET' ? '<div><a href="' + esc(l.url) + '">' + esc(l.url) + '</a></div>' : '<div>curl -X ' + esc(l.method) + ' ' + esc(l.url) + '</div>').join('');
}
async function refresh() {
  try {
    const res = await fetch('${SUMMARY_PATH}', { cache: 'no-store' });
    render(await res.json());
  } catch (err) {
    document.getElementById('status').textContent = 'agent admin unreachable: ' + err.message;
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}
refresh();
</script>
</body></html>
`;
}
