"""Steering vectors computed once: saved and loaded as files, cached per concept in the process (once under
concurrent requests), concept images generated one at a time (progress and stop between images) and
VAE-encoded in slices, and a cost that counts all of it (0 for the concept part with a saved or cached vector)."""
import json
import threading
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from PIL import Image

from lowdim_app.cli import main
from lowdim_app.config import Runtime
from lowdim_app.errors import UserError
from lowdim_app.features.base import Cancelled
from lowdim_app.features.steer import FEATURE, PROMPT_CONCEPT_N, SteerSettings
from lowdim_app.methods import steering as st

pytestmark = pytest.mark.usefixtures("one_thread")
NO_CLIP = Runtime(clip="off")
PROMPT = dict(concept="prompt:a red ball", concept_n=2, concept_steps=2, steps=2, window=1, strengths=[0.0, 3.0])
STEER_ONLY = 2 * 2 * 2                      # strengths x steps x CFG
PROMPT_CONCEPT = 2 * (2 * 2 + 1)            # images x (concept steps x CFG + one feature pass)


@pytest.fixture(autouse=True)
def fresh_concept_cache():
    st.CONCEPT_CACHE.clear()
    yield
    st.CONCEPT_CACHE.clear()


@contextmanager
def unet_evaluations(model):
    """Counts U-Net evaluations, one per sample in each batch the U-Net is called with (all threads)."""
    count = {"n": 0}
    lock = threading.Lock()

    def hook(_m, args):
        with lock:
            count["n"] += len(args[0])
    h = model.unet.register_forward_pre_hook(hook)
    try:
        yield count
    finally:
        h.remove()


def _run(model, **raw):
    return FEATURE.run(SteerSettings(model=model.model_id, **raw), model=model, runtime=NO_CLIP)


# ----------------------------------------------------------------------------- files
def test_vector_file_round_trip_and_refusals(tiny_sd, digits_gen, tmp_path):
    res = _run(tiny_sd, **PROMPT, seed=3)
    path = res.save_vector(tmp_path / "v.safetensors")
    back = st.SteeringVector.load(path)
    assert back.layers == res.vector.layers == st.SD_LAYERS
    assert all(torch.equal(back.vectors[k], res.vector.vectors[k]) for k in back.layers)
    assert back.info() == res.vector.info()
    info = back.info()
    assert info["format"] == st.VECTOR_FORMAT and info["model_id"] == tiny_sd.model_id and info["t_tilde"] == 10
    assert (info["kind"], info["concept"], info["n_images"], info["concept_n"], info["seed"], info["concept_steps"],
            info["guidance"]) == ("channel", ["prompt:a red ball"], 2, 2, 3, 2, 3.5)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:            # the metadata is in the file's header
        assert json.loads(f.metadata()["lowdim"])["model_id"] == tiny_sd.model_id
    refusals = [
        (dict(model=digits_gen), f"computed on {tiny_sd.model_id}, not digits-gen"),
        (dict(layers=["up_blocks.1.resnets.1"]), "computed at layers up_blocks.0.resnets.0,"),
        (dict(kind="spatial"), "is a channel vector, not spatial"),
        (dict(t_tilde=20), r"computed at t~ = 10, not 20"),
    ]
    for kw, message in refusals:
        model = kw.pop("model", tiny_sd)
        with pytest.raises(UserError, match=message) as err:
            back.check_compatible(model, **kw, name="v.safetensors")
        assert "\n" not in str(err.value) and str(err.value).startswith("v.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="junk.safetensors: not a LowDim Lab steering vector file"):
        st.SteeringVector.load(tmp_path / "junk.safetensors")
    from safetensors.torch import save_file

    tensors = {k: v.contiguous() for k, v in back.vectors.items()}
    save_file(tensors, str(tmp_path / "other.safetensors"), metadata={"lowdim": json.dumps(dict(info, format="v0"))})
    with pytest.raises(UserError, match="other.safetensors: unsupported or corrupt steering vector file"):
        st.SteeringVector.load(tmp_path / "other.safetensors")


def test_a_saved_vector_replaces_the_concept_set(tiny_sd, tmp_path):
    """--vector: no concept images, only steering (cost = U-Net evaluations = strengths x steps x CFG), the same
    samples as the run that computed the vector; the file names the concept; mismatches refused in one line."""
    first = _run(tiny_sd, **PROMPT)
    path = first.save_vector(tmp_path / "v.safetensors")
    s = SteerSettings(model=tiny_sd.model_id, vector=str(path), steps=2, window=1, strengths=[0.0, 3.0])
    st.CONCEPT_CACHE.clear()
    assert FEATURE.cost(s).forward == STEER_ONLY
    assert FEATURE.cost(SteerSettings(model=tiny_sd.model_id, **PROMPT)).forward == PROMPT_CONCEPT + STEER_ONLY
    with unet_evaluations(tiny_sd) as count:
        again = FEATURE.run(s, model=tiny_sd, runtime=NO_CLIP)
    assert count["n"] == STEER_ONLY and again.vector_source == "file"
    assert torch.equal(again.samples, first.samples) and again.vector_norms == first.vector_norms
    assert again.numbers()["concept"] == "prompt:a red ball" and again.n_concept == 2
    with pytest.raises(UserError, match="is a vector of prompt:a red ball, not prompt:a cat"):
        FEATURE.run(s.replace(concept=("prompt:a cat",)), model=tiny_sd, runtime=NO_CLIP)
    with pytest.raises(UserError, match="is not a file"):
        FEATURE.run(s.replace(vector=str(tmp_path / "missing.safetensors")), model=tiny_sd, runtime=NO_CLIP)


def test_cli_save_vector_then_vector_reproduces_the_strip(tmp_path):
    """steer --save-vector writes the vector; steer --vector FILE (no --concept) gives the same strip pixel for
    pixel and the same numbers without the concept's U-Net work; on another model it is refused (exit 2)."""
    common = ["--model", "digits-gen", "--source", "seed:2", "--strengths", "0,1.5", "--steps", "6", "--window", "3"]
    v = tmp_path / "four.safetensors"
    assert main(["steer", *common, "--concept", "digit:4", "--out", str(tmp_path / "a"), "--save-vector", str(v)]) == 0
    from lowdim_app.config import from_environment
    from lowdim_app.diffusion.registry import load_model

    cli_model = load_model("digits-gen", runtime=from_environment())   # the cached model the CLI runs on
    with unet_evaluations(cli_model) as count:
        assert main(["steer", *common, "--vector", str(v), "--out", str(tmp_path / "b")]) == 0
    assert count["n"] == 2 * 6
    a, b = (np.asarray(Image.open(tmp_path / d / "strip.png")) for d in "ab")
    assert np.array_equal(a, b)
    ja, jb = (json.loads((tmp_path / d / "steer.json").read_text()) for d in "ab")
    assert ja["concept_strength"] == jb["concept_strength"] and ja["vector_norms"] == jb["vector_norms"]
    assert jb["concept"] == "digit:4" and jb["vector"]["from"] == "file"
    assert main(["steer", "--model", "digits-dup", "--vector", str(v), "--out", str(tmp_path / "c")]) == 2


# ----------------------------------------------------------------------------- the cache
def test_the_cache_returns_the_same_vector_without_recomputing(tiny_sd):
    with unet_evaluations(tiny_sd) as count:
        first = _run(tiny_sd, **PROMPT)
    assert count["n"] == PROMPT_CONCEPT + STEER_ONLY and first.vector_source == "computed"
    s = SteerSettings(model=tiny_sd.model_id, **PROMPT)
    assert FEATURE.cost(s).forward == STEER_ONLY                  # cached: the concept part costs nothing
    with unet_evaluations(tiny_sd) as count:
        again = _run(tiny_sd, **PROMPT)
    assert count["n"] == STEER_ONLY and again.vector_source == "cache" and again.vector is first.vector
    assert torch.equal(again.samples, first.samples)
    for change in (dict(seed=1), dict(concept="prompt:a blue ball"), dict(concept_n=3), dict(concept_steps=3),
                   dict(layers="up_blocks.1.resnets.1"), dict(guidance=2.0)):
        raw = dict(PROMPT, **change)
        expected = FEATURE.cost(SteerSettings(model=tiny_sd.model_id, **raw)).forward
        with unet_evaluations(tiny_sd) as count:
            res = _run(tiny_sd, **raw)
        assert res.vector_source == "computed" and count["n"] == expected > STEER_ONLY, change


def test_concurrent_requests_for_one_concept_compute_it_once(tiny_sd):
    """Two threads ask for the same concept at once: one computes, the other waits for it and takes it."""
    started_waiting = threading.Event()
    second_checks = {"n": 0}

    def second_should_stop():
        second_checks["n"] += 1
        if second_checks["n"] >= 3:
            started_waiting.set()
        return False

    def first_progress(_fraction, message):
        if message.startswith("concept image 1/"):      # hold the computation until the other request is in
            started_waiting.wait(10)

    results, errors = {}, []

    def go(name, **kw):
        try:
            results[name] = FEATURE.run(SteerSettings(model=tiny_sd.model_id, **PROMPT), model=tiny_sd,
                                        runtime=NO_CLIP, **kw)
        except Exception as err:       # pragma: no cover - reported below
            errors.append(err)

    with unet_evaluations(tiny_sd) as count:
        t1 = threading.Thread(target=go, args=("first",), kwargs=dict(progress=first_progress))
        t1.start()
        t2 = threading.Thread(target=go, args=("second",), kwargs=dict(should_stop=second_should_stop))
        t2.start()
        t1.join(60)
        t2.join(60)
    assert not errors and set(results) == {"first", "second"}
    assert sorted(r.vector_source for r in results.values()) == ["cache", "computed"]
    assert count["n"] == PROMPT_CONCEPT + 2 * STEER_ONLY              # the concept set once, steering twice
    assert torch.equal(results["first"].samples, results["second"].samples)


def _deadline(seconds: float):
    import time

    end = time.monotonic() + seconds

    def check():
        if time.monotonic() > end:
            raise AssertionError("waited too long for another computation")
    return check


def test_concept_cache_is_bounded_and_survives_failures():
    cache = st.ConceptCache(maxsize=2)
    calls = []

    def make(k):
        def compute():
            calls.append(k)
            return k
        return compute

    assert cache.get_or_compute("a", make("a")) == ("a", False)
    assert cache.get_or_compute("a", make("a")) == ("a", True) and calls == ["a"]
    cache.get_or_compute("b", make("b"))
    cache.get_or_compute("a", make("a"))          # a is now the most recently used
    cache.get_or_compute("c", make("c"))          # drops b
    assert len(cache) == 2 and "b" not in cache and "a" in cache and "c" in cache

    def fail():
        raise Cancelled()
    with pytest.raises(Cancelled):
        cache.get_or_compute("d", fail)
    assert cache.get_or_compute("d", make("d"), wait_check=_deadline(5)) == ("d", False)   # no entry or lock left

    release, holding = threading.Event(), threading.Event()

    def slow():
        holding.set()
        release.wait(10)
        return "e"
    t = threading.Thread(target=cache.get_or_compute, args=("e", slow))
    t.start()
    holding.wait(10)

    def stop():
        raise Cancelled()
    with pytest.raises(Cancelled):                 # a waiting request can be stopped
        cache.get_or_compute("e", make("e"), wait_check=stop)
    release.set()
    t.join(10)
    assert cache.get_or_compute("e", make("e"), wait_check=_deadline(5)) == ("e", True) and "e" not in calls


# ----------------------------------------------------------------------------- progress, stop, slices
def test_progress_per_concept_image_and_vae_slices(tiny_sd):
    """One progress report per generated concept image (fractions rising), one per VAE slice of ENCODE_BATCH
    images, and the VAE encoder never sees more than ENCODE_BATCH concept images at once."""
    reports, encoder_batches = [], []
    h = tiny_sd.vae.encoder.register_forward_pre_hook(lambda _m, args: encoder_batches.append(len(args[0])))
    try:
        FEATURE.run(SteerSettings(model=tiny_sd.model_id, **dict(PROMPT, concept_n=6)), model=tiny_sd, runtime=NO_CLIP,
                    progress=lambda f, m: reports.append((f, m)))
    finally:
        h.remove()
    generated = [(f, m) for f, m in reports if m.endswith("generated")]
    assert [m for _, m in generated] == [f"concept image {i}/6 generated" for i in range(1, 7)]
    assert all(a[0] < b[0] for a, b in zip(generated, generated[1:]))
    assert [m for _, m in reports if m.startswith("concept images encoded")] == [
        "concept images encoded 4/6", "concept images encoded 6/6"]
    assert encoder_batches == [st.ENCODE_BATCH, 6 - st.ENCODE_BATCH]


def test_stop_between_concept_images(tiny_sd):
    """A stop asked for after the second image is honoured before any U-Net work on the third."""
    seen = []

    def progress(_f, message):
        seen.append(message)

    with unet_evaluations(tiny_sd) as count:
        with pytest.raises(Cancelled):
            FEATURE.run(SteerSettings(model=tiny_sd.model_id, **dict(PROMPT, concept_n=5)), model=tiny_sd,
                        runtime=NO_CLIP, progress=progress,
                        should_stop=lambda: sum(m.endswith("generated") for m in seen) >= 2)
    assert count["n"] == 2 * 2 * 2                 # two images x 2 steps x CFG
    assert len(st.CONCEPT_CACHE) == 0              # a stopped computation is not cached


# ----------------------------------------------------------------------------- cost at the SD recipe
def test_cost_of_the_sd_recipe_before_and_after(tmp_path):
    """U-Net evaluations per request on SD v1.4 (5 strengths, 40 steps, CFG): the paper's concept set (100 images
    x 40 steps x 2 + 100 features) vs the default, and 0 for the concept part with a saved vector."""
    from lowdim_app.diffusion import architectures as A

    sd = A.sd_unet_config()
    base = dict(model="CompVis/stable-diffusion-v1-4", concept="prompt:oil painting style")
    steering = 5 * 40 * 2
    paper = SteerSettings(**base, concept_n=100, concept_steps=40)
    assert FEATURE.cost(paper, sd).forward == 100 * (40 * 2 + 1) + steering == 8500
    default = SteerSettings(**base)
    assert default.concept_n == PROMPT_CONCEPT_N
    concept_steps = st.SD_RECIPE["concept_steps"]
    assert FEATURE.cost(default, sd).forward == PROMPT_CONCEPT_N * (concept_steps * 2 + 1) + steering
    assert FEATURE.cost(default.replace(steps=10, window=5), sd).forward == PROMPT_CONCEPT_N * (10 * 2 + 1) + 5 * 10 * 2
    saved = SteerSettings(model=base["model"], vector=str(tmp_path / "v.safetensors"))
    assert FEATURE.cost(saved, sd).forward == steering
    named = SteerSettings(**base, vector=str(tmp_path / "v.safetensors"))     # the concept named with its vector
    assert FEATURE.cost(named, sd).forward == steering
