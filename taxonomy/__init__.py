"""Tag systems: taxonomy trees read from files or labels, tag-name checks, and path-consistent decisions."""
