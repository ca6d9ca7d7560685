"""The morning after: `autoresearch report` (a self-contained HTML page and its Markdown twin) and progress.png.

Everything comes from the store and git, read only: queries.py reads what the store's own functions do not
(the agent's words, the samples per hour), facts.py works the figures out once, progress_png.py draws the
chart, html_page.py and markdown_page.py lay the same facts out (fmt.py writes the numbers for both), and
write.py writes the files through output.py, which turns a path that cannot be written into one line.
"""

FORMATS = ("html", "md")  # what `autoresearch report --format` takes (here, so the parser loads no matplotlib)
