"""TestsGenerator: a pytest module whose tests are a task's acceptance criteria, one test per criterion.

Each criterion must be a Python boolean expression, e.g. ``textutil.slugify("Hello World") ==
"hello-world"``; it becomes ``assert <criterion>`` verbatim. Deterministic like every built-in generator.
"""

from __future__ import annotations

import ast
import builtins
import re
from pathlib import Path, PurePosixPath

from leviathan_dagster.core.errors import GeneratorError
from leviathan_dagster.core.generators.base import GenerationContext, Generator, TaskProblem
from leviathan_dagster.core.generators.docs import select_output_path, write_text
from leviathan_dagster.core.models import GeneratedChange, Task

EXAMPLE_CRITERION = 'textutil.slugify("Hello World") == "hello-world"'
_BUILTIN_NAMES = frozenset(dir(builtins))


def snake_case(text: str) -> str:
    """``text`` as a Python identifier fragment: lower case, runs of other characters become ``_``."""
    return re.sub(r"[^0-9a-z]+", "_", text.lower()).strip("_") or "task"


def criterion_problem(criterion: str) -> str | None:
    """Why ``criterion`` cannot be a test that can fail (parsed, never run), or None when it can.

    A test that can never fail is worse than none: it makes a green PR that checks nothing. So a
    criterion must be a Python expression that refers to something of the code under test (a name that
    is neither a builtin nor bound inside the expression), and must not be true by its form alone: a
    constant, a string, a lambda, a tuple, ``x == x`` or ``... or True``.
    """
    if not criterion.strip():
        return "is empty"
    try:
        tree = ast.parse(criterion.strip(), mode="eval")
    except SyntaxError as exc:
        return f"is not a Python expression ({exc.msg})"
    body = tree.body
    if isinstance(body, ast.Tuple):
        # ``assert a, b`` would read b as the message, and ``assert (a, b)`` is always true.
        return "is a tuple, which is always true"
    if isinstance(body, ast.Lambda):
        return "is a lambda, which is always true (it is never called)"
    if isinstance(body, ast.Constant | ast.JoinedStr | ast.List | ast.Dict | ast.Set):
        return "is a literal value, which never changes with the code"
    if isinstance(body, ast.BoolOp) and isinstance(body.op, ast.Or) and any(map(_always_true, body.values)):
        return "has an 'or' with an always-true operand, so it is always true"
    if _compares_with_itself(body):
        return "compares a value with itself, which is always true"
    if not free_names(tree):
        return "refers to no code under test (only literals and builtins), so its result never changes"
    return None


def _always_true(node: ast.expr) -> bool:
    return isinstance(node, ast.Lambda) or (isinstance(node, ast.Constant) and bool(node.value))


def _compares_with_itself(node: ast.expr) -> bool:
    return (
        isinstance(node, ast.Compare)
        and len(node.ops) == 1
        and isinstance(node.ops[0], ast.Eq | ast.Is | ast.LtE | ast.GtE)
        and ast.dump(node.left) == ast.dump(node.comparators[0])
    )


def parse_criterion(task: Task, number: int, criterion: str) -> ast.Expression:
    """Parse one criterion as an expression; GeneratorError (with an example) when it cannot fail or is
    not one (see ``criterion_problem``)."""
    problem = criterion_problem(criterion)
    if problem is not None:
        raise GeneratorError(
            f"task {task.id!r}: acceptance criterion {number} ({criterion!r}) {problem}; the tests "
            f"generator needs each criterion to be a boolean expression about the code, "
            f"e.g. {EXAMPLE_CRITERION}"
        )
    return ast.parse(criterion.strip(), mode="eval")


def free_names(tree: ast.AST) -> set[str]:
    """Names the expression loads that it neither binds (comprehension targets, lambda arguments, ``:=``)
    nor gets from builtins: what it refers to of the code under test."""
    bound = {
        node.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load)
    }
    bound |= {
        arg.arg for node in ast.walk(tree) if isinstance(node, ast.arguments) for arg in _all_args(node)
    }
    loaded = {
        node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)
    }
    return loaded - bound - _BUILTIN_NAMES


def imported_modules(tree: ast.AST) -> set[str]:
    """Names at the root of attribute accesses that the expression neither binds nor gets from builtins."""
    bound = {
        node.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load)
    }
    bound |= {
        arg.arg for node in ast.walk(tree) if isinstance(node, ast.arguments) for arg in _all_args(node)
    }
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and isinstance(root.ctx, ast.Load):
                roots.add(root.id)
    return roots - bound - _BUILTIN_NAMES


def _all_args(arguments: ast.arguments) -> list[ast.arg]:
    extra = [arg for arg in (arguments.vararg, arguments.kwarg) if arg is not None]
    return [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs, *extra]


def _docstring(text: str) -> str:
    if '"""' not in text and "\\" not in text and not text.endswith('"') and "\n" not in text:
        return f'"""{text}"""'
    return repr(text)


def render_test_module(task: Task) -> str:
    """The pytest module for ``task``; GeneratorError for a criterion that is not an expression."""
    criteria = [criterion.strip() for criterion in task.acceptance_criteria]
    if not any(criteria):
        raise GeneratorError(
            f"task {task.id!r} has no acceptance criteria; the tests generator turns each criterion into a "
            f"test, so give it at least one boolean expression, e.g. {EXAMPLE_CRITERION}"
        )
    modules: set[str] = set()
    functions: list[str] = []
    prefix = snake_case(task.id)
    for number, criterion in enumerate(criteria, start=1):
        modules |= imported_modules(parse_criterion(task, number, criterion))
        # Multi-line criteria go inside parentheses, with the closing one on its own line, so their
        # continuation lines and any trailing comment stay valid Python without re-indenting them.
        body = f"assert ({criterion}\n    )" if "\n" in criterion else f"assert {criterion}"
        functions.append(f"def test_{prefix}_{number}():\n    {_docstring(criterion)}\n    {body}\n")
    header = [f"# Generated by Leviathan for task {task.id} from its acceptance criteria.\n"]
    if modules:
        header.append("".join(f"import {name}\n" for name in sorted(modules)))
    source = "\n".join(header) + "\n\n" + "\n\n".join(functions)
    try:
        ast.parse(source)
    except SyntaxError as exc:
        raise GeneratorError(f"task {task.id!r}: the generated test module does not parse: {exc}") from None
    return source


class TestsGenerator(Generator):
    """Writes a pytest module from the task's acceptance criteria into its allowed path."""

    # The class name starts with "Test": keep pytest from collecting it where a test module imports it.
    __test__ = False
    name = "tests"

    @classmethod
    def check_task(cls, task: Task) -> list[TaskProblem]:
        """Criteria that could not become a failing test, none at all, or no test file to write."""
        fix = f"write a boolean expression about the code, e.g. {EXAMPLE_CRITERION}"
        if not task.acceptance_criteria:
            return [TaskProblem("acceptance_criteria", "is empty, so there is no test to write", fix)]
        problems = [
            TaskProblem("acceptance_criteria", f"item {number + 1} ({criterion!r}) {problem}", fix, number)
            for number, criterion in enumerate(task.acceptance_criteria)
            if (problem := criterion_problem(criterion)) is not None
        ]
        try:
            _output_path(task)
        except GeneratorError as exc:
            message = str(exc).removeprefix(f"task {task.id!r}: ")
            fix = "allow a file named test_*.py or a directory ending in '/'"
            problems.append(
                TaskProblem("allowed_paths", f"gives the tests generator no file: {message}", fix)
            )
        return problems

    def generate(
        self, task: Task, workspace: Path, context: GenerationContext | None = None
    ) -> GeneratedChange:
        path = _output_path(task)
        source = render_test_module(task)
        changed = write_text(workspace, path, source)
        count = len(task.acceptance_criteria)
        verb = "wrote" if changed else "unchanged"
        return GeneratedChange(
            files=(path,),
            summary=f"tests: {verb} {count} test(s) in {path} for task {task.id}",
            details={"path": path, "changed": changed, "tests": count},
        )


def _output_path(task: Task) -> str:
    return select_output_path(
        task,
        generator=TestsGenerator.name,
        suffix=".py",
        default_name=f"test_{snake_case(task.id)}.py",
        check_file=lambda chosen: _check_test_file_name(task, chosen),
    )


def _check_test_file_name(task: Task, chosen: str) -> None:
    name = PurePosixPath(chosen).name
    if not (name.startswith("test_") and name.endswith(".py")):
        raise GeneratorError(
            f"task {task.id!r}: the tests generator writes {chosen!r}, but pytest only collects files "
            "named test_*.py; rename it in allowed_paths, or allow a directory (ending in '/')"
        )
