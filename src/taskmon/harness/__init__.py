"""Reusable by users' CI: start real taskmon stacks, talk to them, judge the invariants."""
