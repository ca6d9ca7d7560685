"""Data package: the experiment image's Dockerfile and pinned requirements (built by runner/images.py)."""
