"""The public server under hostile input: every upload endpoint and every parameter of every
endpoint, probed through gradio_client against the real ``python app.py`` server. Each answer is
*valid* (a result), *clear* (one readable error line), *unclear* (gradio's generic message, a
traceback, an "Unexpected ..." error, an empty error) or *death* (the server stops answering).
Unclear and death must be 0. The fast subset runs in the default suite; ``-m long`` runs the whole
corpus and every bad value (``.ci/run`` runs it after the default suite)."""
from __future__ import annotations

import json
import math
import time
import urllib.request
from collections import Counter

import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError

from tests.badfiles import make_corpus
from tests.conftest import ARTIFACTS, REPO

WAIT_S = 6.0            # an accepted request is cancelled after this long (it is then "valid")
FILE_COMPONENTS = ("File", "Image", "Imageeditor", "Gallery")
FAST_VALUES = [None, "abc", float("nan")]
ALL_VALUES = FAST_VALUES + [float("inf"), -1e9, 1e9, "x" * 100_000, [], {"a": 1}, True, "1e999", -0.0]


def _verdict(msg: str) -> str:
    unclear = (not msg.strip() or "upstream" in msg or "Traceback" in msg or "Unexpected" in msg
               or msg.strip() in ("None", "null") or len(msg) > 600 or "\n" in msg.strip())
    return "unclear" if unclear else "clear"


def classify_raw(url: str, endpoint: str, args: list) -> tuple[str, str]:
    """Raw HTTP (what gradio_client refuses to send: JSON NaN and Infinity): POST the call, read its events."""
    body = json.dumps({"data": args}, allow_nan=True).encode()
    req = urllib.request.Request(f"{url}gradio_api/call{endpoint}", data=body, headers={"Content-Type": "application/json"})
    event = json.loads(urllib.request.urlopen(req, timeout=30).read())["event_id"]
    try:
        text = urllib.request.urlopen(f"{url}gradio_api/call{endpoint}/{event}", timeout=WAIT_S + 30).read().decode()
    except Exception:
        return "valid", "accepted (no answer yet)"
    if "event: complete" in text:
        return "valid", ""
    data = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    try:
        msg = json.loads(data[-1]).get("error") or "" if data else ""
    except (json.JSONDecodeError, AttributeError):
        msg = data[-1] if data else ""
    return _verdict(str(msg)), str(msg)[:200]


def classify(client, endpoint: str, args: list) -> tuple[str, str]:
    if any(isinstance(a, float) and not math.isfinite(a) for a in args):   # gradio_client cannot send these
        return classify_raw(client.src if client.src.endswith("/") else client.src + "/", endpoint, args)
    job = client.submit(*args, api_name=endpoint)
    t0 = time.perf_counter()
    while not job.done():
        if time.perf_counter() - t0 > WAIT_S:
            try:
                job.cancel()
            except Exception:   # the cancel call itself timed out on a loaded machine; the run is still valid
                time.sleep(5)
                try:
                    job.cancel()
                except Exception:
                    pass
            return "valid", "accepted (still running, cancelled)"
        time.sleep(0.05)
    try:
        job.result()
        return "valid", ""
    except AppError as err:
        return _verdict(str(err)), str(err)[:200]
    except Exception as err:   # the client could not even talk to the server
        return "unclear", f"{type(err).__name__}: {str(err)[:160]}"


def alive(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=30).read(100)
        return True
    except Exception:
        return False


def endpoints(client) -> dict:
    return client.view_api(print_info=False, return_format="dict")["named_endpoints"]


def baseline(params: list[dict]) -> list:
    return [p.get("parameter_default") for p in params]


def file_value(component: str, path):
    f = handle_file(str(path))
    if component == "Imageeditor":
        return {"background": f, "layers": [], "composite": f, "id": None}
    if component == "File":
        return [f]
    return f


def upload_targets(client) -> list[tuple[str, int, str, list]]:
    out = []
    for name, ep in endpoints(client).items():
        params = ep["parameters"]
        for i, p in enumerate(params):
            if p["component"] in FILE_COMPONENTS:
                out.append((name, i, p["component"], baseline(params)))
    return out


def report(name: str, outcomes: Counter, examples: dict) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"reliability_{name}.json").write_text(json.dumps(
        {"outcomes": dict(outcomes), "unclear_examples": examples}, indent=1))


def _uploads(client, app_server, tmp_path, full: bool):
    corpus = make_corpus(tmp_path / "corpus")
    if not full:   # one file of every kind that must be refused, and one valid image
        seen, picked = set(), []
        for path, kind, expect in corpus:
            if kind not in seen and expect != "either":
                seen.add(kind)
                picked.append((path, kind, expect))
        corpus = picked
    outcomes, unclear = Counter(), {}
    for endpoint, index, component, args in upload_targets(client):
        for path, kind, expect in corpus:
            if expect == "valid" and not full and endpoint != "/score":
                continue   # valid images run whole computations; the fast run checks them on /score only
            call = list(args)
            call[index] = file_value(component, path)
            if endpoint == "/steer" and index != 6:
                call[1] = "uploaded images"   # the concept files are read only in that mode
            verdict, msg = classify(client, endpoint, call)
            if verdict == "valid" and expect == "refuse" and endpoint != "/apply_direction":
                verdict = "unclear"           # a file that must be refused gave a result
                msg = f"accepted a {kind}"
            outcomes[verdict] += 1
            if verdict == "unclear":
                unclear[f"{endpoint}[{index}] {path.name}"] = msg
        assert alive(app_server), f"the server died during {endpoint}"
    return outcomes, unclear


def _parameters(client, app_server, values):
    outcomes, unclear = Counter(), {}
    for endpoint, ep in endpoints(client).items():
        params = ep["parameters"]
        for i, p in enumerate(params):
            if p["component"] in FILE_COMPONENTS:
                continue
            for value in values:
                call = baseline(params)
                call[i] = value
                verdict, msg = classify(client, endpoint, call)
                outcomes[verdict] += 1
                if verdict == "unclear":
                    unclear[f"{endpoint}.{p['parameter_name']}={str(value)[:20]!r}"] = msg
        assert alive(app_server), f"the server died during {endpoint}"
    return outcomes, unclear


def test_bad_uploads_through_every_upload_endpoint(client, app_server, tmp_path):
    outcomes, unclear = _uploads(client, app_server, tmp_path, full=False)
    report("uploads_fast", outcomes, unclear)
    assert sum(outcomes.values()) >= 100 and outcomes["valid"] >= 1
    assert not unclear, unclear


def test_bad_values_for_every_parameter_of_every_endpoint(client, app_server):
    outcomes, unclear = _parameters(client, app_server, FAST_VALUES)
    report("parameters_fast", outcomes, unclear)
    assert sum(outcomes.values()) >= 300
    assert not unclear, unclear


@pytest.mark.long
def test_whole_upload_corpus(client, app_server, tmp_path):
    outcomes, unclear = _uploads(client, app_server, tmp_path, full=True)
    report("uploads_full", outcomes, unclear)
    assert not unclear, unclear


@pytest.mark.long
def test_every_bad_value(client, app_server):
    outcomes, unclear = _parameters(client, app_server, ALL_VALUES)
    report("parameters_full", outcomes, unclear)
    assert not unclear, unclear


def test_wrong_argument_counts_and_raw_nan(app_server):
    """Raw HTTP: a short argument list and JSON NaN in a whole-number field get one clear line."""
    def call(api: str, body: str) -> str:
        req = urllib.request.Request(f"{app_server}gradio_api/call/{api}", data=body.encode(),
                                     headers={"Content-Type": "application/json"})
        event = json.loads(urllib.request.urlopen(req, timeout=30).read())["event_id"]
        return urllib.request.urlopen(f"{app_server}gradio_api/call/{api}/{event}", timeout=120).read().decode()

    short = call("sample", '{"data": ["digits-gen", 2]}')
    assert "takes 6 input values, got 2" in short
    for api, body in (("phase", '{"data": [NaN, 2, 2, 8, 2, 15, 20, 0.0, "cluster", "hardmax", 0]}'),
                      ("molr_mog", '{"data": ["synthetic", 3, 16, 2, 4, NaN, 0]}')):
        out = call(api, body)
        assert "event: error" in out and '"error": null' not in out and "finite number" in out, out
    for api, body in (("phase", '{"data": [48, 2, 2, 8, 2, 15, 20, 0.0, "%s", "hardmax", 0]}' % ("x" * 100_000)),
                      ("phase", '{"data": [48, 2, 2, 8, 2, 15, 20, 0.0, "cluster", "hardmax", Infinity]}')):
        out = call(api, body)
        error = [line for line in out.splitlines() if line.startswith("data: ")][-1]
        assert "event: error" in out and len(error) < 400 and ("choices" in error or "finite number" in error), error[:500]


def test_unusable_direction_and_vector_files_are_refused_by_their_own_name(client, tmp_path):
    """A saved direction (Edit, transfer) or steering vector (Steer) whose values are NaN, infinite or all
    zero is refused in one line that names the uploaded file itself, never the name the server stores it
    under, and the server goes on answering."""
    from tests.badfiles import make_tensor_files

    digit = handle_file(str(sorted((REPO / "assets" / "examples").glob("digit_*.png"))[0]))
    editor = {"background": digit, "layers": [], "composite": digit, "id": None}
    for path, endpoint, says in make_tensor_files(tmp_path / "tensors"):
        if endpoint == "/apply_direction":
            args = [editor, handle_file(str(path)), "digits-gen", 20, "", 4, 3, 0]
        else:
            args = ["digits-dup", "digit class", 4, "", None, 1, None, 1.5, 3, "recipe", "", False, 0,
                    handle_file(str(path))]
        with pytest.raises(AppError) as err:
            client.predict(*args, api_name=endpoint)
        message = str(err.value)
        assert message.startswith(f"{path.name}: ") and says in message, (endpoint, message)
        assert _verdict(message) == "clear" and "direction.safetensors" not in message.replace(path.name, "")


def test_a_huge_seed_is_echoed_as_typed(client):
    """A seed of 1e308 arrives as a 309-digit whole number: the refusal echoes it as the user typed it."""
    with pytest.raises(AppError) as err:
        client.predict("digits-gen", 2, 1e308, 5, "", 7.5, api_name="/sample")
    message = str(err.value)
    assert "got 1e308" in message and len(message) < 120, message


@pytest.mark.parametrize("argv", [
    ["edit", "assets/examples/digit_2_test0.png", "--out", "/proc/nope/x"],
    ["sample", "--out", "/proc/nope/grid.png"],
    ["phase", "--json", "README.md/x.json"],
    ["steer", "--concept", "digit:4", "--save-vector", "/proc/v.safetensors"],
], ids=["edit-out", "sample-out", "json-under-a-file", "save-vector"])
def test_cli_output_paths_it_cannot_create_exit_2_before_any_work(argv, capsys, monkeypatch):
    """The command refuses an output path it could not create at once (no computation first), with one
    line naming the flag and the path, exit code 2."""
    from lowdim_app.cli import main
    from lowdim_app.features import all_features

    def no_work(*args, **kwargs):
        raise AssertionError("the command computed before refusing its output path")

    for feature in all_features():
        monkeypatch.setattr(type(feature), "run", no_work)
    monkeypatch.chdir(REPO)
    assert main(argv + ["--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: --") and "cannot write there" in err, err


def test_every_api_output_is_named_after_what_it_holds(client):
    """gradio names an output without a label value_<id>: every endpoint's outputs carry a label."""
    for name, ep in endpoints(client).items():
        labels = [r.get("label") or "" for r in ep["returns"]]
        assert all(label and not label.startswith("value_") for label in labels), (name, labels)
