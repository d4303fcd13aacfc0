"""One-class calibration: the conformal threshold keeps its false-positive-rate promise (mean and interval)
over many simulated reference sets; it refuses reference sets too small for the target; through the
``calibrate`` command on a built-in model (held-out real digits as the non-training references) it writes
a calibration that ``score`` uses, and the shipped two-class files still load."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import norm

from lowdim_app.errors import UserError
from lowdim_app.methods.one_class import fit_one_class, min_reference_size, promise

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("n, alpha", [(99, 0.01), (180, 0.05), (40, 0.1)])
def test_conformal_threshold_keeps_its_promise_over_reference_sets(n, alpha):
    rng = np.random.default_rng(0)
    p = promise(n, alpha)
    assert p.expected_fpr <= alpha + 1e-12 and p.fpr_low < p.expected_fpr < p.fpr_high and p.fpr_upper < p.fpr_high
    fprs = []
    for _ in range(4000):
        thr, _ = fit_one_class(rng.normal(size=n), +1, alpha)
        fprs.append(norm.sf(thr))              # the exact FPR of this threshold on new non-members
    fprs = np.asarray(fprs)
    se = fprs.std() / np.sqrt(len(fprs))
    assert abs(fprs.mean() - p.expected_fpr) < 4 * se                       # the promised mean
    inside = ((fprs >= p.fpr_low) & (fprs <= p.fpr_high)).mean()
    assert abs(inside - 0.95) < 0.015                                        # the stated 95% interval
    assert abs((fprs <= p.fpr_upper).mean() - 0.95) < 0.015                  # the one-sided bound


def test_direction_and_refusal_below_the_minimum_size():
    ref = np.arange(100.0)
    hi, _ = fit_one_class(ref, +1, 0.05)
    lo, _ = fit_one_class(ref, -1, 0.05)
    assert hi == 95.0 and lo == 4.0            # k = ceil(101 * 0.95) = 96th smallest / largest
    assert min_reference_size(0.01) == 99 and min_reference_size(0.05) == 19
    fit_one_class(np.arange(99.0), +1, 0.01)
    with pytest.raises(UserError, match="needs at least 99 reference images, got 98"):
        fit_one_class(np.arange(98.0), +1, 0.01)
    with pytest.raises(UserError, match="not a finite number"):
        fit_one_class([1.0, np.nan] * 20, +1, 0.1)


def test_one_class_calibrate_command_and_score_with_it(tmp_path, capsys):
    """digits-dup: 120 held-out real digits as the only references (no memorized set); the file scores the
    other held-out digits and memorized near-copies, and carries its promise."""
    from lowdim_app.cli import main
    from lowdim_app.data.digits import load_digits_split
    from lowdim_app.data.images import to_pil
    from lowdim_app.methods import memorization as mz

    test = load_digits_split().test_images
    ref = tmp_path / "ref"
    ref.mkdir()
    for i, img in enumerate(to_pil(test[:120])):
        img.save(ref / f"d{i:03d}.png")
    out = tmp_path / "one.json"
    assert main(["calibrate", "--model", "digits-dup", "--generalized", str(ref), "--target-fpr", "0.05",
                 "--noise-draws", "1", "--out", str(out), "--quiet"]) == 0
    io = capsys.readouterr()
    head = json.loads(io.out)
    assert head["kind"] == "one-class" and head["auroc"] is None and head["direction"] == 1
    assert head["fpr_promise"]["n_reference"] == 120 and head["fpr_promise"]["rank"] == 115
    assert "One-class calibration" in io.err and "promised false-positive rate" in io.err
    cal = mz.Calibration.load(out)
    assert cal.kind == "one-class" and len(cal.generalized_scores) == 120 and not cal.memorized_scores
    assert cal.fpr == pytest.approx(5 / 120)
    for f in ("digits-dup", "digits-mem", "digits-gen"):                  # the shipped two-class files
        old = mz.Calibration.load(f"assets/calibrations/{f}.json")
        assert old.kind == "two-class" and old.fpr_promise == {} and old.promise_text() == ""
    held = tmp_path / "held"
    held.mkdir()
    for i, img in enumerate(to_pil(test[200:240])):
        img.save(held / f"h{i:03d}.png")
    assert main(["score", str(held), "--model", "digits-dup", "--calibration", str(out), "--quiet"]) == 0
    io = capsys.readouterr()
    assert "promised false-positive rate" in io.err
    verdicts = [line.split(",")[3] for line in io.out.splitlines()[1:]]
    assert len(verdicts) == 40 and verdicts.count("memorized") <= 8      # 5% promised; 8 of 40 is p < 0.01
    assert main(["calibrate", "--model", "digits-dup", "--generalized", str(held), "--out", str(tmp_path / "x.json"),
                 "--quiet"]) == 2                                           # 40 references cannot promise 1%
    assert "needs at least 99 reference images, got 40" in capsys.readouterr().err
