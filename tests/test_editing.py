"""Jacobian editing (Wang et al. 2024, §4.2, App. E.4; Chen et al. 2024, LOCO Edit): inversion/edit
round trips, masks, saved directions (transfer), latent path, the ``edit``/``rank`` features and CLI."""
import argparse
import json
import shlex

import numpy as np
import pytest
import torch
from PIL import Image

from lowdim_app.cli import main
from lowdim_app.data.digits import load_digits_split
from lowdim_app.errors import UserError
from lowdim_app.features.edit import FEATURE as EDIT
from lowdim_app.features.edit import AlphaRange, EditSettings
from lowdim_app.features.rank import FEATURE as RANK
from lowdim_app.features.rank import RankSettings
from lowdim_app.features.settings import add_arguments, from_args
from lowdim_app.methods import editing
from lowdim_app.metrics import numerical_rank

EX = "assets/examples/digit_2_test0.png"
TODAY_KEYS = {"model", "t", "alphas", "direction", "kind", "sigma", "change_along_direction", "change_along_random"}
SEARCH_KEYS = {"singular_values", "numerical_rank", "search"}


@pytest.fixture(scope="module")
def search(digits_gen):
    x0 = load_digits_split().test_images[:1]
    return editing.find_directions(digits_gen, x0, digits_gen.timestep_from_fraction(0.7), k=4)


def test_alpha_zero_reproduces_the_plain_reconstruction(digits_gen, search):
    inv = search.inversion
    plain = digits_gen.decode(digits_gen.ddim_sample(inv.x_t, inv.t, inv.steps))
    strip = editing.edit_strip(digits_gen, inv, search.directions[0].vector, [-3.0, 0.0, 3.0])
    assert torch.allclose(strip[1], plain[0], atol=1e-5)
    assert (strip[0] - strip[1]).abs().max() > 0.05


def test_directions_are_orthonormal_right_singular_vectors(digits_gen, search):
    V = search.V.flatten(1)
    assert torch.allclose(V @ V.T, torch.eye(len(V)), atol=1e-4)
    assert search.numerical_rank is not None and 1 <= search.numerical_rank <= digits_gen.n
    assert torch.all(search.singular_values[:-1] >= search.singular_values[1:] - 1e-6)


def test_singular_directions_move_the_image_more_than_random_ones(digits_gen):
    """Wang et al. 2024, Fig. 6 control: along v_1 the edit changes x_0 more than along a random direction.

    On 6 held-out digits at t = 0.7T, alpha in {-4, 4}, the average change ratio must exceed 1.5.
    """
    imgs = load_digits_split().test_images[:6]
    t = digits_gen.timestep_from_fraction(0.7)
    ratios = []
    for i in range(len(imgs)):
        s = editing.find_directions(digits_gen, imgs[i:i + 1], t, k=1)
        along = editing.edit_effect(editing.edit_strip(digits_gen, s.inversion, s.V[0], [-4.0, 0.0, 4.0]), [-4, 0, 4])
        rand = editing.edit_effect(editing.edit_strip(digits_gen, s.inversion, editing.random_direction(s.V[0].shape, i),
                                                      [-4.0, 0.0, 4.0]), [-4, 0, 4])
        ratios.append((along[0] + along[2]) / max(rand[0] + rand[2], 1e-9))
    assert sum(ratios) / len(ratios) > 1.5, ratios


def test_masked_direction_changes_inside_more_than_outside(digits_gen):
    """LOCO Edit local direction (Chen et al. 2024; top half masked). Measured on a held-out digit: 89-99% of the
    first-order change J d falls inside the mask at t = 0.3T..0.7T; after the full DDIM edit the
    inside/outside mean pixel-change ratio is 2.7 at t = 0.3T (alpha = 2) but drops below 1 at 0.7T,
    where sampling spreads the change (so local edits want a smaller t)."""
    x0 = load_digits_split().test_images[1:2]
    mask = torch.zeros(16, 16)
    mask[:8, :] = 1  # top half
    t = digits_gen.timestep_from_fraction(0.3)
    s = editing.find_directions(digits_gen, x0, t, k=2, mask=mask)
    assert min(s.summary["inside_fraction"]) > 0.85
    strip = editing.edit_strip(digits_gen, s.inversion, s.V[0], [0.0, 2.0])
    change = (strip[1] - strip[0]).abs()[0]
    inside, outside = change[:8].mean().item(), change[8:].mean().item()
    assert inside > 2 * outside, (inside, outside)
    with pytest.raises(UserError, match="empty"):
        editing.pixel_mask_to_sample(digits_gen, torch.zeros(16, 16))


def _inside_outside(strip, mask, ref=0):
    d = (strip - strip[ref])[:, 0]
    return [(float(e[mask == 1].pow(2).mean().sqrt()), float(e[mask == 0].pow(2).mean().sqrt())) for e in d]


def test_kept_outside_bounds_the_leakage_of_a_local_edit(digits_gen):
    """Blended sampling on top of LOCO's projection: at t = 0.7T, where the projection alone leaks
    (outside/inside change > 0.3 on this digit), keeping the outside on the unedited trajectory for
    80% of the steps brings it under 0.3 (bench/local_edit.py: mean 0.15 over 12 held-out digits x 3
    masks); keeping it for all steps leaves the outside exactly the reconstruction; alpha = 0 is the
    reconstruction either way; and an edit does not depend on the other alphas of its strip."""
    x0 = load_digits_split().test_images[1:2]
    mask = torch.zeros(16, 16)
    mask[:8, :] = 1
    s = editing.find_directions(digits_gen, x0, digits_gen.timestep_from_fraction(0.7), k=1, mask=mask)
    alphas = [0.0, -6.0, 6.0]
    plain = editing.edit_strip(digits_gen, s.inversion, s.V[0], alphas)
    loco = _inside_outside(plain, mask)[1:]
    assert max(o / i for i, o in loco) > 0.3, loco
    keep = editing.keep_outside(digits_gen, s.inversion, mask[None], 0.8)
    kept = editing.edit_strip(digits_gen, s.inversion, s.V[0], alphas, keep=keep)
    assert torch.allclose(kept[0], plain[0], atol=1e-5)
    ratios = [o / i for i, o in _inside_outside(kept, mask)[1:]]
    assert max(ratios) <= 0.3 and min(i for i, _ in _inside_outside(kept, mask)[1:]) >= 0.1, ratios
    alone = editing.edit_strip(digits_gen, s.inversion, s.V[0], [6.0], keep=keep)
    assert torch.allclose(alone[0], kept[2], atol=1e-5)
    full = editing.edit_strip(digits_gen, s.inversion, s.V[0], alphas,
                              keep=editing.keep_outside(digits_gen, s.inversion, mask[None], 1.0))
    assert torch.equal((full[1:] - full[0])[:, 0][:, mask == 0], torch.zeros(2, 128))
    assert editing.keep_outside(digits_gen, s.inversion, mask[None], 0.0) is None


def test_saved_direction_round_trip_and_transfer(digits_gen, search, tmp_path):
    d = search.directions[0]
    path = d.save(tmp_path / "v1.safetensors")
    back = editing.Direction.load(path)
    assert torch.equal(back.vector, d.vector) and back.t == d.t and back.model_id == "digits-gen" and back.index == 1
    back.check_compatible(digits_gen)
    other = load_digits_split().test_images[5:6]
    inv = editing.invert(digits_gen, other, back.t)
    strip = editing.edit_strip(digits_gen, inv, back.vector, [0.0, 5.0])
    assert (strip[1] - strip[0]).abs().max() > 0.05
    from lowdim_app.diffusion import load_model
    with pytest.raises(UserError, match="computed on digits-gen, not digits-mem"):
        back.check_compatible(load_model("digits-mem"))
    (tmp_path / "junk.safetensors").write_bytes(b"nope")
    with pytest.raises(UserError, match="not a LowDim Lab direction file"):
        editing.Direction.load(tmp_path / "junk.safetensors")


def test_alpha_bounds():
    with pytest.raises(UserError):
        editing.check_alphas([1e6])
    with pytest.raises(UserError):
        editing.check_alphas([])


def test_latent_text_model_edit_end_to_end(tiny_sd):
    img = tiny_sd.generate(1, seed=0, steps=2)
    cond = tiny_sd.encode_prompt("a photo of a cat")
    s = editing.find_directions(tiny_sd, img, 600, k=2, total_steps=8, cond=cond, method="krylov", max_passes=24)
    assert s.V.shape == (2, *tiny_sd.sample_shape) and s.numerical_rank is None  # top-k only: no full spectrum
    assert s.summary["passes"] <= 24 and (s.summary["converged"] or s.summary["stopped_at_budget"])
    strip = editing.edit_strip(tiny_sd, s.inversion, s.V[0], [-2.0, 2.0])
    assert strip.shape == (2, 3, 128, 128) and torch.isfinite(strip).all()


def test_edit_and_rank_cli(tmp_path, digits_gen):
    from lowdim_app.data.images import to_pil

    to_pil(load_digits_split().test_images[:1], upscale=4)[0].save(tmp_path / "d.png")
    out = tmp_path / "out"
    assert main(["edit", str(tmp_path / "d.png"), "--model", "digits-gen", "--k", "3", "--direction", "2",
                 "--alpha", "-4:4:3", "--out", str(out), "--save-direction", str(tmp_path / "v2.safetensors")]) == 0
    rep = json.loads((out / "edit.json").read_text())
    assert rep["direction"] == 2 and len(rep["change_along_direction"]) == 3 and (out / "strip.png").is_file()
    assert TODAY_KEYS | SEARCH_KEYS <= set(rep) and rep["alphas"] == [-4.0, 0.0, 4.0] and len(rep["singular_values"]) == 3
    for name in ("spectrum", "v_directions", "u_images", "edit_alpha_-4.00", "edit_alpha_+0.00", "edit_alpha_+4.00"):
        assert (out / f"{name}.png").is_file(), name
    # strip: 2 rows (direction, random control) x 3 alphas of 16 px tiles upscaled 8x with 2 px padding
    assert Image.open(out / "strip.png").size == (8 * (3 * 18 + 2), 8 * (2 * 18 + 2))
    assert main(["edit", str(tmp_path / "d.png"), "--model", "digits-gen", "--load-direction",
                 str(tmp_path / "v2.safetensors"), "--alpha", "0,3", "--out", str(tmp_path / "out2")]) == 0
    rep2 = json.loads((tmp_path / "out2" / "edit.json").read_text())
    assert TODAY_KEYS <= set(rep2) and not SEARCH_KEYS & set(rep2) and rep2["direction"] == 2
    assert not (tmp_path / "out2" / "spectrum.png").exists()
    assert main(["edit", str(tmp_path / "d.png"), "--model", "digits-mem", "--load-direction",
                 str(tmp_path / "v2.safetensors"), "--out", str(tmp_path / "out3")]) == 2
    assert main(["edit", str(tmp_path / "d.png"), "--k", "3", "--direction", "4", "--out", str(tmp_path / "o4")]) == 2
    assert main(["rank", "--model", "digits-gen", "--steps", "10", "--points", "3", "--out", str(tmp_path / "rank")]) == 0
    rows = (tmp_path / "rank.csv").read_text().splitlines()
    assert len(rows) == 4 and rows[0].startswith("t,sigma_t,snr,numerical_rank")
    assert (tmp_path / "rank.png").is_file()
    # the first point is x_T = randn(seed 0) at t = T - 1: its rank is eq. 46 on the jacrev spectrum
    t0, _, _, r0, frac0, lower0 = rows[1].split(",")
    x = digits_gen.randn(1, 0)[0]
    with digits_gen.forward_ad_safe():
        J = torch.func.jacrev(lambda z: digits_gen.x0_hat(z[None], int(t0), dtype=torch.float32)[0])(x)
    expected = numerical_rank(torch.linalg.svdvals(J.reshape(digits_gen.n, digits_gen.n).double()))
    assert int(t0) == 999 and int(r0) == expected and float(frac0) == pytest.approx(expected / 256) and lower0 == "0"


# ------------------------------------------------------------------------ the edit feature
@pytest.fixture(scope="module")
def settings():
    return EditSettings(image=EX, k=2, direction=2, alpha=(-3.0, 0.0, 3.0), seed=4)


@pytest.fixture(scope="module")
def staged(digits_gen, settings):
    search = EDIT.find(settings, model=digits_gen)
    return search, EDIT.edit(settings, search, model=digits_gen)


def test_two_stages_give_the_one_shot_run(digits_gen, settings, staged):
    """The UI's Find -> Edit (two calls, one settings object) equals the CLI's single run."""
    search, res = staged
    once = EDIT.run(settings, model=digits_gen)
    assert torch.equal(res.along, once.along) and torch.equal(res.control, once.control)
    assert torch.equal(search.search.singular_values, once.search.search.singular_values)
    assert list(res.images()["strip"].getdata()) == list(once.images()["strip"].getdata())
    # the strip's bottom row is the seeded random control, not the direction
    inv = search.search.inversion
    rand = editing.edit_strip(digits_gen, inv, editing.random_direction(digits_gen.sample_shape, 4), [-3.0, 0.0, 3.0])
    assert torch.equal(res.control, rand) and not torch.equal(res.along, rand)
    assert torch.equal(res.along, editing.edit_strip(digits_gen, inv, search.search.V[1], [-3.0, 0.0, 3.0]))
    nums = res.numbers()
    assert TODAY_KEYS | SEARCH_KEYS <= set(nums) and nums["direction"] == 2 and nums["t"] == 699
    assert nums["change_along_direction"][1] == 0.0 and nums["sigma"] == pytest.approx(float(search.search.singular_values[1]))
    assert "v2 (jacobian)" in res.summary() and "Mean change along the direction" in res.summary()


def test_edit_stage_refuses_a_search_for_other_settings(digits_gen, settings, staged):
    search, _ = staged
    with pytest.raises(UserError, match="changed since 'Find directions'"):
        EDIT.edit(settings.replace(k=3), search, model=digits_gen)
    with pytest.raises(UserError, match="changed since 'Find directions'"):
        EDIT.edit(settings.replace(t=0.5), search, model=digits_gen)
    # the edit-stage fields may change: another direction and seed reuse the search
    other = EDIT.edit(settings.replace(direction=1, seed=9), search, model=digits_gen)
    assert torch.equal(other.along, editing.edit_strip(digits_gen, search.search.inversion, search.search.V[0],
                                                       [-3.0, 0.0, 3.0]))


def test_cost_counts_the_passes_of_a_run(digits_gen, settings, staged):
    """At the reference size (digits-gen, n = 256, exact path) the estimate is the measured count."""
    search, _ = staged
    cost = EDIT.cost(settings)
    steps = search.search.inversion.steps
    assert cost.vjp == search.search.summary["passes"] == 256
    assert cost.forward == steps * (1 + 2 * len(settings.alpha))
    transfer = EDIT.cost(settings.replace(load_direction="v.safetensors"))
    assert transfer.vjp == 0 and transfer.forward == cost.forward
    assert RANK.cost(RankSettings(steps=10, points=3)).vjp == 3 * 256


def test_rank_solver_choice_and_the_krylov_estimate_against_the_exact_rank(digits_gen):
    """``rank --solver``: auto takes the exact Jacobian on n = 256 within 300 passes (the whole spectrum); the
    Krylov path forced at the same points never contradicts it: where it reports a number it is the exact rank
    (+-1), a lower bound k + 1 is at most the exact rank, and the energy fraction is at most 1. (Plain Hutchinson
    on J reported rank 4 with energy fraction 1.21 at the middle point, where the exact rank is 100.) Exact with
    a budget below n is refused in one line."""
    from lowdim_app.methods.lowrank import rank_along_trajectory, rank_point

    exact = rank_along_trajectory(digits_gen, steps=20, points=3, max_passes=300)
    kry = rank_along_trajectory(digits_gen, steps=20, points=3, max_passes=300, solver="krylov", tol=1e-3)
    assert [p.method for p in exact] == ["exact"] * 3 and [p.method for p in kry] == ["krylov"] * 3
    for e, q in zip(exact, kry):
        assert e.passes == 256 and q.passes <= 300
        assert 0 < q.energy_fraction <= 1.0, q.energy_fraction
        if q.rank_is_lower_bound:
            assert q.rank <= e.rank, (q.t, q.rank, e.rank)
        else:
            assert abs(q.rank - e.rank) <= 1, (q.t, q.rank, e.rank)
    with pytest.raises(UserError, match="exact path needs n = 256"):
        rank_point(digits_gen, digits_gen.randn(1, 0), 100, max_passes=100, solver="exact")
    assert RANK.cost(RankSettings(steps=10, points=3, solver="krylov")).vjp < 3 * 256
    with pytest.raises(UserError, match="exact path needs n = 256"):
        RANK.cost(RankSettings(steps=10, points=3, max_passes=100, solver="exact"))


def test_cross_field_rules():
    with pytest.raises(UserError, match="direction must be between 1 and k = 3"):
        EditSettings(image=EX, k=3, direction=4)
    with pytest.raises(UserError, match="drop the mask"):
        EditSettings(image=EX, mask="m.png", load_direction="v.safetensors")
    with pytest.raises(UserError, match="give the image"):
        EditSettings()
    EditSettings(image=EX, k=3, direction=9, load_direction="v.safetensors")   # a loaded direction ignores k
    with pytest.raises(UserError, match="alpha range A must be between"):
        AlphaRange(amax=1e9, count=5)
    with pytest.raises(UserError, match="edit strength alpha: at most 25 values"):
        EditSettings(image=EX, alpha=tuple(range(26)))


@pytest.mark.parametrize("amax, count", [(6, 7), (2.5, 6), (0.1, 2), (7.3, 25), (49.9, 11)])
def test_reproduce_line_parses_back_to_the_same_settings(amax, count):
    """The UI's alphas (linspace of its A and count widgets) survive the printed line exactly."""
    s = EditSettings(image="image.png", k=4, direction=3, t=0.35, steps=20, mask="mask.png", seed=7,
                     alpha=AlphaRange(amax=amax, count=count).alphas)
    argv = shlex.split(s.to_cli())[4:]
    parser = argparse.ArgumentParser()
    add_arguments(parser, EditSettings)
    back = from_args(EditSettings, parser.parse_args(argv))
    assert back == s and back.alpha == tuple(np.linspace(-amax, amax, count).tolist())


def test_transfer_edits_at_the_saved_direction_time(digits_gen, tmp_path):
    """A loaded direction carries its own t (here 300, not the settings' 0.7T) and prompt."""
    v = editing.random_direction(digits_gen.sample_shape, 11)
    path = editing.Direction(v, "digits-gen", 300, "jacobian", 3, 1.5).save(tmp_path / "v.safetensors")
    res = EDIT.run(EditSettings(image=EX, load_direction=str(path), alpha=(0.0, 2.0), steps=20), model=digits_gen)
    from lowdim_app.features.edit import load_image_for

    inv = editing.invert(digits_gen, load_image_for(digits_gen, EX), 300, 20)
    assert res.t == 300 and res.search is None and res.numbers()["direction"] == 3
    assert torch.equal(res.along, editing.edit_strip(digits_gen, inv, v, [0.0, 2.0]))
    assert "saved direction v3 (t = 300)" in res.summary()
