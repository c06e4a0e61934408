// matrix-js-sdk's media calls against hearthd: uploadContent (POST /_matrix/media/v3/upload)
// of random bytes, then the authenticated download URL the SDK builds (mxcUrlToHttp with
// useAuthentication: /_matrix/client/v1/media/download) fetched with the access token, and
// a ranged read of it. Usage: node media.mjs <base url> <password>. Exit 0 on success.
import { randomBytes } from "node:crypto";
import * as sdk from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";

logger.setLevel("warn");
const [base, password] = process.argv.slice(2);
const deadline = setTimeout(() => {
  console.error("FAIL: timed out");
  process.exit(1);
}, 60000);

function fail(message) {
  console.error(`FAIL: ${message}`);
  process.exit(1);
}

const anon = sdk.createClient({ baseUrl: base });
const login = await anon.login("m.login.password", { identifier: { type: "m.id.user", user: "alice" }, password });
const client = sdk.createClient({ baseUrl: base, accessToken: login.access_token, userId: login.user_id });

const bytes = randomBytes(3 * 1024 * 1024 + 17);
const { content_uri: mxc } = await client.uploadContent(new Blob([bytes], { type: "image/png" }), {
  name: "photo.png",
  type: "image/png",
});
if (!mxc?.startsWith("mxc://")) fail(`no content_uri: ${mxc}`);
console.log("uploaded", mxc);

const url = client.mxcUrlToHttp(mxc, undefined, undefined, undefined, false, true, true);
if (!url.includes("/_matrix/client/v1/media/download/")) fail(`unexpected download URL ${url}`);
const auth = { Authorization: `Bearer ${login.access_token}` };
const unauthenticated = await fetch(url);
if (unauthenticated.status !== 401) fail(`download without a token answered ${unauthenticated.status}`);
const r = await fetch(url, { headers: auth });
if (r.status !== 200) fail(`download answered ${r.status}`);
if (r.headers.get("content-type") !== "image/png") fail(`content type ${r.headers.get("content-type")}`);
const got = Buffer.from(await r.arrayBuffer());
if (!got.equals(bytes)) fail(`downloaded ${got.length} bytes, not the ${bytes.length} uploaded`);
const part = await fetch(url, { headers: { ...auth, Range: "bytes=1000-1999" } });
const partBytes = Buffer.from(await part.arrayBuffer());
if (part.status !== 206 || !partBytes.equals(bytes.subarray(1000, 2000))) fail(`range read answered ${part.status}`);
console.log("downloaded", got.length, "bytes");
clearTimeout(deadline);
console.log("PASS");
