"""The public Python API: one function per capability, models in, results out.

Every function takes ``model`` as a built-in id (``"digits-gen"``, ``"digits-mem"``, ``"digits-dup"``),
an allow-listed hub id, a local diffusers folder, a :class:`~lowdim_app.diffusion.model.DiffusionModel`
or a diffusers pipeline object you already hold (``DDPMPipeline``, ``DDIMPipeline``,
``StableDiffusionPipeline``; wrapped without copying weights, see
:meth:`DiffusionModel.from_pipeline <lowdim_app.diffusion.model.DiffusionModel.from_pipeline>`).
Each is a thin typed call of the feature the CLI and the app run
(``lowdim_app.features.<name>.FEATURE.run(Settings(...), model=...)``), so the same settings give the
same numbers everywhere; keyword arguments not named in a signature are further settings of that
feature (the CLI's ``--help`` of the command lists them with their bounds). Results render themselves:
``.numbers()`` (JSON-ready), ``.images()`` (PIL), ``.figure()`` (matplotlib), ``.summary()`` and
``.reproduce()`` (the CLI line, meaningful for ids and folders).

Bad input raises :class:`lowdim_app.errors.UserError` with one line that says what to do.

Examples:
    >>> import lowdim_app as ld
    >>> res = ld.sample("digits-gen", n=4, steps=10)
    >>> tuple(res.samples.shape)
    (4, 1, 16, 16)
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence, Union

if TYPE_CHECKING:   # the heavy types, for annotations only (importing this module stays light)
    import torch

    from .diffusion.model import DiffusionModel
    from .features.audit import AuditResult
    from .features.calibrate import CalibrateResult
    from .features.edit import EditResult, EditSearch
    from .features.phase import PhaseResult
    from .features.rank import RankResult
    from .features.sample import SampleResult
    from .features.score import ScoreResult
    from .features.steer import SteerResult
    from .methods.steering import SteeringVector

ModelLike = Union[str, "DiffusionModel", Any]       # an id / folder, a DiffusionModel, or a diffusers pipeline
ImageLike = Union[str, os.PathLike, Any]   # a path, a PIL image, a uint8 H x W (x C) array, or a C x H x W tensor in [-1, 1]

__all__ = ["DiffusionModel", "load_model", "list_models", "as_model", "sample", "find_directions", "edit",
           "jacobian_rank", "score", "calibrate", "audit", "steering_vector", "steer", "phase_transition", "run"]


def __getattr__(name: str):
    if name == "DiffusionModel":
        from .diffusion.model import DiffusionModel

        return DiffusionModel
    raise AttributeError(name)


# ----------------------------------------------------------------------------- models
def load_model(model_id: str = "digits-gen", device: str | None = None) -> "DiffusionModel":
    """Load (or reuse) a model by id or folder.

    Args:
        model_id: a built-in id (``digits-gen``, ``digits-mem``, ``digits-dup``), an allow-listed hub id
            (from the local Hugging Face cache) or a local diffusers pipeline folder.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (default: CUDA when available).

    Returns:
        The loaded :class:`~lowdim_app.diffusion.model.DiffusionModel` (shared, read-only).

    Examples:
        >>> import lowdim_app as ld
        >>> ld.load_model("digits-gen", "cpu").sample_shape
        (1, 16, 16)
    """
    from .diffusion.registry import load_model as _load

    return _load(model_id, device=device)


def list_models() -> list:
    """The models this installation offers and whether each can be loaded now.

    Returns:
        A list of entries with ``model_id``, ``description``, ``kind`` (builtin / hub) and ``available``.

    Examples:
        >>> import lowdim_app as ld
        >>> [m.model_id for m in ld.list_models()][:3]
        ['digits-gen', 'digits-mem', 'digits-dup']
    """
    from .diffusion.registry import list_models as _list

    return _list()


def as_model(model: ModelLike) -> "DiffusionModel":
    """The :class:`~lowdim_app.diffusion.model.DiffusionModel` for an id, a folder, a model or a pipeline.

    Args:
        model: an id or folder (loaded), a ``DiffusionModel`` (returned as is) or a diffusers pipeline
            object (wrapped with ``DiffusionModel.from_pipeline``: same device, dtype and weights).

    Returns:
        The model. Wrap a pipeline once and reuse the result to keep its per-model caches.

    Examples:
        >>> import lowdim_app as ld
        >>> ld.as_model("digits-gen").model_id
        'digits-gen'
    """
    from .features.common import as_model as _as_model

    return _as_model(model)


def _model_and_id(model: ModelLike) -> tuple[Any, str]:
    """``(model object or None, the settings' model string)``: ids go through the settings (so the
    result's reproduce line names them); objects are passed as they are and named by their id."""
    if isinstance(model, (str, os.PathLike)):
        return None, os.fspath(model)
    m = as_model(model)
    return m, m.model_id


def _run(module: str, model: ModelLike | None = None, inputs: dict | None = None, **raw):
    import importlib

    from . import threads

    threads.apply(workers=1)     # the user's own torch.set_num_threads / OMP_NUM_THREADS is kept
    feature = importlib.import_module(f"lowdim_app.features.{module}").FEATURE
    obj = None
    if model is not None:
        obj, raw["model"] = _model_and_id(model)
    settings = feature.Settings.from_raw(**raw)
    kwargs = dict(inputs or {})
    if obj is not None:
        kwargs["model"] = obj
    return feature.run(settings, **kwargs)


_TMP: list[str] = []


def _tmpdir() -> Path:
    if not _TMP:
        _TMP.append(tempfile.mkdtemp(prefix="lowdim-api-"))
        atexit.register(shutil.rmtree, _TMP[0], True)
    return Path(_TMP[0])


def _image_path(image: ImageLike, name: str = "image") -> str:
    """A path for an image given as a path, PIL image, array or tensor (in-memory images are written
    as 8-bit PNGs in a temporary folder removed when Python exits)."""
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    import numpy as np
    from PIL import Image

    if isinstance(image, np.ndarray) and image.dtype == np.uint8:
        image = Image.fromarray(image.squeeze())
    if not isinstance(image, Image.Image):
        import torch

        from .data.images import to_pil

        t = torch.as_tensor(np.asarray(image) if not isinstance(image, torch.Tensor) else image).detach().float().cpu()
        while t.ndim < 4:
            t = t[None]
        image = to_pil(t)[0]
    fd, path = tempfile.mkstemp(prefix=f"{name}-", suffix=".png", dir=_tmpdir())
    os.close(fd)
    image.save(path)
    return path


# ----------------------------------------------------------------------------- capabilities
def sample(model: ModelLike = "digits-gen", n: int = 16, *, seed: int = 0, steps: int = 50, prompt: str = "",
           guidance: float = 7.5, **settings: Any) -> "SampleResult":
    """Draw ``n`` images from pure noise with deterministic DDIM (eta = 0), seeded per batch.

    Args:
        model: an id, a folder, a ``DiffusionModel`` or a diffusers pipeline.
        n: number of images.
        seed: random seed (same seed, same images).
        steps: DDIM steps.
        prompt: the prompt (text-to-image models only).
        guidance: classifier-free guidance scale (text models).
        **settings: further settings of ``python -m lowdim_app sample``.

    Returns:
        A ``SampleResult``: ``.samples`` (``n x C x H x W`` in [-1, 1]), ``.images()["grid"]``, ``.write(path)``.

    Examples:
        >>> import lowdim_app as ld
        >>> ld.sample("digits-gen", n=4, steps=10).samples.shape
        torch.Size([4, 1, 16, 16])
    """
    return _run("sample", model, n=n, seed=seed, steps=steps, prompt=prompt, guidance=guidance, **settings)


def find_directions(image: ImageLike, model: ModelLike = "digits-gen", *, t: float = 0.7, k: int = 5,
                    steps: int = 50, mask: ImageLike | None = None, prompt: str = "", **settings: Any) -> "EditSearch":
    """Top-``k`` singular vectors of the denoiser's Jacobian ``J_t`` at the image's DDIM inversion.

    Wang et al. 2024, "Diffusion Models Learn Low-Dimensional Distributions via Subspace Clustering"
    (arXiv:2409.02426), §4.2; with ``mask`` a local edit direction as in LOCO Edit (Chen et al. 2024,
    "Exploring Low-Dimensional Subspaces in Diffusion Models for Controllable Image Editing",
    arXiv:2409.02374).

    Args:
        image: the image: a path, a PIL image, a ``uint8`` array (``H x W`` or ``H x W x C``) or a
            ``C x H x W`` tensor in [-1, 1] (in-memory images pass through an 8-bit PNG).
        model: an id, a folder, a ``DiffusionModel`` or a diffusers pipeline.
        t: edit time as a fraction of ``T`` (the paper: 0.7).
        k: number of singular vectors.
        steps: DDIM steps over ``[0, T]``.
        mask: an image whose white pixels mark the region of a local edit.
        prompt: condition for text models.
        **settings: further settings of ``python -m lowdim_app edit`` (``max_passes``, ``tol``, ``jvp``, ...).

    Returns:
        An ``EditSearch``: ``.search.singular_values``, ``.search.numerical_rank``, ``.search.V`` (the
        directions), ``.figure()`` (the spectrum); pass it to :func:`edit`.

    Examples:
        >>> import lowdim_app as ld
        >>> found = ld.find_directions("assets/examples/digit_2_test0.png", "digits-gen", k=3, steps=10)  # doctest: +SKIP
        >>> len(found.search.singular_values)                                                              # doctest: +SKIP
        3
    """
    raw = dict(image=_image_path(image), t=t, k=k, steps=steps, prompt=prompt, **settings)
    if mask is not None:
        raw["mask"] = _image_path(mask, "mask")
    if not isinstance(model, (str, os.PathLike)):
        model = as_model(model)             # wrapped once: edit(search) reuses this object
    res = _run("edit", model, inputs={"stage": "find"}, **raw)
    if not isinstance(model, (str, os.PathLike)):
        res._api_model = model
    return res


def edit(image: "ImageLike | EditSearch", model: ModelLike | None = None, *, direction: int = 1,
         alpha: Sequence[float] = (-6.0, -4.0, -2.0, 0.0, 2.0, 4.0, 6.0), **settings: Any) -> "EditResult":
    """Edit an image along a singular vector ``v_i`` of ``J_t``, beside the same edit along a random
    direction (the control of Wang et al. 2024, arXiv:2409.02426, Fig. 6).

    Args:
        image: the image (as for :func:`find_directions`), or the ``EditSearch`` it returned (its
            directions, inversion, model and search settings are reused: no second search).
        model: an id, a folder, a ``DiffusionModel`` or a diffusers pipeline (default: the search's
            model, else ``digits-gen``).
        direction: which ``v_i`` (1-based).
        alpha: edit strengths.
        **settings: further settings of ``python -m lowdim_app edit`` (``t``, ``k``, ``steps``, ``mask``,
            ``load_direction`` for transfer, ``seed`` of the random control, ...).

    Returns:
        An ``EditResult``: ``.along`` / ``.control`` (``len(alpha) x C x H x W``), ``.ratio`` (mean change
        along the direction / along random), ``.images()["strip"]``, ``.chosen.save(path)``.

    Examples:
        >>> import lowdim_app as ld
        >>> found = ld.find_directions("assets/examples/digit_2_test0.png", k=2, steps=10)  # doctest: +SKIP
        >>> ld.edit(found, direction=1, alpha=[-4, 0, 4]).ratio > 1                       # doctest: +SKIP
        True
    """
    from .features.edit import FEATURE, EditSearch

    if isinstance(image, EditSearch):
        s = image.settings.replace(direction=direction, alpha=tuple(float(a) for a in alpha), **settings)
        held = model if model is not None else getattr(image, "_api_model", None)
        kwargs: dict = {"search": image}
        if held is not None:
            obj, name = _model_and_id(held)
            if obj is None:
                s = s.replace(model=name)
            else:
                kwargs["model"] = obj
        return FEATURE.run(s, **kwargs)
    return _run("edit", "digits-gen" if model is None else model, image=_image_path(image), direction=direction,
                alpha=tuple(float(a) for a in alpha), **settings)


def jacobian_rank(model: ModelLike = "digits-gen", *, steps: int = 50, points: int = 12, eta: float = 0.99,
                  seed: int = 0, **settings: Any) -> "RankResult":
    """Numerical rank of the Jacobian ``J_t`` along a sampling trajectory, against the SNR (Wang et al. 2024,
    arXiv:2409.02426, Fig. 3a; rank by eq. 46).

    Args:
        model: an id, a folder, a ``DiffusionModel`` or a diffusers pipeline.
        steps: DDIM steps of the trajectory.
        points: timesteps at which the rank is measured.
        eta: energy threshold of the numerical rank (the paper: 0.99).
        seed: seed of the starting noise.
        **settings: further settings of ``python -m lowdim_app rank`` (``k``, ``max_passes``, ...).

    Returns:
        A ``RankResult``: ``.points`` (t, sigma, SNR, rank, rank / n), ``.to_csv()``, ``.figure()``.

    Examples:
        >>> import lowdim_app as ld
        >>> res = ld.jacobian_rank("digits-gen", steps=8, points=2)   # doctest: +SKIP
        >>> len(res.points)                                           # doctest: +SKIP
        2
    """
    return _run("rank", model, steps=steps, points=points, eta=eta, seed=seed, **settings)


def score(images: "ImageLike | Sequence[ImageLike] | torch.Tensor | None" = None,
          model: ModelLike = "digits-dup", *, n_generate: int = 0, seed: int = 0, **settings: Any) -> "ScoreResult":
    """Memorization check: the representation-spikiness (or denoising-error) score of each image and a
    verdict memorized / generalized / uncertain / out-of-domain (Zhang et al. 2025, "Generalization of
    Diffusion Models Arises with a Balanced Representation Space", arXiv:2512.20963, §3.1, Alg. 1).

    Args:
        images: image files or folders (a path or a list), PIL images, ``C x H x W`` tensors or an
            ``N x C x H x W`` tensor in [-1, 1]; ``None`` with ``n_generate`` to score fresh samples.
        model: an id, a folder, a ``DiffusionModel`` or a diffusers pipeline.
        n_generate: also score this many seeded samples of the model.
        seed: seed of the noise draws and of the generated samples.
        **settings: further settings of ``python -m lowdim_app score`` (``layer``, ``t``, ``metric``,
            ``noise_draws``, ``calibration`` (a calibration JSON), ``invert``).

    Returns:
        A ``ScoreResult``: ``.rows`` (one per image: score, spread, verdict, reason), ``.to_csv()``,
        ``.figure()`` (histogram against the model's references).

    Examples:
        >>> import lowdim_app as ld
        >>> res = ld.score("assets/examples", "digits-dup", noise_draws=1)   # doctest: +SKIP
        >>> [r.verdict for r in res.rows][:1]                                # doctest: +SKIP
        ['generalized']
    """
    import torch

    inputs: dict = {}
    raw: dict = dict(n_generate=n_generate, seed=seed, **settings)
    if images is None:
        pass
    elif isinstance(images, (str, os.PathLike)):
        raw["images"] = (os.fspath(images),)
    elif isinstance(images, torch.Tensor):
        batch = images if images.ndim == 4 else images[None]
        names = [f"image {i}" for i in range(len(batch))]
        raw["images"], inputs = tuple(names), {"images": batch, "names": names}
    else:
        items = list(images)
        if all(isinstance(x, (str, os.PathLike)) for x in items):
            raw["images"] = tuple(os.fspath(x) for x in items)
        elif items and all(isinstance(x, torch.Tensor) for x in items):
            batch = torch.stack([x if x.ndim == 3 else x[0] for x in items])
            names = [f"image {i}" for i in range(len(batch))]
            raw["images"], inputs = tuple(names), {"images": batch, "names": names}
        else:
            names = [os.fspath(x) if isinstance(x, (str, os.PathLike)) else f"image {i}" for i, x in enumerate(items)]
            raw["images"], inputs = tuple(names), {"images": items, "names": names}
    return _run("score", model, inputs=inputs, **raw)


def calibrate(memorized: "ImageLike | Sequence[ImageLike] | torch.Tensor",
              generalized: "ImageLike | Sequence[ImageLike] | torch.Tensor", model: ModelLike = "digits-dup", *,
              metric: str = "std", t: int = 50, seed: int = 0, **settings: Any) -> "CalibrateResult":
    """Fit a memorization detector's threshold and sign from known-memorized and known-generalized images
    (ROC, AUROC, TPR at 1% FPR: the metrics of Zhang et al. 2025, arXiv:2512.20963, Table 1).

    Args:
        memorized: known-memorized images (a folder or files, PIL images, or an ``N x C x H x W`` tensor).
        generalized: known-generalized images (likewise).
        model: an id, a folder, a ``DiffusionModel`` or a diffusers pipeline.
        metric: ``std``, ``l4_l2``, ``entropy``, ``max_min`` or ``denoising_error``.
        t: timestep of the noise.
        seed: seed of the noise draws.
        **settings: further settings of ``python -m lowdim_app calibrate`` (``layer``, ``noise_draws``,
            ``target_fpr``).

    Returns:
        A ``CalibrateResult``: ``.calibration`` (threshold, direction, AUROC, ...; ``.save(path)`` writes
        the JSON ``score(..., calibration=path)`` uses), ``.figure()`` (the ROC).

    Examples:
        >>> import lowdim_app as ld
        >>> res = ld.calibrate("mem/", "gen/", "digits-dup")   # doctest: +SKIP
        >>> res.calibration.auroc > 0.5                        # doctest: +SKIP
        True
    """
    import torch

    raw: dict = dict(metric=metric, t=t, seed=seed, **settings)
    inputs: dict = {}
    for label, src in (("memorized", memorized), ("generalized", generalized)):
        if isinstance(src, (str, os.PathLike)):
            raw[label] = (os.fspath(src),)
            continue
        items = src if isinstance(src, torch.Tensor) and src.ndim == 4 else list(src)
        if not isinstance(items, torch.Tensor) and all(isinstance(x, (str, os.PathLike)) for x in items):
            raw[label] = tuple(os.fspath(x) for x in items)
            continue
        raw[label] = tuple(f"{label} {i}" for i in range(len(items)))
        inputs[f"{label}_images"] = items
    return _run("calibrate", model, inputs=inputs, **raw)


def audit(source: "str | os.PathLike", out: "str | os.PathLike", model: ModelLike = "digits-dup", *,
          seed: int = 0, **settings: Any) -> "AuditResult":
    """The memorization check over a whole folder, list or glob of images, resumable, with a table and a
    self-contained HTML report (Zhang et al. 2025, arXiv:2512.20963, §4.1, Alg. 1). Launched under
    ``torchrun`` / ``accelerate launch`` the CLI command ``audit`` shards the same work over processes.

    Args:
        source: a folder (recursive), a text file with one image path per line, or a glob pattern.
        out: the output folder (``scores.csv``, ``report.html``, ``parts/``); run again with the same
            folder to resume.
        model: an id, a folder, a ``DiffusionModel`` or a diffusers pipeline.
        seed: seed of the noise draws (per image: a row does not depend on the batch or the process).
        **settings: further settings of ``python -m lowdim_app audit`` (``calibration``, ``layer``, ``t``,
            ``metric``, ``noise_draws``, ``batch_size``, ``labels``, ``top``, ``invert``).

    Returns:
        An ``AuditResult``: ``.rows`` (one dict per image: path, sha256, score, spread, verdict, ...),
        ``.counts`` (images per verdict), ``.out`` (the folder with ``scores.csv`` and ``report.html``).

    Examples:
        >>> import lowdim_app as ld
        >>> res = ld.audit("assets/examples", "audit_out", "digits-dup", noise_draws=1)   # doctest: +SKIP
        >>> res.counts                                                                    # doctest: +SKIP
        {'generalized': 5}
    """
    return _run("audit", model, source=os.fspath(source), out=os.fspath(out), seed=seed, **settings)


def _steer_inputs(concept, source, vector, raw: dict) -> dict:
    from .methods.steering import SteeringVector

    inputs: dict = {}
    if concept is not None:
        if isinstance(concept, (str, os.PathLike)):
            raw["concept"] = (os.fspath(concept),)
        else:
            items = list(concept)
            if all(isinstance(x, (str, os.PathLike)) for x in items):
                raw["concept"] = tuple(os.fspath(x) for x in items)
            else:
                from .features.steer import concept_file_names

                raw["concept"] = concept_file_names(len(items))
                inputs["concept_images"] = items
    if isinstance(source, int):
        raw["source"] = f"seed:{source}"
    elif isinstance(source, (str, os.PathLike)):
        raw["source"] = os.fspath(source)
    elif source is not None:
        raw["source"] = "source.png"
        inputs["source_image"] = source
    if isinstance(vector, SteeringVector):
        raw["vector"], inputs["vector"] = "vector.safetensors", vector
    elif vector is not None:
        raw["vector"] = os.fspath(vector)
    return inputs


def steer(model: ModelLike = "digits-dup", concept: "str | Sequence[ImageLike] | None" = None, *,
          source: "int | ImageLike" = 0, strengths: Sequence[float] = (0.0, 2.0, 4.0, 6.0, 8.0),
          vector: "SteeringVector | str | None" = None, prompt: str = "", seed: int = 0,
          **settings: Any) -> "SteerResult":
    """Representation steering: add ``a * v`` to U-Net activations while sampling, for each strength ``a``
    (Zhang et al. 2025, arXiv:2512.20963, §4.2 eq. 11, App. B.3).

    Args:
        model: an id, a folder, a ``DiffusionModel`` or a diffusers pipeline.
        concept: ``"digit:K"`` (built-in models), ``"prompt:TEXT"`` (text models), a folder or a list of
            images of the concept; ``None`` with ``vector``.
        source: a noise seed (int) or an image (DDIM-inverted, then steered).
        strengths: the strengths ``a``.
        vector: a saved steering vector (a :class:`~lowdim_app.methods.steering.SteeringVector` or its
            ``.safetensors`` path) instead of a concept.
        prompt: the source prompt (text models).
        seed: seed of a prompt concept set and of the concept's noise.
        **settings: further settings of ``python -m lowdim_app steer`` (``layers``, ``kind``, ``steps``,
            ``window``, ``concept_n``, ``contrast``, ...).

    Returns:
        A ``SteerResult``: ``.samples`` (one per strength), ``.vector``, ``.curves`` (concept strength
        against ``a``), ``.images()["strip"]``, ``.save_vector(path)``.

    Examples:
        >>> import lowdim_app as ld
        >>> res = ld.steer("digits-dup", "digit:4", strengths=[0, 2], concept_n=16, steps=10)  # doctest: +SKIP
        >>> len(res.samples)                                                                 # doctest: +SKIP
        2
    """
    raw: dict = dict(strengths=tuple(strengths), prompt=prompt, seed=seed, **settings)
    inputs = _steer_inputs(concept, source, vector, raw)
    return _run("steer", model, inputs=inputs, **raw)


def steering_vector(model: ModelLike = "digits-dup", concept: "str | Sequence[ImageLike]" = "digit:4", *,
                    seed: int = 0, **settings: Any) -> "SteeringVector":
    """The steering vector ``v`` of a concept (Zhang et al. 2025, arXiv:2512.20963, eq. 11: the mean of the
    concept images' features at ``t~``), to save or apply later with :func:`steer` (``vector=``).

    It runs :func:`steer` at the single strength 0, so it also draws one unsteered sample.

    Args:
        model: an id, a folder, a ``DiffusionModel`` or a diffusers pipeline.
        concept: ``"digit:K"``, ``"prompt:TEXT"``, a folder or a list of images.
        seed: seed of a prompt concept set and of the concept's noise.
        **settings: further settings of ``python -m lowdim_app steer`` (``layers``, ``kind``, ``t_tilde``,
            ``concept_n``, ...).

    Returns:
        A :class:`~lowdim_app.methods.steering.SteeringVector` (``.vectors`` per layer, ``.save(path)``).

    Examples:
        >>> import lowdim_app as ld
        >>> v = ld.steering_vector("digits-dup", "digit:4", concept_n=16, steps=10)   # doctest: +SKIP
        >>> sorted(v.vectors)                                                        # doctest: +SKIP
        ['up_blocks.0.resnets.0']
    """
    return steer(model, concept, strengths=(0.0,), seed=seed, **settings).vector


def phase_transition(*, K: int = 2, n: int = 48, d: Sequence[int] = tuple(range(2, 9)),
                     N: Sequence[int] = tuple(range(2, 16)), trials: int = 20, method: str = "cluster",
                     seed: int = 0, **settings: Any) -> "PhaseResult":
    """The phase transition of learning a mixture of low-rank Gaussians: success rate over a grid of
    subspace dimensions ``d`` and samples per component ``N`` (Wang et al. 2024, arXiv:2409.02426, §4.1,
    Fig. 4; theory: success once ``N_k >= d``, Thm. 2 / 4).

    Args:
        K: number of subspaces.
        n: ambient dimension.
        d: subspace dimensions (the grid's rows).
        N: training samples per component (the grid's columns).
        trials: instances per cell.
        method: ``svd`` (PCA, Thm. 1), ``cluster`` (subspace clustering, Thm. 3) or ``dae`` (SGD on the
            low-rank DAE loss, Algorithm 1).
        seed: random seed.
        **settings: further settings of ``python -m lowdim_app phase`` (``noise``, ``norm``, ``threshold``, ...).

    Returns:
        A ``PhaseResult``: ``.grid.success`` (rows d, columns N), ``.table()``, ``.to_csv()``, ``.figure()``.

    Examples:
        >>> import lowdim_app as ld
        >>> res = ld.phase_transition(K=1, n=16, d=[2], N=[1, 4], trials=4, method="svd")
        >>> res.grid.success[0]
        [0.0, 1.0]
    """
    return _run("phase", None, K=K, n=n, d=tuple(d), N=tuple(N), trials=trials, method=method, seed=seed, **settings)


def run(command: str, model: ModelLike | None = None, **settings: Any) -> Any:
    """Any action by its CLI command name (``sample``, ``edit``, ``rank``, ``score``, ``calibrate``,
    ``steer``, ``phase``, ``molrg-rank``, ``gl-score``, ``relu-dae``, ``mog-ddpm``, ``molr-mog``, ...),
    with its settings as keyword arguments (the names of the CLI flags with ``_`` for ``-``).

    Args:
        command: the command name (``python -m lowdim_app --help`` lists them).
        model: for actions on a model: an id, a folder, a ``DiffusionModel`` or a diffusers pipeline.
        **settings: the action's settings.

    Returns:
        The action's result object (``.numbers()``, ``.figure()``, ``.summary()``, ...).

    Examples:
        >>> import lowdim_app as ld
        >>> res = ld.run("relu-dae", seed=0, steps=50)   # doctest: +SKIP
    """
    from .features import all_features

    for feature in all_features():
        if feature.name == command or feature.Settings.COMMAND == command:
            return _run(feature.__module__.rsplit(".", 1)[-1], model, **settings)
    from .errors import UserError

    raise UserError(f"unknown command {command!r}: one of " + ", ".join(f.name for f in all_features()))
