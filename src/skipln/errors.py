"""Errors that mean "the input was wrong": the CLI prints them as one clear message.

Raise a subclass of :class:`SkipLNError` where the user can fix the cause (a missing file, a
bad value), with a message that says what was wrong and how to fix it. The CLI shows such
errors without a traceback and exits with status 2; anything else is a bug and keeps its
traceback.

jsonargparse's own parse errors (an unknown option, a value of the wrong type, a class_path
that does not import) are many indented lines that repeat the union types tried;
:func:`explain_parser_error` reduces them to the one line that names the setting, the
problem and the fix.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import inspect
import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

#: The last few user errors raised in this process, for :func:`find_user_error`.
_recent: deque[SkipLNError] = deque(maxlen=16)


class SkipLNError(Exception):
    """Base class of errors caused by the user's input or environment."""

    #: The CLI's exit status for this kind of error.
    exit_code: int = 2
    #: The run's ``failure`` tag when this error ends a run that had begun.
    failure: str = "bad_input"

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        _recent.append(self)


def find_user_error(error: BaseException) -> SkipLNError | None:
    """The SkipLNError behind ``error``: itself, one in its chain, or one it quotes.

    jsonargparse re-raises an error from a class's constructor as a ``ValueError`` that
    quotes it (when it tries each type of a union), without chaining it: the errors raised
    recently are searched for the one it quotes, so the original can still be shown alone.
    """
    found = next((e for e in exception_chain(error) if isinstance(e, SkipLNError)), None)
    return found or next((e for e in reversed(_recent) if str(e) and str(e) in str(error)), None)


def exception_chain(exception: BaseException) -> list[BaseException]:
    """``exception`` and the errors it was raised from or while handling, outermost first."""
    chain: list[BaseException] = []
    error: BaseException | None = exception
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


class ConfigError(SkipLNError, ValueError):
    """A configuration value is invalid or inconsistent with another."""


class DataError(SkipLNError):
    """A data set is missing, incomplete, corrupt or malformed."""


# -- jsonargparse's messages, in one line -------------------------------------------------------

_KEY = re.compile(r'Parser key "([^"]+)":\s*(.*)$')
_CLASS = re.compile(r"^Problem with given class_path '([^']+)':\s*(.*)$")
_GIVEN = re.compile(r"^Given value: (.*?)(?:\. Got value: .*)?$")
_EXPECTED = re.compile(r"^Expected an? (.+?)(?:\. Got value: (.*))?$")
_NOT_A_SUBCLASS = re.compile(r"^Not a valid subclass of (\w+)(?:\. Got value: (.*))?$")
_NOT_ACCEPTED = re.compile(r"^Option '([^']+)' is not accepted$")
#: A value jsonargparse could read neither as a config file nor as a class: a file name that points nowhere.
_NO_FILE = re.compile(r"^Unexpected import path format: (.+\.(?:ya?ml|json))$")
_IMPORT_FAILED = re.compile(r"has no attribute|No module named|[Cc]annot import|not a class|[Ii]mport path")
#: Lines that only list the alternatives jsonargparse tried (None, a config file path, an import path).
_NOISE = re.compile(
    r"^(Does not validate against any of the Union subtypes|Subtypes: .*|Errors:|Given value type: .*"
    r"|Expected a path but .* either not accessible or invalid|Expected a dot import path string: .*"
    r"|Expected a <class 'NoneType'>.*)$"
)


def explain_yaml_error(paths: Sequence[str]) -> str | None:
    """The first of the config files ``paths`` that is not valid YAML, where and why, in one line; None if all parse."""
    import yaml

    for path in paths:
        try:
            with open(path, encoding="utf-8") as handle:
                yaml.safe_load(handle)
        except OSError:
            continue  # a missing file has its own message
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            return (
                f"config file {path} is not valid YAML{where}: {problem}; fix that line (indent with spaces, "
                "not tabs; close brackets and quotes)"
            )
    return None


@dataclass
class _Frame:
    """One level of a nested jsonargparse message: a key (``Parser key "net"``) or a class being tried."""

    indent: int
    key: str | None = None
    class_path: str | None = None


def explain_parser_error(message: str, options: Sequence[str] = (), help_command: str = "") -> str:
    """jsonargparse's error ``message`` as one line: the setting, what is wrong with it, and the fix.

    Args:
        message: the text of jsonargparse's ``ArgumentError``.
        options: the options the command accepts (``--trainer.max_epochs``, ``trainer.max_epochs``),
            to suggest the closest one for a misspelled name.
        help_command: the command that lists the accepted options, e.g. ``main.py fit --help``.
    """
    see_help = f" (`{help_command}` lists them)" if help_command else ""
    see_also = f" (see `{help_command}`)" if help_command else ""
    lines = [line for line in message.splitlines() if line.strip()]
    first = lines[0].strip() if lines else "invalid arguments"
    if match := re.match(r"^unrecognized arguments: (.+)$", first):
        unknown = [token.split("=", 1)[0] for token in match[1].split() if token.startswith("-")] or [match[1]]
        hints = "".join(_did_you_mean(name, options, "option") for name in unknown)
        return f"unknown option {', '.join(unknown)}{hints}: check its spelling{see_help}"
    if match := re.match(r"^(?:Subcommand '[^']+' does not accept option|Option) '([^']+)'(?: is not accepted)?", first):
        return (
            f"unknown setting '{match[1]}'{_did_you_mean(match[1], options, 'setting')}: check its spelling in "
            f"the config file or command line, or remove it{see_help}"
        )
    if "Parser key" in message or first.startswith("Problem with given class_path"):
        return _explain_nested(lines, see_help, see_also)
    return " ".join(line.strip() for line in lines) + see_also


def _explain_nested(lines: list[str], see_help: str, see_also: str) -> str:
    """A message of nested ``Parser key``/``class_path`` blocks: explain the innermost failure."""
    stack: list[_Frame] = []
    chain: list[_Frame] = []
    leaves: list[tuple[int, str]] = []
    for raw in lines:
        text = raw.lstrip(" -").rstrip()
        # A block's lines are indented past its first character, a "- " bullet included.
        indent = len(raw) - len(raw.lstrip(" "))
        while stack and stack[-1].indent >= indent:
            stack.pop()
        if key := _KEY.search(text):
            stack.append(_Frame(indent, key=key[1]))
            chain, leaves = list(stack), ([(indent + 1, key[2])] if key[2] else [])
        elif tried := _CLASS.match(text):
            stack.append(_Frame(indent, class_path=tried[1]))
            chain, leaves = list(stack), ([(indent + 1, tried[2])] if tried[2] else [])
        elif not _NOISE.match(text):
            leaves.append((indent, text))
    depth = chain[-1].indent if chain else -1
    inner = [text for indent, text in leaves if indent > depth]
    path = _setting_path(chain)
    owner = next((frame.class_path for frame in reversed(chain) if frame.class_path), None)
    given = next((m[1] for text in inner if (m := _GIVEN.match(text))), None)
    reasons = [text for text in inner if not _GIVEN.match(text)]
    where = f"{path}: " if path else ""

    if owner and chain[-1].class_path and reasons and _IMPORT_FAILED.search(reasons[0]):
        return (
            f"{where}cannot import class_path '{owner}' ({reasons[0]}): check the module and class "
            f"names{_did_you_mean_class(owner)}; a class of your own must be importable (installed, or its "
            "folder on PYTHONPATH)"
        )
    if owner and reasons and (unknown := _NOT_ACCEPTED.match(reasons[0])):
        name = unknown[1]
        # jsonargparse reports a stray key beside a class_path as "Option 'class_path' is not accepted":
        # the stray key itself is in the value the outermost block quotes.
        if name == "class_path" and (
            stray := _stray_keys(where, _node_at(_literal(outermost_given(lines)), [f.key for f in chain if f.key is not None]))
        ):
            return stray
        accepted = _class_arguments(owner)
        listed = f"; it accepts: {', '.join(accepted)}" if accepted else see_help
        return (
            f"{path}.init_args.{name}: {owner} has no argument '{name}'{_did_you_mean(name, accepted, 'argument')}"
            f"{listed}"
        )
    if reasons and (invalid := _NOT_A_SUBCLASS.match(reasons[0])):
        value = _literal(invalid[2] or given)
        if stray := _stray_keys(where, value):
            return stray
        if isinstance(value, dict) and "class_path" not in value:
            return f"{where}no class_path: name the class (`class_path: package.module.Class`) and put its arguments under init_args"
    if missing := next((m for text in reasons if (m := _NO_FILE.match(text))), None):
        return (
            f"{where}no config file {missing[1]} (a file named as a setting's value is read relative to the config "
            "file that names it): check the path, or give the setting's class_path and init_args instead"
        )
    expected = [m for text in reasons if (m := _EXPECTED.match(text))]
    if expected:
        value = given if given is not None else next((m[2] for m in expected if m[2] is not None), None)
        types = " or ".join(dict.fromkeys(_type_name(m[1]) for m in expected))
        got = f", got {value!r}" if value is not None else ""
        return f"{where}expected {types}{got}: give a value of that type"
    detail = "; ".join(reasons) or "invalid value"
    return f"{where}{detail}{see_also}"


def _stray_keys(where: str, node: object) -> str | None:
    """The message for keys beside a class's ``class_path`` and ``init_args`` (arguments one level too high), if any."""
    extra = [str(k) for k in node if k not in ("class_path", "init_args", "dict_kwargs")] if isinstance(node, dict) else []
    if not extra:
        return None
    return (
        f"{where}unknown key {', '.join(map(repr, extra))} beside class_path and init_args: a class's arguments go "
        "under init_args; check the spelling or remove it"
    )


def outermost_given(lines: list[str]) -> str | None:
    """The value the least indented ``Given value:`` line of a jsonargparse message quotes (the whole setting)."""
    found = [(len(raw) - len(raw.lstrip(" ")), m[1]) for raw in lines if (m := _GIVEN.match(raw.strip()))]
    return min(found, key=lambda pair: pair[0])[1] if found else None


def _node_at(value: object, keys: list[str]) -> object:
    """The part of a quoted config value at ``keys`` (the first key is the setting itself), through ``init_args``."""
    node = value
    for key in keys[1:]:
        if not isinstance(node, dict):
            return None
        inner = node.get("init_args")
        node = (inner if isinstance(inner, dict) else node).get(key)
    return node


def _literal(text: str | None) -> object:
    """A Python literal jsonargparse quoted (``{'class_path': …}``), or None if it is not one."""
    try:
        return ast.literal_eval(text) if text else None
    except (ValueError, SyntaxError):
        return None


def _setting_path(chain: list[_Frame]) -> str:
    """``model.init_args.net.init_args.depth``: the keys, with ``init_args`` wherever a class nests another."""
    parts: list[str] = []
    for frame in chain:
        if frame.key is not None:
            if parts:
                parts.append("init_args")
            parts.append(frame.key)
    return ".".join(parts)


def _type_name(text: str) -> str:
    """``<class 'int'>`` → ``int``; ``typing.Literal['a', 'b']`` → ``one of 'a', 'b'``."""
    if match := re.fullmatch(r"<class '(?:builtins\.)?([^']+)'>", text):
        return match[1]
    if match := re.fullmatch(r"(?:typing\.)?Literal\[(.*)\]", text):
        return f"one of {match[1]}"
    return text


def _did_you_mean(name: str, candidates: Sequence[str], kind: str) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.75)
    return f" (did you mean {kind} '{close[0]}'?)" if close else ""


def _did_you_mean_class(class_path: str) -> str:
    """`` (did you mean 'pkg.mod.Name'?)`` when the module imports and has a similar class."""
    module_name, _, name = class_path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except Exception:  # noqa: BLE001 - a module that does not import has nothing to suggest
        return ""
    classes = [attr for attr, value in vars(module).items() if inspect.isclass(value) and not attr.startswith("_")]
    close = difflib.get_close_matches(name, classes, n=1, cutoff=0.6)
    return f" (did you mean '{module_name}.{close[0]}'?)" if close else ""


def _class_arguments(class_path: str) -> list[str]:
    """The named arguments of a class's constructor, or none when it cannot be imported."""
    module_name, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name)
        parameters = inspect.signature(cls).parameters.values()
    except Exception:  # noqa: BLE001 - only a hint: without it the message still names the argument
        return []
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in parameters if p.kind in kinds]
