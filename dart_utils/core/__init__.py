"""Infrastructure without domain knowledge: parameters, the stage registry and context, artifacts, hashing."""
