"""Pictures: training history, tuning results and architecture diagrams (matplotlib
`Figure` objects, never a global backend switch)."""
