"""Scripts that run peer toolkits (AIMET itself) in their own environments."""
