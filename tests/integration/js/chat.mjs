// Two matrix-js-sdk clients (the SDK Element is built on) chat through hearthd:
// password login, startClient (versions, capabilities, pushrules, filters, sync), a room
// created with an invitation, the invitee joins when the invite arrives by /sync, and
// each message reaches the other side through the long-polling sync loop.
// Usage: node chat.mjs <base url> <alice password> <bob password>. Exit 0 on success.
import * as sdk from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";

logger.setLevel("warn");
const [base, alicePassword, bobPassword] = process.argv.slice(2);
const deadline = setTimeout(() => {
  console.error("FAIL: timed out");
  process.exit(1);
}, 60000);

async function login(name, password) {
  const anon = sdk.createClient({ baseUrl: base });
  const r = await anon.login("m.login.password", {
    identifier: { type: "m.id.user", user: name },
    password,
    initial_device_display_name: `${name} (matrix-js-sdk)`,
  });
  const client = sdk.createClient({ baseUrl: base, accessToken: r.access_token, userId: r.user_id, deviceId: r.device_id });
  const prepared = new Promise((resolve, reject) =>
    client.on(sdk.ClientEvent.Sync, (state, _prev, data) => {
      if (state === "PREPARED") resolve();
      if (state === "ERROR") reject(new Error(`sync error: ${data?.error}`));
    }));
  await client.startClient({ initialSyncLimit: 20 });
  await prepared;
  return client;
}

function nextMessage(client, roomId, body) {
  return new Promise((resolve) =>
    client.on(sdk.RoomEvent.Timeline, (event, room) => {
      if (room?.roomId === roomId && event.getType() === "m.room.message" && event.getContent().body === body)
        resolve(event);
    }));
}

const alice = await login("alice", alicePassword);
const bob = await login("bob", bobPassword);
console.log("logged in and synced:", alice.getUserId(), bob.getUserId());

const invited = new Promise((resolve) =>
  bob.on(sdk.RoomMemberEvent.Membership, (_event, member) => {
    if (member.userId === bob.getUserId() && member.membership === "invite") resolve(member.roomId);
  }));
const { room_id: roomId } = await alice.createRoom({ name: "js room", invite: [bob.getUserId()] });
const invitedRoom = await invited;
if (invitedRoom !== roomId) throw new Error(`invited to ${invitedRoom}, expected ${roomId}`);
await bob.joinRoom(roomId);
console.log("bob joined", roomId);

const bobGets = nextMessage(bob, roomId, "hello from js");
const sent = await alice.sendTextMessage(roomId, "hello from js");
const received = await bobGets;
if (received.getId() !== sent.event_id) throw new Error("event ids differ");
console.log("bob received", received.getId());

const aliceGets = nextMessage(alice, roomId, "hello back");
await bob.sendTextMessage(roomId, "hello back");
await aliceGets;
console.log("alice received the reply");

const members = alice.getRoom(roomId).getJoinedMembers().map((m) => m.userId).sort();
if (JSON.stringify(members) !== JSON.stringify([alice.getUserId(), bob.getUserId()].sort()))
  throw new Error(`joined members: ${members}`);
alice.stopClient();
bob.stopClient();
clearTimeout(deadline);
console.log("PASS");
process.exit(0);
