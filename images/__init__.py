"""Data package: the experiment image's Dockerfile and pinned requirements (built by runner/sandbox/images.py)."""
