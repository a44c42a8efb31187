"""The `framesink` command: local stack, simulator, demo, create-bot, frames, export."""
