"""Rule steer: pick a latent for a contrast, add its direction over an alpha sweep, and score the generations
against the diff-of-means, random-vector and random-latent directions (saeflow.evals.steering; README
"Steering").

Contrast: synthetic datasets, the planted topic `steer.target` (positive) vs the other topics, and the
concept success of a generation is the planted rule "its continuation holds a word of the target topic";
other datasets, `steer.labels` [positive, negative] (default: the two most frequent document labels of the
train windows, as probing; a mixture's labels are its parts), and success is
a logistic-regression probe, trained on clean pooled site activations of the train windows, calling the
continuation positive. With `steer.chat_template` every prompt is a user turn of the tokenizer's chat
template and the model continues as the assistant (steering.chat_wrap).
"""
import json

import numpy as np
import pandas as pd
import torch
from safetensors.numpy import load_file

from saeflow import tensors
from saeflow.data import activations
from saeflow.evals import ablation, locality, probe, steering
from saeflow.evals.bootstrap import bootstrap_ci
from saeflow.models import lm
from saeflow.workflow import jobs, store

node, inputs, out = jobs.start(snakemake)  # noqa: F821
p = node["params"]
device = jobs.device_of(node)
L = p["layer"]
model = lm.load_model(inputs["lm"] / "model", device)
spec = locality.load_layer_dicts({L: inputs["dict"]}, device)[L]
hook = spec.hook_in
tok = model.tokenizer
win = load_file(str(inputs["windows"] / "windows.safetensors"))
rng = np.random.default_rng(p["seed"])

# The contrast: which windows are positive, and the concept success of a continuation.
meta_path = inputs["corpus"] / "synthetic_meta.json"
if meta_path.is_file():
    meta = store.read_json(meta_path)
    topics = meta["words"]["topic"]
    target = p["target"]
    if not 0 <= target < len(topics):
        raise ValueError(f"steer.target={target} is not a planted topic; allowed values: 0..{len(topics) - 1}")
    pos_label, neg_labels = target, [z for z in range(len(topics)) if z != target]
    target_words = set(topics[target])
    contrast = {"kind": "planted_topic", "positive": f"topic {target}", "negative": "the other topics",
                "success": "the continuation holds a word of the target topic"}
    margin_words = (topics[target], [w for z in neg_labels for w in topics[z]])  # logit margin: target vs others
else:
    if p.get("labels"):
        pos_label, neg = p["labels"]
        present = sorted(set(win["train_label"].tolist()) & set(win["eval_label"].tolist()) - {-1})
        for z in (pos_label, neg):
            if z not in present:
                raise ValueError(f"steer.labels: label {z} is in no train or no eval window of the dataset; allowed "
                                 f"values: {', '.join(map(str, present))}")
        neg_labels = [neg]
    else:
        *_, task = probe.binary_task(win["train_label"], win["eval_label"])
        pos_label, neg_labels = task["positive"], [task["negative"]]
    target_words = None
    mix_path = inputs["corpus"] / "mixture.json"
    part = store.read_json(mix_path)["parts"] if mix_path.is_file() else {}
    name = {z: f"label {z}" + (f" ({part[str(z)]})" if str(z) in part else "") for z in (pos_label, *neg_labels)}
    contrast = {"kind": "labels", "positive": name[pos_label], "negative": name[neg_labels[0]],
                "success": "a probe on clean pooled activations calls the continuation positive"}
    margin_words = None

train_pos = np.isin(win["train_label"], [pos_label])
train_in = train_pos | np.isin(win["train_label"], neg_labels)
idx = np.flatnonzero(train_in)
if p["n_contrast"] is not None:  # <= windows.n_train (config check); fewer only when the two classes hold fewer
    idx = np.sort(rng.choice(idx, min(p["n_contrast"], len(idx)), replace=False))
stats = steering.contrast_stats(model, win["train_tokens"][idx], train_pos[idx], hook, spec.codes)
cands = steering.rank_candidates(stats, p["n_candidates"], p["min_freq"])
if cands.empty:
    raise ValueError(f"no latent of {p['dictionary']} fires on the positive texts at {hook}")
W_dec = spec.module.W_dec.detach()
top = int(cands["latent"][0])
rand_latent = steering.random_latent(stats, cands["latent"], p["seed"] + 1)
d_model = W_dec.shape[1]
directions = {
    "latent": ("latent", top, steering.unit(W_dec[top])),
    "diff_of_means": ("diff_of_means", -1, steering.unit(torch.as_tensor(stats.diff_of_means(), dtype=torch.float32,
                                                                         device=W_dec.device))),
    "random_vector": ("random_vector", -1, steering.random_vector(d_model, p["seed"] + 2, W_dec.device)),
    "random_latent": ("random_latent", rand_latent, steering.unit(W_dec[rand_latent])),
}
rms = stats.rms_norm

# Success of continuations; for a labels contrast, a probe trained on clean pooled activations.
clf = None
if target_words is None:
    from sklearn.linear_model import LogisticRegression

    raw, _ = activations.pooled_features(model, win["train_tokens"][idx], [hook], {}, progress=False)
    clf = LogisticRegression(max_iter=2000).fit(raw[hook], train_pos[idx].astype(int))


def decode(ids) -> str:
    return tok.decode([int(i) for i in ids])


def success_of(prompts, conts) -> np.ndarray:
    if target_words is not None:
        return np.array([any(w in target_words for w in decode(c).split()) for c in conts], dtype=np.float64)
    full = np.concatenate([prompts, conts], 1)
    feats = []
    for _, acts in activations.site_batches(model, full, [hook], skip_bos=False):
        feats.append(tensors.to_numpy(acts[hook][:, prompts.shape[1]:].double().mean(1)))
    return clf.predict(np.concatenate(feats)).astype(np.float64)


def prompts_of(label_set) -> np.ndarray:
    ok = np.flatnonzero(np.isin(win["eval_label"], label_set))
    pick = np.sort(np.random.default_rng(p["seed"]).choice(ok, min(p["n_prompts"], len(ok)), replace=False))
    prompts = win["eval_tokens"][pick, : p["prompt_len"]]
    return steering.chat_wrap(tok, prompts) if p.get("chat_template") else prompts


n_samples = 1 if p["greedy"] else p["n_samples"]
gen_kw = dict(greedy=p["greedy"], temperature=p["temperature"], seed=p["seed"], batch_size=p["batch_size"])


def run(prompts, steer=None):
    rep = np.repeat(prompts, n_samples, axis=0)
    conts = steering.generate(model, rep, p["max_new_tokens"], steer=steer, **gen_kw)
    return rep, conts


# Prompt calibration (ctrl-steer-v2): of the candidate prompt groups, the one whose clean success is
# closest to steer.calibrate_to, so that steering has room to move it.
groups = {"all": [pos_label, *neg_labels], "positive": [pos_label], **{f"label {z}": [z] for z in neg_labels}}
scan, clean = [], {}
for name, labels_ in groups.items():
    prompts = prompts_of(labels_)
    if len(prompts) < 4:
        continue
    rep, conts = clean[name] = run(prompts)
    s = success_of(rep, conts)
    scan.append({"group": name, "n_prompts": len(prompts), "baseline_success": float(s.mean())})
if not scan:
    raise ValueError(f"fewer than 4 eval windows in every prompt group of {contrast}; raise windows.n_eval")
chosen = min(scan, key=lambda r: (abs(r["baseline_success"] - p["calibrate_to"]), r["group"]))
prompts = prompts_of(groups[chosen["group"]])
n_p = len(prompts)
unit_prompt = np.repeat(np.arange(n_p), n_samples)
select = unit_prompt < n_p // 2          # the alpha is chosen on these prompts' units ...
held = ~select                           # ... and the effect estimated on the others

if margin_words is not None:
    a_ids, b_ids = ({tok.encode(" " + w, add_special_tokens=False)[0] for w in ws} for ws in margin_words)
else:  # tokens most over-represented in positive vs negative train windows, and the reverse
    a_ids, b_ids = ablation.answer_tokens(win["train_tokens"][idx], train_pos[idx], model.cfg.d_vocab)

alphas = sorted(set([0.0, *map(float, p["alphas"])]))
per = {}                # (direction, alpha) -> {metric: per-unit values}
generations = []
base = None
for dname, (kind, latent, v) in directions.items():
    for alpha in alphas:
        if alpha == 0 and base is not None:
            per[(dname, alpha)] = base
            continue
        steer = (hook, v, alpha * rms, p["from_pos"]) if alpha != 0 else None
        # alpha = 0 is the chosen group's calibration run (same prompts, same seeds): not generated again
        rep, conts = run(prompts, steer) if alpha != 0 else clean[chosen["group"]]
        texts = [decode(c) for c in conts]
        m = {"success": success_of(rep, conts),
             "perplexity": np.exp(steering.continuation_nll(model, rep, conts, p["batch_size"])),
             "logit_margin": np.repeat(steering.last_token_margin(model, prompts, a_ids, b_ids, p["batch_size"], steer),
                                       n_samples)}
        for metric, fn in (("python_valid", steering.python_valid), ("latex_balanced", steering.latex_balanced),
                           ("latex_first", steering.latex_first)):
            m[metric] = np.array([np.nan if (r := fn(t)) is None else float(r) for t in texts])
        per[(dname, alpha)] = m
        if alpha == 0:
            base = m
        for u, t in enumerate(texts):
            generations.append({"prompt": decode(rep[u]), "direction": dname, "kind": kind, "latent": latent,
                                "alpha": alpha, "seed": p["seed"], "sample": int(u % n_samples), "text": t})

rows = []
for (dname, alpha), m in per.items():
    kind, latent, _ = directions[dname]
    for metric, vals in m.items():
        ok = vals[np.isfinite(vals)]
        if len(ok) == 0:  # not applicable: no generation had a fenced block / LaTeX
            continue
        v, lo, hi = bootstrap_ci(ok, n_resamples=p["n_resamples"], seed=p["seed"])
        rows.append({"direction": dname, "kind": kind, "latent": latent, "alpha": alpha, "metric": metric,
                     "value": v, "lo": lo, "hi": hi, "n": len(ok)})
table = pd.DataFrame(rows)

summary = {"layer": L, "hook": hook, "dictionary": p["dictionary"], "rms_norm": rms, "contrast": contrast,
           "calibration": {"target": p["calibrate_to"], "scan": scan, "chosen": chosen["group"]},
           "n_prompts": n_p, "n_samples": n_samples, "n_select_units": int(select.sum()),
           "n_effect_units": int(held.sum()), "fluency_cap": p["fluency_cap"],
           "baseline_perplexity": float(per[("latent", 0.0)]["perplexity"][select].mean()), "directions": {}}
best = {}
for dname, (kind, latent, _) in directions.items():
    succ = {a: per[(dname, a)]["success"][select] for a in alphas}
    ppl = {a: per[(dname, a)]["perplexity"][select] for a in alphas}
    a_best, fluent = steering.best_alpha(succ, ppl, p["fluency_cap"])
    best[dname] = a_best
    eff = probe.paired_bootstrap_diff(per[(dname, a_best)]["success"][held], per[(dname, 0.0)]["success"][held],
                                      n_resamples=p["n_resamples"], seed=p["seed"])
    summary["directions"][dname] = {"kind": kind, "latent": latent, "best_alpha": a_best, "fluency_ok": fluent,
                                    "effect": eff[0], "effect_lo": eff[1], "effect_hi": eff[2],
                                    "success_at_best": float(per[(dname, a_best)]["success"][held].mean()),
                                    "baseline_success": float(per[(dname, 0.0)]["success"][held].mean())}
# Controls also at the latent's alpha: the same intervention size, a different direction.
for dname in steering.CONTROL_KINDS:
    eff = probe.paired_bootstrap_diff(per[(dname, best["latent"])]["success"][held], per[(dname, 0.0)]["success"][held],
                                      n_resamples=p["n_resamples"], seed=p["seed"])
    summary["directions"][dname].update(effect_at_latent_alpha=eff[0], effect_at_latent_alpha_lo=eff[1],
                                        effect_at_latent_alpha_hi=eff[2])
h2h = probe.paired_bootstrap_diff(per[("latent", best["latent"])]["success"][held],
                                  per[("diff_of_means", best["diff_of_means"])]["success"][held],
                                  n_resamples=p["n_resamples"], seed=p["seed"])
summary["head_to_head"] = {"latent_minus_diff_of_means": h2h[0], "lo": h2h[1], "hi": h2h[2]}
tensors.require_finite({"value": table["value"], "lo": table["lo"], "hi": table["hi"],
                        **{f"{d}.effect": s["effect"] for d, s in summary["directions"].items()},
                        "head_to_head": h2h[0], "rms_norm": rms}, "steering")
cand_json = {"contrast": contrast, "hook": hook, "layer": L, "dictionary": p["dictionary"],
             "candidates": cands.to_dict(orient="records"), "random_latent": rand_latent}

with store.write_artefact(out, node, device=device) as art:
    table = table.assign(**jobs.coordinates(node))
    table.to_parquet(art.path("steering.parquet"), index=False)
    table.to_csv(art.path("steering.csv"), index=False)
    with open(art.path("generations.jsonl"), "w") as f:
        for g in generations:
            f.write(json.dumps(g) + "\n")
    store.write_json_atomic(art.path("candidates.json"), cand_json)
    store.write_json_atomic(art.path("summary.json"), summary)
    art.record(summary={d: {k: s[k] for k in ("best_alpha", "effect", "effect_lo", "effect_hi", "fluency_ok")}
                        for d, s in summary["directions"].items()}, head_to_head=summary["head_to_head"])
print(json.dumps(summary, indent=2))
