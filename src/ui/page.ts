/**
 * The web map: one self-contained page (no build step, no library). Hosts are cards on a circle, tunnels
 * are SVG lines coloured by health (green answers, red broken, grey not probed), containers are listed under
 * each host. It follows /events (SSE) and redraws on every pushed state; click a host, container or tunnel
 * for its details. Text is inserted with textContent only (store values are untrusted).
 */
export const PAGE_HTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>weft network map</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  body { margin: 0; font: 13px/1.35 system-ui, sans-serif; background: #f6f7f9; color: #1d2330; }
  header { padding: 8px 14px; background: #1d2330; color: #fff; display: flex; gap: 16px; align-items: baseline; }
  header b { font-size: 15px; } #live { font-size: 12px; opacity: .8; }
  #wrap { display: flex; height: calc(100vh - 36px); }
  #map { position: relative; flex: 1; overflow: auto; }
  #links { position: absolute; left: 0; top: 0; pointer-events: none; }
  #links line { stroke-width: 4; pointer-events: stroke; cursor: pointer; }
  .ok { stroke: #2e9d4a; } .bad { stroke: #d33; stroke-dasharray: 8 5; } .unknown { stroke: #9aa0aa; }
  .host { position: absolute; width: 210px; background: #fff; border: 2px solid #3b6fd8; border-radius: 8px; padding: 6px 8px; box-shadow: 0 1px 3px #0002; cursor: pointer; }
  .host.self { border-color: #7a3bd8; }
  .host h3 { margin: 0 0 2px; font-size: 14px; } .host .sub { color: #555; font-size: 12px; }
  .ctr { margin-top: 3px; padding: 2px 5px; background: #eef3ff; border-radius: 4px; font-family: ui-monospace, monospace; font-size: 12px; cursor: pointer; }
  .ctr:hover, .host:hover { outline: 2px solid #f5b400; }
  #side { width: 320px; background: #fff; border-left: 1px solid #ddd; padding: 10px; overflow: auto; }
  #side pre { white-space: pre-wrap; word-break: break-all; font-size: 12px; }
  .legend span { display: inline-block; width: 18px; height: 4px; margin: 0 4px 2px 10px; vertical-align: middle; }
</style></head>
<body>
<header><b>weft</b><span id="title">connecting…</span><span id="live"></span>
<span class="legend"><span style="background:#2e9d4a"></span>tunnel ok<span style="background:#d33"></span>broken<span style="background:#9aa0aa"></span>not probed</span></header>
<div id="wrap"><div id="map"><svg id="links"></svg></div>
<div id="side"><b>details</b><p>Click a host, container or tunnel.</p><pre id="details"></pre></div></div>
<script>
"use strict";
const map = document.getElementById('map'), svg = document.getElementById('links');
const token = new URLSearchParams(location.search).get('token');
const q = token ? '?token=' + encodeURIComponent(token) : '';
let state = null, picked = null;
function el(tag, cls, text) { const e = document.createElement(tag); if (cls) e.className = cls; if (text != null) e.textContent = text; return e; }
function show(what, obj) { picked = what; document.getElementById('details').textContent = what + '\\n' + JSON.stringify(obj, null, 2); }
function draw(s) {
  state = s;
  document.getElementById('title').textContent = s.hosts.length + ' hosts · ' + s.hosts.reduce((a, h) => a + h.containers.length, 0) + ' containers · seen from ' + s.self;
  document.getElementById('live').textContent = 'updated ' + new Date(s.generatedAt).toLocaleTimeString();
  for (const n of [...map.querySelectorAll('.host')]) n.remove();
  const W = Math.max(map.clientWidth, 700), n = s.hosts.length;
  const R = n < 2 ? 0 : Math.max(170, n * 60), cx = R + 130, cy = R + 40;
  const pos = new Map();
  s.hosts.forEach((h, i) => {
    const a = -Math.PI / 2 + (2 * Math.PI * i) / Math.max(n, 1);
    const x = cx + R * Math.cos(a) - 105, y = cy + R * Math.sin(a);
    const card = el('div', 'host' + (h.self ? ' self' : ''));
    card.dataset.host = h.id;
    card.style.left = x + 'px'; card.style.top = y + 'px';
    card.append(el('h3', null, h.id + (h.self ? ' (this host)' : '')), el('div', 'sub', h.publicIp));
    for (const sn of h.subnets) card.append(el('div', 'sub', sn.network + ' ' + sn.subnet + ' · ' + sn.backend));
    for (const c of h.containers) {
      const row = el('div', 'ctr', (c.name || c.container) + '  ' + c.address.split('/')[0]);
      row.dataset.container = c.container; row.dataset.ip = c.address.split('/')[0];
      row.onclick = (ev) => { ev.stopPropagation(); show('container ' + (c.name || c.container) + ' on ' + h.id, c); };
      card.append(row);
    }
    card.onclick = () => show('host ' + h.id, { publicIp: h.publicIp, subnets: h.subnets, containers: h.containers.length, ...h.details });
    map.append(card);
    pos.set(h.id, { x: x + 105, y: y + 30 });
  });
  svg.setAttribute('width', String(Math.max(W, cx * 2 + 40))); svg.setAttribute('height', String(cy * 2 + 200));
  svg.replaceChildren();
  for (const l of s.links) {
    const a = pos.get(l.from), b = pos.get(l.to); if (!a || !b) continue;
    const line = document.createElementNS('http://www.w3.org/2000/svg', 'line');
    line.setAttribute('x1', a.x); line.setAttribute('y1', a.y); line.setAttribute('x2', b.x); line.setAttribute('y2', b.y);
    line.setAttribute('class', l.health); line.dataset.link = l.from + '-' + l.to;
    line.onclick = () => show('tunnel ' + l.from + ' → ' + l.to, l);
    const t = document.createElementNS('http://www.w3.org/2000/svg', 'title'); t.textContent = l.network + ' ' + l.backend + ': ' + l.why; line.append(t);
    svg.append(line);
  }
}
function connect() {
  const es = new EventSource('/events' + q);
  es.addEventListener('state', (e) => draw(JSON.parse(e.data)));
  es.onerror = () => { document.getElementById('live').textContent = 'reconnecting…'; };
}
fetch('/api/state' + q).then((r) => r.json()).then((s) => { if (!state && s.hosts) draw(s); }).catch(() => {});
connect();
</script></body></html>
`;
