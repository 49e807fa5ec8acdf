"""Leaderboard of a sweep: `python scripts/compare.py outputs/multirun/<sweep> [--by model data.window]`.

Walk-forward and multi-ticker sweeps get pooled, per-fold and per-ticker tables, the Model Confidence Set and
the SPA tests (see lstm_zoo/evaluation/compare.py for the options). A folder of single runs,
`python scripts/compare.py outputs/runs`, gets one row per run.
"""

from lstm_zoo.evaluation.compare import main

if __name__ == "__main__":
    main()
