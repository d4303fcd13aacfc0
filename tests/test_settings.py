"""The settings layer: one validation path for every type, CLI parsing and reproduce lines from the same fields."""
import argparse
import math
from dataclasses import dataclass

import pytest

from lowdim_app.errors import UserError
from lowdim_app.features.settings import Settings, add_arguments, from_args, seed_setting, setting


@dataclass(frozen=True)
class Demo(Settings):
    COMMAND = "demo"
    image: str = setting("", positional=True, help="an image")
    n: int = setting(4, lo=1, hi=10, help="count")
    rate: float = setting(0.5, lo=0.0, hi=1.0, help="a rate")
    flag: bool = setting(False, help="a switch")
    mode: str = setting("a", choices=("a", "b"), help="a choice")
    text: str = setting("", help="free text", max_chars=20)
    ks: tuple[int, ...] = setting((2, 3, 4), lo=1, hi=50, help="ints")
    alphas: tuple[float, ...] = setting((-1.0, 0.0, 1.0), lo=-6, hi=6, range_style="linspace", help="floats")
    t: int | None = setting(None, lo=0, hi=999, help="optional int")
    seed: int = seed_setting()

    def check(self):
        if self.n > 8 and self.mode == "b":
            raise UserError("mode b allows n <= 8")


@pytest.mark.parametrize("field, value, message", [
    ("n", "abc", "n must be a number"),
    ("n", None, "n is required"),
    ("n", float("nan"), "n must be a finite number"),
    ("n", float("inf"), "n must be a finite number"),
    ("n", 2.5, "n must be a whole number"),
    ("n", 11, "n must be between 1 and 10"),
    ("n", True, "n must be a number"),
    ("rate", "0.x", "rate must be a number"),
    ("rate", -0.1, "rate must be between 0 and 1"),
    ("rate", [0.1], "rate must be a number"),
    ("flag", "maybe", "flag must be true or false"),
    ("mode", "c", "mode must be one of a, b"),
    ("mode", None, "mode is required"),
    ("text", "x" * 21, "text is too long"),
    ("text", 5, "text must be text"),
    ("ks", "1:x", "ks: not a list of numbers"),
    ("ks", [], "ks must not be empty"),
    ("ks", "1:1000", "ks: at most 256 values"),
    ("ks", [1, 51], "ks must be between 1 and 50"),
    ("alphas", "0:7:3", "alphas must be between -6 and 6"),
    ("alphas", [0.0, float("nan")], "alphas must be a finite number"),
    ("t", "1e9", "t must be between 0 and 999"),
    ("seed", -1, "seed must be between 0 and 2147483647"),
])
def test_bad_values_are_one_line_user_errors(field, value, message):
    with pytest.raises(UserError) as err:
        Demo(**{field: value})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_good_values_are_coerced_once():
    d = Demo(n="7", rate="0.25", flag="true", ks="2:5", alphas="-6:6:5", t="", seed=3.0)
    assert (d.n, d.rate, d.flag, d.ks, d.t, d.seed) == (7, 0.25, True, (2, 3, 4, 5), None, 3)
    assert d.alphas == (-6.0, -3.0, 0.0, 3.0, 6.0)
    assert isinstance(d.seed, int) and Demo(ks=[1, 2]).ks == (1, 2)


def test_cross_field_check_and_unknown_names():
    with pytest.raises(UserError, match="mode b allows"):
        Demo(n=9, mode="b")
    with pytest.raises(UserError, match="unknown setting"):
        Demo.from_raw(bogus=1)


def _parse(argv):
    p = argparse.ArgumentParser()
    add_arguments(p, Demo)
    return from_args(Demo, p.parse_args(argv))


def test_cli_round_trip_keeps_every_field():
    d = Demo(image="in put.png", n=9, rate=0.125, flag=True, mode="a", text="it's", ks=(1, 5, 9),
             alphas=(-6.0, -2.0, 2.0, 6.0), t=50, seed=11)
    line = d.to_cli()
    assert line.startswith("python -m lowdim_app demo ")
    import shlex

    argv = shlex.split(line)[4:]
    assert _parse(argv) == d


def test_reproduce_line_spells_out_every_setting_but_auto_and_empty_ones():
    line = Demo(image="x.png").to_cli()
    assert line == ("python -m lowdim_app demo x.png --n 4 --rate 0.5 --no-flag --mode a --ks 2:4 "
                    "--alphas=-1:1:3 --seed 0")
    assert _parse(["x.png"]) == Demo(image="x.png")


def test_float_values_round_trip_exactly():
    for v in (0.1, 1 / 3, 1e-7, 0.30000000000000004):
        d = Demo(rate=v)
        import shlex

        assert _parse(shlex.split(d.to_cli())[4:]).rate == v
    assert math.isclose(Demo(alphas="-6:6:7").alphas[1], -4.0)


@dataclass(frozen=True)
class Files(Settings):
    COMMAND = "files"
    paths: tuple[str, ...] = setting(positional=True, help="files")
    extra: tuple[str, ...] = setting((), help="more files")
    seed: int = seed_setting()


def test_text_lists_positional_and_flag_round_trip():
    import shlex

    d = Files(paths=("a b.png", "c.png"), extra=("x",), seed=2)
    line = d.to_cli()
    assert line == "python -m lowdim_app files 'a b.png' c.png --extra x --seed 2"
    assert Files(paths=("a",)).to_cli() == "python -m lowdim_app files a --seed 0"
    p = argparse.ArgumentParser()
    add_arguments(p, Files)
    assert from_args(Files, p.parse_args(shlex.split(line)[4:])) == d
    assert Files(paths="one.png").paths == ("one.png",)
    with pytest.raises(UserError, match="paths must be a list of text values"):
        Files(paths=[1, 2])
    with pytest.raises(UserError, match="give at least one value"):
        Files(paths=())
    assert Files(paths=("a",)).to_cli(placeholders={"paths": ["u v.png"]}) == "python -m lowdim_app files 'u v.png' --seed 0"
