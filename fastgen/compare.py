"""`python -m fastgen.compare`: see fastgen/cli/compare.py. Importing this module keeps `fastgen.compare(...)` callable."""

import sys

from fastgen.cli.common import make_module_callable
from fastgen.cli.compare import main
from fastgen.comparison import compare

make_module_callable(__name__, compare)

if __name__ == "__main__":
    sys.exit(main())
