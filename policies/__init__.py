"""The bundled policy files (default.toml, strict.toml). A package only so that the installed runner
can find them with importlib.resources."""
