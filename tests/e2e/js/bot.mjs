// A matrix-js-sdk bot driven by tests/e2e/test_matrix_js.py.
//
// Logs in with a password, starts the client, waits for PREPARED, joins the rooms it is invited to,
// and answers the first message from PEER with "echo: <body>". It reports each step on stdout as one
// line `@@ {json}`; everything else on stdout or stderr is the SDK's own logging.
//
// Environment: HS_URL, MX_USER, MX_PASSWORD, PEER, TIMEOUT_MS (default 60000), LOG_LEVEL (info).

import * as sdk from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";

const { HS_URL, MX_USER, MX_PASSWORD, PEER } = process.env;
const TIMEOUT_MS = Number(process.env.TIMEOUT_MS || 60000);

function report(event, fields = {}) {
  process.stdout.write(`@@ ${JSON.stringify({ event, ...fields })}\n`);
}

function fail(message) {
  report("error", { message: String(message) });
  process.exit(1);
}

setTimeout(() => fail(`timed out after ${TIMEOUT_MS} ms`), TIMEOUT_MS).unref();
process.on("unhandledRejection", (err) => fail(err?.stack || err));

// The SDK's request log is shown when a test fails; LOG_LEVEL=warn quiets it.
logger.setLevel(process.env.LOG_LEVEL || "info");

const login = await sdk
  .createClient({ baseUrl: HS_URL })
  .loginRequest({
    type: "m.login.password",
    identifier: { type: "m.id.user", user: MX_USER },
    password: MX_PASSWORD,
    initial_device_display_name: "matrix-js-sdk e2e",
  })
  .catch((err) => fail(`login failed: ${err}`));
report("logged_in", { user_id: login.user_id, device_id: login.device_id });

const client = sdk.createClient({
  baseUrl: HS_URL,
  accessToken: login.access_token,
  userId: login.user_id,
  deviceId: login.device_id,
});

const joining = new Set();
async function joinIfInvited(room) {
  if (room.getMyMembership() !== "invite" || joining.has(room.roomId)) return;
  joining.add(room.roomId);
  const joined = await client.joinRoom(room.roomId);
  report("joined", { room_id: joined.roomId, dm_inviter: room.getDMInviter() ?? null });
}

client.on(sdk.RoomEvent.MyMembership, (room, membership) => {
  if (membership === "invite") joinIfInvited(room).catch(fail);
});

let answered = false;
client.on(sdk.RoomEvent.Timeline, (event, room, toStartOfTimeline) => {
  if (toStartOfTimeline || answered) return;
  if (event.getType() !== "m.room.message" || event.getSender() !== PEER) return;
  answered = true;
  const body = event.getContent().body;
  report("received", { room_id: room.roomId, event_id: event.getId(), body });
  client
    .sendEvent(room.roomId, "m.room.message", { msgtype: "m.text", body: `echo: ${body}` })
    .then((res) => {
      report("sent", { room_id: room.roomId, event_id: res.event_id });
      client.stopClient();
      process.exit(0);
    })
    .catch(fail);
});

client.on(sdk.ClientEvent.Sync, (state, _prev, data) => {
  if (state === "PREPARED") {
    report("prepared", {
      rooms: client.getRooms().map((r) => ({ room_id: r.roomId, membership: r.getMyMembership() })),
    });
    for (const room of client.getRooms()) joinIfInvited(room).catch(fail);
  } else if (state === "ERROR") {
    report("sync_error", { message: String(data?.error?.message || data?.error) });
  }
});

await client.startClient({ initialSyncLimit: 20 }).catch((err) => fail(`startClient failed: ${err}`));
