"""``python -m gengs_lightning``: the command line."""

from gengs_lightning.cli import main

if __name__ == "__main__":
    main()
