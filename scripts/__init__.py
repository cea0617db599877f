"""Pack tooling run as modules from the repository root: ``python -m scripts.build_workflows`` (make workflows)."""
