"""The task's data sources: the names `prepare.py data --source` accepts.

Apart from data.py (which prepares the data in a container, so loads docker-py) so that the settings can
check a [task] source without loading docker-py.
"""

SOURCES = ("offline", "web")
