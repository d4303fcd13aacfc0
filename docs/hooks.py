"""mkdocs hook: the figures of the documentation are made by the build, by running the CLI
(``python -m lowdim_app ...``, in-process) on the built-in models with few steps.

The figures are written to a cache folder outside ``docs/`` (``$LOWDIM_DOCS_FIGURES``, default a
``lowdim-docs-figures`` folder in the temporary directory) and added to the site as ``figures/*.png``;
nothing is written into the repository. A figure is remade when its command line changes."""
from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EX = str(REPO / "assets" / "examples" / "digit_2_test0.png")

# figure name -> (CLI arguments with {out} for the output path, the file the command writes)
FIGURES = {
    "sample": (["sample", "--model", "digits-gen", "--n", "16", "--seed", "0", "--steps", "20", "--out", "{out}/grid.png"],
               "grid.png"),
    "edit_strip": (["edit", EX, "--model", "digits-gen", "--k", "3", "--direction", "1", "--steps", "20",
                    "--alpha", "-6:6:5", "--out", "{out}"], "strip.png"),
    "edit_spectrum": (None, "spectrum.png"),          # written by the edit command above
    "rank": (["rank", "--model", "digits-gen", "--steps", "10", "--points", "4", "--out", "{out}/rank"], "rank.png"),
    "steer_strip": (["steer", "--model", "digits-dup", "--concept", "digit:4", "--source", "seed:1",
                     "--strengths", "0:1.5:4", "--concept-n", "16", "--steps", "12", "--window", "6",
                     "--out", "{out}"], "strip.png"),
    "steer_curve": (None, "curve.png"),
    "phase": (["phase", "--K", "1", "--n", "16", "--d", "2:5", "--N", "1:7", "--trials", "4", "--method", "svd",
               "--seed", "0", "--png", "{out}/phase.png"], "phase.png"),
}


def cache_dir() -> Path:
    return Path(os.environ.get("LOWDIM_DOCS_FIGURES") or Path(tempfile.gettempdir()) / "lowdim-docs-figures")


def make_figures(log=print) -> dict[str, Path]:
    """Run each figure's command (once per distinct command line); ``{name: png path}``."""
    if str(REPO) not in sys.path:   # the `mkdocs` command (unlike `python -m mkdocs`) does not put the checkout
        sys.path.insert(0, str(REPO))    # on the path, and mkdocs restores sys.path after loading a hook
    from lowdim_app.cli import main

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    out: dict[str, Path] = {}
    last = None
    for name, (args, produced) in FIGURES.items():
        if args is None:
            folder = last
        else:
            key = hashlib.sha1(" ".join(args).encode()).hexdigest()[:12]
            folder = cache_dir() / f"{args[0]}-{key}"
            if not (folder / produced).is_file():
                folder.mkdir(parents=True, exist_ok=True)
                argv = [a.replace("{out}", str(folder)) for a in args]
                t0 = time.perf_counter()
                code = main(argv)
                if code != 0:
                    raise RuntimeError(f"docs figure {name}: python -m lowdim_app {' '.join(argv)} exited {code}")
                log(f"docs figure {name}: python -m lowdim_app {' '.join(args)} ({time.perf_counter() - t0:.1f} s)")
            last = folder
        out[name] = folder / produced
    return out


def on_files(files, config):
    from mkdocs.structure.files import File

    for name, path in make_figures(log=lambda m: None).items():
        files.append(File.generated(config, f"figures/{name}.png", abs_src_path=str(path)))
    return files
