"""The memorization benchmark's prompt sets, shipped as package data (``memorization_prompts/``,
attribution in its README): Webster 2023's 500 memorized LAION prompts of Stable Diffusion v1.4 as
published with Wen et al. 2024 (arXiv:2407.21720), and the 500 non-memorized prompts of Jeon et al.
2025 (arXiv:2412.04140). A user's own list is a text file (one prompt a line) or a JSON-lines file
with a ``caption`` (or ``prompt``) field.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

FOLDER = Path(__file__).resolve().parent / "memorization_prompts"
SHIPPED = {"sd14-memorized": FOLDER / "sd14_memorized_500.jsonl",
           "sd14-nonmemorized": FOLDER / "sd14_nonmemorized_500.txt"}
MAX_PROMPTS = 100_000


@dataclass(frozen=True)
class PromptSet:
    name: str                 # shipped name or the file's name
    prompts: tuple[str, ...]
    digest: str               # sha256 of the prompts (first 16 hex digits): what a run's rows depend on

    def __len__(self) -> int:
        return len(self.prompts)


def _digest(prompts) -> str:
    return hashlib.sha256("\n".join(prompts).encode()).hexdigest()[:16]


def load_prompt_set(name_or_path: str) -> PromptSet:
    """A shipped set (``sd14-memorized``, ``sd14-nonmemorized``) or a ``.txt`` / ``.jsonl`` file."""
    path = SHIPPED.get(name_or_path)
    path = Path(name_or_path) if path is None else path
    if not path.is_file():
        raise UserError(f"{name_or_path}: no such prompt file (or shipped set: {', '.join(SHIPPED)})")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path.name}: cannot read it as UTF-8 text ({type(err).__name__})") from None
    prompts = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        if path.suffix.lower() == ".jsonl":
            try:
                row = json.loads(line)
                text = row.get("caption", row.get("prompt")) if isinstance(row, dict) else None
            except json.JSONDecodeError:
                text = None
            if not isinstance(text, str):
                raise UserError(f"{path.name}, line {i + 1}: not a JSON object with a 'caption' or 'prompt' text")
        else:
            text = line
        prompts.append(text.strip())
    if not prompts:
        raise UserError(f"{path.name}: no prompts")
    if len(prompts) > MAX_PROMPTS:
        raise UserError(f"{path.name}: {len(prompts)} prompts, at most {MAX_PROMPTS}")
    name = name_or_path if name_or_path in SHIPPED else path.name
    return PromptSet(name, tuple(prompts), _digest(prompts))
