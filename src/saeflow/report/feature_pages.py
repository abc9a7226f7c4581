"""Feature pages: one self-contained HTML file per (preset, dataset, layer, dictionary), and an index per run.

A page holds its data as one JSON block and renders it with inline JavaScript (no network, no CDN, nothing
fetched): a sortable table of the latents shown (firing density, maximum and mean activation, mean H_pos,
autocorrelation length, auto-interp scores where computed) whose rows link to a card per latent (`#latent-<id>`):
the explanation and scores, an activation histogram, the most promoted and suppressed output tokens (decoder row
through the unembedding, saeflow.evals.decoder), the nearest latents by decoder cosine, the top contexts with each
token tinted by the latent's activation and, where H_pos was computed, the context ending at the peak tinted by
the influence J_a(t') of each position on the latent (seed 001's case-study pages).

Which latents a page shows: those an analysis chose (H_pos, auto-interp) plus a seeded sample of `n_sample` other
live latents, so that a page of a large dictionary stays small (about 10 kB per latent shown).
"""

from __future__ import annotations

import html
import json
import math

import numpy as np
import pandas as pd


def select_latents(stats: pd.DataFrame, analysed: dict[str, list[int]], n_sample: int, seed: int = 0) -> dict[int, list[str]]:
    """{latent: why it is shown} for the live latents (n_fired > 0) an analysis chose (``analysed``: reason ->
    latents) and `n_sample` other live latents drawn without replacement (numpy ``default_rng(seed)``)."""
    live = set(stats.loc[stats["n_fired"] > 0, "feature_id"].astype(int))
    why: dict[int, list[str]] = {}
    for reason, lat in analysed.items():
        for a in lat:
            if int(a) in live:
                why.setdefault(int(a), []).append(reason)
    rest = np.array(sorted(live - set(why)), dtype=np.int64)
    pick = np.random.default_rng(seed).choice(rest, min(n_sample, rest.size), replace=False) if rest.size else rest
    for a in sorted(pick.tolist()):
        why[int(a)] = ["sample"]
    return dict(sorted(why.items()))


def _r(x, digits: int = 4):
    """A float rounded to `digits` significant digits for the page (None for NaN / missing)."""
    if x is None:
        return None
    x = float(x)
    if not math.isfinite(x):
        return None
    return float(f"{x:.{digits}g}")


def _rl(xs, digits: int = 3) -> list:
    return [_r(x, digits) for x in np.asarray(xs, dtype=np.float64).tolist()]


def latent_records(shown: dict[int, list[str]], stats: pd.DataFrame, events: pd.DataFrame, outputs: dict[int, dict],
                   neighbours: dict[int, list], h_pos: pd.DataFrame | None = None, influences: dict | None = None,
                   autocorr: pd.DataFrame | None = None, explanations: pd.DataFrame | None = None,
                   scores: pd.DataFrame | None = None, max_contexts: int | None = None) -> list[dict]:
    """The page's record of every latent shown (JSON-serialisable; floats rounded for size).

    stats: latent_stats rows; events: top_contexts rows (token_strs, acts, peak_index per event); outputs:
    {latent: {"promoted", "suppressed"}} (saeflow.evals.decoder.top_tokens); neighbours: {latent: [[id, cos]]};
    h_pos: H_pos rows at one context length with their row index into ``influences`` (the npz: str(row) -> J);
    autocorr: feature_id, autocorr_length; explanations: method, feature_id, explanation; scores: method, task,
    feature_id, accuracy (each latent's own explanation)."""
    st = stats.set_index("feature_id")
    ev = {a: g.sort_values("event_idx") for a, g in events.groupby("feature_id")}
    hp = {a: g for a, g in h_pos.groupby("feature_id")} if h_pos is not None and len(h_pos) else {}
    ac = autocorr.set_index("feature_id")["autocorr_length"] if autocorr is not None and len(autocorr) else None
    out = []
    for a, why in shown.items():
        s = st.loc[a]
        rec = {"id": int(a), "why": why, "n_fired": int(s["n_fired"]), "density": _r(s["density"]),
               "max_act": _r(s["max_activation"]), "mean_act": _r(s["mean_activation"]),
               "hist": [int(c) for c in s["hist"]] if "hist" in s.index else [],
               "promoted": [[t, _r(v, 3)] for t, v in outputs[a]["promoted"]],
               "suppressed": [[t, _r(v, 3)] for t, v in outputs[a]["suppressed"]],
               "neighbours": [[int(b), _r(c, 3)] for b, c in neighbours.get(a, [])],
               "contexts": [], "influence": [], "h_pos": None, "autocorr_len": None, "scores": {}, "explanations": {}}
        # a live latent may have no event: top_contexts keeps events where the longest H_pos context fits
        for e in ev.get(a, events.iloc[:0]).head(max_contexts).itertuples(index=False):
            rec["contexts"].append({"window": int(e.window_idx), "act": _r(e.activation), "peak": int(e.peak_index),
                                    "tokens": list(e.token_strs), "acts": _rl(e.acts)})
        if a in hp:
            g = hp[a]
            ok = g[g["status"] == "ok"]
            rec["h_pos"] = _r(ok["H_pos"].mean()) if len(ok) else None
            for row, e in zip(ok.index, ok.itertuples(index=False)):
                J = np.asarray(influences[str(row)], dtype=np.float64) if influences is not None else None
                if J is None:
                    continue
                rec["influence"].append({"window": int(e.window_idx), "ctx_len": int(e.ctx_len), "H_pos": _r(e.H_pos),
                                         "tokens": ["<BOS>", *e.token_strs], "J": _rl(J / max(J.sum(), 1e-30)),
                                         "acts": [None, *_rl(e.acts)]})
                if max_contexts is not None and len(rec["influence"]) >= max_contexts:
                    break
        if ac is not None and a in ac.index:
            rec["autocorr_len"] = _r(ac.loc[a])
        if explanations is not None:
            for r in explanations[explanations["feature_id"] == a].itertuples(index=False):
                rec["explanations"][r.method] = r.explanation
        if scores is not None:
            for r in scores[scores["feature_id"] == a].itertuples(index=False):
                rec["scores"].setdefault(r.method, {})[r.task] = _r(r.accuracy, 3)
        out.append(rec)
    return out


def _json_for_script(obj) -> str:
    """JSON safe inside <script type="application/json"> ("</" would end the element)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")


STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1b1f24;background:#fafafa}
header{padding:14px 22px;background:#24292f;color:#fff}header h1{font-size:18px;margin:0 0 4px}
header .meta{color:#c9d1d9;font-size:12.5px}header a{color:#9ecbff}
main{display:flex;gap:18px;padding:16px 22px;align-items:flex-start}
#left{flex:0 0 auto;max-width:52%;overflow:auto;max-height:calc(100vh - 110px)}
#card{flex:1 1 auto;min-width:380px;background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:14px 18px}
table{border-collapse:collapse;background:#fff;font-size:12.5px}
th,td{border-bottom:1px solid #e5e8eb;padding:4px 8px;text-align:right;white-space:nowrap}
th{position:sticky;top:0;background:#f0f3f6;cursor:pointer;user-select:none}
th.sorted-asc::after{content:" \\25B2"}th.sorted-desc::after{content:" \\25BC"}
td.text,th.text{text-align:left;max-width:260px;overflow:hidden;text-overflow:ellipsis}
#pages td:nth-child(-n+3),#pages th:nth-child(-n+3){text-align:left}
tr:hover td{background:#f6f8fa}tr.current td{background:#fff3d6}
.ctx{font:12.5px/1.9 ui-monospace,SFMono-Regular,Menlo,monospace;white-space:pre-wrap;word-break:break-all;
  border-left:3px solid #d0d7de;padding:2px 8px;margin:6px 0}
.tok{border-radius:2px}.tok.peak{outline:1.5px solid #cf222e}
.lbl{color:#57606a;font-size:12px}.pill{display:inline-block;background:#eaeef2;border-radius:10px;padding:0 8px;
  margin:0 4px 4px 0;font-size:12px}.two{display:flex;gap:24px;flex-wrap:wrap}
h2{font-size:16px;margin:0 0 6px}h3{font-size:13px;margin:14px 0 4px;color:#24292f}
.tokens td{text-align:left;font-family:ui-monospace,monospace}.pos{color:#1a7f37}.neg{color:#cf222e}
.expl{background:#f6f8fa;border-radius:6px;padding:6px 10px;margin:6px 0}
"""

SCRIPT = r"""
(function(){
"use strict";
const D = JSON.parse(document.getElementById("page-data").textContent);
const byId = new Map(D.latents.map(l => [l.id, l]));
const el = (tag, attrs, text) => { const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined && text !== null) e.textContent = text; return e; };
const fmt = (x, d) => (x === null || x === undefined) ? "" : (Math.abs(x) >= 1e4 || (x !== 0 && Math.abs(x) < 1e-3))
  ? x.toExponential(2) : (+x).toFixed(d === undefined ? 3 : d);
const show = s => s.replace(/\n/g, "\u21b5").replace(/\t/g, "\u2192");
const cols = [{key: "id", label: "latent", get: l => l.id, fmt: x => String(x)},
  {key: "density", label: "density", get: l => l.density, fmt: x => fmt(x, 4)},
  {key: "max_act", label: "max act", get: l => l.max_act},
  {key: "mean_act", label: "mean act", get: l => l.mean_act}];
if (D.has_h_pos) cols.push({key: "h_pos", label: "mean H_pos (bits)", get: l => l.h_pos});
if (D.has_autocorr) cols.push({key: "autocorr_len", label: "autocorr length", get: l => l.autocorr_len});
for (const m of D.methods) for (const t of ["detection", "fuzzing"])
  cols.push({key: m + ":" + t, label: t + (D.methods.length > 1 ? " (" + m + ")" : ""),
             get: l => (l.scores[m] || {})[t] ?? null});
if (D.methods.length) cols.push({key: "explanation", label: "explanation", text: true,
  get: l => l.explanations[D.methods[0]] || ""});
cols.push({key: "why", label: "shown for", text: true, get: l => l.why.join(", ")});
let sortKey = null, sortDir = 1;
const table = document.getElementById("latents");
function renderTable(){
  const thead = table.tHead || table.createTHead(); thead.textContent = "";
  const hr = thead.insertRow();
  for (const c of cols){ const th = el("th", {"data-key": c.key, class: (c.text ? "text " : "") +
      (sortKey === c.key ? (sortDir > 0 ? "sorted-asc" : "sorted-desc") : "")}, c.label);
    th.addEventListener("click", () => { sortDir = sortKey === c.key ? -sortDir : (c.text ? 1 : -1);
      sortKey = c.key; renderTable(); }); hr.appendChild(th); }
  let rows = D.latents.slice();
  if (sortKey){ const c = cols.find(c => c.key === sortKey);
    rows.sort((a, b) => { const x = c.get(a), y = c.get(b); const nx = x === null || x === "", ny = y === null || y === "";
      if (nx || ny) return nx === ny ? a.id - b.id : (nx ? 1 : -1);
      return (x < y ? -1 : x > y ? 1 : a.id - b.id) * sortDir; }); }
  const tb = table.tBodies[0] || table.createTBody(); tb.textContent = "";
  for (const l of rows){ const tr = tb.insertRow(); tr.id = "row-" + l.id; tr.dataset.id = l.id;
    for (const c of cols){ const td = tr.insertCell(); const v = c.get(l);
      if (c.key === "id"){ td.appendChild(el("a", {href: "#latent-" + l.id}, String(l.id))); }
      else { td.textContent = c.text ? v : (c.fmt || fmt)(v); if (c.text){ td.className = "text"; td.title = v; } } } }
  markCurrent();
}
function tint(span, value, max, rgb){ const a = max > 0 && value !== null ? Math.min(1, Math.max(0, value / max)) : 0;
  span.style.backgroundColor = "rgba(" + rgb + "," + a.toFixed(3) + ")"; }
function contextLine(tokens, values, max, peak, rgb, titleOf){ const div = el("div", {class: "ctx"});
  tokens.forEach((t, i) => { const s = el("span", {class: "tok" + (i === peak ? " peak" : "")}, show(t));
    tint(s, values[i], max, rgb); s.title = titleOf(i); div.appendChild(s); }); return div; }
function histogram(l){ const w = 320, h = 90, n = l.hist.length; const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("width", w); svg.setAttribute("height", h + 18); svg.setAttribute("class", "hist");
  const m = Math.max(1, ...l.hist);
  l.hist.forEach((c, i) => { const r = document.createElementNS(svg.namespaceURI, "rect");
    const bh = c > 0 ? Math.max(1, h * Math.log1p(c) / Math.log1p(m)) : 0;
    r.setAttribute("x", (i * w / n).toFixed(1)); r.setAttribute("y", (h - bh).toFixed(1));
    r.setAttribute("width", (w / n - 1).toFixed(1)); r.setAttribute("height", bh.toFixed(1)); r.setAttribute("fill", "#e36209");
    const tt = document.createElementNS(svg.namespaceURI, "title");
    tt.textContent = fmt(i * l.max_act / n) + "-" + fmt((i + 1) * l.max_act / n) + ": " + c + " tokens"; r.appendChild(tt);
    svg.appendChild(r); });
  for (const [x, t, anchor] of [[0, "0", "start"], [w, fmt(l.max_act), "end"]]){ const tx = document.createElementNS(svg.namespaceURI, "text");
    tx.setAttribute("x", x); tx.setAttribute("y", h + 14); tx.setAttribute("font-size", "11"); tx.setAttribute("text-anchor", anchor);
    tx.textContent = t; svg.appendChild(tx); }
  return svg; }
function tokenTable(title, rows, cls){ const d = el("div"); d.appendChild(el("h3", {}, title));
  const t = el("table", {class: "tokens"}); for (const [tok, v] of rows){ const tr = t.insertRow();
    tr.insertCell().textContent = JSON.stringify(tok); const td = tr.insertCell(); td.textContent = fmt(v); td.className = cls; }
  d.appendChild(t); return d; }
function markCurrent(){ const m = /^#latent-(\d+)$/.exec(location.hash); document.querySelectorAll("tr.current")
  .forEach(r => r.classList.remove("current")); if (m){ const r = document.getElementById("row-" + m[1]);
  if (r) r.classList.add("current"); } }
function renderCard(){ const card = document.getElementById("card"); card.textContent = "";
  const m = /^#latent-(\d+)$/.exec(location.hash); const l = m ? byId.get(+m[1]) : null;
  markCurrent();
  if (!l){ card.appendChild(el("p", {class: "lbl"}, "Click a latent in the table to see its card.")); return; }
  card.dataset.latent = l.id;
  card.appendChild(el("h2", {}, "Latent " + l.id + " \u2014 " + D.title));
  const p = el("div"); for (const t of ["density " + fmt(l.density, 4) + " (" + l.n_fired + " tokens)",
    "max act " + fmt(l.max_act), "mean act " + fmt(l.mean_act), l.h_pos !== null ? "mean H_pos " + fmt(l.h_pos) + " bits" : null,
    l.autocorr_len !== null ? "autocorr length " + fmt(l.autocorr_len) : null, "shown for: " + l.why.join(", ")])
    if (t) p.appendChild(el("span", {class: "pill"}, t));
  card.appendChild(p);
  for (const mth of D.methods.filter(m => m in l.explanations)){ const e = el("div", {class: "expl"}); e.appendChild(el("b", {}, mth + ": "));
    e.appendChild(document.createTextNode(l.explanations[mth]));
    const s = l.scores[mth] || {}; e.appendChild(el("div", {class: "lbl"},
      "detection " + (s.detection ?? "-") + ", fuzzing " + (s.fuzzing ?? "-") + " (accuracy on balanced items; chance 0.5)"));
    card.appendChild(e); }
  const two = el("div", {class: "two"}); const hd = el("div"); hd.appendChild(el("h3", {}, "Activation histogram (tokens where it fires, log counts)"));
  hd.appendChild(histogram(l)); two.appendChild(hd);
  two.appendChild(tokenTable("Promoted tokens (logit weight)", l.promoted, "pos"));
  two.appendChild(tokenTable("Suppressed tokens", l.suppressed, "neg"));
  const nb = el("div"); nb.appendChild(el("h3", {}, "Nearest latents (decoder cosine)")); const nt = el("table", {class: "tokens"});
  for (const [b, c] of l.neighbours){ const tr = nt.insertRow(); const td = tr.insertCell();
    if (byId.has(b)) td.appendChild(el("a", {href: "#latent-" + b}, String(b))); else td.textContent = String(b);
    tr.insertCell().textContent = fmt(c); } nb.appendChild(nt); two.appendChild(nb); card.appendChild(two);
  card.appendChild(el("h3", {}, "Top contexts (tinted by activation; the peak token outlined)"));
  for (const c of l.contexts){ card.appendChild(el("div", {class: "lbl"}, "window " + c.window + ", peak activation " + fmt(c.act)));
    card.appendChild(contextLine(c.tokens, c.acts, l.max_act, c.peak, "255,140,0", i => c.tokens[i] + "  act " + fmt(c.acts[i]))); }
  if (!l.contexts.length) card.appendChild(el("p", {class: "lbl"}, "no top contexts recorded"));
  if (l.influence.length){ card.appendChild(el("h3", {}, "Influence J of each position on the latent at the peak (share of J, blue), context of " + l.influence[0].ctx_len + " tokens"));
    for (const c of l.influence){ const mx = Math.max(...c.J.map(v => v || 0));
      card.appendChild(el("div", {class: "lbl"}, "window " + c.window + ", H_pos " + fmt(c.H_pos) + " bits"));
      card.appendChild(contextLine(c.tokens, c.J, mx, c.tokens.length - 1, "9,105,218", i => c.tokens[i] + "  J share " + fmt(c.J[i]))); } }
}
window.addEventListener("hashchange", renderCard);
renderTable(); renderCard();
document.body.dataset.ready = "1";
})();
"""


def page(meta: dict, records: list[dict]) -> str:
    """The feature page: meta {title, subtitle lines, index link, methods, has_h_pos, has_autocorr} and the
    latent records (``latent_records``) as one self-contained HTML document."""
    data = {"title": meta["title"], "methods": meta.get("methods", []), "has_h_pos": bool(meta.get("has_h_pos")),
            "has_autocorr": bool(meta.get("has_autocorr")), "latents": records}
    sub = "".join(f"<div class='meta'>{html.escape(s)}</div>" for s in meta.get("subtitle", []))
    back = f"<div class='meta'><a href='{html.escape(meta['index'])}'>all layers and dictionaries</a></div>" \
        if meta.get("index") else ""
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(meta['title'])}</title><style>{STYLE}</style></head><body>"
            f"<header><h1>{html.escape(meta['title'])}</h1>{sub}{back}</header>"
            "<main><div id='left'><table id='latents'><thead></thead><tbody></tbody></table></div>"
            "<section id='card'></section></main>"
            f"<script type='application/json' id='page-data'>{_json_for_script(data)}</script>"
            f"<script>{SCRIPT}</script></body></html>\n")


def index_page(title: str, subtitle: list[str], rows: list[dict]) -> str:
    """The run's index: one row per page (dictionary, layer, site, latents shown / live / d_sae, median density,
    mean H_pos, auto-interp accuracies) linking to it (``href`` relative to the index)."""
    cols = [("dictionary", "dictionary"), ("layer", "layer"), ("site", "site"), ("shown", "latents shown"),
            ("live", "live"), ("d_sae", "d_sae"), ("median_density", "median density"),
            ("mean_h_pos", "mean H_pos (bits)"), ("detection", "detection"), ("fuzzing", "fuzzing")]

    def cell(v):
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            return ""
        return f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))

    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in cols)
    body = "".join("<tr>" + "".join(
        f"<td><a href='{html.escape(r['href'])}'>{cell(r[k])}</a></td>" if k == "dictionary" else f"<td>{cell(r.get(k))}</td>"
        for k, _ in cols) + "</tr>" for r in rows)
    sub = "".join(f"<div class='meta'>{html.escape(s)}</div>" for s in subtitle)
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
            f"<header><h1>{html.escape(title)}</h1>{sub}</header><main><div>"
            f"<table id='pages'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
            "<p class='lbl'>Detection and fuzzing: mean auto-interp accuracy over the latents explained (balanced items; "
            "chance 0.5), the first method of the page.</p></div></main></body></html>\n")
