"""Helpers for tests and benchmarks, not used by training: writers of small real media files
(:mod:`rsanet.testing.media`)."""
