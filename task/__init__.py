"""The bundled default task. A package only so that the installed runner can find its files;
the host never imports prepare.py or train.py (they need torch)."""
