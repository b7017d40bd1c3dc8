"""Checks run against the whole package: the bad-input corpus and kill-and-resume."""
