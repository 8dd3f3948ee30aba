"""`python -m fastgen.evaluate`: see fastgen/cli/evaluate.py. Importing this module keeps `fastgen.evaluate(...)` callable."""

import sys

from fastgen.cli.common import make_module_callable
from fastgen.cli.evaluate import main
from fastgen.evaluation import evaluate

make_module_callable(__name__, evaluate)

if __name__ == "__main__":
    sys.exit(main())
