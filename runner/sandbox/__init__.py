"""Running task code in isolation: the sandbox providers by name, the host's monitor, images and GPUs.

The interface is in base.py, the providers in *_provider.py, and registry.py opens one by name. This
package itself only names them, so the config and the settings can check a provider's name without
loading docker-py or the monitor.
"""

PROVIDERS = {
    "docker": "autoresearch.runner.sandbox.docker_provider:DockerSandbox",
    "process": "autoresearch.runner.sandbox.process_provider:ProcessSandbox",
    "fake": "autoresearch.runner.sandbox.fake_provider:FakeSandbox",
}
CHOICES = ("docker", "process")  # what users may name; fake is for tests only
FAKE_SCRIPT_ENV = "AUTORESEARCH_FAKE_SANDBOX"  # the fake provider's defaults (a JSON file): tests set it
