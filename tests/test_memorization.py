"""Memorization check (Zhang et al. 2025, §4.1, Alg. 1): hooks read the right layer, early stop, metrics,
calibration, shipped calibrations, how a score resolves its settings against a calibration."""
import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from lowdim_app.cli import main
from lowdim_app.config import DEFAULT_ASSETS
from lowdim_app.data.digits import load_digits_split
from lowdim_app.diffusion import capture
from lowdim_app.errors import UserError
from lowdim_app.methods import memorization as mz
from lowdim_app.metrics import spikiness


def test_spikiness_orders_one_hot_above_flat():
    one_hot = torch.zeros(1, 64)
    one_hot[0, 3] = 8.0
    flat = torch.ones(1, 64)  # same l1 norm
    h = torch.cat([one_hot, flat])
    for metric in ("std", "l4_l2", "max_min"):
        s = spikiness(h, metric)
        assert s[0] > s[1], metric
    e = spikiness(h, "entropy")
    assert e[0] < e[1] and abs(e[1] - np.log(64)) < 1e-9 and abs(e[0]) < 1e-9
    assert abs(spikiness(flat, "l4_l2")[0] - 64 ** -0.25) < 1e-9
    with pytest.raises(UserError):
        spikiness(h, "nope")


def test_representation_equals_manual_full_forward_capture(digits_gen):
    """Early-stopped, max-pooled h equals the output captured during a full forward."""
    x0 = load_digits_split().test_images[:3]
    layer = "up_blocks.1.resnets.0"
    h = mz.representations(digits_gen, x0, layer, t=50, seed=3)
    noise = mz.noise_draw(digits_gen, 3, 0).expand(3, -1, -1, -1)     # draw 0 of seed 3, the same for every image
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
    (Zhang et al. 2025, Cor. 3.4 / App. A.4). Shipped AUROC values are the measured ones."""
    from lowdim_app.diffusion import load_model

    dup = mz.default_calibration("digits-dup", DEFAULT_ASSETS)
    assert dup.auroc > 0.99 and dup.tpr_at_1pct_fpr > 0.95 and dup.fpr <= 0.02
    assert mz.default_calibration("digits-mem", DEFAULT_ASSETS).auroc > 0.9
    model = load_model("digits-dup")
    s = load_digits_split()
    dup_idx = np.asarray(model.card["data"]["duplicated_index"])
    others = np.setdiff1d(np.asarray(model.card["train_index"]), dup_idx)[:100]
    sd = mz.scores(model, s.train_images[dup_idx], dup.layer, dup.t, dup.metric, dup.n_noise)
    so = mz.scores(model, s.train_images[others], dup.layer, dup.t, dup.metric, dup.n_noise)
    assert dup.is_memorized(sd).all()
    assert dup.is_memorized(so).mean() <= 0.03


def test_text_model_scores_with_empty_prompt(tiny_sd):
    img = tiny_sd.generate(2, seed=1, steps=2)
    h = mz.representations(tiny_sd, img, mz.SD_DEFAULT_LAYER, t=50)
    assert h.shape == (2, tiny_sd.unet.config.block_out_channels[-1])
    how = mz.setup(tiny_sd, DEFAULT_ASSETS)
    assert how.calibration is None and how.layer == mz.SD_DEFAULT_LAYER and (how.t, how.metric) == (50, "std")
    rows = mz.score_images(tiny_sd, img, ["a", "b"], how)
    assert rows[0].memorized is None and rows[0].verdict == "n/a" and np.isfinite(rows[0].score)
    per_draw = mz.representation_draws(tiny_sd, img, mz.SD_DEFAULT_LAYER, 50, how.n_noise)
    assert torch.allclose(per_draw.mean(1), mz.representations(tiny_sd, img, mz.SD_DEFAULT_LAYER, 50, how.n_noise))
    expected = np.mean([float(spikiness(per_draw[1, k:k + 1], "std")[0]) for k in range(how.n_noise)])
    assert rows[1].score == pytest.approx(expected, rel=1e-6)


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
    assert rows[0] == "path,score,spread,verdict,implied_fpr,nearest_train_rms,reason" and len(rows) == 11
    verdicts = [r.split(",")[3] for r in rows[1:]]
    assert set(verdicts[:4]) <= {"memorized", "uncertain"} and verdicts[:4].count("memorized") >= 3
    assert "memorized" not in verdicts[4:]
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


# ----------------------------------------------------------------------------- settings against calibrations
def test_setup_uses_the_shipped_calibration_only_when_the_settings_agree(tmp_path):
    from lowdim_app.diffusion import load_model

    model = load_model("digits-dup")
    shipped = mz.default_calibration("digits-dup", DEFAULT_ASSETS)
    how = mz.setup(model, DEFAULT_ASSETS)
    assert how.source == "shipped" and (how.layer, how.t, how.metric, how.n_noise) == (shipped.layer, 50,
                                                                                       shipped.metric, shipped.n_noise)
    assert mz.setup(model, DEFAULT_ASSETS, shipped.layer, 50, shipped.metric, 3).calibration == shipped
    # a spikiness score takes the shipped layer, or the std detector's when the default needs no layer
    std_layer = next(d["layer"] for d in shipped.detectors if d["metric"] == "std")
    assert mz.default_layer(model, DEFAULT_ASSETS) == (shipped.layer or std_layer) != ""
    for kw in ({"t": 100}, {"metric": "entropy"}, {"layer": "mid_block"}):
        how = mz.setup(model, DEFAULT_ASSETS, **kw)
        assert how.calibration is None and how.source == ""
        assert how.layer == kw.get("layer", mz.default_layer(model, DEFAULT_ASSETS)) and how.t == kw.get("t", 50)
    # an assets folder without calibrations: no verdict, the mid block
    assert mz.setup(model, tmp_path) == mz.ScoreSetup("mid_block", 50, "std", mz.DEFAULT_NOISE_DRAWS, None, "")


def test_a_calibration_file_rules_layer_t_metric_and_noise_draws():
    """The file's settings fill the blanks (the score is computed at *its* timestep), explicit
    different values are an error, and a file for another model is refused."""
    from lowdim_app.diffusion import load_model

    model = load_model("digits-dup")
    cal = mz.calibrate([3.0, 4.0], [0.0, 1.0, 0.5], "digits-dup", "mid_block", 120, "l4_l2", n_noise=2)
    how = mz.setup(model, DEFAULT_ASSETS, calibration=cal)
    assert (how.layer, how.t, how.metric, how.n_noise, how.source) == ("mid_block", 120, "l4_l2", 2, "file")
    assert mz.setup(model, DEFAULT_ASSETS, "mid_block", 120, "l4_l2", 5, calibration=cal).n_noise == 5
    for kw, message in (({"layer": "up_blocks.0.resnets.0"}, "for layer mid_block"), ({"t": 50}, "for t 120"),
                        ({"metric": "std"}, "for metric l4_l2")):
        with pytest.raises(UserError, match=message):
            mz.setup(model, DEFAULT_ASSETS, calibration=cal, **kw)
    with pytest.raises(UserError, match="for digits-dup, not digits-gen"):
        mz.setup(load_model("digits-gen"), DEFAULT_ASSETS, calibration=cal)
    x = load_digits_split().test_images[:3]
    rows = mz.score_images(model, x, ["a", "b", "c"], how, seed=4)
    assert np.allclose([r.score for r in rows], mz.scores(model, x, "mid_block", 120, "l4_l2", 2, 4), rtol=1e-12)


# ----------------------------------------------------------------------------- the score feature
def test_score_feature_verdicts_implied_fpr_and_nearest_training_images():
    """Verdicts follow the calibration's rule, the implied FPR is the share of the generalized reference
    at least as spiky, and a training image's nearest training image is itself (RMS 0)."""
    from lowdim_app.features.score import FEATURE, ScoreSettings
    from lowdim_app.methods.memorization_builtin import training_images

    from lowdim_app.diffusion import load_model

    model = load_model("digits-dup")
    train = training_images(model)
    dup_pos = [list(model.card["train_index"]).index(i) for i in model.card["data"]["duplicated_index"][:2]]
    test = load_digits_split().test_images[:2]
    x = torch.cat([train[dup_pos], test])
    s = ScoreSettings(images=("d0", "d1", "t0", "t1"), model="digits-dup", seed=2)
    res = FEATURE.run(s, images=x, names=list(s.images))
    cal = mz.default_calibration("digits-dup", DEFAULT_ASSETS)
    assert res.calibration == cal and res.calibration_source == "shipped"
    expected = mz.scores(model, x, cal.layer, 50, cal.metric, cal.n_noise, 2)
    assert np.allclose([r.score for r in res.rows], expected, rtol=1e-12)
    gen = np.asarray(cal.generalized_scores)
    for r in res.rows:
        assert r.verdict == cal.verdict(r.score, r.spread, r.ood_value)[0]
        assert r.verdict in ("uncertain", "memorized" if cal.is_memorized(r.score) else "generalized")
        assert r.implied_fpr == pytest.approx((cal.direction * gen >= cal.direction * r.score).mean(), abs=0)
    assert cal.is_memorized([r.score for r in res.rows]).tolist() == [True, True, False, False]
    assert [r.verdict for r in res.rows][2:] == ["generalized", "generalized"]
    assert res.nearest_index[:2] == dup_pos and res.nearest_rms[:2] == pytest.approx([0, 0], abs=1e-6)
    manual = torch.cdist(test.flatten(1), train.flatten(1)) / 256 ** 0.5
    assert res.nearest_index[2:] == manual.argmin(1).tolist()
    assert res.nearest_rms[2:] == pytest.approx(manual.min(1).values.tolist(), rel=1e-5)
    assert torch.equal(res.nearest_images[2], train[manual[0].argmin()])
    assert len(res.neighbour_pairs()) == 4 and "t0 | nearest training image, RMS" in res.neighbour_pairs()[2][1]
    # the CSV is the table, the JSON carries the neighbours, the summary counts the flags
    lines = res.to_csv().splitlines()
    assert lines[0] == "path,score,spread,verdict,implied_fpr,nearest_train_rms,reason" and lines[1].startswith("d0,")
    assert len(lines) == 5
    score, fpr = (float(lines[3].split(",")[i]) for i in (1, 4))
    assert score == pytest.approx(res.rows[2].score, rel=1e-5) and fpr == pytest.approx(res.rows[2].implied_fpr, abs=5e-5)
    js = json.loads(json.dumps(res.to_json()))
    assert js["rows"][0]["nearest_train_index"] == dup_pos[0] and js["calibration"]["source"] == "shipped"
    assert f"{sum(r.verdict == 'memorized' for r in res.rows)} of 4 images flagged" in res.summary()


def test_nearest_training_image_is_searched_in_the_models_own_training_set():
    """digits-mem trained on 16 digits: its neighbours are among those 16 (not the whole digits split)."""
    from lowdim_app.diffusion import load_model
    from lowdim_app.features.score import FEATURE, ScoreSettings

    model = load_model("digits-mem")
    split = load_digits_split()
    own = split.train_images[np.asarray(model.card["train_index"])]
    x = torch.cat([own[5:6], split.test_images[:2]])
    res = FEATURE.run(ScoreSettings(images=("own", "t0", "t1"), model="digits-mem"), images=x, names=["own", "t0", "t1"])
    manual = torch.cdist(x.flatten(1), own.flatten(1)) / 256 ** 0.5
    assert res.nearest_index == manual.argmin(1).tolist() and res.nearest_index[0] == 5
    assert res.nearest_rms == pytest.approx(manual.min(1).values.tolist(), abs=1e-6)
    assert res.nearest_rms[1] > 0.1      # a held-out digit is far from all 16


def test_score_feature_on_a_model_without_calibration_or_training_set(tiny_sd):
    from lowdim_app.features.score import FEATURE, ScoreSettings

    img = tiny_sd.generate(2, seed=1, steps=2)
    res = FEATURE.run(ScoreSettings(images=("a.png", "b.png"), model="tiny"), model=tiny_sd, images=img,
                      names=["a.png", "b.png"])
    assert res.calibration is None and res.nearest_images is None and res.neighbour_pairs() == []
    assert [r.verdict for r in res.rows] == ["n/a", "n/a"] and "No calibration matches" in res.summary()
    assert res.to_csv().splitlines()[1].endswith(",n/a,,,")


def test_score_settings_need_images_or_generated_samples_and_print_a_clean_line():
    from lowdim_app.features.score import ScoreSettings

    with pytest.raises(UserError, match="upload at least one image or ask for generated samples"):
        ScoreSettings(model="digits-dup")
    s = ScoreSettings(model="digits-dup", n_generate=2, seed=5)
    assert s.images == () and s.to_cli() == "python -m lowdim_app score --model digits-dup --no-invert --n-generate 2 --seed 5"
    with pytest.raises(UserError, match="images must be a file, got 1"):
        ScoreSettings(images=[1], model="digits-dup")


def test_generated_samples_alone_from_the_cli(tmp_path, capsys):
    """`score --n-generate N` needs no image (the UI's "also generate samples" without uploads)."""
    from lowdim_app.diffusion import load_model

    assert main(["score", "--model", "digits-dup", "--n-generate", "1", "--seed", "5", "--csv", str(tmp_path / "g.csv"),
                 "--quiet"]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == (tmp_path / "g.csv").read_text().strip() and "images flagged" in out.err
    name, score = out.out.splitlines()[1].split(",")[:2]
    model = load_model("digits-dup")
    cal = mz.default_calibration("digits-dup", DEFAULT_ASSETS)
    expected = mz.scores(model, model.generate(1, seed=5), cal.layer, cal.t, cal.metric, cal.n_noise, seed=5)[0]
    assert name == "sample seed 5 #0" and float(score) == pytest.approx(expected, rel=1e-5)


def test_calibrate_feature_fits_the_scores_of_its_images(tmp_path):
    """The fitted calibration holds the seeded scores of exactly these images, its AUROC is the
    Mann-Whitney statistic, and a score with the saved file flags the memorized ones."""
    from lowdim_app.diffusion import load_model
    from lowdim_app.features.calibrate import FEATURE, CalibrateSettings
    from lowdim_app.features.score import FEATURE as SCORE
    from lowdim_app.features.score import ScoreSettings

    model = load_model("digits-dup")
    split = load_digits_split()
    mem = split.train_images[model.card["data"]["duplicated_index"][:3]]
    gen = split.test_images[:4]
    s = CalibrateSettings(model="digits-dup", memorized=("m0", "m1", "m2"), generalized=("g0", "g1", "g2", "g3"),
                          layer="up_blocks.0.resnets.1", t=70, metric="l4_l2", target_fpr=0.25, seed=9)
    res = FEATURE.run(s, memorized_images=mem, generalized_images=gen)
    cal = res.calibration
    sm = mz.scores(model, mem, "up_blocks.0.resnets.1", 70, "l4_l2", 4, 9)
    sg = mz.scores(model, gen, "up_blocks.0.resnets.1", 70, "l4_l2", 4, 9)
    assert np.array_equal(cal.memorized_scores, sm) and np.array_equal(cal.generalized_scores, sg)
    pairs = [(a > b) + 0.5 * (a == b) for a in sm for b in sg]
    assert cal.auroc == pytest.approx(max(np.mean(pairs), 1 - np.mean(pairs)), abs=1e-12)
    assert cal.fpr <= 0.25 and res.memorized_names == ["m0", "m1", "m2"] and "memorized: m0 m1 m2" in cal.notes
    path = res.write(tmp_path / "c.json")
    back = SCORE.run(ScoreSettings(images=("m0",), model="digits-dup", calibration=str(path), seed=9), images=mem[:1],
                     names=["m0"])
    assert (back.t, back.metric, back.layer) == (70, "l4_l2", "up_blocks.0.resnets.1")
    r = back.rows[0]
    assert r.verdict == cal.verdict(r.score, r.spread, r.ood_value)[0]
    assert r.memorized in (None, bool(cal.is_memorized(r.score))) and (r.memorized is None) == (r.verdict == "uncertain")


def test_calibrate_builtin_writes_into_the_runtime_assets(tmp_path, monkeypatch, capsys):
    """Small reference sets (16 samples, 5 DDIM steps) into LOWDIM_ASSETS, not the shipped folder;
    digits-gen (no near-copies) borrows digits-dup's layer; thresholds sit at the target FPR."""
    from lowdim_app.metrics import auroc

    shipped = {p.name: p.read_bytes() for p in (DEFAULT_ASSETS / "calibrations").iterdir()}
    (tmp_path / "models").symlink_to(DEFAULT_ASSETS / "models")
    monkeypatch.setenv("LOWDIM_ASSETS", str(tmp_path))
    assert main(["calibrate-builtin", "--n-samples", "16", "--steps", "5", "--quiet"]) == 0
    assert "digits-dup: " in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in (DEFAULT_ASSETS / "calibrations").iterdir()} == shipped
    cals = {m: mz.Calibration.load(tmp_path / "calibrations" / f"{m}.json") for m in ("digits-dup", "digits-mem", "digits-gen")}
    with open(tmp_path / "calibrations" / "layer_auroc.csv") as f:
        rows = list(__import__("csv").DictReader(f))
    dup_rows = [r for r in rows if r["model"] == "digits-dup"]
    assert len(dup_rows) == 12 and not [r for r in rows if r["model"] == "digits-gen"]
    best = max(dup_rows, key=lambda r: float(r["auroc_std"]))["layer"]
    assert {d["layer"] for d in cals["digits-dup"].detectors} == {best, ""}
    assert (cals["digits-gen"].metric, cals["digits-gen"].layer) == (cals["digits-dup"].metric, cals["digits-dup"].layer)
    for m, c in cals.items():
        gen = np.asarray(c.generalized_scores)
        assert c.fpr == c.is_memorized(gen).mean() and c.fpr <= 0.01 + 1 / len(gen)
        ref = np.asarray(c.ood_reference)
        assert len(ref) == 180 and (ref > c.ood_threshold).mean() <= 0.01
        assert "samples: 16 DDIM (5 steps, seed 7)" in c.notes
        if c.memorized_scores:
            a = auroc(c.memorized_scores, gen)
            assert c.auroc == pytest.approx(max(a, 1 - a))
    assert cals["digits-gen"].memorized_scores == [] and cals["digits-gen"].auroc is None
