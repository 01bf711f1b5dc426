"""Figures (the optional ``[plot]`` extra): matplotlib is imported only when a plot is drawn."""
