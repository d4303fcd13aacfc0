"""Cancel stops the computation of a live lab, not just its stream (ui.common.StopFlags)."""
import os
import threading
import time
from types import SimpleNamespace

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402

pytest.importorskip("gradio")

from lowdim_app.ui.common import STOP_FLAGS, StopFlags  # noqa: E402


def test_stop_flags_are_per_session_and_lab():
    flags = StopFlags()
    a, b = SimpleNamespace(session_hash="a"), SimpleNamespace(session_hash="b")
    with flags.running(a, "phase") as stop_a, flags.running(b, "phase") as stop_b:
        assert flags.active() == 2 and not stop_a() and not stop_b()
        assert not flags.cancel(a, "gl_score")          # no such run in this session
        assert flags.cancel(a, "phase")
        assert stop_a() and not stop_b()
    assert flags.active() == 0 and not flags.cancel(a, "phase")
    # a new run after a cancelled one starts with a clear flag
    with flags.running(a, "phase") as stop_a2:
        assert not stop_a2()


def _heartbeat(item) -> bool:
    import gradio as gr

    return isinstance(item, tuple) and all(x == gr.skip() for x in item)


def _run_in_thread(gen):
    """Consume ``gen`` in a thread up to its first real output (heartbeats while it computes)."""
    out = {}

    def target():
        t0 = time.perf_counter()
        out["first"] = None
        for item in gen:
            if not _heartbeat(item):
                out["first"] = item
                break
        out["s"] = time.perf_counter() - t0

    th = threading.Thread(target=target, daemon=True)
    th.start()
    return th, out


def _cancel_after_start(request, lab, th, wait=2.0):
    time.sleep(wait)
    assert th.is_alive(), "the run finished before it could be cancelled; make it longer"
    assert not STOP_FLAGS.cancel(SimpleNamespace(session_hash="someone-else"), lab)
    time.sleep(0.5)
    assert th.is_alive(), "another session's Cancel stopped this run"
    assert STOP_FLAGS.cancel(request, lab)
    th.join(timeout=30)
    assert not th.is_alive(), "Cancel did not stop the computation"


def test_cancel_stops_gl_training(one_thread):
    """12000 Adam steps x 2 d_k take minutes; Cancel ends the handler within seconds."""
    from lowdim_app.ui.molrg import run_gl_ui

    req = SimpleNamespace(session_hash="gl-test")
    gen = run_gl_ui(48, 2, "3,6", "1,4,16,64", 12000, 256, 300, 0, request=req)
    th, out = _run_in_thread(gen)
    _cancel_after_start(req, "gl_score", th)
    assert out["first"] is None              # nothing more is streamed after Cancel
    assert STOP_FLAGS.active() == 0


def test_cancel_stops_phase_dae_column(one_thread):
    from lowdim_app.ui.molrg import run_phase_ui

    req = SimpleNamespace(session_hash="phase-test")
    gen = run_phase_ui(48, 2, 2, 8, 2, 15, 20, 0.0, "dae", "hardmax", 0, request=req)
    th, out = _run_in_thread(gen)
    _cancel_after_start(req, "phase", th)
    assert out["first"] is None and STOP_FLAGS.active() == 0


def test_cancel_stops_theory_training(one_thread):
    """MoLR-MoG lab: the progress callback leaves the training loop on Cancel."""
    from lowdim_app.ui.theory import run_molr_ui

    req = SimpleNamespace(session_hash="molr-test")
    gen = run_molr_ui("synthetic", 10, 64, 6, 8, 3000, 0, request=req)
    th, out = _run_in_thread(gen)
    _cancel_after_start(req, "molr_mog", th, wait=3.0)
    assert STOP_FLAGS.active() == 0


def test_cancel_stops_rank_mlp_training(one_thread):
    """Low-rank denoiser lab: the closed-form curve streams, then Cancel ends the MLP's 50000 steps."""
    from lowdim_app.ui.molrg import run_rank_ui

    req = SimpleNamespace(session_hash="rank-test")
    gen = run_rank_ui(24, 3, 3, 200, 2, 0, 50000, 0, request=req)
    outs = []
    th = threading.Thread(target=lambda: outs.extend(gen), daemon=True)
    th.start()
    _cancel_after_start(req, "molrg_rank", th)
    outs = [o for o in outs if not _heartbeat(o)]
    assert len(outs) == 1 and outs[0][1:4] == (None, None, None)   # the closed form only, no files
    assert STOP_FLAGS.active() == 0
