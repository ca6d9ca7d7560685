"""The task's data sources, and how `auto` picks one.

`prepare.py data --source` takes offline (the bundled corpus) or web (the FineWeb-Edu shards from the
Hugging Face hub). `auto`, the default, takes web when the hub answers and offline otherwise, so a
rented GPU box gets the real corpus and a machine without internet still runs. Apart from data.py
(which prepares the data in a sandbox, so loads docker-py) so that the settings can check a source
without loading docker-py.
"""

import os
import urllib.error
import urllib.request

SOURCES = ("offline", "web")  # what prepare.py accepts
CHOICES = ("auto", *SOURCES)  # what [task] source accepts
HUB_URL = "https://huggingface.co/api/datasets/karpathy/fineweb-edu-100b-shuffle"
HUB_URL_ENV = "AUTORESEARCH_WEB_PROBE_URL"  # another hub (a mirror; tests point it at 127.0.0.1)
HUB_TIMEOUT_S = 5.0


def hub_url() -> str:
    return os.environ.get(HUB_URL_ENV, HUB_URL)


def hub_problem(timeout_s: float = HUB_TIMEOUT_S) -> str | None:
    """None when the web corpus's hub answers, else why not."""
    try:
        with urllib.request.urlopen(urllib.request.Request(hub_url(), method="HEAD"), timeout=timeout_s):
            return None
    except urllib.error.HTTPError as exc:
        return f"{hub_url()} answered {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return f"{hub_url()} does not answer ({getattr(exc, 'reason', exc)})"


def resolve_source(source: str) -> tuple[str, str]:
    """(offline or web, why): auto asks the hub; a named source is taken as it is."""
    if source != "auto":
        return source, "as configured"
    problem = hub_problem()
    if problem is None:
        return "web", f"auto: the web corpus's hub answers ({hub_url()})"
    return "offline", f"auto: {problem}, so the bundled offline corpus"


def gpu_corpus_warning(source: str, flavor: str) -> str | None:
    """Why the GPU profile on the offline corpus measures memorising more than learning; None otherwise."""
    if flavor != "cuda" or source != "offline":
        return None
    return ("WARNING: the GPU profile trains on the offline corpus (about 1.8M training tokens); a GPU passes over "
            "them many times within the budget, so val_bpb rewards memorising: make the web corpus reachable "
            "(autoresearch doctor says why it is not) for research on a GPU")


def source_lines(source: str, why: str, flavor: str) -> list[str]:
    """What a command says of its data: the corpus and why it was chosen, then the GPU warning where it applies."""
    warning = gpu_corpus_warning(source, flavor)
    return [f"data: the {source} corpus ({why})", *([warning] if warning else [])]
