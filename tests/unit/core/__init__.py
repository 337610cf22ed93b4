"""Unit tests of the pure cores: no network, no subprocess, no sleeping; clocks are injected."""
