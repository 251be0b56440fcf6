// Drives the JS SDK under Node.js 20 against a test server; test_js_sdk.py reads its lines.
import { createInterface } from "node:readline";
import { IntakeClient } from "../static/intake-sdk.js";

const lines = createInterface({ input: process.stdin });
const waiting = [];
lines.on("line", (line) => { const next = waiting.shift(); if (next) next(line); });
const nextLine = () => new Promise((resolve) => waiting.push(resolve));
const say = (step, value) => console.log(JSON.stringify({ step, ...value }));

const { BASE_URL, USER_ID, USER_HASH } = process.env;
let identified = 0;
const client = new IntakeClient({
  baseUrl: BASE_URL, appKey: "demo-app",
  identify: async () => { identified += 1; return { userId: USER_ID, userHash: USER_HASH }; },
});
const ticket = await client.submitTicket({ subject: "退货", text: "耳机想退货", fields: { category: "售后" } });
const mine = await client.tickets();
const faq = await client.searchFaq("退货");
say("ticket", { id: ticket.id, reference: ticket.reference, listed: mine.items.length, faq: faq.items[0].id });

const seen = [];
let chat = client.chat();
chat.on("message", (frame) => seen.push(frame.message.text));
const ack = await chat.send("你好", { ticketId: ticket.id });
say("acked", { seq: ack.seq, ticket_id: ack.ticket_id });
await nextLine(); // the agent replied
while (seen.length < 1) await new Promise((r) => setTimeout(r, 20));
say("live", { seen });

chat.close(); // the network goes away
say("offline", {});
await nextLine(); // two replies were sent meanwhile
client._chat = null;
chat = client.chat(); // back: resumes from the stored cursor
const offlineSeen = [];
chat.on("message", (frame) => offlineSeen.push(frame.message.text));
const typedOffline = await chat.send("离线时输入的", { ticketId: ticket.id });
while (offlineSeen.length < 2) await new Promise((r) => setTimeout(r, 20));
await new Promise((r) => setTimeout(r, 300));
say("resumed", { seen: offlineSeen, acked: typedOffline.client_msg_id.length > 0 });

client.session = { session_token: "revoked-or-expired" }; // the identity callback runs again
const again = await client.tickets();
say("reidentified", { identified, listed: again.items.length });
await client.logout();
say("done", {});
process.exit(0);
