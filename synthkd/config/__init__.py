"""What every stage config shares: endpoints, sampling, the stage base, the launch block, and reading the YAML.

Plain data at the bottom of the house: nothing here imports a stage. Each stage type's config lives beside
its implementation, and `synthkd.pipeline` (the pipeline file and its loader) gathers them.
"""
