"""``directions``: the top-k singular vectors of the posterior-mean denoiser's Jacobian (Wang et al. 2024,
arXiv:2409.02426, §4.2; LOCO Edit, Chen et al. 2024, arXiv:2409.02374) for every image of a folder, list
or glob -- saved as direction files (the ones ``edit --load-direction`` applies) with an index CSV,
sharded over ``torchrun`` / ``accelerate launch`` processes and resumable like ``audit``."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from . import sharding
from ..errors import UserError
from .base import Cost, Feature, Progress, Result, runtime_or_default
from .common import load, model_setting
from .edit import (DEFAULT_MAX_PASSES, DEFAULT_TOL, FEATURE as EDIT, MAX_K, MAX_PASSES, REFERENCE_N, EditSettings, jac,
                   model_n, search_cost, search_plan)
from .settings import Settings, seed_setting, setting

INDEX = "index.csv"
FILES = "directions"


@dataclass(frozen=True)
class DirectionsSettings(Settings):
    COMMAND = "directions"
    source: str = sharding.source_setting()
    model: str = model_setting()
    out: str = sharding.out_setting("index.csv, directions/")
    t: float = setting(0.7, lo=0.01, hi=1.0, label="edit time t/T", help="time as a fraction of T")
    k: int = setting(5, lo=1, hi=MAX_K, help="number of singular vectors per image")
    steps: int = setting(50, lo=4, hi=1000, label="DDIM steps", help="DDIM steps over [0, T] (inversion to t)")
    prompt: str = setting("", help="condition for text models")
    invert: bool = setting(False, help="invert intensities (dark-on-light drawings of digits)")
    max_passes: int = setting(DEFAULT_MAX_PASSES, lo=2, hi=MAX_PASSES, label="max passes",
                              help="budget of the search per image in network evaluations (a central-difference "
                                   "JVP direction is two)")
    tol: float = setting(DEFAULT_TOL, lo=1e-6, hi=1.0, label="tolerance",
                         help="stop when the estimated sine of the largest principal angle is below this")
    jvp: str = setting(jac.DEFAULT_JVP_MODE, choices=jac.JVP_MODES, label="JVP mode",
                       help="central difference in float32, or exact forward-mode AD")
    memory_gb: float | None = setting(None, lo=0.01, hi=4096.0, unit="GB", label="memory budget",
                                      help="memory for batched JVP/VJP calls (auto: from the device)")
    seed: int = seed_setting()

    def check(self) -> None:
        if not self.source:
            raise UserError("name the images: a folder, a text file of paths, or a glob pattern")
        if not self.out:
            raise UserError("name an output folder (--out DIR)")
        self.edit_settings("x").check()

    def edit_settings(self, image: str) -> EditSettings:
        return EditSettings(image=image, model=self.model, t=self.t, k=self.k, direction=1, steps=self.steps,
                            prompt=self.prompt, invert=self.invert, seed=self.seed, max_passes=self.max_passes,
                            tol=self.tol, jvp=self.jvp, memory_gb=self.memory_gb)

    def header(self) -> list[str]:
        return (["path", "sha256"] + [f"sigma_{i}" for i in range(1, self.k + 1)]
                + ["numerical_rank", "passes", "status", "files", "error"])


@dataclass
class DirectionsResult(Result):
    out: Path | None = None
    rows: list = field(default_factory=list)
    done_now: int = 0
    already_done: int = 0
    processes: int = 1
    seconds: float = 0.0
    main: bool = True

    def numbers(self) -> dict:
        return {"out": self.out, "images": len(self.rows), "computed_now": self.done_now,
                "already_done": self.already_done, "processes": self.processes, "seconds": round(self.seconds, 2),
                "skipped": sum(bool(r["error"]) for r in self.rows)}

    def summary(self) -> str:
        if not self.main:
            return ""
        bad = sum(bool(r["error"]) for r in self.rows)
        return (f"directions for {len(self.rows) - bad} images ({bad} skipped), {self.done_now} computed now on "
                f"{self.processes} process(es) in {self.seconds:.1f} s, {self.already_done} already done. "
                f"Wrote {self.out / INDEX} and {self.out / FILES}/")


def _identity(s: DirectionsSettings, model) -> dict:
    return {"model": model.model_id, "t": s.t, "k": s.k, "steps": s.steps, "prompt": s.prompt, "invert": s.invert,
            "max_passes": s.max_passes, "tol": s.tol, "jvp": s.jvp, "seed": s.seed}


class Directions(Feature):
    name = "directions"
    help = "top-k Jacobian directions for every image of a folder/list/glob, sharded (torchrun) and resumable"
    Settings = DirectionsSettings
    outputs = ()
    distributed = True

    def cost(self, s: DirectionsSettings, unet_config: dict | None = None) -> Cost:
        """Per image: the inversion to t and, at most, the search plan's evaluations (as ``edit``'s search)."""
        n = model_n(s.model, unet_config)
        plan = search_plan(n if n is not None else REFERENCE_N, s.edit_settings("x"))
        return search_cost(plan, forward=max(2, round(s.steps * s.t)),
                           note="per image: the inversion to t and the direction search: "
                                + ("" if n is not None else f"at the reference n = {REFERENCE_N} (n unknown): "))

    def run(self, s: DirectionsSettings, *, runtime=None, progress=None, should_stop=None, model=None,
            state=None) -> DirectionsResult:
        """``state``: accelerate's ``PartialState`` when launched by torchrun / accelerate launch."""
        t0 = time.perf_counter()
        rt = sharding.process_runtime(runtime_or_default(runtime), state)
        prog = Progress.wrap(progress, should_stop)
        paths = sharding.list_sources(s.source, check=prog.check)
        model = load(s.model, rt, model)
        run = sharding.ShardedRun(Path(s.out), s.header(), _identity(s, model), state)
        run.open()
        folder = Path(s.out) / FILES
        folder.mkdir(parents=True, exist_ok=True)
        todo, already = sharding.pending(run, paths)
        for i, (path, digest) in enumerate(todo):
            prog.check()
            if run.is_main:
                prog(i / max(1, len(todo)), f"image {i + 1} of {len(todo)} (this process): {Path(path).name}")
            run.write([self._one(s, model, rt, path, digest, folder, prog)])
        counts = run.total(len(todo), already)
        run.barrier()
        res = DirectionsResult(settings=s, out=Path(s.out), processes=run.world, main=run.is_main,
                               done_now=counts[0], already_done=counts[1])
        if run.is_main:
            res.rows = run.merged(paths)
            run.write_table(INDEX, res.rows)
        run.barrier()
        res.seconds = time.perf_counter() - t0
        return res

    def _one(self, s, model, rt, path, digest, folder, prog) -> list:
        from ..data.images import ImageError

        blank = [""] * (s.k + 4)      # sigmas, numerical_rank, passes, status, files
        if not digest:
            return [path, digest, *blank, "cannot read the file"]
        try:
            found = EDIT.find(s.edit_settings(path), runtime=rt, progress=Progress(None, should_stop=prog.should_stop),
                              model=model)
        except (UserError, ImageError) as err:
            return [path, digest, *blank, str(err).splitlines()[0]]
        stem = f"{Path(path).stem}-{digest}"
        files = []
        for i in range(1, s.k + 1):
            d = found.direction(i)
            files.append(str(d.save(folder / f"{stem}_v{i}.safetensors").relative_to(folder.parent)))
        sv = [f"{float(v):.6g}" for v in found.search.singular_values]
        summary = found.search.summary
        return [path, digest, *sv, "" if found.search.numerical_rank is None else found.search.numerical_rank,
                summary.get("passes", ""), found.status, ";".join(files), ""]

    def write_outputs(self, result: DirectionsResult, args) -> list[str]:
        return [result.summary()] if result.main else []


FEATURE = Directions()
