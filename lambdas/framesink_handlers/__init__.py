"""Lambda entry points: thin adapters from API Gateway events to framesink_core."""
