"""Benchmarks: speed targets as ratios to raw Redis round trips, measured side by side."""
