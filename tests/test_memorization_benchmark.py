"""``benchmark memorization`` end to end, offline: the tiny SD pipeline with the shipped prompt sets (every
detector, ROC, per-prompt and per-image tables), identical rows and table from one process and from two
``torchrun`` processes, a rerun with a larger ``--limit`` that computes only the new prompts, the built-in
digit models (samples labelled by their nearest training image), and one-line errors."""
from __future__ import annotations

import shutil

import pytest

from tests.test_scaleout import cli, rows

pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = dict(limit=2, images_per_prompt=2, steps=6)
TIMING = ("_seconds",)


def bench(model, out, **kw):
    """The command's code path in this process (one thread, like the torchrun processes it is compared with)."""
    from lowdim_app.config import from_environment
    from lowdim_app.features.benchmark_memorization import FEATURE, BenchmarkSettings

    return FEATURE.run(BenchmarkSettings.from_raw(model=str(model), out=str(out), **kw), runtime=from_environment())


def quality(table: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "s_per_image"} for r in table]


def values(table: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.endswith(TIMING)} for r in table]


@pytest.fixture(scope="module")
def single(tiny_sd_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-single")
    return bench(tiny_sd_dir, out, **SMALL), out


def test_tiny_text_model_end_to_end(single):
    from lowdim_app.data.prompts import load_prompt_set
    from lowdim_app.methods.detectors import DETECTORS

    res, out = single
    assert [r["detector"] for r in res.table] == list(DETECTORS)
    for r in res.table:
        assert r["units_memorized"] == r["units_generalized"] == 2 and r["images"] == 8
        assert 0 <= r["auroc"] <= 1 and r["tpr_at_1pct_fpr"] <= r["tpr_at_3pct_fpr"] and r["s_per_image"] > 0
    scores = rows(out / "scores.csv")
    assert len(scores) == 8 and all((out / r["path"]).is_file() for r in scores)
    mem = load_prompt_set("sd14-memorized").prompts
    assert scores[0]["prompt"] == mem[0] and scores[0]["label"] == "memorized" and scores[-1]["set"] == "nonmem"
    assert len(rows(out / "prompts.csv")) == 4 and len(rows(out / "table.csv")) == len(DETECTORS)
    assert (out / "roc.png").stat().st_size > 10_000 and (out / "table.json").is_file()
    assert "text_noise_norm" in res.summary() and "AUROC" in res.summary()
    assert "python -m lowdim_app benchmark memorization --model" in res.reproduce()


def test_two_torchrun_processes_give_the_single_process_table(single, tiny_sd_dir, tmp_path):
    res, out = single
    r = cli("benchmark", "memorization", "--model", str(tiny_sd_dir), "--out", str(tmp_path), "--limit", "2", "--images-per-prompt", "2",
            "--steps", "6", procs=2)
    assert "on 2 process(es)" in r.stdout
    assert values(rows(tmp_path / "scores.csv")) == values(rows(out / "scores.csv"))
    assert quality(rows(tmp_path / "table.csv")) == quality(rows(out / "table.csv"))
    assert {p.name.split("-")[1] for p in (tmp_path / "parts").glob("*.csv")} == {"r00000", "r00001"}


def test_a_larger_limit_resumes_and_other_settings_are_refused(single, tiny_sd_dir, tmp_path):
    from lowdim_app.errors import UserError

    _, out = single
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    more = bench(tiny_sd_dir, copy, **{**SMALL, "limit": 3})
    assert more.images_now == 4 and more.already_done == 8       # only the third prompt of each set is new
    before = {r["path"]: r for r in values(rows(out / "scores.csv"))}
    after = values(rows(copy / "scores.csv"))
    assert len(after) == 12 and all(before[r["path"]] == r for r in after if r["path"] in before)
    with pytest.raises(UserError, match="other settings.*seed"):
        bench(tiny_sd_dir, copy, **{**SMALL, "seed": 1})


def test_digit_model_labels_samples_by_their_nearest_training_image(tmp_path):
    res = bench("digits-dup", tmp_path, samples=64, images_per_prompt=16, steps=20)
    table = {r["detector"]: r for r in res.table}
    assert "text_noise_norm" not in table and set(table) >= {"std", "denoising_error", "flipd"}
    n_mem, n_gen = table["std"]["units_memorized"], table["std"]["units_generalized"]
    assert n_mem >= 5 and n_gen >= 5 and table["std"]["images"] == 64
    scores = rows(tmp_path / "scores.csv")
    for r in scores:
        d = float(r["nearest_train_rms"])
        assert r["label"] == ("memorized" if d < 0.07 else "generalized" if d > 0.10 else "ambiguous")
    assert table["std"]["auroc"] > 0.9          # digits-dup's near-copies have spikier representations


def test_bad_requests_are_one_line_errors(tiny_pixel_dir, tmp_path, capsys):
    from lowdim_app.cli import main

    out = ["--out", str(tmp_path / "o"), "--quiet"]
    for args, msg in ((["--model", "digits-gen", "--detectors", "sharpness"], "needs the prompt of a text-to-image"),
                      (["--model", str(tiny_pixel_dir)], "not a built-in model"),
                      (["--model", "digits-gen", "--detectors", "std", "std"], "named twice"),
                      (["--model", "digits-gen", "--detectors", "bogus"], "unknown detector"),
                      (["--model", "digits-gen", "--memorized-prompts", "p.txt"], "prompt sets apply to text-to-image"),
                      (["--model", "digits-gen", "--steps", "5", "--first-steps", "6"], "at most the steps")):
        assert main(["benchmark", "memorization", *args, *out]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and msg in err and len(err.strip().splitlines()) == 1, err
    assert main(["benchmark", "memorization", "--model", "digits-gen"]) == 2
    assert "output folder" in capsys.readouterr().err
    assert main(["benchmark", "speed", "--out", str(tmp_path)]) == 2
    assert "memorization" in capsys.readouterr().err
    assert main(["--help"]) == 0 and "benchmark" in capsys.readouterr().out     # help texts format (no bare %)


def test_prompt_sets_ship_and_user_files_load(tmp_path):
    from lowdim_app.data.prompts import SHIPPED, load_prompt_set
    from lowdim_app.errors import UserError

    mem, gen = load_prompt_set("sd14-memorized"), load_prompt_set("sd14-nonmemorized")
    assert len(mem) == len(gen) == 500 and len(set(mem.prompts)) == 500 and mem.digest != gen.digest
    assert "Webster" in (SHIPPED["sd14-memorized"].parent / "README.md").read_text()
    (tmp_path / "p.jsonl").write_text('{"prompt": "a cat"}\n\n{"caption": " a dog "}\n')
    assert load_prompt_set(str(tmp_path / "p.jsonl")).prompts == ("a cat", "a dog")
    (tmp_path / "bad.jsonl").write_text('{"text": 1}\n')
    with pytest.raises(UserError, match="line 1: not a JSON object"):
        load_prompt_set(str(tmp_path / "bad.jsonl"))
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(UserError, match="no prompts"):
        load_prompt_set(str(tmp_path / "empty.txt"))
