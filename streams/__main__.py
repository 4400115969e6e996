import sys

from tokenbrake.streams.cli import main

if __name__ == "__main__":  # not when a spawned child (the ClickHouse writer) imports it
    sys.exit(main())
