"""``python -m edugate.cli ...`` = ``edugate ...`` (see :mod:`edugate.cli.entry`)."""

from edugate.cli.entry import main

main()
