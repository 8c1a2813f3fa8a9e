"""The co-located ML-EKE ocean demo (run it with `python -m shmstore.demo`)."""
