// The Node baseline of bench/sidebyside.py: a websocket server that does per frame what
// Recall's own sample receiver does (JSON.parse, base64-decode the PNG, append it to a
// file), and nothing else: no auth, no S3, no index. Prints {"port": N} once listening.
const fs = require("fs");
const { WebSocketServer } = require("ws");

const out = fs.openSync(process.argv[2], "a");
let frames = 0;
const wss = new WebSocketServer({ host: "127.0.0.1", port: 0, maxPayload: 64 * 1024 * 1024, perMessageDeflate: false });
wss.on("connection", (ws) => {
  ws.on("message", (data) => {
    const event = JSON.parse(data);
    if (event.event !== "video_separate_png.data") return;
    const png = Buffer.from(event.data.data.buffer, "base64");
    fs.appendFileSync(out, png);
    frames += 1;
  });
});
wss.on("listening", () => console.log(JSON.stringify({ port: wss.address().port })));
process.on("SIGTERM", () => {
  console.error(JSON.stringify({ frames }));
  process.exit(0);
});
