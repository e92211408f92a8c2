"""Try a model by clicking on it: ``python -m hrsam.app`` (`hrsam.app.server`)."""
