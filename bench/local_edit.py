"""Local edits that stay in the mask, and transfer of saved directions, on the digit models.

Local edits (Chen et al. 2024, LOCO Edit, arXiv:2409.02374): for held-out digits x masks x edit
times t in {0.3T, 0.5T, 0.7T}, the masked directions (LOCO's null-space projection, null rank 5)
are applied at alpha in {-6, -3, 3, 6} and sampled back with full DDIM, and the change from the
alpha = 0 reconstruction is measured inside and outside the mask, for LOCO alone and with the
outside pinned to the unedited trajectory for the first f of the steps (blended sampling,
``--keep-outside f``). Per configuration: the mean ratio outside/inside of the RMS change, SSIM
outside the mask (scikit-image, against the reconstruction), and a LOCO-style local-edit success
rate: the edit is visible inside (RMS change >= 0.1 on the [-1, 1] pixel scale) and the outside
changes at most 0.3x as much.

Transfer (LOCO Edit's transfer success): the top global direction v1 found on a source digit at
0.7T is applied to other held-out digits of the same class; a transfer succeeds when the
classifier's verdict on the target changes the same way as on the source (the same new class, or
unchanged on both). The random direction is the control.

Writes ``bench/results/local_edit.csv`` (one row per configuration) and ``local_edit_transfer.csv``.
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lowdim_app.data.classifier import predict_proba  # noqa: E402
from lowdim_app.data.digits import load_digits_split  # noqa: E402
from lowdim_app.diffusion import load_model  # noqa: E402
from lowdim_app.methods import editing  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
ALPHAS = [-6.0, -3.0, 0.0, 3.0, 6.0]
VISIBLE = 0.1       # RMS change inside the mask that counts as a visible edit ([-1, 1] pixels)
LOCAL = 0.3         # outside/inside ratio a local edit may have


def masks() -> dict[str, torch.Tensor]:
    out = {}
    for name, sl in {"top": (slice(0, 8), slice(None)), "bottom": (slice(8, 16), slice(None)),
                     "left": (slice(None), slice(0, 8))}.items():
        m = torch.zeros(16, 16)
        m[sl] = 1
        out[name] = m
    return out


def held_out(n: int, offset: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    split = load_digits_split()
    return split.test_images[offset:offset + n], split.test_labels[offset:offset + n].numpy()


def ssim_outside(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    from skimage.metrics import structural_similarity

    _, full = structural_similarity(a[0].numpy(), b[0].numpy(), data_range=2.0, win_size=5, full=True)
    return float(full[mask.numpy() == 0].mean())


def local_rows(model, n_images: int, fractions: list[float]) -> list[dict]:
    imgs, _ = held_out(n_images)
    rows = {}
    for frac_t in (0.3, 0.5, 0.7):
        t = model.timestep_from_fraction(frac_t)
        for mname, m in masks().items():
            for i in range(len(imgs)):
                s = editing.find_directions(model, imgs[i:i + 1], t, k=1, mask=m)
                for f in fractions:
                    keep = editing.keep_outside(model, s.inversion, m[None], f)
                    strip = editing.edit_strip(model, s.inversion, s.V[0], ALPHAS, keep=keep)
                    ref = strip[ALPHAS.index(0.0)]
                    for a, e in zip(ALPHAS, strip):
                        if a == 0:
                            continue
                        d = (e - ref)[0]
                        inside = float(d[m == 1].pow(2).mean().sqrt())
                        outside = float(d[m == 0].pow(2).mean().sqrt())
                        r = rows.setdefault((frac_t, f), {"inside": [], "outside": [], "ratio": [], "ssim": [],
                                                          "success": []})
                        r["inside"].append(inside)
                        r["outside"].append(outside)
                        r["ratio"].append(outside / max(inside, 1e-12))
                        r["ssim"].append(ssim_outside(e, ref, m))
                        r["success"].append(inside >= VISIBLE and outside <= LOCAL * inside)
        print(f"t = {frac_t}T done", flush=True)
    out = []
    for (frac_t, f), r in sorted(rows.items()):
        out.append({"t_fraction": frac_t, "keep_outside": f, "method": "LOCO null-space" if f == 0 else
                    f"LOCO + keep outside {f:g}", "edits": len(r["ratio"]),
                    "mean_outside_over_inside": round(float(np.mean(r["ratio"])), 4),
                    "median_outside_over_inside": round(float(np.median(r["ratio"])), 4),
                    "worst_outside_over_inside": round(float(np.max(r["ratio"])), 4),
                    "mean_rms_inside": round(float(np.mean(r["inside"])), 4),
                    "mean_rms_outside": round(float(np.mean(r["outside"])), 4),
                    "ssim_outside": round(float(np.mean(r["ssim"])), 4),
                    "success_rate": round(float(np.mean(r["success"])), 4)})
    return out


def transfer_rows(model, n_sources: int, n_targets: int, alpha: float) -> list[dict]:
    imgs, labels = held_out(400)
    t = model.timestep_from_fraction(0.7)
    counts = {"jacobian v1": [], "random": []}
    for si in range(n_sources):
        src, lab = imgs[si:si + 1], labels[si]
        targets = [j for j in range(n_sources, len(imgs)) if labels[j] == lab][:n_targets]
        s = editing.find_directions(model, src, t, k=1)
        for kind, v in (("jacobian v1", s.V[0]), ("random", editing.random_direction(s.V[0].shape, si))):
            d = editing.Direction(v, model.model_id, t)
            src_strip = editing.edit_strip(model, s.inversion, d.vector, [0.0, alpha])
            src_cls = predict_proba(src_strip).argmax(1)
            for j in targets:
                inv = editing.invert(model, imgs[j:j + 1], t)
                tgt_cls = predict_proba(editing.edit_strip(model, inv, d.vector, [0.0, alpha])).argmax(1)
                src_change = int(src_cls[1]) if src_cls[1] != src_cls[0] else None
                tgt_change = int(tgt_cls[1]) if tgt_cls[1] != tgt_cls[0] else None
                counts[kind].append((src_change == tgt_change, src_change is not None, tgt_change is not None))
        print(f"source {si + 1}/{n_sources} done", flush=True)
    out = []
    for kind, c in counts.items():
        c = np.array(c, dtype=bool)
        changed = c[:, 1]
        out.append({"direction": kind, "alpha": alpha, "t_fraction": 0.7, "pairs": len(c),
                    "transfer_success": round(float(c[:, 0].mean()), 4),
                    "source_changed_class": round(float(changed.mean()), 4),
                    "success_when_source_changed": round(float(c[changed, 0].mean()), 4) if changed.any() else "",
                    "target_changed_class": round(float(c[:, 2].mean()), 4)})
    return out


def write(rows: list[dict], path: Path) -> None:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {path}")
    for r in rows:
        print(r)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="digits-gen")
    p.add_argument("--images", type=int, default=12, help="held-out digits per mask and t")
    p.add_argument("--fractions", default="0,0.5,0.8,1", help="keep-outside fractions to compare")
    p.add_argument("--sources", type=int, default=12)
    p.add_argument("--targets", type=int, default=5)
    p.add_argument("--parts", default="local,transfer")
    p.add_argument("--out", default=str(RESULTS))
    a = p.parse_args(argv)
    torch.manual_seed(0)
    model = load_model(a.model, "cpu")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if "local" in a.parts:
        write(local_rows(model, a.images, [float(f) for f in a.fractions.split(",")]), out / "local_edit.csv")
    if "transfer" in a.parts:
        write(transfer_rows(model, a.sources, a.targets, 6.0), out / "local_edit_transfer.csv")
    print(f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
