"use strict";
/**
 * The baseline for benchmark 1: a bare express 5 JSON endpoint, same Node, same machine, its own
 * process (like the broker). Usage: node bare-server.js PORT
 */
const express = require("express");

const port = Number(process.argv[2]);
const app = express();
app.post("/x", express.json(), (_req, res) => res.json({ ok: true }));
app.get("/healthz", (_req, res) => res.json({ status: "ok" }));
const server = app.listen(port, "127.0.0.1");
process.on("SIGTERM", () => server.close(() => process.exit(0)) && server.closeAllConnections());
