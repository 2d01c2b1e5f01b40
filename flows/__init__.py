"""The steps of the apical flow, the CLI, synthesis, bitstreams, energy and reports."""
