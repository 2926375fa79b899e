// visionzoo explorer: overview charts, model cards, comparison, inside a run.
// State lives in the URL hash (#model=...&metric=...&compare=a,b&run=...): a permalink.
"use strict";

const STATIC = window.VZ_STATIC === true;
const S = { models: [], byName: {}, families: [], familyOrder: [], lab: [], runs: [], profiles: {}, state: {} };
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
// Tableau-20 order: neighbouring families (in year order) get clearly different hues.
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#e6550d", "#31a354", "#ad494a", "#756bb1", "#c49c94", "#f7b6d2", "#637939", "#9edae5", "#843c39"];

async function api(path) {
  const url = STATIC ? path + ".json" : path;
  let r;
  try { r = await fetch(url); } catch (e) { throw new Error(`cannot reach the server (${e.message})`); }
  const j = await r.json().catch(() => ({ error: `${r.status} ${r.statusText}` }));
  if (!r.ok || (j && j.error)) throw new Error(j.error || `${r.status} ${r.statusText}`);
  return j;
}

// --- formatting --------------------------------------------------------------------------
function fmtInt(n) { return n == null ? "–" : Number(n).toLocaleString("en-US"); }
function fmtSI(n, unit = "") {
  if (n == null || !isFinite(n)) return "–";
  if (n === 0) return `0 ${unit}`.trim();
  const a = Math.abs(n);
  const [d, s] = a >= 1e12 ? [1e12, "T"] : a >= 1e9 ? [1e9, "G"] : a >= 1e6 ? [1e6, "M"] : a >= 1e3 ? [1e3, "k"] : [1, ""];
  return `${(n / d).toFixed(n / d >= 100 ? 0 : n / d >= 10 ? 1 : 2)} ${s}${unit}`.trim();
}
function pct(v) { if (v == null || !isFinite(v)) return null; return v <= 1.0 ? v * 100 : v; }
function fmtPct(v) { const p = pct(v); return p == null ? "–" : `${p.toFixed(2)} %`; }
function fmtBytes(n) { return n == null ? "–" : fmtSI(n, "B"); }
function familyColour(f) { const i = S.familyOrder.indexOf(f); return PALETTE[(i < 0 ? 0 : i) % PALETTE.length]; }

// --- metrics -----------------------------------------------------------------------------
const METRICS = {
  depth: { label: "depth (weighted layers)", profile: true, get: (m) => prof(m, "depth"), fmt: fmtInt, log: false },
  params: { label: "parameters", profile: false, get: (m) => prof(m, "params") ?? m.reference_params, fmt: (v) => fmtSI(v), log: true },
  flops: { label: "FLOPs (one image, default size)", profile: true, get: (m) => prof(m, "flops") ?? m.bench?.flops ?? (m.reported?.gmacs != null ? 2e9 * m.reported.gmacs : null), fmt: (v) => fmtSI(v, "FLOP"), log: true, source: (m) => (prof(m, "flops") != null ? "counted here (FlopCounterMode)" : m.bench?.flops != null ? `bench ${m.bench.file}` : "reported GMACs × 2 (counting here…)") },
  top1: { label: "reported ImageNet top-1 (%), as published", profile: false, get: (m) => (isImageNet(m.reported) ? pct(m.reported.top1) : null), fmt: (v) => `${v.toFixed(2)} %`, log: false, source: (m) => repSource(m.reported) },
  measured: { label: "Fashion-MNIST, trained here (%, mean)", profile: false, get: (m) => pct(m.measured?.test_acc), fmt: (v) => `${v.toFixed(2)} %`, log: false, source: (m) => m.measured && measuredSource(m.measured) },
  latency: { label: "latency measured here (ms, batch 1)", profile: false, get: (m) => m.bench?.latency_ms, fmt: (v) => `${v.toFixed(2)} ms`, log: true, source: (m) => m.bench && `${m.bench.device || "device ?"} · ${m.bench.file}` },
  run_acc: { label: "test accuracy of your runs (%, best run)", profile: false, get: (m) => pct(m.run_acc?.test_acc), fmt: (v) => `${v.toFixed(2)} %`, log: false, source: (m) => m.run_acc && `${m.run_acc.dataset} · run ${m.run_acc.id}` },
};
function measuredSource(x) { return `± ${fmtPct(x.sd)} over ${x.seeds} seed${x.seeds === 1 ? "" : "s"} · ${x.recipe || "?"}, ${x.epochs ?? "?"} epochs · ${x.device || "?"} · results/leaderboard/${x.file}` + (x.published ? ` · published ${x.published[0]}: ${fmtPct(x.published[1])}` : ""); }
function isImageNet(r) { return !!(r && r.top1 != null && /imagenet/i.test(r.dataset || "ImageNet")); }
function repSource(r) { return r ? r.metrics_source || r.source || "" : ""; }
function prof(m, key) { const p = S.profiles[m.name] || m.profile; return p ? p[key] ?? null : null; }

// --- the URL hash ------------------------------------------------------------------------
function readHash() {
  const p = new URLSearchParams(location.hash.slice(1));
  return { model: p.get("model") || "", metric: p.get("metric") || "params", compare: (p.get("compare") || "").split(",").filter(Boolean), run: p.get("run") || "" };
}
function writeHash() {
  const s = S.state, p = new URLSearchParams();
  if (s.model) p.set("model", s.model);
  if (s.metric) p.set("metric", s.metric);
  if (s.compare && s.compare.length) p.set("compare", s.compare.join(","));
  if (s.run) p.set("run", s.run);
  const h = "#" + p.toString().replace(/%2C/g, ",");
  if (location.hash !== h) history.replaceState(null, "", h);
}

// --- overview ----------------------------------------------------------------------------
// On a phone the mode bar would sit on the plot itself: pinch and tap do its work there.
function plotConfig() { return { displaylogo: false, responsive: true, displayModeBar: window.innerWidth >= 700 ? "hover" : false, modeBarButtonsToRemove: ["select2d", "lasso2d"] }; }

function drawBars() {
  const key = S.state.metric, M = METRICS[key];
  const rows = S.models.filter((m) => M.get(m) != null);
  const missing = S.models.length - rows.length;
  const traces = S.familyOrder.map((f) => {
    const ms = bySize(rows.filter((m) => m.family === f));
    return {
      type: "bar", name: f, x: ms.map((m) => m.name), y: ms.map((m) => M.get(m)), customdata: ms.map((m) => m.name),
      marker: { color: familyColour(f) },
      hovertext: ms.map((m) => `${m.name} · ${m.family} ${m.year}<br>${M.label}: ${M.fmt(M.get(m))}` + (M.source ? `<br>source: ${esc(M.source(m) || "?")}` : "")),
      hoverinfo: "text",
    };
  }).filter((t) => t.x.length);
  const order = traces.flatMap((t) => t.x);  // families in year order, each by size
  const narrow = window.innerWidth < 700;
  const layout = {
    margin: { l: narrow ? 44 : 70, r: 10, t: 10, b: narrow ? 90 : 110 }, barmode: "overlay", bargap: 0.15, showlegend: false,
    xaxis: { categoryorder: "array", categoryarray: order, tickangle: -60, tickfont: { size: narrow ? 8 : 10 }, range: [-0.5, Math.max(order.length, 12) - 0.5] },
    yaxis: { type: $("logscale").checked && M.log ? "log" : "linear", title: { text: narrow ? "" : M.label }, automargin: true },
    hovermode: "closest",
  };
  $("bars-title").textContent = M.label;
  $("bars-warning").textContent = key === "top1" ? "reported by the papers, not measured here" : "";
  $("bars-legend").innerHTML = traces.map((t) => `<span><i style="background:${esc(t.marker.color)}"></i>${esc(t.name)}</span>`).join("");
  Plotly.react("chart-bars", traces, layout, plotConfig());
  let note = missing ? `${rows.length} of ${S.models.length} models have this metric.` : `${rows.length} models, in year order.`;
  if (key === "top1" && S.reportedMissing) note += " " + S.reportedMissing;
  if (key === "latency" && !rows.length) note += " No results/bench/*.json files yet.";
  if (key === "measured" && !rows.length) note += " No results/leaderboard/*.json yet: python scripts/leaderboard.py --data-dir DIR.";
  if (key === "run_acc" && !rows.length) note += " No runs yet: train one with `visionzoo train`.";
  $("metric-note").textContent = note;
  if (M.profile) fetchProfiles();
}

// Within a family, bars go from the smallest model to the largest (resnet18 before resnet101).
const natural = new Intl.Collator("en", { numeric: true });
function bySize(ms) {
  return [...ms].sort((a, b) => (METRICS.params.get(a) ?? 0) - (METRICS.params.get(b) ?? 0) || natural.compare(a.name, b.name));
}

// The variant a family's timeline point opens: the paper's best-known one where it is
// registered, else the middle-sized variant with a reported ImageNet figure.
const FLAGSHIPS = ["lenet5", "alexnet", "vgg16", "googlenet", "resnet50", "highway_fc_50", "inception_v3", "densenet121", "xception", "mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "vit_b_16", "swin_t", "convnext_tiny", "nfnet_f0", "cswin_t"];
function flagship(family) {
  const ms = S.models.filter((m) => m.family === family);
  const named = ms.find((m) => FLAGSHIPS.includes(m.name));
  if (named) return named.name;
  const rep = bySize(ms.filter((m) => isImageNet(m.reported)));
  const pool = rep.length ? rep : bySize(ms);
  return pool[Math.floor((pool.length - 1) / 2)].name;
}

let profiling = false;
async function fetchProfiles() {
  if (profiling || STATIC) return;
  const todo = S.models.filter((m) => !S.profiles[m.name] && !m.profile && !m.profileError);
  if (!todo.length) return;
  profiling = true;
  let done = 0, last = Date.now();
  try {
    for (const m of todo) {
      $("metric-note").textContent = `profiling ${done + 1}/${todo.length}: ${m.name} (runs each model once; cached afterwards)…`;
      try { S.profiles[m.name] = await api(`api/models/${encodeURIComponent(m.name)}/profile`); }
      catch (e) { m.profileError = e.message; if (/not available/.test(e.message)) { $("metric-note").textContent = e.message; break; } }
      done++;
      if (Date.now() - last > 1500) { last = Date.now(); if (METRICS[S.state.metric].profile) redrawProfiled(); }
    }
  } finally { profiling = false; }
  redrawProfiled();
}
function redrawProfiled() {
  const note = $("metric-note").textContent;
  if (METRICS[S.state.metric].profile) drawBars(); else $("metric-note").textContent = note;
  drawScatter();
}

function drawScatter() {
  const yk = $("scatter-y").value, xk = $("scatter-x").value;
  const Y = METRICS[yk], X = METRICS[xk === "latency" ? "latency" : xk];
  const pts = S.models.filter((m) => Y.get(m) != null && X.get(m) != null);
  const maxP = Math.max(1, ...S.models.map((m) => METRICS.params.get(m) || 0));
  const traces = S.familyOrder.map((f) => {
    const ms = pts.filter((m) => m.family === f);
    return {
      type: "scatter", mode: "markers", name: f, x: ms.map((m) => X.get(m)), y: ms.map((m) => Y.get(m)), customdata: ms.map((m) => m.name),
      marker: { color: familyColour(f), opacity: 0.75, line: { color: "#fff", width: 1 }, size: ms.map((m) => 8 + 42 * Math.sqrt((METRICS.params.get(m) || 0) / maxP)) },
      hovertext: ms.map((m) => `${m.name} (${m.family} ${m.year})<br>${Y.label}: ${Y.fmt(Y.get(m))}<br>${X.label}: ${X.fmt(X.get(m))}<br>params: ${fmtSI(METRICS.params.get(m))}` + (Y.source ? `<br>source: ${esc(Y.source(m) || "?")}` : "")),
      hoverinfo: "text",
    };
  }).filter((t) => t.x.length);
  const layout = {
    margin: { l: 50, r: 10, t: 10, b: 50 }, showlegend: false, hovermode: "closest",
    xaxis: { type: X.log ? "log" : "linear", title: { text: X.label } }, yaxis: { title: { text: Y.label } },
  };
  $("scatter-title").textContent = pts.length ? `${Y.label} vs ${X.label} (bubble area ~ parameters)` : `no model has both ${Y.label} and ${X.label} yet`;
  Plotly.react("chart-scatter", traces, layout, plotConfig());
}

function drawTimeline() {
  const fams = [...new Set(S.models.map((m) => m.family))];
  const first = {};
  for (const m of S.models) if (!first[m.family]) first[m.family] = m;
  const byYear = fams.map((f) => first[f]).sort((a, b) => a.year - b.year);
  const variants = (f) => S.models.filter((m) => m.family === f).map((m) => m.name);
  const trace = {
    type: "scatter", mode: "markers+text", x: byYear.map((m) => m.year), y: byYear.map((m) => m.family),
    text: byYear.map((m) => m.family), textposition: byYear.map((m) => (m.year > 2012 ? "middle left" : "middle right")), customdata: byYear.map((m) => flagship(m.family)),
    textfont: { size: window.innerWidth < 700 ? 10 : 12 },
    marker: { size: byYear.map((m) => 10 + 2 * Math.min(8, variants(m.family).length)), color: byYear.map((m) => familyColour(m.family)) },
    hovertext: byYear.map((m) => `${m.family} (${m.year}): opens ${flagship(m.family)}<br>${esc(m.paper)}<br>variants: ${variants(m.family).join(", ")}`), hoverinfo: "text",
  };
  const layout = {
    margin: { l: 10, r: 10, t: 10, b: 40 }, showlegend: false, hovermode: "closest",
    xaxis: { range: [1996.5, 2025.5], dtick: 2, title: { text: "year of the paper" } },
    yaxis: { categoryorder: "array", categoryarray: byYear.map((m) => m.family).reverse(), showticklabels: false },
  };
  Plotly.react("chart-timeline", [trace], layout, plotConfig());
}

function hookClicks(id) {
  const el = $(id);
  el.on("plotly_click", (ev) => { const p = ev.points && ev.points[0]; if (p && p.customdata) openCard(p.customdata, true); });
}

// --- model card --------------------------------------------------------------------------
function fact(label, value, small = "", cls = "") { return `<div class="fact ${cls}"><small>${esc(label)}</small><b>${value}</b>${small ? `<small>${small}</small>` : ""}</div>`; }

function facts(c, p) {
  const rep = c.reported, bench = c.bench, runs = c.runs || [];
  const best = runs.filter((r) => r.test_acc != null).sort((a, b) => b.test_acc - a.test_acc)[0];
  return `<div class="facts">
    ${fact("parameters", `<span class="params">${fmtInt(p?.params ?? c.reference_params)}</span>`, p?.params != null ? `counted here · reference ${fmtInt(c.reference_params)} (${esc(c.params_source)})` : `reference (${esc(c.params_source || "?")})`)}
    ${fact("FLOPs", p ? fmtSI(p.flops, "FLOP") : "…", p ? `MACs ${fmtSI(p.macs)} at ${esc(p.image_size)} px` : "profiling…", "flops")}
    ${fact("depth", p ? fmtInt(p.depth) : "…", p ? esc(p.depth_source || "") + (p.weighted_layers != null ? ` · ${fmtInt(p.weighted_layers)} weighted layers in all` : "") : "")}
    ${fact("activation memory", p ? fmtBytes(p.activation_bytes) : "…", "one image, forward")}
    ${fact(`reported top-1${rep && rep.top1 != null ? ` (${rep.dataset || "ImageNet"})` : ""}`, rep && rep.top1 != null ? fmtPct(rep.top1) : "–", rep && rep.top1 != null ? `top-5 ${fmtPct(rep.top5)} · reported, not measured: ${esc(repSource(rep) || "?")}` : "no reported figure")}
    ${fact(`trained here${c.measured ? ` (${c.measured.dataset || "?"})` : ""}`, c.measured ? fmtPct(c.measured.test_acc) : "–", c.measured ? `test accuracy, mean ${esc(measuredSource(c.measured))}` : "no leaderboard row (scripts/leaderboard.py)", "measured")}
    ${fact("latency measured here", bench ? `${bench.latency_ms.toFixed(2)} ms` : "–", bench ? `${esc(bench.device)} · batch ${esc(bench.batch_size)}` + (bench.all || []).filter((b) => b.device !== bench.device).map((b) => `<br>also ${b.latency_ms.toFixed(2)} ms on ${esc(b.device)}`).join("") : "no results/bench entry")}
    ${fact("best run, test accuracy", best ? fmtPct(best.test_acc) : "–", best ? `${esc(best.dataset)} · ${esc(best.id)}` : "no runs of this model")}
    ${fact("input", `${c.in_channels}×${c.image_size}×${c.image_size}`, `min ${c.min_image_size} px · ${c.num_classes} classes`)}
  </div>`;
}

function stageTable(p) {
  if (!p || !p.stages) return `<p class="muted">stage table: profiling…</p>`;
  const rows = p.stages.map((s) => `<tr><td>${esc(s.name)}</td><td>${esc((s.output_shape || []).join("×"))}</td><td>${fmtInt(s.params)}</td><td>${fmtSI(s.flops)}</td></tr>`).join("");
  return `<div class="table-wrap"><table class="stages-table"><thead><tr><th>stage</th><th>output shape</th><th>parameters</th><th>FLOPs</th></tr></thead><tbody>${rows}</tbody></table></div>`;
}

let cardToken = 0;
async function openCard(name, scroll) {
  if (!name) return;
  S.state.model = name; writeHash();
  $("model-select").value = name;
  const token = ++cardToken;
  const sec = $("card"), body = $("card-body");
  sec.hidden = false;
  body.innerHTML = `<p class="muted">loading ${esc(name)}…</p>`;
  if (scroll) sec.scrollIntoView({ behavior: "instant", block: "start" });
  let c;
  try { c = await api(`api/models/${encodeURIComponent(name)}`); } catch (e) { body.innerHTML = `<p class="error">${esc(e.message)}</p>`; return; }
  if (token !== cardToken) return;
  const p = S.profiles[name] || c.profile;
  const notes = (c.notes || []).map((n) => `<li>${esc(n)}</li>`).join("");
  const claims = (c.claims || []).map((cl) => `<div class="claim"><b>${esc(cl.title)}</b> — <span class="verdict">${esc(typeof cl.verdict === "string" ? cl.verdict : JSON.stringify(cl.verdict))}</span>
    ${cl.summary ? `<br>${esc(cl.summary)}` : ""}
    <br><span class="muted">${cl.rule ? `rule: ${esc(cl.rule)} · ` : ""}${cl.budget ? `budget ${esc(cl.budget)} · ` : ""}${cl.dataset ? `${esc(cl.dataset)} · ` : ""}models: ${esc(cl.models.join(", "))}</span>
    ${cl.has_plot ? `<details><summary>plot</summary><img class="lab-plot" src="api/lab/${encodeURIComponent(cl.id)}/plot.png" alt="${esc(cl.title)}"></details>` : ""}</div>`).join("");
  body.innerHTML = `
    <div class="card-head" data-model="${esc(c.name)}">
      <h2>${esc(c.name)} <span class="muted">· ${esc(c.family)} (${esc(c.year)})</span></h2>
      <span><button id="card-compare">compare with…</button></span>
    </div>
    <p><a href="${esc(c.paper_url)}" target="_blank" rel="noopener">${esc(c.paper)}</a><br><span class="muted">${esc(c.authors)}</span></p>
    <div id="card-facts">${facts(c, p)}</div>
    ${c.key_idea ? `<h3>Key idea</h3><p class="key-idea">${esc(c.key_idea)}</p>` : ""}
    ${notes ? `<h3>Where this code departs from the paper</h3><ul class="notes">${notes}</ul>` : ""}
    ${claims ? `<h3>History lab</h3>${claims}` : ""}
    <h3>Stages</h3><div id="card-stages">${stageTable(p)}</div>
    <h3>Architecture, drawn from the model</h3><div id="card-diagram"><p class="muted">tracing the model…</p></div>
    <h3>Runs</h3><div id="card-runs">${runsList(c.runs)}</div><div id="card-curves" class="chart short" ${c.runs && c.runs.length ? "" : "hidden"}></div>
    <details id="card-source"><summary>Source code: ${esc(c.module)}</summary><pre class="source"><code>loading…</code></pre></details>`;
  $("card-compare").onclick = () => { setCompare(name, S.state.compare[1] || ""); $("compare").scrollIntoView({ block: "start" }); };
  if (c.runs && c.runs.length) loadCurves("card-curves", c.runs);
  $("card-source").addEventListener("toggle", () => loadSource(name), { once: true });
  if (!p) api(`api/models/${encodeURIComponent(name)}/profile`).then((pr) => {
    S.profiles[name] = pr;
    if (token !== cardToken) return;
    $("card-facts").innerHTML = facts(c, pr); $("card-stages").innerHTML = stageTable(pr);
  }).catch((e) => { if (token === cardToken) { $("card-stages").innerHTML = `<p class="muted">profile unavailable: ${esc(e.message)}</p>`; $("card-facts").innerHTML = facts(c, null).replaceAll("<b>…</b>", "<b>–</b>"); } });
  api(`api/models/${encodeURIComponent(name)}/diagram`).then((d) => {
    if (token === cardToken) $("card-diagram").innerHTML = diagramHtml(d);
  }).catch((e) => { if (token === cardToken) $("card-diagram").innerHTML = `<p class="error">${esc(e.message)}</p>`; });
}

function diagramHtml(d, compact = false) {
  const legend = (d.legend || []).map((l) => `<span><i style="background:${esc(l.colour)}"></i>${esc(l.label)}</span>`).join("");
  const skip = `<span><i style="background:#fff;border-color:#ea580c"></i>orange edge: skips rows (shortcut, concatenation input)</span>`;
  let html = `<div class="legend">${legend}${skip}</div><div class="diagram">${d.svg}</div>`;
  if (!d.traced) html += `<p class="muted">part of this model's Python could not be traced with torch.fx; that part is drawn in the order its modules run.</p>`;
  const blocks = (d.blocks || []).filter((b) => !compact || b.defining);
  for (const b of blocks) html += `<details class="block" open><summary>${esc(b.name)} <span class="muted">(${esc(b.instance)})</span>${b.defining ? ` <span class="tag">the family's defining block</span>` : ""}</summary><div class="diagram detail">${b.svg}</div></details>`;
  return html;
}

async function loadSource(name) {
  const pre = document.querySelector("#card-source code");
  try { const s = await api(`api/models/${encodeURIComponent(name)}/source`); pre.textContent = s.source; }
  catch (e) { pre.textContent = e.message; }
}

function runsList(runs) {
  if (!runs || !runs.length) return `<p class="muted">No runs of this model in the runs folder.</p>`;
  return `<div class="table-wrap"><table><thead><tr><th>run</th><th>dataset</th><th>recipe</th><th>epochs</th><th>status</th><th>test accuracy</th><th></th></tr></thead><tbody>` +
    runs.map((r) => `<tr><td>${esc(r.id)}</td><td>${esc(r.dataset)}</td><td>${esc(r.recipe)}</td><td>${esc(r.epochs)}</td><td>${esc(r.status || "")}</td><td>${fmtPct(r.test_acc)}</td><td><a href="#" data-run="${esc(r.id)}">look inside</a></td></tr>`).join("") + `</tbody></table></div>`;
}

async function loadCurves(el, runs) {
  const traces = [];
  let maxEpoch = 0;
  for (const r of runs.slice(0, 8)) {
    let d;
    try { d = await api(`api/runs/${encodeURIComponent(r.id)}`); } catch (e) { continue; }
    const ep = d.metrics.map((m) => m.epoch);
    maxEpoch = Math.max(maxEpoch, ...ep);
    traces.push({ x: ep, y: d.metrics.map((m) => pct(m.test_acc)), name: `${r.id} test acc`, mode: "lines+markers" });
    traces.push({ x: ep, y: d.metrics.map((m) => pct(m.train_acc)), name: `${r.id} train acc`, mode: "lines", line: { dash: "dot" } });
    traces.push({ x: ep, y: d.metrics.map((m) => m.train_loss), name: `${r.id} train loss`, mode: "lines", yaxis: "y2", line: { dash: "dash" } });
    traces.push({ x: ep, y: d.metrics.map((m) => m.test_loss), name: `${r.id} test loss`, mode: "lines", yaxis: "y2" });
  }
  if (!$(el)) return;
  Plotly.react(el, traces, {
    margin: { l: 50, r: 50, t: 24, b: 40 }, title: { text: "training curves", font: { size: 13 } },
    xaxis: { title: { text: "epoch" }, tickformat: "d", dtick: maxEpoch <= 20 ? 1 : undefined }, yaxis: { title: { text: "accuracy (%)" } },
    yaxis2: { title: { text: "loss" }, overlaying: "y", side: "right" }, legend: { font: { size: 10 } },
  }, plotConfig());
}

// --- compare -----------------------------------------------------------------------------
function setCompare(a, b) {
  S.state.compare = [a, b].filter(Boolean); writeHash();
  $("cmp-a").value = a || ""; $("cmp-b").value = b || "";
  drawCompare();
}

async function drawCompare() {
  const [a, b] = [$("cmp-a").value, $("cmp-b").value];
  const body = $("compare-body");
  if (!a || !b) { body.innerHTML = `<p class="muted">Choose two models.</p>`; return; }
  body.innerHTML = `<p class="muted">loading…</p>`;
  const get = async (n) => {
    const [c, p, d] = await Promise.all([
      api(`api/models/${encodeURIComponent(n)}`),
      api(`api/models/${encodeURIComponent(n)}/profile`).catch(() => null),
      api(`api/models/${encodeURIComponent(n)}/diagram`).catch(() => null),
    ]);
    if (p) S.profiles[n] = p;
    return { c, p, d };
  };
  let A, B;
  try { [A, B] = await Promise.all([get(a), get(b)]); } catch (e) { body.innerHTML = `<p class="error">${esc(e.message)}</p>`; return; }
  if ($("cmp-a").value !== a || $("cmp-b").value !== b) return;
  // A ratio for amounts (parameters, FLOPs, memory, time), a difference in points for
  // accuracies, nothing for labels, years and input sizes.
  const row = (label, f, fmt, how = "") => {
    const va = f(A), vb = f(B);
    let ratio = "";
    const both = typeof va === "number" && typeof vb === "number";
    if (how === "ratio" && both && va > 0 && vb > 0) ratio = `${(vb / va).toFixed(2)}×`;
    if (how === "points" && both) ratio = `${vb - va >= 0 ? "+" : ""}${(vb - va).toFixed(1)} pts`;
    return `<tr><td>${label}</td><td>${va == null ? "–" : fmt(va)}</td><td>${vb == null ? "–" : fmt(vb)}</td><td class="ratio">${ratio}</td></tr>`;
  };
  const best = (X) => { const r = (X.c.runs || []).filter((x) => x.test_acc != null).sort((x, y) => y.test_acc - x.test_acc)[0]; return r ? pct(r.test_acc) : null; };
  body.innerHTML = `<div class="table-wrap"><table class="cmp-table"><thead><tr><th></th><th>${esc(a)}</th><th>${esc(b)}</th><th>B vs A</th></tr></thead><tbody>
    ${row("family", (X) => X.c.family, esc)}
    ${row("year", (X) => X.c.year, String)}
    ${row("parameters", (X) => X.p?.params ?? X.c.reference_params, fmtInt, "ratio")}
    ${row("FLOPs", (X) => X.p?.flops, (v) => fmtSI(v, "FLOP"), "ratio")}
    ${row("depth", (X) => X.p?.depth, fmtInt, "ratio")}
    ${row("activation memory", (X) => X.p?.activation_bytes, fmtBytes, "ratio")}
    ${row("reported ImageNet top-1", (X) => (isImageNet(X.c.reported) ? pct(X.c.reported.top1) : null), (v) => `${v.toFixed(2)} %`, "points")}
    ${row("Fashion-MNIST, trained here", (X) => pct(X.c.measured?.test_acc), (v) => `${v.toFixed(2)} %`, "points")}
    ${row("latency measured here", (X) => X.c.bench?.latency_ms, (v) => `${v.toFixed(2)} ms`, "ratio")}
    ${row("best run test accuracy", best, (v) => `${v.toFixed(2)} %`, "points")}
    ${row("default input", (X) => X.c.image_size, (v) => `${v} px`)}
  </tbody></table></div>
  <div class="cmp">${[A, B].map((X) => `<div><h3>${esc(X.c.name)} <span class="muted">· ${esc(X.c.family)} ${esc(X.c.year)}</span></h3>
    <p>${esc(X.c.key_idea)}</p>${X.d ? diagramHtml(X.d, true) : ""}${stageTable(X.p)}</div>`).join("")}</div>`;
}

// --- inside a run ------------------------------------------------------------------------
async function loadRuns() {
  let r;
  try { r = await api("api/runs"); } catch (e) { $("run-info").textContent = e.message; return; }
  S.runs = r.runs || [];
  const sel = $("run-select");
  sel.innerHTML = S.runs.length ? S.runs.map((x) => `<option value="${esc(x.id)}">${esc(x.id)} — ${esc(x.model)} on ${esc(x.dataset)} (${fmtPct(x.test_acc)})</option>`).join("") : `<option value="">no runs found</option>`;
  if (!S.runs.length) { $("run-info").textContent = "No runs in the runs folder: train one with `visionzoo train`, then reload."; $("inside-body").hidden = true; return; }
  const want = S.state.run && S.runs.some((x) => x.id === S.state.run) ? S.state.run : S.runs[0].id;
  sel.value = want;
  selectRun(want, false);
}

async function selectRun(id, record = true) {
  if (record) { S.state.run = id; writeHash(); }
  const r = S.runs.find((x) => x.id === id);
  if (!r) return;
  $("run-info").textContent = `${r.model} · ${r.dataset} · ${r.epochs} epochs · test accuracy ${fmtPct(r.test_acc)} · ${r.class_names.length} classes`;
  $("inside-result").innerHTML = "";
  $("inside-status").textContent = STATIC ? "This is a static export: live inference needs `visionzoo explore`." : "";
  document.querySelectorAll("#inside-body .inputs").forEach((e) => { e.hidden = STATIC; });
  loadCurves("run-curves", [r]);
}

let lastInput = null;  // the last image sent, for "invert and predict again"
async function predictBlob(blob, label) {
  const id = $("run-select").value;
  if (!id || STATIC) return;
  lastInput = { blob, label };
  const fd = new FormData();
  fd.append("file", blob, label);
  $("inside-status").textContent = `running ${id} on ${label}…`;
  $("inside-result").innerHTML = "";
  let r, j;
  try {
    r = await fetch(`api/runs/${encodeURIComponent(id)}/predict`, { method: "POST", body: fd });
    j = await r.json();
  } catch (e) { $("inside-status").innerHTML = `<span class="error">${esc(e.message)}</span>`; return; }
  if (r.status === 422 && /blank/.test(j.error || "")) { $("inside-status").innerHTML = `<span class="note">Nothing to classify: ${esc(j.error)}.</span>`; return; }
  if (!r.ok || j.error) { $("inside-status").innerHTML = `<span class="error">${esc(j.error || r.statusText)}</span>`; return; }
  $("inside-status").textContent = `${label}: input ${j.input_shape.join("×")}`;
  const warn = (j.warnings || []).map((w) => `<div class="warning" data-kind="${esc(w.kind)}">⚠ ${esc(w.message)} ${w.kind === "polarity" ? `<button class="invert">invert and predict again</button>` : ""}</div>`).join("");
  const scale = `<div class="scale"><span>low</span><i style="background:linear-gradient(to right, ${(j.colour_scale?.stops || []).join(", ")})"></i><span>high</span></div>`;
  const preds = j.predictions.map((p) => `<div class="pred"><span>${esc(p.label)}</span><div><div class="bar" style="width:${(100 * p.prob).toFixed(1)}%"></div></div><span>${(100 * p.prob).toFixed(1)} %</span></div>`).join("");
  const ex = j.explain ? `<div><h3>${j.explain.kind === "attention" ? "Attention map" : "Grad-CAM"}</h3><img src="${j.explain.png}" alt="${esc(j.explain.kind)}">${scale}<div class="muted">${esc(j.explain.stage)} · for “${esc(j.explain.target)}”</div></div>` : `<div><h3>Grad-CAM</h3><p class="muted">not available for this model</p></div>`;
  const stages = j.stages.map((s) => `<div class="stage"><img src="${s.png}" alt="${esc(s.name)}"><div>${esc(s.name)} · ${esc(s.shape.join("×"))} · stride ${esc(s.stride)} · ${s.channels_shown.length} most active channels</div></div>`).join("");
  $("inside-result").innerHTML = `${warn}<div class="result">
    <div><h3>What the model sees</h3><img src="${j.input_png}" alt="input"></div>
    <div class="predictions"><h3>Top-5 predictions</h3>${preds}</div>${ex}</div>
    <h3>Feature maps, stage by stage</h3>${scale.replace('"scale"', '"scale wide"')}<div class="stages">${stages}</div>`;
  const inv = document.querySelector("#inside-result button.invert");
  if (inv) inv.onclick = () => invertAndPredict();
}

async function invertAndPredict() {
  if (!lastInput) return;
  const bitmap = await createImageBitmap(lastInput.blob);
  const cv = document.createElement("canvas");
  cv.width = bitmap.width; cv.height = bitmap.height;
  const ctx = cv.getContext("2d");
  ctx.drawImage(bitmap, 0, 0);
  const img = ctx.getImageData(0, 0, cv.width, cv.height);
  for (let i = 0; i < img.data.length; i += 4) for (let c = 0; c < 3; c++) img.data[i + c] = 255 - img.data[i + c];
  ctx.putImageData(img, 0, 0);
  const name = lastInput.label.replace(/^(inverted )?/, "inverted ");
  cv.toBlob((b) => predictBlob(b, name), "image/png");
}

function setupCanvas() {
  const cv = $("draw"), ctx = cv.getContext("2d");
  const clear = () => { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, cv.width, cv.height); };
  clear();
  let drawing = false, last = null;
  const at = (e) => { const b = cv.getBoundingClientRect(); return [(e.clientX - b.left) * cv.width / b.width, (e.clientY - b.top) * cv.height / b.height]; };
  cv.addEventListener("pointerdown", (e) => { drawing = true; last = at(e); cv.setPointerCapture(e.pointerId); });
  cv.addEventListener("pointermove", (e) => {
    if (!drawing) return;
    const p = at(e);
    ctx.strokeStyle = "#fff"; ctx.lineWidth = 16; ctx.lineCap = "round";
    ctx.beginPath(); ctx.moveTo(...last); ctx.lineTo(...p); ctx.stroke(); last = p;
  });
  const stop = () => { drawing = false; };
  cv.addEventListener("pointerup", stop); cv.addEventListener("pointerleave", stop);
  $("draw-clear").onclick = clear;
  $("draw-predict").onclick = () => cv.toBlob((b) => predictBlob(b, "drawing.png"), "image/png");
  // The value is cleared after each upload, so choosing the same file again runs it again.
  $("upload").onchange = (e) => { const f = e.target.files[0]; if (f) predictBlob(f, f.name); e.target.value = ""; };
}

// --- wiring ------------------------------------------------------------------------------
function fillSelects() {
  const opts = S.models.map((m) => `<option value="${esc(m.name)}">${esc(m.name)} (${esc(m.family)} ${m.year})</option>`).join("");
  $("model-select").innerHTML = `<option value="">—</option>` + opts;
  $("cmp-a").innerHTML = `<option value="">—</option>` + opts;
  $("cmp-b").innerHTML = `<option value="">—</option>` + opts;
  $("metric").innerHTML = Object.entries(METRICS).map(([k, m]) => `<option value="${k}">${esc(m.label)}</option>`).join("");
}

function applyHash() {
  const h = readHash();
  S.state.metric = METRICS[h.metric] ? h.metric : "params";
  $("metric").value = S.state.metric;
  S.state.compare = h.compare; S.state.run = h.run;
  drawBars(); drawScatter();
  if (h.model && S.byName[h.model] && h.model !== S.state.model) openCard(h.model, false);
  if (h.compare.length && ($("cmp-a").value !== (h.compare[0] || "") || $("cmp-b").value !== (h.compare[1] || ""))) setCompare(h.compare[0], h.compare[1]);
  if (h.run && $("run-select").value !== h.run && S.runs.some((x) => x.id === h.run)) { $("run-select").value = h.run; selectRun(h.run, false); }
}

// --- pretrained gallery --------------------------------------------------------------------
function galleryHowTo(g) {
  const h = g.how_to || {};
  const missing = (g.missing || []).slice(0, 8).map((m) => `<li><code>${esc(m.model)}</code>: <code>${esc(m.file)}</code></li>`).join("");
  return `<details class="howto"><summary>How to get more models</summary><p>${esc(h.text)}</p>
    <p>Online: <code>${esc(h.command)}</code></p><p>Offline: put the file in <code>${esc(h.folder)}</code></p>
    ${missing ? `<ul>${missing}${(g.missing || []).length > 8 ? `<li>… and ${g.missing.length - 8} more</li>` : ""}</ul>` : ""}</details>`;
}

async function loadGallery() {
  if (STATIC) { $("gallery-info").textContent = "This is a static export: the gallery needs `visionzoo explore`."; $("gallery-upload").hidden = true; return; }
  let g;
  try { g = await api("api/gallery"); } catch (e) { $("gallery-info").textContent = `Could not list the cached weights: ${e.message}`; return; }
  const names = g.models.map((m) => `${esc(m.model)} (${esc(m.year)})`).join(", ");
  $("gallery-info").innerHTML = (g.models.length ? `<p>Cached: ${names}</p>` : "<p>No ImageNet weights are cached yet.</p>") + galleryHowTo(g);
  $("gallery-upload").disabled = !g.models.length;
}

async function galleryPredict(file) {
  if (!file) return;
  $("gallery-status").textContent = "Running every cached model…";
  $("gallery-grid").innerHTML = "";
  const fd = new FormData(); fd.append("file", file);
  let j;
  try {
    const r = await fetch("api/gallery/predict", { method: "POST", body: fd });
    j = await r.json().catch(() => ({ error: `${r.status} ${r.statusText}` }));
    if (!r.ok || j.error) throw new Error(j.error || r.statusText);
  } catch (e) { $("gallery-status").textContent = `Could not run the gallery: ${e.message}`; return; }
  $("gallery-status").textContent = j.results.length ? "Latency: one forward pass of this image on the server's CPU, weights already loaded (load time shown apart)." : "No cached weights to run.";
  $("gallery-grid").innerHTML = j.results.map((row) => `<div class="gcard"><h3>${esc(row.model)} <small>${esc(row.family)} · ${esc(row.year)}</small></h3>` +
    (row.error ? `<p class="note">${esc(row.error)}</p>` :
      `<ol>${row.top.map((t) => `<li><b>${(t.p * 100).toFixed(1)}%</b><span>${esc(t.name)}</span></li>`).join("")}</ol>` +
      `<p class="muted">${row.latency_ms.toFixed(1)} ms · ${esc(row.input)} px · load ${row.load_ms.toFixed(0)} ms</p>`) + "</div>").join("");
}

async function main() {
  $("mode").textContent = STATIC ? "static export (no live inference)" : "live server";
  let data;
  try { data = await api("api/models"); } catch (e) { $("banner").hidden = false; $("banner").textContent = `Could not load the models: ${e.message}`; return; }
  S.models = data.models; S.families = data.families; S.lab = data.lab || []; S.reportedMissing = data.reported_missing;
  for (const m of S.models) S.byName[m.name] = m;
  S.familyOrder = [...new Set(S.models.map((m) => m.family))];  // models come in year order
  fillSelects();
  Plotly.newPlot("chart-bars", [], {}, plotConfig());
  Plotly.newPlot("chart-scatter", [], {}, plotConfig());
  drawTimeline();
  ["chart-bars", "chart-scatter", "chart-timeline"].forEach(hookClicks);
  $("metric").onchange = () => { S.state.metric = $("metric").value; writeHash(); drawBars(); };
  $("logscale").onchange = drawBars;
  $("scatter-x").onchange = drawScatter; $("scatter-y").onchange = drawScatter;
  $("model-select").onchange = (e) => openCard(e.target.value, true);
  $("cmp-a").onchange = $("cmp-b").onchange = () => setCompare($("cmp-a").value, $("cmp-b").value);
  $("run-select").onchange = (e) => selectRun(e.target.value);
  document.addEventListener("click", (e) => {
    const go = e.target.closest("[data-go]"), run = e.target.closest("[data-run]");
    if (go) { e.preventDefault(); const t = $(go.dataset.go); if (!t.hidden) t.scrollIntoView({ block: "start" }); }
    if (run) { e.preventDefault(); $("run-select").value = run.dataset.run; selectRun(run.dataset.run); $("inside").scrollIntoView({ block: "start" }); }
  });
  setupCanvas();
  $("gallery-upload").onchange = (e) => { galleryPredict(e.target.files[0]); e.target.value = ""; };
  loadGallery();
  await loadRuns();
  applyHash();
  window.addEventListener("hashchange", applyHash);
  document.body.dataset.ready = "1";
}
main();
