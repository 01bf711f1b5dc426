"""Process-level helpers: interrupts that stop a graph run, the memory ceiling, C libraries' stderr."""
