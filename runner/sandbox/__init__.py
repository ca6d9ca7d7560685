"""Running task code in isolation: the sandbox providers, the host's monitor, images and GPUs."""
