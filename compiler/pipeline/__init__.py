"""The build pipeline: config, default pipelines, normalize, sample data, the pass DAG and its
scheduler, and the content-addressed node cache."""
