"""Run the command line in-process for a test: ``cli(capsys, "pool", "--json")`` gives
(exit code, stdout, stderr) of that one call (what earlier calls printed is discarded)."""

from metaalliance.cli import main


def cli(capsys, *argv):
    capsys.readouterr()
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err
