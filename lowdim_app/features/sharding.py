"""Sharded, resumable runs over many images, on one process or many (``torchrun`` / ``accelerate
launch``, one process per GPU, several machines), with accelerate's :class:`~accelerate.PartialState`
over torch.distributed (gloo on CPU, NCCL on GPUs).

An output folder holds ``run.json`` (the settings that decide every row; a run with other settings is
refused), ``parts/`` (one CSV per finished batch, written to a temporary name and renamed, so a process
killed at any moment loses at most its batch in flight) and the merged table rank 0 writes at the end.
A row is keyed by (path, content hash): a rerun with the same folder skips every image already done,
and the merge keeps one row per path (the newest), in the order of the source listing.
"""
from __future__ import annotations

import csv
import glob
import hashlib
import io
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ..data.images import IMAGE_SUFFIXES
from ..errors import UserError

HASH_CHARS = 16          # hex digits of sha256 kept per image (64 bits: collisions need ~4e9 images)
RUN_FILE = "run.json"
PARTS = "parts"


def _walk(folder: Path, check) -> list[Path]:
    """Image files under ``folder`` (symlinked folders not followed, unreadable folders skipped)."""
    out = []
    for i, (root, dirs, files) in enumerate(os.walk(folder, onerror=lambda err: None)):
        if check is not None and i % 200 == 0:
            check()
        dirs.sort()
        out += [Path(root) / f for f in files if Path(f).suffix.lower() in IMAGE_SUFFIXES]
    return out


def source_setting():
    """The SOURCE positional of the sharded commands."""
    from .settings import setting

    return setting("", positional=True, max_chars=4000,
                   help="a folder (recursive), a text file of paths, or a glob pattern (quote it)")


def out_setting(holds: str):
    from .settings import setting

    return setting("", help=f"output folder ({holds}, parts/); rerun with it to resume", max_chars=1000)


def list_sources(source: str, check=None) -> list[str]:
    """The image paths a SOURCE names: a folder (recursive), a text file of paths (one per line, relative
    to the file's folder; ``#`` comments), or a glob pattern. Sorted, no duplicates; files of any suffix
    from a list or a glob are kept (an unreadable one becomes a row with its reason). ``check()`` is
    called while a large folder is walked (it raises to stop)."""
    if not source:
        raise UserError("name a folder, a text file of paths or a glob pattern")
    p = Path(source)
    if p.is_dir():
        paths = _walk(p, check)
        if not paths:
            raise UserError(f"{source}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    elif p.is_file() and p.suffix.lower() in (".txt", ".lst", ".list"):
        paths = []
        for line in p.read_text(errors="replace").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                q = Path(line)
                paths.append(q if q.is_absolute() else p.parent / q)
        if not paths:
            raise UserError(f"{source}: the list names no files")
    elif p.is_file():
        paths = [p]
    else:
        try:
            paths = [Path(q) for q in glob.glob(source, recursive=True) if Path(q).is_file()]
        except OSError as err:
            raise UserError(f"{source}: cannot list it ({err.strerror or type(err).__name__})") from None
        if not paths:
            raise UserError(f"{source}: no such folder or file, and no file matches it as a pattern")
    return sorted({str(q) for q in paths})


def content_hash(path: str) -> str:
    """sha256 of the file's bytes (first ``HASH_CHARS`` hex digits); '' for a file that cannot be read."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return ""
    return h.hexdigest()[:HASH_CHARS]


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "w", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass
class ShardedRun:
    """One output folder shared by every process of a run (and by the runs that resume it)."""

    out: Path
    header: list[str]                 # columns; the first two are path and sha256
    identity: dict                    # the settings that decide a row's values
    state: object | None = None       # accelerate.PartialState (None: one process)
    run_id: str = field(default_factory=lambda: f"{time.time_ns():020d}")
    _seq: int = 0

    @property
    def rank(self) -> int:
        return 0 if self.state is None else self.state.process_index

    @property
    def world(self) -> int:
        return 1 if self.state is None else self.state.num_processes

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def total(self, *counts: int) -> list[int]:
        """``counts`` summed over every process (all processes must call it)."""
        if self.state is None or self.world == 1:
            return list(counts)
        import torch
        import torch.distributed as dist

        t = torch.tensor(counts, device=self.state.device)
        dist.all_reduce(t)
        return [int(v) for v in t.tolist()]

    def barrier(self) -> None:
        if self.state is not None and self.world > 1:
            self.state.wait_for_everyone()

    def open(self) -> None:
        """Create the folder, or check that it holds a run with the same settings."""
        self.out = Path(self.out)
        run_file = self.out / RUN_FILE
        if self.out.exists() and not self.out.is_dir():
            raise UserError(f"{self.out} is a file, not an output folder")
        if run_file.is_file():          # every process checks (the same file), so all refuse together
            try:
                saved = json.loads(run_file.read_text())
            except (OSError, json.JSONDecodeError):
                raise UserError(f"{run_file} is not a run file of this project; use a new --out folder") from None
            self._check_same(saved)
        self.barrier()
        if self.is_main:
            (self.out / PARTS).mkdir(parents=True, exist_ok=True)
            if not run_file.is_file():
                atomic_write(run_file, json.dumps({"identity": self.identity, "columns": self.header}, indent=1))
        self.barrier()

    def _check_same(self, saved: dict) -> None:
        old = saved.get("identity", {})
        if old == self.identity:
            return
        diff = [f"{k} {old.get(k)!r} (this run: {self.identity.get(k)!r})" for k in sorted(set(old) | set(self.identity))
                if old.get(k) != self.identity.get(k)]
        raise UserError(f"{self.out} holds results made with other settings: {'; '.join(diff)}. "
                        "Use a new --out folder (rows of different settings are never mixed)")

    def part_files(self) -> list[Path]:
        return sorted((self.out / PARTS).glob("*.csv"))

    def rows(self) -> list[dict]:
        """Every row written so far, oldest first."""
        out = []
        for f in self.part_files():
            out += list(csv.DictReader(io.StringIO(f.read_text())))
        return out

    def done(self) -> set[tuple[str, str]]:
        return {(r["path"], r["sha256"]) for r in self.rows()}

    def shard(self, items: list) -> list:
        """This process's share (every ``world``-th item from its rank)."""
        return items[self.rank::self.world]

    def write(self, rows: list[list]) -> Path | None:
        """One finished batch as its own part file (temporary name, fsync, rename)."""
        if not rows:
            return None
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.header)
        w.writerows(rows)
        path = self.out / PARTS / f"{self.run_id}-r{self.rank:05d}-{self._seq:07d}.csv"
        self._seq += 1
        atomic_write(path, buf.getvalue())
        return path

    def merged(self, paths: list[str]) -> list[dict]:
        """One row per listed path (the newest written), in the listing's order; paths never done are absent."""
        latest = {}
        for r in self.rows():
            latest[r["path"]] = r
        return [latest[p] for p in paths if p in latest]

    def write_table(self, name: str, rows: list[dict]) -> Path:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.header, lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
        path = self.out / name
        atomic_write(path, buf.getvalue())
        return path


def pending(run: ShardedRun, paths: list[str]) -> tuple[list[tuple[str, str]], int]:
    """(path, hash) of this process's share that no earlier run has done, and how many of its share were done."""
    done = run.done()
    share = run.shard(paths)
    todo = [key for key in ((p, content_hash(p)) for p in share) if key not in done]
    return todo, len(share) - len(todo)


def process_runtime(runtime, state):
    """The runtime of one process of a run: its own GPU under a multi-GPU launch, else as given."""
    import dataclasses

    if state is not None and state.device.type != "cpu":
        return dataclasses.replace(runtime, device=str(state.device))
    return runtime
