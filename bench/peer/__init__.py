"""The peer server the benchmark compares with: MLServer, in a virtualenv of its own."""
