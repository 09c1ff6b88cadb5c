"""The contract between the export pipeline and the runtime packages: what a runtime implements (an export format,
a session backend, a coverage reader) and what the pipeline hands it. Imports nothing above it."""
