"""Scale-out: ``audit`` and ``directions`` sharded over ``torchrun`` processes (gloo on CPU) give the
single-process rows; a run killed mid-way resumes without losing or duplicating a row; an output
folder never mixes settings; bad files are rows with their reason; the report renders in Chromium."""
from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lowdim_app.features import sharding
from lowdim_app.errors import UserError
from tests.conftest import REPO, loaded_image_size

N_IMAGES = 64


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", LOWDIM_DEVICE="cpu", PYTHONPATH=str(REPO))
    env.pop("LOCAL_RANK", None)
    return env


def cli(*args, procs: int = 1, timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs),
                 "--master_port", str(29400 + os.getpid() % 500)] if procs > 1 else [sys.executable])
    r = subprocess.run([*launcher, "-m", "lowdim_app", *args, "--quiet"], cwd=REPO, env=_env(),
                       capture_output=True, text=True, timeout=timeout)
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


def audit(source, out, **kw):
    """One in-process audit (the command's code path without a launcher), on one thread like the
    ``OMP_NUM_THREADS=1`` processes it is compared with (CPU kernels split sums by thread count)."""
    import torch

    from lowdim_app.config import from_environment
    from lowdim_app.features.audit import FEATURE, AuditSettings

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return FEATURE.run(AuditSettings.from_raw(source=str(source), out=str(out), **{"model": "digits-dup", **kw}),
                           runtime=from_environment())
    finally:
        torch.set_num_threads(threads)


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """61 generated digits, one held-out real digit, a text file posing as a PNG and a nested folder."""
    from lowdim_app.data.images import to_pil
    from lowdim_app.diffusion import load_model

    root = tmp_path_factory.mktemp("audit-images")
    (root / "gen").mkdir()
    for i, img in enumerate(to_pil(load_model("digits-dup").generate(N_IMAGES - 3, seed=5, steps=20))):
        img.save(root / "gen" / f"sample_{i:04d}.png")
    (root / "nested").mkdir()
    shutil.copy(REPO / "assets" / "examples" / "digit_2_test0.png", root / "nested" / "real.png")
    (root / "nested" / "notes.png").write_text("not an image\n")
    shutil.copy(root / "gen" / "sample_0000.png", root / "nested" / "copy_of_0.png")
    return root


@pytest.fixture(scope="module")
def single(images, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("audit-single")
    audit(images, out, batch_size=8)
    return out


def test_single_process_audit_writes_every_row_and_a_report(images, single):
    table = rows(single / "scores.csv")
    assert len(table) == N_IMAGES and len({r["path"] for r in table}) == N_IMAGES
    bad = [r for r in table if r["error"]]
    assert [Path(r["path"]).name for r in bad] == ["notes.png"] and "not a readable image" in bad[0]["error"]
    assert bad[0]["verdict"] == "skipped" and bad[0]["score"] == ""
    good = [r for r in table if not r["error"]]
    assert {r["verdict"] for r in good} <= {"memorized", "generalized", "uncertain", "out-of-domain"}
    assert all(float(r["nearest_train_rms"]) >= 0 for r in good)
    by_name = {Path(r["path"]).name: r for r in table}
    assert by_name["copy_of_0.png"]["score"] == by_name["sample_0000.png"]["score"]   # same content, same row values
    assert by_name["copy_of_0.png"]["sha256"] == by_name["sample_0000.png"]["sha256"]
    html = (single / "report.html").read_text()
    assert 'id="histogram"' in html and 'id="flagged"' in html and "notes.png" in html
    assert "python -m lowdim_app audit" in html and "<script" not in html


def test_two_torchrun_processes_give_the_single_process_rows(images, single, tmp_path):
    r = cli("audit", str(images), "--model", "digits-dup", "--out", str(tmp_path), "--batch-size", "8", procs=2)
    assert "on 2 process(es)" in r.stdout
    assert rows(tmp_path / "scores.csv") == rows(single / "scores.csv")
    ranks = {p.name.split("-")[1] for p in (tmp_path / "parts").glob("*.csv")}
    assert ranks == {"r00000", "r00001"}      # both processes wrote their shards


def test_a_killed_run_resumes_on_another_process_count_without_loss_or_duplicates(images, single, tmp_path):
    env = _env()
    proc = subprocess.Popen([sys.executable, "-m", "lowdim_app", "audit", str(images), "--model", "digits-dup",
                             "--out", str(tmp_path), "--batch-size", "8", "--quiet"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len(list((tmp_path / "parts").glob("*.csv"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = sum(len(rows(p)) for p in (tmp_path / "parts").glob("*.csv"))
    assert 0 < first < N_IMAGES, "the run must be killed mid-way for this test to mean anything"
    assert not (tmp_path / "scores.csv").exists()
    r = cli("audit", str(images), "--model", "digits-dup", "--out", str(tmp_path), "--batch-size", "8", procs=2)
    assert f"{first} already done" in r.stdout
    assert rows(tmp_path / "scores.csv") == rows(single / "scores.csv")
    written = [(x["path"], x["sha256"]) for p in (tmp_path / "parts").glob("*.csv") for x in rows(p)]
    assert len(written) == len(set(written)) == N_IMAGES     # nothing computed twice
    again = audit(images, tmp_path)
    assert again.scored_now == 0 and again.skipped_done == N_IMAGES


def test_an_output_folder_refuses_other_settings(images, single):
    for extra in ({"model": "digits-gen"}, {"t": 80}, {"seed": 1}, {"noise_draws": 2}, {"invert": True}):
        with pytest.raises(UserError, match="other settings") as err:
            audit(images, single, **extra)
        assert "\n" not in str(err.value) and str(next(iter(extra))) in str(err.value)
    r = cli("audit", str(images), "--model", "digits-dup", "--out", str(single), "--t", "80", check=False)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "other settings" in r.stderr
    assert len(r.stderr.splitlines()) == 1


def test_changed_file_is_rescored_and_the_merge_keeps_its_newest_row(images, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("sample_0001.png", "sample_0002.png"):
        shutil.copy(images / "gen" / name, src / name)
    out = tmp_path / "out"
    audit(src, out)
    before = {Path(r["path"]).name: r for r in rows(out / "scores.csv")}
    shutil.copy(images / "gen" / "sample_0003.png", src / "sample_0002.png")    # new content, same path
    assert audit(src, out).scored_now == 1
    after = {Path(r["path"]).name: r for r in rows(out / "scores.csv")}
    assert len(after) == 2 and after["sample_0001.png"] == before["sample_0001.png"]
    assert after["sample_0002.png"]["sha256"] != before["sample_0002.png"]["sha256"]
    assert after["sample_0002.png"]["score"] != before["sample_0002.png"]["score"]


def test_sources_folder_list_and_glob(images, tmp_path):
    folder = sharding.list_sources(str(images))
    assert len(folder) == N_IMAGES and folder == sorted(folder)
    listing = tmp_path / "list.txt"
    listing.write_text("# two files\n" + str(images / "nested" / "real.png") + "\n\n" + "../" + tmp_path.name
                       + "/missing.png\n")
    assert sharding.list_sources(str(listing)) == sorted([str(images / "nested" / "real.png"),
                                                         str(tmp_path / ".." / tmp_path.name / "missing.png")])
    assert len(sharding.list_sources(str(images / "gen" / "sample_000*.png"))) == 10
    with pytest.raises(UserError, match="no such folder"):
        sharding.list_sources(str(tmp_path / "nothing-*.png"))


def test_directions_sharded_equal_single_and_files_apply(images, tmp_path):
    from lowdim_app.config import from_environment
    from lowdim_app.features.directions import FEATURE, DirectionsSettings
    from lowdim_app.features.edit import FEATURE as EDIT, EditSettings

    src = tmp_path / "src"
    src.mkdir()
    for name in ("sample_0004.png", "sample_0005.png"):
        shutil.copy(images / "gen" / name, src / name)
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    settings = dict(model="digits-gen", k=2, max_passes=12, t=0.5, steps=20)
    res = FEATURE.run(DirectionsSettings.from_raw(source=str(src), out=str(tmp_path / "one"), **settings),
                      runtime=from_environment())
    assert res.done_now == 3 and res.numbers()["skipped"] == 1
    cli("directions", str(src), *[f"--{k.replace('_', '-')}={v}" for k, v in settings.items()],
        "--out", str(tmp_path / "two"), procs=2)
    one, two = rows(tmp_path / "one" / "index.csv"), rows(tmp_path / "two" / "index.csv")
    assert len(one) == 3 and [r["path"] for r in one] == [r["path"] for r in two]
    for a, b in zip(one, two):
        assert a["error"] == b["error"] and a["passes"] == b["passes"]
        for col in ("sigma_1", "sigma_2"):
            assert (a[col] == b[col] == "") or abs(float(a[col]) - float(b[col])) <= 1e-4 * abs(float(a[col]))
    assert [Path(r["path"]).name for r in one if r["error"]] == ["broken.png"]
    first = next(r for r in one if not r["error"])
    files = first["files"].split(";")
    assert len(files) == 2 and all((tmp_path / "one" / f).is_file() for f in files)
    applied = EDIT.run(EditSettings.from_raw(image=first["path"], model="digits-gen", steps=20, alpha=[-2.0, 2.0],
                                             load_direction=str(tmp_path / "one" / files[0])),
                       runtime=from_environment())
    assert applied.settings.load_direction.endswith("_v1.safetensors")


def test_report_in_the_browser(single, browser, artifacts):
    page = browser.new_page(viewport={"width": 1200, "height": 1400})
    page.goto((single / "report.html").as_uri())
    assert loaded_image_size(page, "#histogram", 300)[0] > 300
    flagged = page.locator("#flagged tr")
    assert flagged.count() == 1 + 24
    assert loaded_image_size(page, "#flagged img.thumb", 64)[0] >= 64
    assert page.locator("#counts").inner_text().count("\n") >= 2
    page.screenshot(path=str(artifacts / "audit_report.png"), full_page=True)
    page.close()


def test_labels_add_a_roc_and_a_list_file_is_a_source(single, tmp_path):
    table = [r for r in rows(single / "scores.csv") if r["verdict"] in ("memorized", "generalized")]
    picked = [r for r in table if r["verdict"] == "memorized"][:3] + [r for r in table if r["verdict"] == "generalized"][:3]
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(r["path"] for r in picked) + "\n")
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\n" + "".join(f"{r['path']},{1 if r['verdict'] == 'memorized' else 0}\n"
                                               for r in picked))
    res = audit(listing, tmp_path / "out", labels=str(labels), top=3)
    assert len(res.rows) == 6
    html = (tmp_path / "out" / "report.html").read_text()
    assert 'id="roc"' in html and "3 labelled memorized, 3 labelled generalized" in html
    assert html.count('<img class="thumb"') == 2 * 3          # 3 flagged images and their nearest training images
    bad = tmp_path / "bad_labels.csv"
    bad.write_text(f"{picked[0]['path']},maybe\n")
    with pytest.raises(UserError, match="not 1/0"):
        audit(listing, tmp_path / "out2", labels=str(bad))
