"""`tools/run_tests.py`: how a backend session's results are read."""

import importlib.util
import os
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def runner():
    spec = importlib.util.spec_from_file_location(
        "run_tests_tool", os.path.join(ROOT, "tools", "run_tests.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Finished:
    def __init__(self, code):
        self.code = code

    def wait(self):
        return self.code


TAIL = (
    "WARNING: All log messages before absl::InitializeLog() is called\n"
    "I0000 00:00:1796504403.044417 port.cc:153] oneDNN custom operations\n"
)


@pytest.mark.parametrize(
    "output,code,expected",
    [
        # A library logging after pytest's closing line (seen in CI).
        (
            "...\n1143 passed, 33 skipped, 6 warnings in 480.09s (0:08:00)\n"
            + TAIL,
            0,
            (1143, 0, 33, 0),
        ),
        (
            "F.\n= 1 failed, 1120 passed, 33 skipped in 447.44s (0:07:27) =\n",
            1,
            (1120, 1, 33, 0),
        ),
        ("....\n2 passed, 1 error in 3.1s\n", 1, (2, 0, 0, 1)),
        # Died before its summary (a signal, native code): one error.
        ("....Fatal Python error: Aborted\n" + TAIL, -6, (0, 0, 0, 1)),
        ("", 1, (0, 0, 0, 1)),
    ],
)
def test_a_session_is_read_from_pytests_closing_line(
    output, code, expected, capsys
):
    module = runner()
    with tempfile.TemporaryFile() as log:
        log.write(output.encode())
        result_code, counts, _ = module.finish_backend(
            "tensorflow", "", Finished(code), log, 0.0, 1.0
        )
    capsys.readouterr()
    assert result_code == code
    keys = ("passed", "failed", "skipped", "errors")
    assert tuple(counts[k] for k in keys) == expected


def test_only_the_concurrent_non_jax_sessions_run_at_lower_priority():
    priority = runner().concurrent_priority
    assert priority("jax", 1) == 0
    assert priority("torch", 1) == priority("tensorflow", 1) == 2
    # In turn (two xdist workers each) nothing competes: no change.
    assert priority("torch", 2) == priority("jax", 2) == 0
