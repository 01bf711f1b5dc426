"""Corpus runs: which files, and the engines that fan them out over processes and machines."""
