"""Model cards for trained models: data, steps, loss, wall time, the command that made the
model, and measured evidence of its regime (memorizes / generalizes / hybrid).

Evidence: samples are drawn with DDIM (seeded) and compared with the model's own
training images by RMS nearest-neighbour distance (:func:`lowdim_app.metrics.nearest`) and
with a disclosed digit classifier (:mod:`lowdim_app.data.classifier`).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..data.classifier import CONFIDENT, predict_proba
from ..data.digits import load_digits_split
from ..data.neighbours import COPY_THRESHOLD, NOVEL_THRESHOLD
from ..metrics import nearest
from .editing import EXAMPLE_AMAX, EXAMPLE_COUNT, EXAMPLE_IMAGE, EXAMPLE_T


def _pct(values: np.ndarray) -> dict:
    return {f"p{q}": round(float(np.percentile(values, q)), 4) for q in (1, 5, 25, 50, 75, 95)}


def regime_evidence(model, card: dict, n_samples: int = 512, steps: int = 50, seed: int = 1234) -> dict:
    """Measure memorization/generalization of a model trained on built-in digits."""
    split = load_digits_split()
    train_index = np.asarray(card["train_index"], dtype=int)
    train = split.train_images[train_index]
    samples = model.generate(n_samples, seed=seed, steps=steps, progress=True)
    nn = nearest(samples, train)
    d = nn.nearest.numpy()
    probs = predict_proba(samples)
    ref_nn = nearest(split.test_images, split.train_images).nearest.numpy()
    ref_probs = predict_proba(split.test_images)
    ev = {
        "n_samples": n_samples, "ddim_steps": steps, "seed": seed,
        "distance": "RMS pixel distance in [-1,1] units to the nearest image of the model's training set",
        "copy_threshold": COPY_THRESHOLD, "novel_threshold": NOVEL_THRESHOLD,
        "near_copy_share": round(float((d < COPY_THRESHOLD).mean()), 4),
        "novel_share": round(float((d > NOVEL_THRESHOLD).mean()), 4),
        "nn_distance_percentiles": _pct(d),
        "classifier": f"logistic regression on the 16x16 training digits; confident = max prob > {CONFIDENT}",
        "classifier_confident_share": round(float((probs.max(1) > CONFIDENT).mean()), 4),
        "class_histogram": np.bincount(probs.argmax(1), minlength=10).tolist(),
        "reference_real_test_digits": {
            "classifier_confident_share": round(float((ref_probs.max(1) > CONFIDENT).mean()), 4),
            "near_copy_share_vs_full_train_set": round(float((ref_nn < COPY_THRESHOLD).mean()), 4),
            "nn_distance_percentiles": _pct(ref_nn),
        },
        "distinct_training_images_copied": int(len(np.unique(nn.index[:, 0].numpy()[d < COPY_THRESHOLD]))),
    }
    dup = card.get("data", {}).get("duplicated_index") or []
    if dup:
        pos = {int(i): p for p, i in enumerate(train_index)}
        dup_pos = np.array([pos[i] for i in dup])
        copied = d < COPY_THRESHOLD
        of_dup = copied & np.isin(nn.index[:, 0].numpy(), dup_pos)
        n_unique = len(train_index)
        ev["duplicated"] = {
            "n_duplicated_images": len(dup),
            "share_of_unique_images": round(len(dup) / n_unique, 4),
            "share_of_training_samples": round(len(dup) * (1 + card["training"]["copies"]) / card["data"]["n_total"], 4),
            "near_copies_of_duplicated_share": round(float(of_dup.mean()), 4),
            "near_copies_of_other_images_share": round(float((copied & ~of_dup).mean()), 4),
            "enrichment_vs_unique_share": round(float(of_dup.mean()) / (len(dup) / n_unique), 2),
            "duplicated_images_copied": int(len(np.unique(nn.index[:, 0].numpy()[of_dup]))),
        }
    return ev, samples


DEFAULT_EXAMPLE = Path(__file__).resolve().parents[2] / "assets" / "examples" / EXAMPLE_IMAGE
# the Edit tab's default path (t, alpha range) on a 4x finer alpha grid
EXAMPLE_ALPHAS = tuple(float(a) for a in np.linspace(-EXAMPLE_AMAX, EXAMPLE_AMAX, 4 * (EXAMPLE_COUNT - 1) + 1))


def measure_classifier_path(model, card: dict) -> None:
    """``card["classifier_path"]``: the digit classifier along the Edit tab's default edit (its example, t and
    alpha range; :func:`~.structure.classifier_path`), when the example is here."""
    from ..data.images import load_image
    from .structure import classifier_path

    if DEFAULT_EXAMPLE.is_file():
        path = classifier_path(model, load_image(DEFAULT_EXAMPLE, model.image_shape[1:], channels=1),
                               t_fraction=EXAMPLE_T, alphas=EXAMPLE_ALPHAS)
        card["classifier_path"] = {"image": f"assets/examples/{DEFAULT_EXAMPLE.name}", **path}


def measure_card(model, card: dict, *, evidence_samples: int = 512, structure_digits: int = 20,
                 progress: bool = True) -> torch.Tensor:
    """Fill ``card`` with the regime evidence (``evidence``), the low-dimensional structure of the
    denoiser on ``structure_digits`` held-out digits (``structure``, 0: skip) and the classifier's path
    along an edit of the Edit tab's default example (``classifier_path``); returns the evidence samples."""
    from .structure import structure_evidence

    evidence, samples = regime_evidence(model, card, n_samples=evidence_samples)
    card["evidence"] = evidence
    if structure_digits:
        card["structure"] = structure_evidence(model, n_digits=structure_digits, progress=progress)
        measure_classifier_path(model, card)
    return samples


def _or_none(v) -> str:
    return "none" if v is None else str(v)


def structure_lines(st: dict) -> list[str]:
    """Markdown lines for the measured low-dimensional structure (see :mod:`.structure`)."""
    lines = ["## Measured low-dimensional structure", "",
             f"Exact Jacobian of `x0_hat` (256 x 256) at {st['n_digits']} held-out digits ({st['x_t']}); numerical "
             f"rank = eq. 46 of Wang et al. 2024 (eta = {st['eta']}); outside = share of ||J||_F^2 not mapping the "
             "64-dim span of the digits into itself (0 for the true posterior mean); edit v1 / random = mean RMS "
             "change of a DDIM edit along v1 over a random unit direction (alpha = +-4).", "",
             "| t | SNR | rank median (min..max) | outside median (max) | edit v1 / random median (min) |",
             "|---|---|---|---|---|"]
    for e in st["per_t"]:
        r, o = e["rank"], e["outside"]
        ed = e.get("edit_ratio")
        lines.append(f"| {e['t_fraction']}T | {e['snr']} | {r['median']:g} ({r['min']:g}..{r['max']:g}) | "
                     f"{o['median']:.4f} ({o['max']:.4f}) | "
                     + (f"{ed['median']:.2f} ({ed['min']:.2f})" if ed else "") + " |")
    return lines + [""]


def write_card(folder: str | Path, model_id: str, card: dict) -> None:
    """Write ``card.json`` and a human-readable ``README.md`` (Hugging Face model-card front matter)."""
    folder = Path(folder)
    (folder / "card.json").write_text(json.dumps(card, indent=1))
    tr, ev = card.get("training", {}), card.get("evidence", {})
    lines = [
        "---", "library_name: diffusers", "tags: [ddpm, unconditional-image-generation, lowdim-lab]", "---", "",
        f"# {model_id}", "", card.get("summary", ""), "",
        "| field | value |", "|---|---|",
        f"| data | {card.get('data', {}).get('source', '')} |",
        f"| training images | {card.get('data', {}).get('n_unique', '?')} unique, {card.get('data', {}).get('n_total', '?')} with duplicates |",
        f"| steps x batch | {tr.get('steps')} x {tr.get('batch_size')} (lr {tr.get('lr')}, EMA {tr.get('ema_decay')}) |",
        f"| parameterization | {card.get('scheduler', {}).get('prediction_type', '?')}, "
        f"{card.get('scheduler', {}).get('beta_schedule', '?')} schedule"
        f"{', antithetic noise pairs' if tr.get('antithetic') else ''}; U-Net widths {tr.get('block_out_channels')} |",
        f"| final loss (mean of last 200 steps) | {card.get('final_loss_last200_mean', float('nan')):.4f} |",
        f"| wall time | {card.get('wall_time_s')} s ({card.get('hardware', '')})"
        + (f"; {card['wall_time_note']}" if card.get("wall_time_note") else "") + " |",
        f"| parameters | {card.get('n_params')} |",
        f"| command | `{tr.get('command', '')}` |", "",
    ]
    if ev:
        lines += ["## Measured regime evidence", "",
                  f"{ev['n_samples']} DDIM samples ({ev['ddim_steps']} steps, seed {ev['seed']}); distance = {ev['distance']}; "
                  f"near-copy if < {ev['copy_threshold']}, novel if > {ev['novel_threshold']}.", "",
                  "| measure | samples | real held-out digits |", "|---|---|---|",
                  f"| near-copy share | {ev['near_copy_share']} | {ev['reference_real_test_digits']['near_copy_share_vs_full_train_set']} |",
                  f"| novel share | {ev['novel_share']} | |",
                  f"| NN distance median | {ev['nn_distance_percentiles']['p50']} | {ev['reference_real_test_digits']['nn_distance_percentiles']['p50']} |",
                  f"| classifier-confident share | {ev['classifier_confident_share']} | {ev['reference_real_test_digits']['classifier_confident_share']} |",
                  f"| distinct training images copied | {ev['distinct_training_images_copied']} | |", ""]
        if "duplicated" in ev:
            du = ev["duplicated"]
            lines += ["### Duplicated subset (hybrid regime)", "", "| measure | value |", "|---|---|"]
            lines += [f"| {k.replace('_', ' ')} | {v} |" for k, v in du.items()] + [""]
    if card.get("structure"):
        lines += structure_lines(card["structure"])
    if card.get("classifier_path"):
        cp = card["classifier_path"]
        shown = [i for i, a in enumerate(cp["alphas"]) if float(a).is_integer()] or list(range(len(cp["alphas"])))
        lines += [f"### Classifier along an edit of `{cp['image']}` at {cp['t_fraction']}T", "",
                  "Class (probability) of the edited digit; alphas in steps of "
                  f"{cp['alphas'][1] - cp['alphas'][0]:g} were measured, whole ones are shown.", "",
                  "| alpha | " + " | ".join(f"{cp['alphas'][i]:+g}" for i in shown) + " |",
                  "|---|" + "---|" * len(shown)]
        for name in ("v1", "random"):
            p = np.asarray(cp[name]["probabilities"])
            cls = cp[name]["classes"]
            lines.append(f"| {name} | " + " | ".join(f"{cls[i]} ({p[i, cls[i]]:.2f})" for i in shown) + " |")
        lines += ["", f"Largest step between neighbouring alphas (total variation of the class probabilities): "
                      f"v1 {cp['v1']['max_step']}, random {cp['random']['max_step']}."]
        if "width" in cp["v1"]:
            lines += [f"Alpha span over which the probability of the alpha = 0 class falls from 0.9 to 0.1: v1 "
                      f"{_or_none(cp['v1']['width'])}, random {_or_none(cp['random']['width'])} (none: it does not); "
                      f"largest RMS pixel step over the path's length: v1 {cp['v1']['continuity']}, random "
                      f"{cp['random']['continuity']} "
                      f"({1 / (len(cp['alphas']) - 1):.3f} for an evenly moving path; bench/edit_path.py)."]
        lines += [""]
    lines += ["![samples](samples.png)", ""]
    (folder / "README.md").write_text("\n".join(lines))
