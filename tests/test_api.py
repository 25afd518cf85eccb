"""The public Python surface: every name in `selfsup.__all__` has a docstring example, and
the examples run as written."""

from __future__ import annotations

import doctest
import subprocess
import sys

import pytest

import selfsup


@pytest.mark.parametrize("name", selfsup.__all__)
def test_every_public_name_has_an_example_that_runs(name):
    target = getattr(selfsup, name)
    finder = doctest.DocTestFinder(recurse=False)
    tests = [t for t in finder.find(target, name, globs={}) if t.examples]
    assert tests, f"selfsup.{name} has no example in its docstring"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} example(s) of selfsup.{name} failed (above)"


def test_importing_the_package_stays_cheap():
    """Names load on first use: `import selfsup` imports neither torch nor a task."""
    code = "import sys, selfsup; print('torch' in sys.modules, 'selfsup.tasks' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
    assert "counting_loss" in dir(selfsup)


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        selfsup.nope  # noqa: B018


def test_make_config_refuses_a_preset_of_another_task():
    from selfsup.config import ConfigError

    with pytest.raises(ConfigError, match="config file is for 'counting'"):
        selfsup.make_config("rotation", "counting_small")
