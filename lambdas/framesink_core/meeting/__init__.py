"""Following a meeting: Recall's Create Bot and its bot tokens (recall), and the bot status
webhooks that move a recording from joining to done and start its export job (meetings)."""
