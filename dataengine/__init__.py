"""Offline data engine: source library from installed packages, captions, mixtures, splits."""
