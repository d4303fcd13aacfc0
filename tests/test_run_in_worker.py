"""A UI event's generator never ends on a heartbeat: gradio sends an event's last yield as its result, so an
API client (gradio_client) that got a heartbeat after the result read ``gr.skip()`` updates instead of it."""
from __future__ import annotations

import time

import pytest

from lowdim_app.ui import common


@pytest.fixture
def late_finish(monkeypatch):
    """The worker takes a second between handing over its last result and ending (a loaded machine)."""
    finish = common.STOP_FLAGS.finish

    def slow(flag):
        time.sleep(4 * common.HEARTBEAT_S)
        finish(flag)

    monkeypatch.setattr(common.STOP_FLAGS, "finish", slow)


def test_a_model_action_ends_on_its_result(monkeypatch, late_finish):
    monkeypatch.setattr(common, "run_model_job", lambda feature, settings, flag, progress=None, **inputs: "result")
    out = list(common.run_in_worker(None, None, request=None, lab="test"))
    assert out[-1] == "result"
    assert out.count("result") == 1


def test_a_live_lab_ends_on_its_last_partial_result(monkeypatch, late_finish):
    monkeypatch.setattr(common, "_stream_lab", lambda feature, settings, flag, **inputs: iter(["first", "last"]))
    out = list(common.run_in_worker(None, None, request=None, lab="test", stream=True))
    assert out[-1] == "last"
    assert [o for o in out if o is not None][:2] == ["first", "last"]


def test_a_stopped_lab_does_not_repeat_its_partial_result(monkeypatch, late_finish):
    """After Cancel the UI shows the cancelled state: the last partial result is not sent again over it."""
    flags = []

    def partials(feature, settings, flag, **inputs):
        flags.append(flag)
        yield "first"
        flag.set()

    monkeypatch.setattr(common, "_stream_lab", partials)
    out = list(common.run_in_worker(None, None, request=None, lab="test", stream=True))
    assert flags[0]() and None in out
    assert out.count("first") == 1
