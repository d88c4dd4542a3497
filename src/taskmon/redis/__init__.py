"""The Redis adapters of the ports: one truth for every worker of every host."""
