"""docs/strategies.md stays true: its table covers every strategy, and its example runs.

The "Add your own strategy" walkthrough is executed as a reader would follow it: a fenced
block whose first line is a comment naming a file (``# my_skips.py``,
``# configs/skip/mix_ln.yaml``) is written to that file in a fresh directory; every other
Python block is then run there, in order.
"""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path

import pytest

import skipln.skip
from skipln.skip import SkipStrategy

DOC = Path(__file__).resolve().parents[1] / "docs" / "strategies.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
FILE_HEADER = re.compile(r"#\s*([\w./-]+\.(?:py|yaml))\s*$")


def section(title: str) -> str:
    text = DOC.read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def code_blocks(markdown: str) -> list[tuple[str, str]]:
    """(language, code) of every fenced block, in order."""
    return [(match.group(1), match.group(2)) for match in FENCE.finditer(markdown)]


def exported_strategies() -> list[type[SkipStrategy]]:
    return [
        obj
        for name in skipln.skip.__all__
        if inspect.isclass(obj := getattr(skipln.skip, name)) and issubclass(obj, SkipStrategy) and obj is not SkipStrategy
    ]


def test_the_table_has_one_row_for_each_strategy_skipln_exports() -> None:
    rows = [line for line in section("The strategies").splitlines() if line.startswith("| `")]
    named = [re.match(r"\| `(\w+)`", row).group(1) for row in rows]  # type: ignore[union-attr]
    assert sorted(named) == sorted(cls.__name__ for cls in exported_strategies())


# Arguments for the strategies that have no default for some; the others are built with none.
REQUIRED_ARGS: dict[str, tuple[object, ...]] = {"Scaled": (2.0,)}


def test_each_row_fills_every_column_and_names_the_strategys_tag() -> None:
    table = section("The strategies").splitlines()
    header = next(line for line in table if line.startswith("| strategy"))
    columns = header.count("|") - 1
    for line in (line for line in table if line.startswith("| `")):
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert len(cells) == columns and all(cells), line
        name = re.match(r"`(\w+)`", cells[0]).group(1)  # type: ignore[union-attr]
        strategy = getattr(skipln.skip, name)(*REQUIRED_ARGS.get(name, ()))
        family = strategy.tag.split("-")[0]  # "rskip_ln-r2" is written `rskip_ln-rλ` in the table
        assert f"`{family}" in cells[0], f"{name}'s tag {strategy.tag!r} is not in {cells[0]!r}"


def test_add_your_own_strategy_example_builds_from_yaml_and_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = code_blocks(section("Add your own strategy"))
    files, scripts = {}, []
    for language, code in blocks:
        header = FILE_HEADER.match(code.splitlines()[0])
        if header:
            files[header.group(1)] = code
        elif language == "python":
            scripts.append(code)
    assert set(files) == {"my_skips.py", "configs/skip/mix_ln.yaml"} and scripts
    assert "(SkipStrategy)" in files["my_skips.py"] and "(SkipConnection)" in files["my_skips.py"]

    for name, code in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(code)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_skips", raising=False)
    try:
        for code in scripts:
            exec(compile(code, str(DOC), "exec"), {"__name__": "docs_example"})
    finally:
        sys.modules.pop("my_skips", None)


def test_every_skip_config_named_in_the_doc_exists() -> None:
    text = DOC.read_text()
    repo = DOC.parents[1]
    named = set(re.findall(r"configs/skip/[\w.]+\.yaml", text)) - {"configs/skip/mix_ln.yaml"}
    assert named
    for path in sorted(named):
        assert (repo / path).is_file(), f"docs/strategies.md names {path}, which does not exist"
