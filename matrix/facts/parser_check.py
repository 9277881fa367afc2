"""Ask the TensorRT-RTX ONNX parser itself whether it can import each model: parse, never build.

The parser knows every operator, attribute and dtype it cannot import; no table of ours could
keep up with it. It runs in child processes, never in the caller: importing `tensorrt_rtx`
costs about half a second, and a `plan` whose facts are cached must stay instant (it never
gets here). Children parse in parallel over models, one per core at most. A child reads model
paths on stdin and answers one JSON line per model on its own stdout; the library's own
printing goes to stderr, which is dropped.

A model whose child dies gets no verdict: it is not rejected (the build will say what is
wrong) and is checked again next time.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from matrix.facts.types import ParserCheck, ParserError

# Signals of a parser that crashed on the model (not SIGKILL: that may be the OOM killer,
# or a user, and says nothing of the model). The builder parses the same way and crashes too.
_CRASHES = {-11: "SIGSEGV", -6: "SIGABRT", -7: "SIGBUS", -8: "SIGFPE", -4: "SIGILL"}
_CHILD_CODE = "from matrix.facts.parser_check import main; main()"
_MAX_MESSAGE = 300
# The parser wraps its reason in where-it-happened boilerplate: drop it, keep the reason.
_NOISE = (
    re.compile(r"In node -?\d+ with name: .*? and operator: .*? \([^)]*\): [A-Z_]+: "),
    re.compile(r"Invalid Node - \S+\s"),
    re.compile(r"\S+: Error Code \d+: [\w ]+ Error \(\S+: "),
    re.compile(r"\[checkMacros\.cpp.*$", re.DOTALL),
    re.compile(r"\.? ?In \w+ at /_src/\S+\)?"),
)
_REPEATED = re.compile(r"^(.+?): \1")
# An assertion's source text before its reason: `expr(...): Reason` or `expr && "reason"`.
_ASSERTION = re.compile(
    r'^(?:Assertion failed: )?(?:[^"]*? && "(?P<quoted>[^"]*)"|\S.*?[)\d]: (?=[A-Z]))'
)


def check_models(
    paths: Sequence[Path], tensorrt_rtx: str, jobs: int | None = None
) -> dict[Path, ParserCheck]:
    """The parser's verdict on each model, from up to `jobs` children (default: the cores)."""
    if not paths:
        return {}
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(paths)))
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(jobs) as pool:
        runs = list(pool.map(_run_child, _balanced(paths, jobs)))
        verdicts = {p: ParserCheck(tensorrt_rtx, e) for answers, _ in runs for p, e in answers}
        # A child that died left its models unanswered: each goes again alone, to tell the
        # model that crashes the parser from those that only shared its child.
        missing = [[p] for p in paths if p not in verdicts]
        for alone, (answers, code) in zip(missing, pool.map(_run_child, missing), strict=True):
            verdicts.update((p, ParserCheck(tensorrt_rtx, e)) for p, e in answers)
            if not answers and code in _CRASHES:
                crash = ParserError("", "", f"the parser crashed ({_CRASHES[code]})")
                verdicts[alone[0]] = ParserCheck(tensorrt_rtx, (crash,))
    return verdicts


def _balanced(paths: Sequence[Path], jobs: int) -> list[list[Path]]:
    """Largest model first to the least loaded child: parse time follows model size."""
    sizes = {p: _size(p) for p in paths}
    shares: list[list[Path]] = [[] for _ in range(jobs)]
    loads = [0] * jobs
    for path in sorted(paths, key=lambda p: -sizes[p]):
        lightest = loads.index(min(loads))
        shares[lightest].append(path)
        loads[lightest] += sizes[path]
    return [s for s in shares if s]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _run_child(paths: list[Path]) -> tuple[list[tuple[Path, tuple[ParserError, ...]]], int]:
    """What one child answered for `paths` (all of them, unless it died) and its exit code."""
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD_CODE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    out, _ = child.communicate("".join(f"{os.fspath(p)}\n" for p in paths))
    answers = [answer for answer in map(_decode, out.splitlines()) if answer is not None]
    return answers, child.returncode


def _decode(line: str) -> tuple[Path, tuple[ParserError, ...]] | None:
    try:
        data = json.loads(line)
        errors = tuple(ParserError(str(n), str(o), str(m)) for n, o, m in data["errors"])
        return Path(data["path"]), errors
    except (ValueError, KeyError, TypeError):
        return None


def clean_message(text: str) -> str:
    """One line of the parser's reason, without its source-location boilerplate."""
    for pattern in _NOISE:
        text = pattern.sub("", text)
    text = _ASSERTION.sub(lambda m: m.group("quoted") or "", text.strip())
    text = _REPEATED.sub(r"\1", " ".join(text.split()))
    if text in ("", "false"):  # what it says of an operator it has no importer for
        text = "unsupported operator"
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


# --- in the child process ------------------------------------------------------------------


def main() -> None:
    answers: IO[str] = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # the library prints; only our JSON lines may reach the parent
    import tensorrt_rtx as trt

    logger = _quiet_logger(trt)
    for line in sys.stdin:
        path = line.rstrip("\n")
        if path:
            errors = [list(e) for e in _parse(trt, logger, path)]
            answers.write(json.dumps({"path": path, "errors": errors}) + "\n")
            answers.flush()


def _quiet_logger(trt: Any) -> Any:
    class Quiet(trt.ILogger):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            pass

    return Quiet()


def _parse(trt: Any, logger: Any, path: str) -> list[tuple[str, str, str]]:
    """The parser's errors, exactly as the builder's parse would meet them."""
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if parser.parse_from_file(path):
        return []
    errors = []
    for index in range(parser.num_errors):
        error = parser.get_error(index)
        node = str(error.node_name()) or _node_label(path, int(error.node()))
        errors.append((node, str(error.node_operator()), clean_message(error.desc())))
    return list(dict.fromkeys(errors)) or [("", "", "the parser failed without a message")]


def _node_label(path: str, index: int) -> str:
    """An unnamed node goes by its first output, as everywhere in rtx-matrix."""
    if index < 0:
        return ""
    import onnx

    try:
        node = onnx.load(path, load_external_data=False).graph.node[index]
    except Exception:  # a label is a nicety: never lose the verdict over it
        return ""
    return str(node.name or (node.output[0] if node.output else ""))
