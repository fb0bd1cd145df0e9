"""``python -m aqe.cli``."""

from aqe.cli import main

main()
