"""HTTP API blueprints, one per seed path: system, platforms, execution."""
