"""Feature pages (saeflow.report.feature_pages) in a real browser: headless Chromium (tests/browser.py) opens a
page built from planted tables and checks what a reader sees: one table row per latent shown, sorting by a
column both ways, a card per latent with its contexts tinted by activation (the peak fully, a silent token not at
all) and by influence, token text shown as text (never as markup), no console errors and no request outside
the file itself. The pages the workflow writes are opened the same way in tests/test_workflow.py."""
import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from browser import BrowserUnavailable, ensure_chromium, open_page

from saeflow.report import feature_pages as fp

EVIL = "</script><script>window.__pwned = 1</script>"


def planted():
    n = 12
    g = np.random.default_rng(0)
    stats = pd.DataFrame({"feature_id": np.arange(n), "n_fired": [5 + 3 * a for a in range(n - 1)] + [0],
                          "density": [(5 + 3 * a) / 1000 for a in range(n - 1)] + [0.0],
                          "max_activation": np.linspace(1, 4, n), "mean_activation": np.linspace(0.5, 2, n),
                          "hist": [g.integers(0, 9, 6) for _ in range(n)]})
    ev = []
    for a in range(n - 2):   # latent 10 fires but has no event (as one that fires only early in windows)
        for e in range(2):
            toks = ["The", " cat", " sat", "\n", " on", " mat"] if a else ["<b>bold</b>", EVIL, " x", " y", " z", " w"]
            acts = np.zeros(6, np.float32)
            acts[2 + e] = stats.max_activation[a] * (1 - 0.3 * e)
            acts[1] = 0.3
            ev.append({"feature_id": a, "event_idx": e, "window_idx": 10 * a + e, "activation": float(acts.max()),
                       "peak_index": 2 + e, "token_strs": toks, "acts": acts})
    h = pd.DataFrame([{"feature_id": a, "window_idx": 10 * a, "status": "ok", "H_pos": 1.5 + a, "ctx_len": 4,
                       "token_strs": [" cat", " sat", " on"], "acts": np.array([0.1, 0.0, 1.0], np.float32)}
                      for a in (0, 1)])
    infl = {"0": np.array([0.1, 0.2, 0.3, 4.0], np.float32), "1": np.array([1.0, 0.0, 0.0, 1.0], np.float32)}
    auto = pd.DataFrame({"feature_id": [0, 1, 5], "autocorr_length": [1.5, 2.5, 0.7]})
    expl = pd.DataFrame({"method": "token", "feature_id": [2, 3], "explanation": ['Fires on the tokens " sat".'] * 2})
    scores = pd.DataFrame({"method": "token", "task": ["detection", "fuzzing"] * 2, "feature_id": [2, 2, 3, 3],
                           "accuracy": [0.9, 0.8, 0.6, 0.55]})
    return stats, pd.DataFrame(ev), h, infl, auto, expl, scores


def test_select_latents_keeps_the_analysed_live_ones_and_samples_the_rest():
    stats = planted()[0]
    shown = fp.select_latents(stats, {"H_pos": [0, 1], "auto-interp": [2, 3, 11]}, 4, seed=0)
    assert {0: ["H_pos"], 1: ["H_pos"], 2: ["auto-interp"], 3: ["auto-interp"]}.items() <= shown.items()
    assert 11 not in shown                                  # dead: nothing to show
    sampled = [a for a, why in shown.items() if why == ["sample"]]
    assert len(sampled) == 4 and set(sampled) <= set(range(4, 11))
    assert shown == fp.select_latents(stats, {"H_pos": [0, 1], "auto-interp": [2, 3, 11]}, 4, seed=0)
    assert len(fp.select_latents(stats, {}, 100)) == 11     # fewer live latents than asked: all of them


def build(tmp_path, n_sample=5):
    stats, events, h, infl, auto, expl, scores = planted()
    shown = fp.select_latents(stats, {"H_pos": [0, 1], "auto-interp": [2, 3]}, n_sample, seed=0)
    outputs = {a: {"promoted": [[" mat", 1.25], ["!", 0.5]], "suppressed": [["<i>", -0.75]]} for a in shown}
    neighbours = {a: [[(a + 1) % 11, 0.9], [11, 0.2]] for a in shown}
    records = fp.latent_records(shown, stats, events, outputs, neighbours, h, infl, auto, expl, scores)
    meta = {"title": "planted / test: topk, layer 0", "subtitle": ["a planted page"], "index": "../index.html",
            "methods": ["token"], "has_h_pos": True, "has_autocorr": True}
    path = tmp_path / "features.html"
    path.write_text(fp.page(meta, records), encoding="utf-8")
    return path, records


def test_records_carry_what_the_card_shows(tmp_path):
    _, records = build(tmp_path)
    r0 = next(r for r in records if r["id"] == 0)
    assert r0["h_pos"] == 1.5 and r0["autocorr_len"] == 1.5 and len(r0["contexts"]) == 2
    assert r0["influence"][0]["tokens"][0] == "<BOS>" and sum(r0["influence"][0]["J"]) == pytest.approx(1, abs=1e-3)
    r2 = next(r for r in records if r["id"] == 2)
    assert r2["scores"] == {"token": {"detection": 0.9, "fuzzing": 0.8}} and r2["h_pos"] is None
    assert json.dumps(records)   # serialisable, no NaN leaks as a bare token
    assert "NaN" not in json.dumps(records)
    stats, events = planted()[:2]
    (r10,) = fp.latent_records({10: ["sample"]}, stats, events, {10: {"promoted": [], "suppressed": []}}, {})
    assert r10["contexts"] == [] and r10["n_fired"] == 35


@pytest.fixture(scope="module")
def chromium():
    try:
        took = ensure_chromium()
    except BrowserUnavailable as e:
        pytest.skip(str(e))
    print(f"chromium ready ({took:.0f} s to install)")


def test_page_in_a_real_browser(chromium, tmp_path):
    path, records = build(tmp_path)
    with open_page(path.as_uri()) as (page, log):
        rows = page.locator("#latents tbody tr")
        assert rows.count() == len(records)
        # sorting by density: descending first (a number), then ascending
        page.click("th[data-key='density']")
        dens = [float(t) for t in page.locator("#latents tbody tr td:nth-child(2)").all_inner_texts()]
        assert dens == sorted(dens, reverse=True) and len(dens) == len(records)
        page.click("th[data-key='density']")
        dens = [float(t) for t in page.locator("#latents tbody tr td:nth-child(2)").all_inner_texts()]
        assert dens == sorted(dens)
        # mean H_pos descending; latents without one last
        page.click("th[data-key='h_pos']")
        hp = page.locator("#latents tbody tr td:nth-child(5)").all_inner_texts()
        assert hp[:2] == ["2.500", "1.500"] and all(v == "" for v in hp[2:])
        # the card of latent 0 through its row's link
        page.click("#row-0 a")
        page.wait_for_selector("#card[data-latent='0']")
        assert page.locator("#row-0").get_attribute("class") == "current"
        ctx = page.locator("#card .ctx").first
        spans = ctx.locator("span.tok")
        assert spans.count() == 6
        assert spans.nth(1).inner_text() == EVIL                      # token text, never markup
        assert page.evaluate("window.__pwned === undefined")
        assert spans.nth(0).inner_text() == "<b>bold</b>" and page.locator("#card b", has_text="bold").count() == 0
        bg = [spans.nth(i).evaluate("e => getComputedStyle(e).backgroundColor") for i in range(6)]
        assert bg[2] == "rgb(255, 140, 0)"                            # the peak at the latent's maximum: full tint
        assert bg[0] == "rgba(255, 140, 0, 0)"                        # a silent token: none
        assert re.fullmatch(r"rgba\(255, 140, 0, 0\.\d+\)", bg[1])    # a weak one: partial
        assert "peak" in spans.nth(2).get_attribute("class")
        infl = page.locator("#card .ctx").nth(2).locator("span.tok")  # after the two top contexts: the J context
        assert infl.count() == 4 and infl.nth(0).inner_text() == "<BOS>"
        assert infl.nth(3).evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(9, 105, 218)"
        assert page.locator("#card svg.hist rect").count() == 6
        # an explained latent shows its explanation and scores; a neighbour link moves to its card
        page.goto(path.as_uri() + "#latent-2")
        page.wait_for_selector("#card[data-latent='2']")
        assert "Fires on the tokens" in page.locator("#card .expl").inner_text()
        assert "detection 0.9" in page.locator("#card .expl").inner_text()
        page.click("#card a[href='#latent-3']")
        page.wait_for_selector("#card[data-latent='3']")
        page.screenshot(path=str(tmp_path / "features.png"))
        assert log.problems() == [], log.problems()
        assert {u.split("#")[0] for u in log.requests} == {path.as_uri()}   # nothing fetched: self-contained
    assert (tmp_path / "features.png").stat().st_size > 20_000


def test_index_page_links_every_page(chromium, tmp_path):
    rows = [{"dictionary": d, "layer": L, "site": "resid_post", "kind": "sparsify-topk", "d_sae": 128, "live": 120,
             "shown": 40, "median_density": 0.05, "mean_h_pos": 2.0 if d == "topk" else None, "detection": 0.7,
             "fuzzing": 0.6, "method": "token", "href": f"../inspect/{d}_layer{L}/features.html"}
            for d in ("topk", "transcoder") for L in (0, 2)]
    page_path = tmp_path / "inspect_index" / "index.html"
    page_path.parent.mkdir()
    page_path.write_text(fp.index_page("Feature pages: p / d", ["four pages"], rows), encoding="utf-8")
    target = tmp_path / "inspect" / "transcoder_layer2" / "features.html"
    target.parent.mkdir(parents=True)
    shutil.copy(build(tmp_path)[0], target)
    with open_page(page_path.as_uri()) as (page, log):
        assert page.locator("#pages tbody tr").count() == 4
        page.click("text=transcoder >> nth=1")
        page.wait_for_selector("body[data-ready='1']")
        assert page.url == target.as_uri()
        assert log.problems() == []
