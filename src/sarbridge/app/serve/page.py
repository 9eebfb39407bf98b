"""The viewer's single HTML page: inline CSS and JavaScript, no external resources.

The page reads its settings from a JSON block (``render_page``), posts the chosen file to
``/api/query`` and draws the answer: the query preview, the ranked matches with their scores and
thumbnails (``/api/thumb/{index}``), and for a geo index the map overview (``/api/map.png``) with
an SVG marker at the estimated position and a circle of the error radius, both in the overview's
pixel coordinates (the SVG ``viewBox`` is the overview's size, so they scale with the image).
"""

from __future__ import annotations

import html
import json
from typing import Any

__all__ = ["render_page"]

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1d2330;background:#f6f7f9}
h1{font-size:1.3rem;margin:0 0 .3rem}
.meta{color:#566;font-size:.9rem;margin-bottom:1rem}
form{display:flex;flex-wrap:wrap;gap:.8rem;align-items:center;background:#fff;padding:.8rem;border-radius:6px;
 box-shadow:0 1px 3px #0002}
button{padding:.4rem 1rem}
#error{display:none;margin:1rem 0;padding:.6rem .8rem;border-radius:6px;background:#fde8e8;color:#8a1111;
 border:1px solid #f3b4b4}
#status{margin:.6rem 0;color:#566;min-height:1.2em}
#results{display:none;margin-top:1rem}
.row{display:flex;gap:1.5rem;flex-wrap:wrap;align-items:flex-start}
#query-box img{height:160px;width:auto;max-width:240px;image-rendering:pixelated;border:2px solid #246}
#matches{display:flex;flex-wrap:wrap;gap:.7rem}
.match{margin:0;background:#fff;padding:.4rem;border-radius:6px;box-shadow:0 1px 3px #0002;width:150px;
 font-size:.8rem}
.match img{width:140px;height:140px;object-fit:contain;background:#222;display:block}
.score{font-weight:600;color:#0b5}
#map-box{position:relative;display:none;max-width:640px}
#map-box img{width:100%;display:block}
#map-box svg{position:absolute;left:0;top:0;width:100%;height:100%}
#estimate{font-size:.9rem;margin:.4rem 0}
"""

_BODY = """
<h1>sarbridge viewer</h1>
<div class="meta" id="meta"></div>
<form id="query-form">
  <label>Query chip <input type="file" id="file" name="file" accept=".tif,.tiff,.png,.jpg,.jpeg,.bmp"></label>
  <label>Modality <select id="modality" name="modality">
    <option value="">choose...</option><option value="optical">optical</option><option value="sar">SAR</option>
  </select></label>
  <label>Top-k <input type="number" id="k" name="k" min="1" max="100" style="width:4em"></label>
  <button type="submit" id="submit">Search</button>
</form>
<div id="error" role="alert"></div>
<div id="status"></div>
<div id="results">
  <div class="row">
    <div id="query-box"><h3>Query</h3><img id="query-preview" alt="query"><div id="query-name"></div></div>
    <div id="geo-box" style="display:none"><h3>Estimated position</h3><div id="estimate"></div>
      <div id="map-box"><img id="map" alt="map"><svg id="overlay" preserveAspectRatio="none"></svg></div></div>
  </div>
  <h3>Top matches</h3>
  <div id="matches"></div>
</div>
"""

_JS = """
const CFG = JSON.parse(document.getElementById('config').textContent);
const $ = (id) => document.getElementById(id);
const SVG = 'http://www.w3.org/2000/svg';
$('meta').textContent = (CFG.kind === 'geo' ? 'Geo map index' : 'Re-ID gallery index') +
  ` - ${CFG.count} items - ${CFG.index} - uploads up to ${CFG.max_upload_mb} MB`;
$('k').value = CFG.top_k;
if (CFG.kind === 'geo') { $('modality').value = 'sar'; $('modality').disabled = true; }
function showError(msg) {
  const e = $('error'); e.textContent = msg; e.style.display = 'block';
  $('results').style.display = 'none';  // the results shown belonged to another file
}
function clearError() { const e = $('error'); e.textContent = ''; e.style.display = 'none'; }
function el(tag, attrs, text) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, v);
  if (text !== undefined) n.textContent = text;
  return n;
}
function svgEl(tag, attrs) { const n = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v); return n; }
function drawMap(est, matches) {
  const box = $('map-box'), svg = $('overlay');
  svg.innerHTML = '';
  if (!CFG.has_map || !est.map_px) { box.style.display = 'none'; return; }
  svg.setAttribute('viewBox', `0 0 ${CFG.map_width} ${CFG.map_height}`);
  const $map = $('map');
  if (!$map.getAttribute('src')) $map.src = 'api/map.png';
  for (const m of matches) if (m.map_px) svg.appendChild(svgEl('circle', {cx: m.map_px.x, cy: m.map_px.y,
    r: Math.max(1.5, CFG.map_width / 160), fill: '#ffd400', 'fill-opacity': 0.8, class: 'candidate'}));
  const p = est.map_px, w = Math.max(1, CFG.map_width / 300);
  svg.appendChild(svgEl('circle', {id: 'error-circle', cx: p.x, cy: p.y, r: Math.max(p.r, 1), fill: '#ff2a2a',
    'fill-opacity': 0.15, stroke: '#ff2a2a', 'stroke-width': w}));
  const s = Math.max(3, CFG.map_width / 60);
  const marker = svgEl('g', {id: 'marker'});
  const line = (x1, y1, x2, y2) => svgEl('line', {x1, y1, x2, y2, stroke: '#ff2a2a', 'stroke-width': 2 * w});
  marker.appendChild(line(p.x - s, p.y, p.x + s, p.y));
  marker.appendChild(line(p.x, p.y - s, p.x, p.y + s));
  svg.appendChild(marker);
  box.style.display = 'block';
}
function render(data) {
  $('query-preview').src = data.query.preview;
  $('query-name').textContent = `${data.query.name} (${data.query.modality}, ${data.query.shape.join('x')})`;
  const list = $('matches'); list.innerHTML = '';
  for (const m of data.matches) {
    const fig = el('figure', {class: 'match', 'data-rank': m.rank});
    fig.appendChild(el('img', {src: `api/thumb/${m.index}`, alt: `match ${m.rank}`, loading: 'lazy'}));
    const cap = el('figcaption');
    cap.appendChild(el('div', {}, `#${m.rank}`));
    // re-ID: cosine of the centred, L2-normalised embeddings (ReIDModel.embed)
    cap.appendChild(el('div', {class: 'score'}, `${data.kind === 'geo' ? 'score' : 'cosine'} ${m.score.toFixed(4)}`));
    const what = data.kind === 'geo' ? `patch r${m.row} c${m.col} - ${m.lon.toFixed(5)}, ${m.lat.toFixed(5)}`
      : `id ${m.identity} - ${m.modality} - ${m.name}`;
    cap.appendChild(el('div', {class: 'what'}, what));
    fig.appendChild(cap); list.appendChild(fig);
  }
  if (data.kind === 'geo') {
    const e = data.estimate;
    $('estimate').textContent = `lon ${e.lon.toFixed(6)}, lat ${e.lat.toFixed(6)} - error radius ` +
      `${e.error_radius_m.toFixed(1)} m - confidence ${e.confidence.toFixed(2)}` +
      (e.check_error_m !== undefined ? ` - ${e.check_error_m.toFixed(1)} m from the query's own georeference` : '') +
      (e.registration ? (e.registration.registered
        ? ` - registered in the map (${e.registration.method}, confidence ${e.registration.confidence.toFixed(3)})`
        : ` - retrieval position (registration confidence ${e.registration.confidence.toFixed(3)} below ` +
          `${e.registration.threshold.toFixed(3)})`) : '');
    $('geo-box').style.display = 'block';
    drawMap(e, data.matches);
  }
  $('results').style.display = 'block';
}
$('query-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  clearError();
  const f = $('file').files[0];
  if (!f) { showError('error: choose a query image first'); return; }
  if (f.size > CFG.max_upload_mb * 1048576) {
    showError(`error: '${f.name}' is ${(f.size / 1048576).toFixed(1)} MB; the limit is ${CFG.max_upload_mb} MB`);
    return;
  }
  const fd = new FormData();
  fd.append('file', f, f.name);
  fd.append('modality', CFG.kind === 'geo' ? 'sar' : $('modality').value);
  fd.append('k', $('k').value);
  $('status').textContent = 'searching...'; $('submit').disabled = true;
  try {
    const r = await fetch('api/query', {method: 'POST', body: fd});
    let data;
    try { data = await r.json(); } catch (e) { data = {error: `server answered ${r.status}`}; }
    if (!r.ok) { showError('error: ' + data.error + (data.hint ? ` (fix: ${data.hint})` : '')); }
    else { render(data); }
  } catch (e) { showError('error: the server could not be reached (' + e + ')'); }
  finally { $('status').textContent = ''; $('submit').disabled = false; }
});
"""


def render_page(config: dict[str, Any]) -> str:
    """The complete HTML page with ``config`` (kind, count, top_k, max_upload_mb, map size...) embedded.

    Args:
        config: JSON-serialisable settings read by the page's script.
    """
    blob = json.dumps(config).replace("</", "<\\/")
    title = html.escape(f"sarbridge viewer - {config.get('kind', '')}")
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><style>{_CSS}</style></head>"
            f"<body>{_BODY}<script type=\"application/json\" id=\"config\">{blob}</script>"
            f"<script>{_JS}</script></body></html>")
