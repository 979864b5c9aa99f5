"""The build pipeline: config, default pipelines, normalize, sample data, the build graph, one
node kind per module (`nodes/`), the scheduler and its instruments, and the node cache."""
