"""Settings: strict YAML, the config and the views config, and the validators all of them (and the web config) share."""
