"""fat-deploy's version (recorded in every manifest, bundle and measurement)."""

__version__ = "0.1.0"
