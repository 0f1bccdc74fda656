"""The command-line programs: train, evaluate and visualize (root scripts and console entry points)."""
