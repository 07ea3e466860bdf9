"""Widgets (labeler, explorer, trainer): see the issues; not built yet."""
