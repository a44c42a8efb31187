"""Analyzers that run on stored frames: the slide-change detector (slides)."""
