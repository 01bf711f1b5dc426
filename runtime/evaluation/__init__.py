"""Unit quality: phone alignments, PNMI and purity, usage statistics, stability under perturbation."""
