"""The docs: every Python block in docs/ runs, as a script of its own, so no example rots; the
API page shows public names only, from docstrings written in the Markdown mkdocstrings renders."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).parent.parent / "docs"
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)
BLOCKS = [
    pytest.param(code, id=f"{page.relative_to(DOCS)}:{n}")
    for page in sorted(DOCS.rglob("*.md"))
    for n, code in enumerate(BLOCK.findall(page.read_text()), 1)
]


def test_there_are_examples() -> None:
    assert len(BLOCKS) >= 8


@pytest.mark.parametrize("code", BLOCKS)
def test_example_runs(code: str, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr


SRC = DOCS.parent / "src" / "parmap"
# mkdocstrings renders docstrings as Markdown: a Sphinx role shows up as raw text on the API page.
SPHINX_ROLE = re.compile(r":(class|func|meth|attr|mod|exc|data):")


def docstrings(tree: ast.AST) -> list[tuple[int, str]]:
    """Every string statement: module, class and function docstrings, and attribute docstrings."""
    return [
        (node.lineno, node.value.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    ]


def test_docstrings_use_no_sphinx_roles() -> None:
    found = [
        f"{path.relative_to(SRC.parent)}:{line}: {match.group()}"
        for path in sorted(SRC.rglob("*.py"))
        for line, text in docstrings(ast.parse(path.read_text(), str(path)))
        for match in SPHINX_ROLE.finditer(text)
    ]
    assert len(list(SRC.rglob("*.py"))) > 10
    assert not found, "write [`Name`][parmap.Name] or ``Name`` instead:\n" + "\n".join(found)


def test_api_page_documents_public_names_only() -> None:
    import parmap
    import parmap.backends

    public = {f"parmap.{name}" for name in parmap.__all__}
    public |= {f"parmap.backends.{name}" for name in parmap.backends.__all__}
    shown = re.findall(r"^::: *(\S+)", (DOCS / "api.md").read_text(), re.MULTILINE)
    assert len(shown) > 20
    assert set(shown) <= public, set(shown) - public
    assert {f"parmap.{name}" for name in parmap.__all__} <= set(shown)


def test_mkdocs_config_has_no_empty_repo_url() -> None:
    config = (DOCS.parent / "mkdocs.yml").read_text()
    assert not re.search(r"^repo_url:\s*(\"\"|''|)\s*(#.*)?$", config, re.MULTILINE)
