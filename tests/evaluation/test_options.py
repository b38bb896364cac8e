"""The evaluator's options are declared once (EvaluatorOptions): Evaluator's fields, evaluate's keyword arguments
and the CLI flags all come from there, and every option given on the command line reaches the Evaluator."""
from __future__ import annotations

import argparse
from dataclasses import fields

import pytest

from genstudio import cli
from genstudio.evaluation import metrics, options, records, sweep
from genstudio.evaluation.options import OPTION_NAMES, EvaluatorOptions


class _Stop(Exception):
    """Raised by the stand-in Evaluator once it has seen its arguments (nothing is loaded or sampled)."""


@pytest.fixture
def seen(monkeypatch):
    got = []

    def fake(**kwargs):
        got.append(kwargs)
        raise _Stop

    for module in (metrics, sweep):
        monkeypatch.setattr(module, "Evaluator", fake)
    return got


def _non_default_flags() -> tuple[dict[str, list[str]], dict]:
    """Per option, command-line tokens that set it to something other than its default; and those values."""
    tokens, expected = {}, {}
    for f in fields(EvaluatorOptions):
        meta, name = f.metadata, options.flag(f.name)
        if meta["type"] is None:  # a switch
            tokens[f.name], expected[f.name] = [name], not f.default
        elif meta["choices"]:
            value = next(c for c in meta["choices"] if c != f.default)
            tokens[f.name], expected[f.name] = [name, value], value
        elif meta["type"] is int:
            tokens[f.name], expected[f.name] = [name, "7"], 7
        elif meta["type"] is options.comma_list:
            tokens[f.name], expected[f.name] = [name, "pr,fid"], ["pr", "fid"]
        else:
            tokens[f.name], expected[f.name] = [name, f"x-{f.name}"], f"x-{f.name}"
    return tokens, expected


def test_the_evaluators_fields_are_the_options():
    ev_fields = {f.name: f for f in fields(metrics.Evaluator) if f.init}
    assert tuple(ev_fields) == OPTION_NAMES
    assert {n: f.default for n, f in ev_fields.items()} == {f.name: f.default for f in fields(EvaluatorOptions)}
    assert all(f.metadata["help"] for f in fields(EvaluatorOptions))
    for name in OPTION_NAMES:  # the option list in the docstring is derived too
        assert f"    {name} = " in EvaluatorOptions.__doc__


@pytest.mark.parametrize("command", [["eval", "CKPT"], ["eval", "--images", "IMGS"],
                                     ["sweep", "CKPT", "--samplers", "euler", "--steps", "1", "--out", "OUT"]])
def test_every_option_given_as_a_flag_reaches_the_evaluator(command, seen):
    tokens, expected = _non_default_flags()
    assert set(expected) == set(OPTION_NAMES)
    with pytest.raises(_Stop):
        cli.main(command + [t for name in OPTION_NAMES for t in tokens[name]])
    assert seen == [expected]


@pytest.mark.parametrize("command", [["eval", "CKPT"], ["sweep", "CKPT", "--samplers", "euler", "--steps", "1",
                                                      "--out", "OUT"]])
def test_without_flags_the_evaluator_gets_the_library_defaults(command, seen):
    with pytest.raises(_Stop):
        cli.main(command)
    assert seen == [{f.name: f.default for f in fields(EvaluatorOptions)}]


def test_rescore_passes_its_evaluator_flags(monkeypatch):
    got = []
    monkeypatch.setattr(records, "rescore", lambda folder, **kw: got.append(kw) or {"rescored": 0})
    tokens, expected = _non_default_flags()
    assert cli.main(["rescore", "CKPT", *[t for name in cli.RESCORE_OPTIONS for t in tokens[name]]]) == 0
    assert got == [{"drop_quick": False, "reference": None, **{n: expected[n] for n in cli.RESCORE_OPTIONS}}]


def test_add_arguments_knows_only_the_options():
    p = argparse.ArgumentParser()
    options.add_arguments(p, ["device", "progress"])
    assert options.from_args(p.parse_args(["--device", "cpu", "--no-progress"]), ["device", "progress"]) == {
        "device": "cpu", "progress": False}
    with pytest.raises(ValueError, match="not evaluator options"):
        options.add_arguments(argparse.ArgumentParser(), ["devices"])
    kwargs = {"device": "cpu", "n": 3}
    assert options.pop_options(kwargs) == {"device": "cpu"} and kwargs == {"n": 3}
