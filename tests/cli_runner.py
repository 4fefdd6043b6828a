"""In-process CLI calls for tests: `run_cli` through click's runner, and the one-line error check."""
from click.testing import CliRunner

from mcuformer_tf.cli import main


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(result, fragment):
    """Exit code 2, one `Error: …` line naming `fragment` on stderr, nothing on stdout, no traceback."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert fragment in lines[0], lines[0]
    assert result.stdout == ""
    assert result.exception is None or isinstance(result.exception, SystemExit)
