"""The status page a browser gets at ``GET /`` (``curl`` and scripts still get JSON): one self-contained document.

No external scripts, fonts or styles, relative URLs only (it works through ``ssh -L 8888:127.0.0.1:8888``). Every
2 seconds it reads ``/funding/health`` and ``/funding/batch`` — the API's own answers, so the page can never
disagree with them — and shows health and its reasons, data age, connection, uptime, reconnects, and a filterable
table of symbols (mark price, funding rate in percent, next funding time, age; stale rows marked). Ages keep
counting between answers; when the API stops answering the page says so and since when, never a frozen "fresh".
"""

from __future__ import annotations

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>VolSpike funding service</title>
<style>
 body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #1b1f24; }
 h1 { font-size: 1.3rem; margin: 0 0 .8rem; }
 #health { display: inline-block; padding: .3rem .8rem; border-radius: .3rem; font-weight: 600; color: #fff; }
 #health.healthy { background: #1a7f37; } #health.unhealthy { background: #cf222e; }
 #health.unknown { background: #6e7781; }
 dl { display: grid; grid-template-columns: max-content auto; gap: .2rem 1rem; margin: 1rem 0; }
 dt { color: #57606a; } dd { margin: 0; font-variant-numeric: tabular-nums; }
 ul#reasons { color: #cf222e; margin: .5rem 0; } ul#warnings { color: #9a6700; margin: .5rem 0; }
 input { padding: .3rem .5rem; font-size: 1rem; margin: .5rem 0; width: 16rem; }
 table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
 th, td { padding: .2rem .7rem; border-bottom: 1px solid #d0d7de; text-align: right; }
 th:first-child, td:first-child { text-align: left; }
 tr.stale td { color: #cf222e; } tr.stale td:first-child::after { content: " (stale)"; }
</style></head>
<body>
<h1>VolSpike funding service</h1>
<div><span id="health" class="unknown">loading…</span> <span id="updated"></span></div>
<ul id="reasons"></ul><ul id="warnings"></ul>
<dl>
 <dt>Symbols</dt><dd id="symbols">-</dd>
 <dt>Newest data age</dt><dd id="age">-</dd>
 <dt>WebSocket</dt><dd id="connection">-</dd>
 <dt>Daemon uptime</dt><dd id="uptime">-</dd>
 <dt>Reconnects</dt><dd id="reconnects">-</dd>
 <dt>Stale symbols</dt><dd id="stale">-</dd>
</dl>
<input id="filter" type="search" placeholder="filter symbols, e.g. BTC" autocomplete="off">
<span id="shown"></span>
<table><thead><tr><th>Symbol</th><th>Mark price</th><th>Funding rate</th><th>Next funding (UTC)</th>
<th>Age</th></tr></thead><tbody id="rows"></tbody></table>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let items = [], health = null, answeredAt = null, unreachableSince = null, problem = "";
const num = (v, digits) => (v === null || v === undefined) ? "-" : Number(v).toPrecision(digits);
// Funding rates as Binance shows them: a percentage, always four decimals (0.0100 %).
const pct = (v) => (v === null || v === undefined) ? "-" : (100 * Number(v)).toFixed(4) + " %";
const utc = (ms) => new Date(ms).toISOString().slice(11, 19) + " UTC";
// Ages were true when the API answered: they keep counting from then, so a page that lost the API never looks fresh.
const since = () => answeredAt === null ? 0 : (Date.now() - answeredAt) / 1000;
const age = (v) => (v === null || v === undefined) ? "-" : (Number(v) + since()).toFixed(1) + " s";
function duration(s) {
  if (s === null || s === undefined) return "-";
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
  return (d ? d + " d " : "") + (h || d ? h + " h " : "") + m + " min";
}
function list(el, values) {
  el.replaceChildren(...values.map((v) => { const li = document.createElement("li"); li.textContent = v; return li; }));
}
function render() {
  const needle = $("filter").value.trim().toUpperCase();
  const shown = items.filter((i) => i.symbol.toUpperCase().includes(needle));
  $("rows").replaceChildren(...shown.map((i) => {
    const tr = document.createElement("tr");
    tr.dataset.symbol = i.symbol;
    if (i.error || i.stale) tr.className = "stale";
    const next = i.nextFundingTime ? new Date(i.nextFundingTime).toISOString().slice(0, 16).replace("T", " ") : "-";
    for (const cell of [i.symbol, num(i.markPrice, 8), pct(i.fundingRate), next, age(i.ageSeconds)]) {
      const td = document.createElement("td"); td.textContent = cell; tr.appendChild(td);
    }
    return tr;
  }));
  $("shown").textContent = shown.length + " of " + items.length + " shown";
}
function tick() {
  const h = health, down = unreachableSince !== null;
  if (down) {
    $("health").textContent = "API unreachable"; $("health").className = "unhealthy";
    const from = answeredAt === null ? unreachableSince : answeredAt;
    list($("reasons"), ["the API has not answered since " + utc(from) + " (" +
      Math.round((Date.now() - from) / 1000) + " s): " + problem,
      answeredAt === null ? "no answer since this page was loaded"
        : "the figures below are from its last answer; their ages keep counting"]);
  }
  if (h) {
    if (!down) {
      $("health").textContent = h.status; $("health").className = h.status;
      list($("reasons"), h.reasons || []);
    }
    list($("warnings"), h.warnings || []);
    $("symbols").textContent = h.symbolCount;
    $("age").textContent = h.newestDataAgeSeconds === null ? "no data" : age(h.newestDataAgeSeconds);
    $("connection").textContent = down ? "unknown (API unreachable)" : h.websocketConnected ? "connected"
      : "disconnected";
    $("uptime").textContent = down || h.uptimeSeconds === null ? "-" : duration(h.uptimeSeconds + since());
    $("reconnects").textContent = h.reconnectAttempts;
    $("stale").textContent = h.staleSymbols;
  }
  $("updated").textContent = answeredAt === null ? "" : "last answer " + utc(answeredAt);
  render();
}
async function getJson(path) {
  const r = await fetch(path, {cache: "no-store"});
  let body = null;
  try { body = await r.json(); } catch (e) { throw new Error(path + " answered HTTP " + r.status + ", not JSON"); }
  return [r, body];
}
async function refresh() {
  try {
    const [, h] = await getJson("funding/health");
    if (!h || !h.status) throw new Error("funding/health answered without a status");
    const [b, batch] = await getJson("funding/batch");
    health = h; answeredAt = Date.now(); unreachableSince = null;
    if (b.ok && batch && batch.data) items = batch.data;
  } catch (e) {
    if (unreachableSince === null) unreachableSince = Date.now();
    problem = e instanceof TypeError ? "no connection (" + e.message + ")" : e.message;
  }
  tick();
}
$("filter").addEventListener("input", render);
refresh();
setInterval(refresh, 2000);
setInterval(tick, 1000);
</script>
</body></html>
"""


def wants_html(accept: str | None) -> bool:
    """A browser's ``Accept`` asks for HTML before JSON; ``curl`` (``*/*``) and scripts get JSON."""
    if not accept:
        return False
    html, json_ = accept.find("text/html"), accept.find("application/json")
    return html >= 0 and (json_ < 0 or html < json_)
