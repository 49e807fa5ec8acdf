"""Scoring forecasts: price-unit metrics and tests against persistence, seed ensembles, sweep leaderboards."""
