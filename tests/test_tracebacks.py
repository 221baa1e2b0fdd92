"""Errors point at the user's line: a function defined in the script itself (``__main__``) shows
its file, line and source line in the worker's traceback under every start method, and every
item failure names its item without changing the exception's type, ``args`` or ``str()``."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from parmap import RemoteTraceback, pmap, pstarmap

from .conftest import ENGINES, with_engines

SCRIPT = textwrap.dedent(
    """
    import sys
    import parmap


    def parse(x):
        if x == 3:
            raise ValueError(f"bad record {x}")
        return x


    if __name__ == "__main__":
        try:
            parmap.pmap(parse, range(6), backend=sys.argv[1], start_method=sys.argv[2])
        except ValueError as exc:
            print(exc.__cause__)
            print("ARGS", exc.args, "STR", str(exc))
            print("NOTES", getattr(exc, "__notes__", None))
    """
)


@pytest.mark.parametrize("start_method", ["fork", "spawn", "forkserver"])
@pytest.mark.parametrize("backend", ["process", "pool"])
def test_main_function_traceback_names_the_script_line(
    tmp_path: Path, backend: str, start_method: str
) -> None:
    script = tmp_path / "tutorial.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), backend, start_method],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f'File "{script}", line 8, in parse' in out
    assert 'raise ValueError(f"bad record {x}")' in out
    assert "<dynamic-code>" not in out
    assert "ARGS ('bad record 3',) STR bad record 3" in out
    if sys.version_info >= (3, 11):
        assert "NOTES ['parmap: raised by item 3']" in out
    else:
        assert "parmap: raised by item 3" in out  # in the remote traceback's text


def _fails_at_four(x: int) -> int:
    if x == 4:
        raise KeyError(x)
    return x


def test_every_engine_names_the_failing_item(engine: dict[str, Any]) -> None:
    with pytest.raises(KeyError) as info:
        pmap(_fails_at_four, range(10), **engine)
    assert type(info.value) is KeyError
    assert info.value.args == (4,)
    assert str(info.value) == "4"
    text = "".join(getattr(info.value, "__notes__", ()))
    if isinstance(info.value.__cause__, RemoteTraceback):
        text += info.value.__cause__.tb
    assert "parmap: raised by item 4" in text


def test_in_caller_map_names_the_item_of_a_generator() -> None:
    """The default engine runs cheap work in the caller in one go; the index is found there too,
    an input without a length included."""
    with pytest.raises(KeyError) as info:
        pmap(_fails_at_four, (x for x in range(10)), backend="serial")
    if sys.version_info >= (3, 11):
        assert info.value.__notes__ == ["parmap: raised by item 4"]


@with_engines([e for e in ENGINES if e.default_method])
def test_pstarmap_names_an_item_that_is_not_a_tuple(engine: dict[str, Any]) -> None:
    items: list[Any] = [(2, 3), 5, (2, 2)]
    with pytest.raises(TypeError, match=r"item 1 is not a tuple of arguments"):
        pstarmap(pow, items, **engine)


def test_pstarmap_keeps_a_type_error_raised_inside_the_function() -> None:
    def needs_int(a: int, b: int) -> int:
        raise TypeError("'str' object is not iterable, from inside")

    with pytest.raises(TypeError, match="from inside") as info:
        pstarmap(needs_int, [(1, 2)], backend="serial")
    assert "not a tuple" not in str(info.value)
