"""How many concept images, and how many DDIM steps per image, does a steering vector need?

Zhang et al. 2025 (arXiv:2512.20963), App. B.3: ``v`` of eq. 11 is the mean representation of 100
images of the concept, generated with 40 DDIM steps and CFG 3.5, read at t~ = 10 (channel vector,
six up-block layers). That is 100 x 40 x 2 = 8,000 U-Net evaluations before any steering. This
bench measures what a smaller concept set costs in accuracy of the vector, on

* ``tiny-sd``: the tests' tiny SD (``lowdim_app.diffusion.tiny.build_tiny_sd_pipeline``), 128 px;
* ``sd-v1-4-w4-16``: SD v1.4's exact architecture (``architectures.build("sd-v1-4", width=4,
  sample_size=16)``: channel counts / 4, the real module names, 16 x 16 latents, 128 px).
  (``width=8`` does not build: its text encoder's hidden size, 64, is not the U-Net's cross-attention
  width, 96.)

Both have random weights (nothing is downloaded), so the numbers say how much the mean of n
per-image representations fluctuates for these networks, not how a trained SD's concept images vary.

For each model, seed s (its own 100-image concept set) and steps K per concept image, ``v(s, K, n)``
is the vector of the first n images (what ``steer --concept-n n --concept-steps K --seed s``
computes: image i starts from noise row i of the seed). Columns of the CSV:

* ``cos_nested``: cos(v(s, K, n), v(s, K, 100)) -- the brief's measure (the n images are among the 100);
* ``cos_paper``: cos(v(s, K, n), v(s, 40, 100)) -- against the paper's recipe on the same seed;
* ``cos_other_seed``: cos(v(s, K, n), v(s + 1, 40, 100)) -- against an independent draw of the paper's
  recipe; at n = 100, K = 40 it is the paper's own seed-to-seed floor;
* ``min_layer_cos_paper``, ``rel_err_paper``: the worst single layer, ||v - v_paper|| / ||v_paper||;
* ``centred_cos_paper``: the same cosine after subtracting the 100-image vector of another prompt
  (only the concept-specific part of v);
* ``unet_evals``: n x K x 2 (CFG) + n (features), the concept part of one steer request.

Vectors are concatenated over the six layers (cosines of the concatenation). Run:

    OMP_NUM_THREADS=1 python bench/steering_concept.py            # the full grid (long)
    python bench/steering_concept.py --quick                      # a smoke run
    # the run in bench/results/steering_concept.csv (tiny SD: 1.44 s per concept image at 40 steps):
    python bench/steering_concept.py --models tiny-sd --seeds 0,1 --steps 40,20 --n 4,8,16,32
"""
from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lowdim_app.diffusion import architectures, load_model  # noqa: E402
from lowdim_app.diffusion.tiny import build_tiny_sd_pipeline  # noqa: E402
from lowdim_app.methods import steering as st  # noqa: E402

CONCEPT = "oil painting style"
OTHER = "a photo of a dog"
GUIDANCE = 3.5
T_TILDE = 10
BUILDERS = {
    "tiny-sd": lambda out: build_tiny_sd_pipeline(out, seed=0),
    "sd-v1-4-w4-16": lambda out: architectures.build("sd-v1-4", out, width=4, sample_size=16, seed=0),
}
FIELDS = ["model", "seed", "concept_steps", "n", "unet_evals", "cos_nested", "cos_paper", "cos_other_seed",
          "min_layer_cos_paper", "rel_err_paper", "centred_cos_paper"]


def flat(sv: st.SteeringVector) -> torch.Tensor:
    return torch.cat([sv.vectors[k].flatten().double() for k in st.SD_LAYERS])


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def min_layer_cos(a: st.SteeringVector, b: st.SteeringVector) -> float:
    return min(cos(a.vectors[k].flatten().double(), b.vectors[k].flatten().double()) for k in st.SD_LAYERS)


def vectors_of(model, prompt: str, seed: int, steps: int, ns: list[int], total: int, batch: int) -> dict[int, st.SteeringVector]:
    gen = model.encode_prompt(prompt, guidance_scale=GUIDANCE)
    cbar = model.encode_prompt(prompt)
    images = st.generate_concept(model, gen, total, seed, steps, batch=batch)
    return {n: st.steering_vector(model, images[:n], st.SD_LAYERS, T_TILDE, "channel", cbar, seed=seed) for n in ns}


def run(models: list[str], seeds: list[int], steps_list: list[int], ns: list[int], out: Path, batch: int) -> None:
    total, paper_steps = max(ns), max(steps_list)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            model = load_model(str(BUILDERS[name](Path(tmp) / name)), "cpu")
            t0 = time.perf_counter()
            ref = vectors_of(model, OTHER, 0, paper_steps, [total], total, batch)[total]
            per_image = (time.perf_counter() - t0) / total
            print(f"{name}: {per_image:.2f} s per concept image at {paper_steps} steps (batch {batch})", flush=True)
            v = {(s, k): vectors_of(model, CONCEPT, s, k, ns, total, batch) for s in seeds for k in steps_list}
            for s in seeds:
                other = seeds[(seeds.index(s) + 1) % len(seeds)]
                paper, indep = v[(s, paper_steps)][total], v[(other, paper_steps)][total]
                for k in steps_list:
                    for n in ns:
                        x = v[(s, k)][n]
                        rows.append(dict(
                            model=name, seed=s, concept_steps=k, n=n, unet_evals=n * k * 2 + n,
                            cos_nested=cos(flat(x), flat(v[(s, k)][total])), cos_paper=cos(flat(x), flat(paper)),
                            cos_other_seed=cos(flat(x), flat(indep)), min_layer_cos_paper=min_layer_cos(x, paper),
                            rel_err_paper=float((flat(x) - flat(paper)).norm() / flat(paper).norm()),
                            centred_cos_paper=cos(flat(x) - flat(ref), flat(paper) - flat(ref))))
            print(f"{name}: done in {time.perf_counter() - t0:.0f} s", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{r[k]:.6f}" if isinstance(r[k], float) else r[k]) for k in FIELDS})
    print(f"wrote {out}")
    summarize(rows, models, steps_list, ns, paper_steps, total)


def summarize(rows: list[dict], models, steps_list, ns, paper_steps: int, total: int) -> None:
    """Means over seeds (and the worst seed) per model, steps and n; U-Net evaluations relative to the paper's."""
    paper_evals = total * paper_steps * 2 + total
    cols = ["cos_nested", "cos_paper", "cos_other_seed", "min_layer_cos_paper", "centred_cos_paper"]
    print(f"\nmean over seeds (min over seeds in brackets); evals: concept part / the paper's {paper_evals}")
    print(f"{'model':15s} {'K':>3s} {'n':>4s} {'evals':>12s} " + " ".join(f"{c:>22s}" for c in cols))
    for m in models:
        for k in steps_list:
            for n in ns:
                sel = [r for r in rows if r["model"] == m and r["concept_steps"] == k and r["n"] == n]
                cells = []
                for c in cols:
                    vals = [r[c] for r in sel]
                    cells.append(f"{sum(vals) / len(vals):.4f} [{min(vals):.4f}]")
                evals = sel[0]["unet_evals"]
                print(f"{m:15s} {k:3d} {n:4d} {evals:6d} ({evals / paper_evals:4.2f}) " + " ".join(f"{c:>22s}" for c in cells))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(BUILDERS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", default="40,20,10", help="DDIM steps per concept image; the largest is the paper's")
    ap.add_argument("--n", default="4,8,16,32,50,100", help="concept set sizes; the largest is the reference")
    ap.add_argument("--batch", type=int, default=10, help="concept images per generation call")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "steering_concept.csv"))
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 seeds, 4 images, 4/2 steps, tiny-sd only")
    a = ap.parse_args()
    torch.set_num_threads(1)
    if a.quick:
        run(["tiny-sd"], [0, 1], [4, 2], [2, 4], Path(tempfile.mkdtemp()) / "steering_concept.csv", 4)
        return
    ints = lambda text: [int(x) for x in text.split(",") if x]  # noqa: E731
    run(a.models.split(","), ints(a.seeds), ints(a.steps), ints(a.n), Path(a.out), a.batch)


if __name__ == "__main__":
    main()
