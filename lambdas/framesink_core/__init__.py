"""framesink core: Recall events, PNG checks, storage layout, auth. Adapters call into this."""
