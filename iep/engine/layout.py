"""What a run directory holds, by name: one place for the loop, the run config and the readers."""

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
TENSORBOARD_SUBDIR = "tensorboard"
