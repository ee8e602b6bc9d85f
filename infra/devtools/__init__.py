"""Dev tooling: the demo, the synthetic catalogue, sample projects and a static origin (not production code)."""
