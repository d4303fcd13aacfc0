"""Verdicts a user can act on: a score depends on (image, model, settings, seed) alone; images the
model cannot judge are refused or out-of-domain, never memorized; polarity; strict calibration JSON."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from lowdim_app.cli import main
from lowdim_app.config import DEFAULT_ASSETS
from lowdim_app.data.digits import load_digits_split
from lowdim_app.data.images import to_pil
from lowdim_app.diffusion import load_model
from lowdim_app.errors import UserError
from lowdim_app.methods import memorization as mz

CALS = sorted(p for p in (DEFAULT_ASSETS / "calibrations").glob("*.json") if p.name != "steer_contrast.json")  # not a threshold


@pytest.fixture(scope="module")
def dup():
    return load_model("digits-dup")


def _images():
    s = load_digits_split()
    idx = load_model("digits-dup").card["data"]["duplicated_index"][:2]
    return torch.cat([s.train_images[idx], s.test_images[:5]])          # 7 images: 2 memorized, 5 held out


def _score(model, x, seed=0):
    how = mz.setup(model, DEFAULT_ASSETS)
    return mz.score_images(model, x, [str(i) for i in range(len(x))], how, seed)


def test_a_score_does_not_depend_on_the_batch_or_the_position(dup):
    """The same image alone, first, last, in batches of 1, 7 and 64 gets the same score and spread
    (rtol 1e-5: batching may change the float kernels, not the noise)."""
    x = _images()
    alone = [_score(dup, x[i:i + 1])[0] for i in range(len(x))]
    together = _score(dup, x)
    reversed_ = _score(dup, x.flip(0))[::-1]
    filler = load_digits_split().test_images[10:67]
    in_64 = _score(dup, torch.cat([filler[:30], x, filler[30:]]))[30:37]
    for rows in (together, reversed_, in_64):
        assert np.allclose([r.score for r in rows], [r.score for r in alone], rtol=1e-5, atol=0)
        assert np.allclose([r.spread for r in rows], [r.spread for r in alone], rtol=1e-4, atol=1e-9)
        assert [r.verdict for r in rows] == [r.verdict for r in alone]
    assert alone[1].verdict == "memorized" and "memorized" not in [r.verdict for r in alone[2:]]
    # the noise is a function of (seed, draw) only
    assert torch.equal(mz.noise_draw(dup, 3, 1), mz.noise_draw(dup, 3, 1))
    assert not torch.equal(mz.noise_draw(dup, 3, 1), mz.noise_draw(dup, 3, 0))
    assert not torch.equal(mz.noise_draw(dup, 3, 0), mz.noise_draw(dup, 4, 0))


def test_several_draws_give_a_spread_and_uncertain_straddles_the_threshold():
    cal = mz.calibrate([3.0, 4.0], [0.0, 1.0, 0.5], "m", "L", 50, "std")
    assert cal.verdict(cal.threshold + 0.1, 0.2)[0] == "uncertain"
    assert cal.verdict(cal.threshold + 0.3, 0.2)[0] == "memorized"
    assert cal.verdict(cal.threshold - 0.3, 0.2)[0] == "generalized"
    cal.ood_threshold = 1.0
    v, why = cal.verdict(cal.threshold + 5, 0.0, ood_value=2.0)
    assert v == "out-of-domain" and "denoising error" in why and "\n" not in why
    assert cal.verdict(float("nan"))[0] == "out-of-domain"
    mean, spread = mz.mean_and_spread(np.array([[1.0, 3.0], [2.0, 2.0]]))
    assert np.allclose(mean, [2, 2]) and np.isclose(spread[0], 2 * np.std([1, 3], ddof=1) / np.sqrt(2)) and spread[1] == 0


def test_bad_images_are_refused_never_memorized(dup, tmp_path):
    from PIL import Image

    from lowdim_app.features.score import load_images

    Image.new("L", (16, 16), 0).save(tmp_path / "black.png")
    Image.new("RGBA", (16, 16), (255, 255, 255, 0)).save(tmp_path / "clear.png")
    tens, _, problems = load_images(dup, [str(tmp_path / "black.png"), str(tmp_path / "clear.png"),
                                              np.full((16, 16), np.nan, dtype=np.float32)], ["black", "clear", "nan"])
    assert tens is None and len(problems) == 3
    assert "no content" in problems[0] and "transparent" in problems[1] and "NaN" in problems[2]
    how = mz.setup(dup, DEFAULT_ASSETS)
    for bad in (torch.full((1, 1, 16, 16), float("nan")), -torch.ones(1, 1, 16, 16)):
        with pytest.raises(UserError):
            mz.score_images(dup, bad, ["x"], how)


def _photo(path, name="china.jpg", gray=False):
    from PIL import Image
    from sklearn.datasets import load_sample_image

    im = Image.fromarray(load_sample_image(name))
    (im.convert("L") if gray else im).save(path)
    return str(path)


@pytest.mark.parametrize("model_id", ["digits-dup", "digits-mem", "digits-gen"])
def test_a_photo_into_a_digit_model_is_out_of_domain(model_id, tmp_path):
    from lowdim_app.features.score import FEATURE, ScoreSettings

    files = [_photo(tmp_path / "china.png"), _photo(tmp_path / "flower.png", "flower.jpg"),
             _photo(tmp_path / "china_gray.png", gray=True)]
    res = FEATURE.run(ScoreSettings(images=tuple(files), model=model_id))
    assert [r.verdict for r in res.rows] == ["out-of-domain"] * 3
    assert "colour" in res.rows[0].reason and "colour" in res.rows[1].reason
    assert "denoising error" in res.rows[2].reason and "\n" not in res.rows[2].reason
    assert not any(r.memorized for r in res.rows)


def test_invert_restores_dark_on_light_digits(tmp_path, capsys):
    from lowdim_app.features.score import FEATURE, ScoreSettings

    x = load_digits_split().test_images[:4]
    for i, im in enumerate(to_pil(x)):
        im.save(tmp_path / f"d{i}.png")
    for i, im in enumerate(to_pil(-x)):
        im.save(tmp_path / f"inv{i}.png")
    light = [str(tmp_path / f"d{i}.png") for i in range(4)]
    dark = [str(tmp_path / f"inv{i}.png") for i in range(4)]
    plain = FEATURE.run(ScoreSettings(images=tuple(light), model="digits-dup"))
    wrong = FEATURE.run(ScoreSettings(images=tuple(dark), model="digits-dup"))
    fixed = FEATURE.run(ScoreSettings(images=tuple(dark), model="digits-dup", invert=True))
    assert all(r.verdict == "out-of-domain" for r in wrong.rows)
    assert [r.verdict for r in fixed.rows] == [r.verdict for r in plain.rows]
    assert np.allclose([r.score for r in fixed.rows], [r.score for r in plain.rows], rtol=2e-2)
    assert "--invert" in fixed.reproduce() and "--invert" not in plain.reproduce()
    assert main(["score", *dark, "--model", "digits-dup", "--invert", "--csv", str(tmp_path / "s.csv")]) == 0
    rows = (tmp_path / "s.csv").read_text().splitlines()[1:]
    assert [r.split(",")[3] for r in rows] == [r.verdict for r in plain.rows]


def _refuse(name):
    raise ValueError(f"non-finite constant {name} in a calibration file")


@pytest.mark.parametrize("path", CALS, ids=[p.name for p in CALS])
def test_shipped_calibrations_are_strict_json_and_reach_the_goal(path):
    d = json.loads(path.read_text(), parse_constant=_refuse)
    cal = mz.Calibration.load(path)
    assert d["ood_threshold"] > 0 and len(cal.ood_reference) >= 100
    assert cal.n_noise == mz.DEFAULT_NOISE_DRAWS
    if cal.model_id in ("digits-dup", "digits-mem"):
        assert cal.auroc >= 0.99 and cal.tpr_at_1pct_fpr >= 0.95
        assert {x["metric"] for x in cal.detectors} == {"std", "l4_l2", "entropy", "max_min", "denoising_error"}


def test_saved_calibration_never_writes_nan(tmp_path):
    cal = mz.calibrate([], [0.0, 1.0, 0.5], "digits-dup", "L", 50, "std")
    assert cal.tpr is None
    cal.fpr = float("nan")
    text = cal.save(tmp_path / "c.json").read_text()
    json.loads(text, parse_constant=_refuse)
    assert mz.Calibration.load(tmp_path / "c.json").fpr is None


def test_harness_metrics_match_sklearn_with_ties():
    from lowdim_app.metrics import auroc, roc, tpr_at_fpr

    rng = np.random.default_rng(1)
    pos, neg = np.round(rng.normal(1, 1, 150), 1), np.round(rng.normal(0, 1, 400), 1)   # ties
    y, s = np.r_[np.ones(150), np.zeros(400)], np.r_[pos, neg]
    assert abs(auroc(pos, neg) - roc_auc_score(y, s)) < 1e-12
    fpr, tpr, _ = roc_curve(y, s)
    f2, t2 = roc(pos, neg)
    assert np.allclose(np.interp(np.linspace(0, 1, 101), fpr, tpr), np.interp(np.linspace(0, 1, 101), f2, t2))
    assert abs(tpr_at_fpr(pos, neg, 0.01) - np.interp(0.01, fpr, tpr)) < 1e-12


def test_bench_results_exist_and_are_consistent():
    import csv

    with open(Path("bench/results/detectors.csv")) as f:
        rows = list(csv.DictReader(f))
    for mid in ("digits-dup", "digits-mem"):
        default = [r for r in rows if r["model"] == mid and r["part"] == "quality" and r["default"] == "1"]
        assert len(default) == 1 and float(default[0]["auroc"]) >= 0.99
