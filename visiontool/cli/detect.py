"""placeholder"""

HELP = "Detect objects."


def detect() -> None:
    pass
