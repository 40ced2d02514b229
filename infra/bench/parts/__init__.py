"""The parts infra/bench/bench.py runs, one module each, and what they share (bench.py's
docstring lists them). Standard library only: boto3 is imported inside aws_helpers' functions,
which run as separate processes."""
