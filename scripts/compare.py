"""Leaderboard of a sweep: `python scripts/compare.py outputs/multirun/<sweep> [--by model data.window]`."""

from lstm_zoo.evaluation.leaderboard import main

if __name__ == "__main__":
    main()
