"""Results table (markdown and terminal) and plots (PNG) of a run."""
