// JSON-lines bridge to the official node SDKs (twilio, @sinch/sdk-client, @octokit/webhooks-methods).
// One request per line on stdin: {"id":..,"op":..,...}; one answer per line on stdout: {"id":..,"ok":..,"result":..}.
import { createRequire } from 'node:module';
import readline from 'node:readline';
const require = createRequire(import.meta.url);
const here = new URL('.', import.meta.url).pathname;
// The packages' "exports" maps hide these files; load them by path (the sinch package index pulls in
// @sinch/sdk-core, which is not published at the matching version).
const twilio = require(here + 'node_modules/twilio/lib/webhooks/webhooks.js');
const sinch = require(here + 'node_modules/@sinch/sdk-client/dist/utils/authorization.helper.js');
const octokit = await import('@octokit/webhooks-methods');

const ops = {
  twilio_validate: (a) => twilio.validateRequest(a.token, a.sig, a.url, a.params),
  twilio_validate_body: (a) => twilio.validateRequestWithBody(a.token, a.sig, a.url, a.body),
  sinch_sign: (a) => sinch.generateAuthorizationHeader(a.method, a.body || undefined, a.content_type,
    `x-timestamp:${a.timestamp}`, a.path, a.key, a.secret),
  sinch_validate: (a) => sinch.validateAuthenticationHeader(a.key, a.secret, a.headers, a.body, a.path, a.method),
  github_sign: (a) => octokit.sign(a.secret, a.body),
  github_verify: (a) => octokit.verify(a.secret, a.body, a.sig),
};

const rl = readline.createInterface({ input: process.stdin });
for await (const line of rl) {
  if (!line.trim()) continue;
  const req = JSON.parse(line);
  let out;
  try {
    out = { id: req.id, ok: true, result: await ops[req.op](req) };
  } catch (e) {
    out = { id: req.id, ok: false, error: String(e && e.stack || e) };
  }
  process.stdout.write(JSON.stringify(out) + '\n');
}
