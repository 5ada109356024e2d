"""`python -m visiontool` runs the same CLI as the `visiontool` console script."""

from visiontool.cli.main import run

if __name__ == "__main__":
    run()
