"""Bad command-line values in one line: the flag, its value and the project's own message.

jsonargparse reports a value it cannot parse after a usage of some sixty lines, and a class whose
``__init__`` rejects a value as an eighty-line traceback ending in a dump of the whole model
configuration, with the project's message (``unknown family 'poison'; accepted: ...``) in the middle.
:class:`CLIArgumentParser` prints the first kind without the usage; :func:`reported_config_errors`
turns the second kind into ``python -m gengs_lightning fit: error: --model.target.family poison: unknown
family 'poison'; accepted: ...``. Both exit with status 2 before anything is trained.
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import yaml
from jsonargparse import Namespace
from pytorch_lightning.cli import LightningArgumentParser

#: The program name in usage, help and error lines.
PROG = "python -m gengs_lightning"

#: Lines of a jsonargparse message that only describe its structure (the ``None`` alternative of an
#: optional model, the union being tried, the nested value being parsed).
_STRUCTURE = re.compile(
    r"(Does not validate against any of the Union subtypes|Subtypes: .*|Errors:|Given value type: .*"
    r"|Given value: NestedArg\(.*|Expected a <class 'NoneType'>|Problem with given class_path .*:)"
)
_PARSER_KEY = re.compile(r'Parser key "([^"]+)":\s*(.*)')
_JSONARGPARSE_INSTANTIATE = str(Path("jsonargparse", "_instantiation.py"))


def _flag(keys: list[str]) -> str:
    return "--" + ".".join(key for key in keys if key != "init_args")


def summarize_parse_error(message: str) -> str:
    """One line for a jsonargparse parse error: the flag (its nested parser keys) and the reasons.

    Args:
        message: The message jsonargparse passes to :meth:`ArgumentParser.error`, e.g. ``Parser key
            "temperature.kind":`` and, on the next line, ``Expected a typing.Literal[...]. Got value: sine``.

    Returns:
        E.g. ``--temperature.kind: Expected a typing.Literal[...]. Got value: sine``.
    """
    keys, reasons = [], []
    for line in (line.strip().removeprefix("- ") for line in message.splitlines()):
        key = _PARSER_KEY.fullmatch(line)
        if key:
            keys.append(key.group(1))
            line = key.group(2)
        if line and not _STRUCTURE.fullmatch(line):
            reasons.append(line)
    return f"{_flag(keys)}: {'; '.join(reasons)}" if keys else "; ".join(reasons)


class CLIArgumentParser(LightningArgumentParser):
    """Lightning's parser whose errors are one or two lines: the flag and the reason, and where help is.

    jsonargparse prints the whole usage (sixty lines for ``fit``) before the error. With
    ``exit_on_error=False`` or ``JSONARGPARSE_DEBUG`` set, errors are raised as jsonargparse raises them.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("prog", PROG)
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        """Print ``<prog>: error: --flag: reason`` and where help is; exit with status 2."""
        if not self.exit_on_error or os.environ.get("JSONARGPARSE_DEBUG"):
            super().error(message, ex)
        prog = (getattr(ex, "subcommand_parser", None) or self).prog.replace(" [options]", "")
        sys.stderr.write(f"{prog}: error: {summarize_parse_error(message)}\n")
        sys.stderr.write(f"tip: {prog} --help lists the accepted flags\n")
        self.exit(2)


def _exception_chain(error: BaseException) -> list[BaseException]:
    """``error`` and the exceptions it was raised from, outermost first, as a traceback would show them."""
    chain = [error]
    while True:
        last = chain[-1]
        inner = last.__cause__ if last.__cause__ is not None or last.__suppress_context__ else last.__context__
        if inner is None or inner in chain:
            return chain
        chain.append(inner)


def instantiation_path(error: BaseException) -> list[str]:
    """The configuration keys jsonargparse was instantiating when ``error`` was raised, outermost first.

    Read from the ``component`` of each ``instantiate`` frame of jsonargparse in the tracebacks of the
    chain, e.g. ``["model", "estimator"]`` for the estimator of a model, ``["temperature"]`` for the
    temperature group. Empty if the error was not raised while instantiating.
    """
    path = []
    for exception in _exception_chain(error):
        for frame, _ in traceback.walk_tb(exception.__traceback__):
            code, local = frame.f_code, frame.f_locals
            if code.co_name != "instantiate" or not code.co_filename.endswith(_JSONARGPARSE_INSTANTIATE):
                continue
            if "component" in local and "subcommand" not in local:  # not the frame that enters a subcommand
                path.append(local["component"].dest)
    return path


def _arguments(node: Namespace, flag: str, depth: int = 0) -> Iterator[tuple[int, str, str, Any]]:
    """``(depth, name, flag, value)`` of every argument under a configured class or group, nested ones included.

    The keys of a dictionary argument (a prior's ``params``) name that argument.
    """
    arguments = node.get("init_args", Namespace()) if "class_path" in node else node
    nested = []
    for name, value in vars(arguments).items():
        yield depth, name, f"{flag}.{name}", value
        if isinstance(value, Namespace):
            nested.append((value, f"{flag}.{name}"))
        elif isinstance(value, dict):
            yield from ((depth + 1, key, f"{flag}.{name}", value) for key in value)
    for value, inner_flag in nested:
        yield from _arguments(value, inner_flag, depth + 1)


def _node(config: Namespace, path: list[str]) -> Namespace | None:
    node = config
    for key in path:
        if "class_path" in node:
            node = node.get("init_args", Namespace())
        node = node.get(key) if isinstance(node, Namespace) else None
        if not isinstance(node, Namespace):
            return None
    return node


def _format(value: Any) -> str:
    """A value as it would be written on the command line (YAML flow style: ``.inf``, ``{rate: 2.0}``)."""
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def config_error(error: BaseException, config: Namespace) -> str | None:
    """``--flag value: message`` for a value a configured class rejected, ``None`` for other errors.

    The message is that of the innermost ``ValueError`` of the chain (the one the class raised), on one
    line. The flag is the configured class or group jsonargparse was instantiating, narrowed to the
    argument the message names, with its value: a name in quotes (a key, ``'rate'``) before a bare one,
    then the shallowest, then the first named.

    Args:
        error: An exception raised while the subcommand's classes were instantiated.
        config: The subcommand's parsed configuration.

    Returns:
        E.g. ``--model.target.family poison: unknown family 'poison'; accepted: ...``, or ``None`` if the
        error was not raised by a class jsonargparse instantiated, or holds no ``ValueError``.
    """
    path = instantiation_path(error)
    inner = [exception for exception in _exception_chain(error) if isinstance(exception, ValueError)]
    if not path or not inner:
        return None
    text = str(inner[-1])
    message = summarize_parse_error(text) if _PARSER_KEY.search(text) else " ".join(text.split())
    flag = _flag(path)
    node = _node(config, path)
    if node is not None:
        named = []
        for depth, name, argument_flag, argument_value in _arguments(node, flag):
            found = re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", message)
            if found and not isinstance(argument_value, Namespace):
                bare = f"'{name}'" not in message
                named.append((bare, depth, found.start(), argument_flag, argument_value))
        if named:
            *_, flag, value = min(named, key=lambda item: item[:3])
            return f"{flag} {_format(value)}: {message}"
    return f"{flag}: {message}"


@contextmanager
def reported_config_errors(config: Namespace, prog: str) -> Iterator[None]:
    """Report a value that a configured class rejects in one line of stderr and exit with status 2.

    Errors raised outside jsonargparse's instantiation (the trainer's own, bugs) pass unchanged.

    Args:
        config: The subcommand's parsed configuration (to name the flag and its value).
        prog: The program and subcommand, e.g. ``python -m gengs_lightning fit``.

    Raises:
        SystemExit: With status 2, after printing ``<prog>: error: --flag value: message``.
    """
    try:
        yield
    except ValueError as error:
        line = config_error(error, config)
        if line is None:
            raise
        sys.stderr.write(f"{prog}: error: {line}\n")
        raise SystemExit(2) from None
