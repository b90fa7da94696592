"""``python -m condensation``: the ``condense`` command."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
