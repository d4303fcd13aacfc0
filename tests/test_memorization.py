"""Memorization check: hooks read the right layer, early stop, metrics, calibration, shipped calibrations."""
import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from lowdim_app.cli import main
from lowdim_app.data.digits import load_digits_split
from lowdim_app.diffusion import capture
from lowdim_app.errors import UserError
from lowdim_app.methods import memorization as mz


def test_spikiness_orders_one_hot_above_flat():
    one_hot = torch.zeros(1, 64)
    one_hot[0, 3] = 8.0
    flat = torch.ones(1, 64)  # same l1 norm
    h = torch.cat([one_hot, flat])
    for metric in ("std", "l4_l2", "max_min"):
        s = mz.spikiness(h, metric)
        assert s[0] > s[1], metric
    e = mz.spikiness(h, "entropy")
    assert e[0] < e[1] and abs(e[1] - np.log(64)) < 1e-9 and abs(e[0]) < 1e-9
    assert abs(mz.spikiness(flat, "l4_l2")[0] - 64 ** -0.25) < 1e-9
    with pytest.raises(UserError):
        mz.spikiness(h, "nope")


def test_representation_equals_manual_full_forward_capture(digits_gen):
    """Early-stopped, max-pooled h equals the output captured during a full forward."""
    x0 = load_digits_split().test_images[:3]
    layer = "up_blocks.1.resnets.0"
    h = mz.representations(digits_gen, x0, layer, t=50, seed=3)
    noise = digits_gen.randn(3, 3)
    with capture(digits_gen.unet, layer) as cap:
        digits_gen.eps(digits_gen.add_noise(x0, 50, noise), 50)
    full = cap.last(layer)
    assert full.shape[1] == h.shape[1]
    assert torch.allclose(h, full.amax(dim=(2, 3)), atol=1e-5)


def test_calibration_matches_sklearn():
    rng = np.random.default_rng(0)
    mem, gen = rng.normal(2, 1, 200), rng.normal(0, 1, 300)
    cal = mz.calibrate(mem, gen, "m", "L", 50, "std", target_fpr=0.05)
    y, s = np.r_[np.ones(200), np.zeros(300)], np.r_[mem, gen]
    assert abs(cal.auroc - roc_auc_score(y, s)) < 1e-12 and cal.direction == 1
    fpr, tpr, _ = roc_curve(y, s)
    assert abs(cal.tpr_at_1pct_fpr - np.interp(0.01, fpr, tpr)) < 1e-12
    assert cal.fpr <= 0.05 + 1 / 300 and abs(cal.tpr - (mem > cal.threshold).mean()) < 1e-12
    # the sign is learned: memorized = lower score
    cal2 = mz.calibrate(-mem, -gen, "m", "L", 50, "std")
    assert cal2.direction == -1 and abs(cal2.auroc - cal.auroc) < 1e-12 and cal2.is_memorized(-5.0)


def test_calibration_file_round_trip_and_model_check(tmp_path):
    cal = mz.calibrate([3.0, 4.0], [0.0, 1.0, 0.5], "digits-dup", "L", 50, "std")
    back = mz.Calibration.load(cal.save(tmp_path / "c.json"))
    assert back == cal
    with pytest.raises(UserError, match="for digits-dup, not digits-gen"):
        back.check_model("digits-gen")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(UserError, match="not a LowDim Lab calibration"):
        mz.Calibration.load(tmp_path / "bad.json")


def test_shipped_calibrations_and_the_hybrid_effect():
    """digits-dup: its 8 duplicated training digits score as memorized, other training digits do not
    (seed 004 Cor. 3.4 / App. A.4). Shipped AUROC values are the measured ones."""
    from lowdim_app.diffusion import load_model

    dup = mz.default_calibration("digits-dup")
    assert dup.auroc > 0.99 and dup.tpr_at_1pct_fpr > 0.95 and dup.fpr <= 0.02
    assert mz.default_calibration("digits-mem").auroc > 0.9
    model = load_model("digits-dup")
    s = load_digits_split()
    dup_idx = np.asarray(model.card["data"]["duplicated_index"])
    others = np.setdiff1d(np.asarray(model.card["train_index"]), dup_idx)[:100]
    sd = mz.scores(model, s.train_images[dup_idx], dup.layer, dup.t)
    so = mz.scores(model, s.train_images[others], dup.layer, dup.t)
    assert dup.is_memorized(sd).all()
    assert dup.is_memorized(so).mean() <= 0.03


def test_text_model_scores_with_empty_prompt(tiny_sd):
    img = tiny_sd.generate(2, seed=1, steps=2)
    h = mz.representations(tiny_sd, img, mz.SD_DEFAULT_LAYER, t=50)
    assert h.shape == (2, tiny_sd.unet.config.block_out_channels[-1])
    rows, cal = mz.score_images(tiny_sd, img, ["a", "b"])
    assert cal is None and rows[0].memorized is None and np.isfinite(rows[0].score)


def test_score_and_calibrate_cli(tmp_path, capsys):
    from lowdim_app.data.images import to_pil

    s = load_digits_split()
    (tmp_path / "mem").mkdir()
    (tmp_path / "gen").mkdir()
    from lowdim_app.diffusion import load_model

    dup_idx = load_model("digits-dup").card["data"]["duplicated_index"]
    for i, im in enumerate(to_pil(s.train_images[dup_idx[:4]])):
        im.save(tmp_path / "mem" / f"{i}.png")
    for i, im in enumerate(to_pil(s.test_images[:6])):
        im.save(tmp_path / "gen" / f"{i}.png")
    (tmp_path / "gen" / "broken.png").write_bytes(b"xx")
    assert main(["score", str(tmp_path / "mem"), str(tmp_path / "gen"), "--model", "digits-dup",
                 "--csv", str(tmp_path / "s.csv")]) == 0
    out = capsys.readouterr()
    assert "skipped: broken.png" in out.err
    rows = (tmp_path / "s.csv").read_text().splitlines()
    assert rows[0] == "path,score,verdict,implied_fpr" and len(rows) == 11
    assert all(",memorized," in r for r in rows[1:5])
    assert main(["calibrate", "--model", "digits-dup", "--memorized", str(tmp_path / "mem"), "--generalized",
                 str(tmp_path / "gen"), "--out", str(tmp_path / "c.json")]) == 0
    cal = json.loads((tmp_path / "c.json").read_text())
    assert cal["auroc"] == 1.0 and cal["model_id"] == "digits-dup"
    assert main(["score", str(tmp_path / "mem"), "--model", "digits-gen", "--calibration", str(tmp_path / "c.json")]) == 2
    assert "for digits-dup, not digits-gen" in capsys.readouterr().err


def test_denoising_error_baseline_matches_manual_and_ranks_training_images_lower():
    """The loss-threshold baseline: ||eps_hat - eps||^2 / n with the same noise as a manual forward,
    and on digits-mem (16 training digits) its training images are denoised better than held-out ones."""
    from lowdim_app.diffusion import load_model
    from lowdim_app.methods.memorization_baselines import denoising_error

    model = load_model("digits-mem")
    s = load_digits_split()
    train = s.train_images[np.asarray(model.card["train_index"], dtype=int)]
    err = denoising_error(model, train[:3], t=200, seed=5)
    noise = model.randn(3, 5)
    with torch.no_grad():
        eps = model.eps(model.add_noise(model.encode(train[:3]), 200, noise), 200)
    manual = ((eps - noise) ** 2).flatten(1).mean(1).numpy()
    assert np.allclose(err, manual, rtol=1e-5)
    e_train = denoising_error(model, train, t=200, n_noise=2)
    e_test = denoising_error(model, s.test_images[:16], t=200, n_noise=2)
    assert roc_auc_score(np.r_[np.zeros(16), np.ones(16)], np.r_[e_train, e_test]) > 0.9


def test_wen_guidance_norm_is_zero_for_the_empty_prompt(tiny_sd):
    """Wen et al. 2024: ||eps(x_T, e_p) - eps(x_T, e_empty)||; exactly 0 when p is the empty prompt,
    and equal to the manual first-step difference otherwise."""
    from lowdim_app.diffusion import load_model
    from lowdim_app.methods.memorization_baselines import text_guidance_norm

    v = text_guidance_norm(tiny_sd, ["", "a cat"], seed=3, steps=10, first=1)
    assert v[0] == pytest.approx(0.0, abs=1e-6) and v[1] > 0
    x = tiny_sd.randn(1, 4)
    t = tiny_sd.timesteps(tiny_sd.num_train_timesteps - 1, 10)[0]
    c = tiny_sd.encode_prompt("a cat")
    with torch.no_grad():
        manual = (tiny_sd.eps(x, t, c) - tiny_sd.eps(x, t, tiny_sd.encode_prompt(""))).norm()
    assert v[1] == pytest.approx(float(manual), rel=1e-4)
    with pytest.raises(UserError, match="text-conditioned"):
        text_guidance_norm(load_model("digits-gen"), ["x"])
