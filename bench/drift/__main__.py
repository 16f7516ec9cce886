"""``python -m bench.drift``: see run.py."""

from bench.drift.run import main

if __name__ == "__main__":
    main()
