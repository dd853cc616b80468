"""Layer 1, foundations: data, devices, processes, modes, gradient descent, schedules,
metrics, paired verdicts, tables, file integrity. Imports nothing else from transferkit."""
