"""`python -m taskfit ...`: the command line, also as a module for `accelerate launch -m taskfit tune ...`."""

from taskfit.cli import main

main()
