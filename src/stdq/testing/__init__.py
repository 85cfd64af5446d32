"""Emulators of the survey services, for tests, benchmarks and `stdq demo` (never imported by the core)."""
