import sys

from .cli import main

# The guard lets spawn/forkserver worker processes import this module without rerunning the CLI.
if __name__ == "__main__":
    sys.exit(main())
