"""Who may send: bot tokens and the signed-header check (auth), the record of each
websocket connection (connections), and the handshake probe the doctor and canary use."""
