"""The shared kernel: what every connector and service imports, and nothing else."""
