"""`python -m fastgen.train`: see fastgen/cli/train.py. Importing this module keeps `fastgen.train(...)` callable."""

import sys

from fastgen.cli.common import make_module_callable
from fastgen.cli.train import main
from fastgen.training import train

make_module_callable(__name__, train)

if __name__ == "__main__":
    sys.exit(main())
