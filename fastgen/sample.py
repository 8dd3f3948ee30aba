"""`python -m fastgen.sample`: see fastgen/cli/sample.py."""

import sys

from fastgen.cli.sample import main

if __name__ == "__main__":
    sys.exit(main())
