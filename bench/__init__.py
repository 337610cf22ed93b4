"""Benchmarks. Run each from the repository root; its docstring says how."""
