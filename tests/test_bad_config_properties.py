"""Every bad config — not only the table's — ends with one line naming the key, a failing exit, no traceback, no run.

Hypothesis mutates the two quickstart configs (``configs/quickstart/{resnet,transformer}.yaml``)
in six ways — a wrong type, an unknown key at any depth, a missing required key, an
out-of-range number, a ``class_path`` that does not import, malformed YAML — and runs each
through ``cli_main``, the function ``main.py`` calls. Each case must exit 2 with exactly one
``error: …`` line on stderr that names the key (for YAML: the file and the line), without a
traceback, and leave no RUNNING run in the store.

The CLI's parser (jsonargparse reading every class signature, ~0.4 s) is built once for the
module (``ParserOnceCLI``): the parsing, instantiation and error reporting each case exercises
are the CLI's own. ``SKIPLN_HYPOTHESIS_EXAMPLES`` sets the number of cases (default 200).
"""

from __future__ import annotations

import copy
import inspect
import os
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import skipln.cli
from conftest import CONFIGS, DEFAULTS
from reliability_support import store_runs
from skipln.cli import SkipLNCLI, cli_main

EXAMPLES = int(os.environ.get("SKIPLN_HYPOTHESIS_EXAMPLES", "200"))
QUICKSTARTS = {name: yaml.safe_load((CONFIGS / "quickstart" / f"{name}.yaml").read_text()) for name in ("resnet", "transformer")}
#: Numbers no quickstart class accepts, by the argument's name (the same names in both configs).
OUT_OF_RANGE: dict[str, st.SearchStrategy[Any]] = {
    "depth": st.integers(-50, 200).filter(lambda d: d < 8 or (d - 2) % 6 != 0),
    "num_classes": st.integers(-5, 0),
    "in_channels": st.integers(-5, 0),
    "lr": st.floats(-10, -1e-6),
    "momentum": st.floats(-5, -1e-6),
    "weight_decay": st.floats(-5, -1e-6),
    "gamma": st.one_of(st.floats(-5, 0), st.floats(1.01, 10)),
    "milestones": st.lists(st.floats(1.0, 10), min_size=1, max_size=3),
    "batch_size": st.integers(-64, 0),
    "max_epochs": st.integers(-100, -2),
    "dim": st.integers(-64, 0),
    "heads": st.integers(-4, 0),
    "dropout": st.one_of(st.floats(-1, -1e-3), st.floats(1.0, 5)),
    "vocab_size": st.integers(-10, 0),
    "beam_size": st.integers(-5, 0),
    "warmup_steps": st.integers(-100, 0),
    "label_smoothing": st.one_of(st.floats(-1, -1e-3), st.floats(1.0, 5)),
    "max_tokens": st.integers(-100, 0),
}
IDENTIFIER = st.from_regex(r"[a-z][a-z0-9_]{2,14}", fullmatch=True)


class ParserOnceCLI(SkipLNCLI):
    """SkipLNCLI whose parser is built once and reused: every case parses and instantiates as ``main.py`` does."""

    _built: dict[str, Any] = {}

    def setup_parser(self, add_subcommands: bool, main_kwargs: dict[str, Any], subparser_kwargs: dict[str, Any]) -> None:
        if not self._built:
            super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)
            self._built.update(parser=self.parser, methods=self._subcommand_method_arguments, parsers=self._subcommand_parsers)
        self.parser = self._built["parser"]
        self._subcommand_method_arguments = self._built["methods"]
        self._subcommand_parsers = self._built["parsers"]


def known_names() -> set[str]:
    """Every argument name a quickstart config could validly hold, so that an "unknown" key really is unknown."""
    from lightning.pytorch import Trainer

    names = set(inspect.signature(Trainer).parameters) | {"seed_everything", "ckpt_path", "optimizer", "lr_scheduler", "config"}
    names |= {"class_path", "init_args", "dict_kwargs", "weights_only"}
    for config in QUICKSTARTS.values():
        for _, node in mappings(config):
            names |= set(node)
            if "class_path" in node:
                cls = class_of(node["class_path"])
                for klass in inspect.getmro(cls):
                    if klass is not object and "__init__" in vars(klass):
                        names |= set(inspect.signature(klass.__init__).parameters)
    return names


def mappings(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], dict[str, Any]]]:
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from mappings(value, (*path, key))


def class_of(class_path: str) -> type:
    module, _, name = class_path.rpartition(".")
    return getattr(__import__(module, fromlist=[name]), name)


def required_keys(config: dict[str, Any]) -> list[tuple[str, ...]]:
    """Keys whose absence the CLI must refuse: ``model``, ``data``, every ``class_path``, and arguments without a default."""
    keys: list[tuple[str, ...]] = [("model",), ("data",)]
    for path, node in mappings(config):
        if "class_path" not in node:
            continue
        if "init_args" in node:  # `skip: {}` (no class_path, no arguments) validly keeps the default class
            keys.append((*path, "class_path"))
        parameters = inspect.signature(class_of(node["class_path"])).parameters
        for name in node.get("init_args", {}):
            if name in parameters and parameters[name].default is inspect.Parameter.empty:
                keys.append((*path, "init_args", name))
    return keys


def leaves(config: dict[str, Any]) -> list[tuple[tuple[str, ...], Any]]:
    return [((*path, key), value) for path, node in mappings(config) for key, value in node.items() if not isinstance(value, dict)]


def at(config: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    node = config
    for key in path:
        node = node[key]
    return node


def wrong_value(value: Any) -> st.SearchStrategy[Any]:
    """Values that cannot be read as ``value``'s type."""
    words = st.from_regex(r"[a-z]{2,8}", fullmatch=True).filter(lambda w: w not in {"inf", "nan", "null", "none", "true", "false", "yes", "no", "on", "off"})
    containers = st.one_of(st.lists(st.integers(), min_size=1, max_size=3), st.dictionaries(IDENTIFIER, st.integers(), min_size=1, max_size=2))
    if isinstance(value, (bool, int, float, list)):
        return st.one_of(words, containers) if not isinstance(value, list) else st.one_of(words, st.dictionaries(IDENTIFIER, st.integers(), min_size=1, max_size=2))
    return containers  # a string: any word may be valid (a language code, a folder), a list or a mapping is not


@st.composite
def bad_configs(draw: st.DrawFn) -> tuple[str, str, str]:
    """(kind, the YAML text, a word the error must contain)."""
    name = draw(st.sampled_from(sorted(QUICKSTARTS)))
    config = copy.deepcopy(QUICKSTARTS[name])
    kind = draw(st.sampled_from(["wrong-type", "unknown-key", "missing-key", "out-of-range", "bad-class-path", "malformed-yaml"]))
    if kind == "wrong-type":
        path = draw(st.sampled_from([p for p, v in leaves(config) if p[-1] != "class_path"]))
        at(config, path[:-1])[path[-1]] = draw(wrong_value(at(config, path[:-1])[path[-1]]))
        return kind, yaml.safe_dump(config), path[-1]
    if kind == "unknown-key":
        path, node = draw(st.sampled_from(list(mappings(config))))
        key = draw(IDENTIFIER.filter(lambda k: k not in KNOWN))
        node[key] = draw(st.one_of(st.integers(), IDENTIFIER, st.booleans()))
        return kind, yaml.safe_dump(config), key
    if kind == "missing-key":
        path = draw(st.sampled_from(required_keys(config)))
        del at(config, path[:-1])[path[-1]]
        # A missing class_path leaves its section without a class: the error names the section.
        return kind, yaml.safe_dump(config), path[-2] if path[-1] == "class_path" else path[-1]
    if kind == "out-of-range":
        path = draw(st.sampled_from([p for p, _ in leaves(config) if p[-1] in OUT_OF_RANGE]))
        at(config, path[:-1])[path[-1]] = draw(OUT_OF_RANGE[path[-1]])
        return kind, yaml.safe_dump(config), path[-1]
    if kind == "bad-class-path":
        path = draw(st.sampled_from([p for p, _ in leaves(config) if p[-1] == "class_path"]))
        module, _, cls = at(config, path[:-1])["class_path"].rpartition(".")
        position = draw(st.integers(0, len(cls) - 1))
        typo = draw(st.sampled_from(["drop", "double", "module"]))
        if typo == "drop":
            bad = f"{module}.{cls[:position]}{cls[position + 1:]}"
        elif typo == "double":
            bad = f"{module}.{cls[:position]}{cls[position]}{cls[position:]}"
        else:
            bad = f"{module}x.{cls}"
        at(config, path[:-1])["class_path"] = bad
        return kind, yaml.safe_dump(config), path[-2]
    text = yaml.safe_dump(config)
    lines = text.splitlines()
    row = draw(st.integers(1, len(lines) - 1))
    damage = draw(st.sampled_from(["tab", "open-bracket", "dedent-colon", "unclosed-quote"]))
    if damage == "tab":
        lines[row] = "\t" + lines[row]
    elif damage == "open-bracket":
        lines[row] = lines[row] + " [unclosed"
    elif damage == "dedent-colon":
        lines[row] = lines[row].strip() + ": : x"
    else:
        lines[row] = lines[row] + ' "unclosed'
    text = "\n".join(lines) + "\n"
    try:
        yaml.safe_load(text)
    except yaml.YAMLError:
        return kind, text, "bad.yaml"
    return kind, text + "broken: [\n", "bad.yaml"  # the edit happened to stay valid YAML: break the end


KNOWN = known_names()
SEEN: list[tuple[str, str]] = []


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bad-configs")


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    if SEEN:
        shapes = {re.sub(r"'[^']*'|\"[^\"]*\"|-?\d[\d.e+-]*", "…", message) for _, message in SEEN}
        per_kind = Counter(kind for kind, _ in SEEN)
        print(f"\n{len(SEEN)} bad configs, {len({m for _, m in SEEN})} distinct messages ({len(shapes)} distinct once values are masked); {dict(per_kind)}")


@pytest.mark.slow
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=bad_configs())
def test_a_mutated_quickstart_config_fails_with_one_line_naming_the_key_and_leaves_no_running_run(
    case: tuple[str, str, str], store_dir: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    kind, text, word = case
    monkeypatch.chdir(store_dir)
    monkeypatch.setattr(skipln.cli, "SkipLNCLI", ParserOnceCLI)
    (store_dir / "bad.yaml").write_text(text)
    capfd.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        # fast_dev_run: a mutation that wrongly passed would train one batch and fail the assertion, not run for minutes.
        cli_main(["fit", "--config=bad.yaml", "--trainer.fast_dev_run=true", "--trainer.enable_progress_bar=false"], default_config_files=[DEFAULTS])
    err = capfd.readouterr().err
    messages = [line for line in err.splitlines() if line.startswith("error: ")]
    assert exit_info.value.code == 2, (kind, text, err[-2000:])
    assert len(messages) == 1, (kind, err[-2000:])
    assert word in messages[0], (kind, word, messages[0])
    assert "Traceback" not in err, err[-2000:]
    assert "RUNNING" not in [run.info.status for run in store_runs(store_dir / "mlruns" / "mlflow.db")]
    SEEN.append((kind, messages[0]))
