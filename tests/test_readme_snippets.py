"""Every ```python snippet in README.md runs as written, on its own.

Each snippet is documentation first, so it must also be a complete
program: its imports, its data (the shipped zoo models and Fashion-MNIST
slice, nothing downloaded) and any file it reads are made inside it. The
fast test checks that each snippet compiles and defines every name it uses;
the slow one runs each in a fresh interpreter in an empty folder.

A snippet that truly cannot run opts out with the line
``<!-- snippet: no-run: why -->`` just before its fence; none does today.
"""

import ast
import builtins
import dataclasses
import importlib.util
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
_OPEN = re.compile(r"^(\s*)```python\s*$")
_CLOSE = re.compile(r"^\s*```\s*$")
_NO_RUN = "<!-- snippet: no-run"
_TIMEOUT_S = 600


@dataclasses.dataclass(frozen=True)
class Snippet:
    index: int  # 1-based, in README order
    line: int  # the opening fence's line number
    code: str
    run: bool  # False: opted out with <!-- snippet: no-run: why -->
    why: str = ""  # the opt-out's reason, as the README gives it

    @property
    def name(self):
        first = next(
            (s.strip() for s in self.code.splitlines() if s.strip()), ""
        )
        return f"{self.index}:{first[:50]}"


def readme_snippets(text=None):
    """The README's ```python blocks, in order."""
    lines = (README.read_text() if text is None else text).splitlines()
    snippets, body, start = [], None, None
    for number, line in enumerate(lines, 1):
        if body is None:
            if _OPEN.match(line):
                body, start = [], number
        elif _CLOSE.match(line):
            previous = lines[start - 2].strip() if start >= 2 else ""
            snippets.append(
                Snippet(
                    index=len(snippets) + 1,
                    line=start,
                    code=textwrap.dedent("\n".join(body)) + "\n",
                    run=not previous.startswith(_NO_RUN),
                    why=previous[len(_NO_RUN) :].strip(" :->")
                    if previous.startswith(_NO_RUN)
                    else "",
                )
            )
            body = None
        else:
            body.append(line)
    assert body is None, f"README.md: the fence on line {start} never closes"
    return snippets


def _bound_names(tree):
    """Every name the code binds anywhere (scopes are not told apart)."""
    bound = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(
            node.ctx, (ast.Store, ast.Del)
        ):
            bound.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                bound.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(
            node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
        ):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            bound.update(node.names)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            bound.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            bound.add(node.rest)
    return bound


def undefined_names(code):
    """Names the code reads but never defines, imports or gets as builtins."""
    tree = ast.parse(code)
    known = _bound_names(tree) | set(dir(builtins))
    return sorted(
        {
            node.id
            for node in ast.walk(tree)
            if isinstance(node, ast.Name)
            and isinstance(node.ctx, ast.Load)
            and node.id not in known
        }
    )


SNIPPETS = readme_snippets()
_IDS = [snippet.name for snippet in SNIPPETS]


def test_the_extractor_finds_the_snippets_and_their_opt_outs():
    text = "\n".join(
        [
            "```python",
            "a = 1",
            "```",
            "```bash",
            "echo no",
            "```",
            "<!-- snippet: no-run: needs a GPU -->",
            "```python",
            "b = a",
            "```",
        ]
    )
    first, second = readme_snippets(text)
    assert (first.line, first.code, first.run) == (1, "a = 1\n", True)
    assert (second.index, second.line, second.run) == (2, 8, False)
    assert undefined_names(second.code) == ["a"]
    assert SNIPPETS, "README.md has no ```python snippets"


@pytest.mark.parametrize("snippet", SNIPPETS, ids=_IDS)
def test_snippet_compiles_and_defines_every_name_it_uses(snippet):
    compile(snippet.code, f"README.md snippet {snippet.index}", "exec")
    missing = undefined_names(snippet.code)
    assert not missing, (
        f"README.md snippet {snippet.index} (line {snippet.line}) uses "
        f"{', '.join(missing)} without defining or importing it"
    )


@pytest.mark.slow
@pytest.mark.parametrize("snippet", SNIPPETS, ids=_IDS)
def test_snippet_runs_on_its_own(snippet, tmp_path):
    if not snippet.run:
        pytest.skip(f"README.md opts it out: {snippet.why}")
    if "export_onnx" in snippet.code and any(
        importlib.util.find_spec(name) is None
        for name in ("tf2onnx", "onnx", "onnxruntime")
    ):
        pytest.skip(
            "the snippet calls export_onnx, which needs the [onnx] extra "
            "(tf2onnx, onnx, onnxruntime); it is not installed"
        )
    script = tmp_path / f"readme_snippet_{snippet.index}.py"
    script.write_text(snippet.code)
    work = tmp_path / "work"
    work.mkdir()
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), environment.get("PYTHONPATH")])
    )
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=work,
        env=environment,
        capture_output=True,
        text=True,
        timeout=_TIMEOUT_S,
    )
    assert result.returncode == 0, (
        f"README.md snippet {snippet.index} (line {snippet.line}) exited "
        f"with {result.returncode}:\n{result.stderr[-4000:]}"
    )
