"""File inputs as settings (``FileRef``): an upload is read where the server keeps it and named as the
user's own file in messages, JSON and reproduce lines; bounds (size, count) are declared with the field;
the value pickles across a process boundary (a ZeroGPU worker)."""
import argparse
import pickle
import shlex
from dataclasses import dataclass

import pytest

from lowdim_app.errors import UserError
from lowdim_app.features.settings import FileRef, Settings, add_arguments, from_args, setting


@dataclass(frozen=True)
class Files(Settings):
    COMMAND = "files"
    images: tuple[FileRef, ...] = setting((), positional=True, help="images", max_items=3, max_mb=1)
    table: FileRef | None = setting(None, help="a table", max_mb=1)
    source: FileRef | str = setting("seed:0", help="seed:N or a file", keywords=("seed:",))


def _upload(tmp_path, name: str, size: int = 10) -> FileRef:
    """A file as a server keeps an upload: under a folder of its own, named as the user's file."""
    folder = tmp_path / f"upload{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    (folder / name).write_bytes(b"x" * size)
    return FileRef.upload(folder / name)


def test_upload_named_as_the_users_file_everywhere(tmp_path):
    a, b = _upload(tmp_path, "my digit.png"), _upload(tmp_path, "two.png")
    s = Files(images=(a, b), table=_upload(tmp_path, "t.json"))
    assert [x.path for x in s.images] == [a.path, b.path] and s.images[0].uploaded
    line = s.to_cli()
    assert line == "python -m lowdim_app files 'my digit.png' two.png --table t.json --source seed:0"
    assert str(tmp_path) not in line and str(tmp_path) not in str(s.to_dict())
    assert s.to_dict()["images"] == ["my digit.png", "two.png"] and s.to_dict()["table"] == "t.json"
    with open(s.images[0]) as f:                       # reads the kept file
        assert f.read() == "x" * 10


def test_gradio_file_dicts_and_plain_paths(tmp_path):
    up = _upload(tmp_path, "x.png")
    s = Files(images=[{"path": up.path, "orig_name": "mine.png"}, "rel/path.png"])
    assert [(r.path, r.name) for r in s.images] == [(up.path, "mine.png"), ("rel/path.png", "rel/path.png")]
    assert not s.images[1].uploaded


def test_cli_parses_files_and_reproduces_them():
    parser = argparse.ArgumentParser()
    add_arguments(parser, Files)
    s = from_args(Files, parser.parse_args(["a b.png", "c.png", "--table", "t.json", "--source", "seed:4"]))
    assert s.images == (FileRef("a b.png"), FileRef("c.png")) and s.table == FileRef("t.json")
    assert s.source == "seed:4" and isinstance(s.source, str)
    again = from_args(Files, parser.parse_args(shlex.split(s.to_cli())[4:]))
    assert again == s


@pytest.mark.parametrize("raw, message", [
    ({"images": ["a", "b", "c", "d"]}, "images: at most 3 files, got 4"),
    ({"images": [3]}, "images: not a file|must be a file"),
    ({"source": ""}, "source must be seed:... or a file"),
    ({"images": ["a\x00b"]}, "not a usable file name"),
])
def test_bad_file_values_are_one_line(raw, message):
    with pytest.raises(UserError, match=message):
        Files(**raw)


def test_size_bound_names_the_users_file(tmp_path):
    big = _upload(tmp_path, "big scan.png", size=2 * 2**20)
    with pytest.raises(UserError, match=r"images: big scan.png is too large \(2.0 MB, at most 1 MB\)") as err:
        Files(images=(big,))
    assert str(tmp_path) not in str(err.value)


def test_keywords_stay_text_and_files_become_refs(tmp_path):
    up = _upload(tmp_path, "face.png")
    assert Files(source="seed:7").source == "seed:7"
    assert Files(source=up).source == up


def test_settings_with_files_cross_a_process_boundary(tmp_path):
    s = Files(images=(_upload(tmp_path, "a.png"),), table=_upload(tmp_path, "t.json"))
    back = pickle.loads(pickle.dumps(s))
    assert back == s and back.images[0].path == s.images[0].path and back.to_cli() == s.to_cli()


def test_ui_uploads_keep_names_and_make_them_unique(tmp_path):
    from lowdim_app.ui.common import uploads

    one, two = _upload(tmp_path, "digit.png"), _upload(tmp_path, "digit.png")
    taken = {"steer.json"}
    refs = uploads([one.path, two.path], taken)
    assert [r.name for r in refs] == ["digit.png", "digit-2.png"] and [r.path for r in refs] == [one.path, two.path]
    assert [r.name for r in uploads(_upload(tmp_path, "steer.json").path, taken)] == ["steer-2.json"]
    assert uploads(None) == []


def test_features_take_uploads_through_their_settings():
    """Score, Calibrate and Steer declare their files as settings (no side arguments for uploads)."""
    import dataclasses
    import inspect

    from lowdim_app.features.calibrate import CalibrateSettings
    from lowdim_app.features.score import FEATURE as SCORE
    from lowdim_app.features.score import ScoreSettings
    from lowdim_app.features.settings import field_type
    from lowdim_app.features.steer import SteerSettings

    for cls, names in ((ScoreSettings, ("images", "calibration")), (CalibrateSettings, ("memorized", "generalized")),
                       (SteerSettings, ("concept", "source", "vector"))):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for name in names:
            ft = field_type(cls, fields[name])
            assert FileRef in (ft.base, ft.item), (cls.__name__, name)
    assert "calibration_file" not in inspect.signature(SCORE.run).parameters
