"""Training jobs: what a job is, the function a worker runs, and the runners that start it."""
