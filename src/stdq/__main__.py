"""`python -m stdq`."""

from stdq.cli import main

if __name__ == "__main__":
    main()
