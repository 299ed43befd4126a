"""Label Studio I/O: labeling configs, tasks and regions, the SDK client, a local server
and reading its export files."""
