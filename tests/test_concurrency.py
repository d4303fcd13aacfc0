"""Same inputs + same seed -> same output, alone or concurrently: 20 clients at once, three rounds,
compared with a sequential run (the real ``python app.py`` server)."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
from gradio_client import Client, handle_file
from PIL import Image

from lowdim_app.config import DEFAULT_ASSETS
from tests.conftest import ARTIFACTS

EX = sorted(str(p) for p in (DEFAULT_ASSETS / "examples").glob("digit_*.png"))


def _args(client, api: str, **values) -> list:
    """The endpoint's default arguments with ``values`` set by parameter name."""
    params = client.view_api(print_info=False, return_format="dict")["named_endpoints"][api]["parameters"]
    names = [p["parameter_name"] for p in params]
    assert set(values) <= set(names), set(values) - set(names)
    return [values.get(p["parameter_name"], p.get("parameter_default")) for p in params]


def _pixels(path) -> list:
    return np.asarray(Image.open(path)).tolist()


def _numbers(text: str) -> dict:
    """The result's numbers without its timings (``wall_s`` at any depth)."""
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k != "wall_s"}
        return [strip(v) for v in x] if isinstance(x, list) else x
    return strip(json.loads(text))


CALLS = {   # name -> (api, parameter values, what to compare from the outputs)
    "sample": ("/sample", dict(model_id="digits-gen", n=4, steps=5), lambda o: _pixels(o[0])),
    "score": ("/score", dict(files=[handle_file(p) for p in EX[:2]], model_id="digits-dup"),
              lambda o: o[0]["data"]),
    "mog": ("/mog_ddpm", dict(iters_large=8, iters_small=6, n_batch=2048), lambda o: (_numbers(o[1]), _pixels(o[0]))),
    "phase": ("/phase", dict(n=16, K=1, d_lo=2, d_hi=3, N_lo=2, N_hi=4, trials=3, method="svd"), lambda o: o[2]),
    "steer": ("/steer", dict(model_id="digits-dup", count=3, contrast=False), lambda o: _pixels(o[0])),
}
PLAN = [("sample", 0), ("sample", 1), ("sample", 2), ("score", 0), ("score", 0), ("mog", 0), ("mog", 1), ("mog", 0),
        ("mog", 1), ("phase", 0), ("phase", 1), ("steer", 1), ("steer", 2), ("sample", 0), ("score", 0), ("phase", 0),
        ("sample", 1), ("mog", 0), ("steer", 1), ("sample", 2)]
SEED_NAME = {"sample": "seed", "score": "seed", "mog": "seed", "phase": "seed", "steer": "source_seed"}


def _run(client, name: str, seed: int):
    api, values, pick = CALLS[name]
    return pick(client.predict(*_args(client, api, **values, **{SEED_NAME[name]: seed}), api_name=api))


def test_twenty_concurrent_clients_get_the_sequential_results(app_server):
    sequential = Client(app_server, verbose=False)
    reference = {(n, s): _run(sequential, n, s) for n, s in sorted(set(PLAN))}
    clients = [Client(app_server, verbose=False) for _ in PLAN]
    summary = []
    for round_ in range(3):
        results, errors = [None] * len(PLAN), []

        def call(i, name, seed):
            try:
                results[i] = _run(clients[i], name, seed)
            except Exception as err:   # recorded, then asserted below
                errors.append(f"{name}#{seed}: {type(err).__name__}: {err}")

        threads = [threading.Thread(target=call, args=(i, n, s)) for i, (n, s) in enumerate(PLAN)]
        [t.start() for t in threads]
        [t.join(timeout=600) for t in threads]
        mismatches = [f"{n}#{s}" for (n, s), r in zip(PLAN, results) if r is not None and r != reference[(n, s)]]
        summary.append(f"round {round_ + 1}: {len(PLAN)} concurrent calls, {len(errors)} failures, "
                       f"{len(mismatches)} mismatches")
        assert not errors, errors
        assert not mismatches, mismatches
    Path(ARTIFACTS / "concurrency.txt").write_text("\n".join(summary) + "\n")
