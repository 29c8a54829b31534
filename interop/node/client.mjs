// A Connect-ES v2 client of notes.v1 over gRPC-Web, run by
// tests/api/interop.rs against a real notesd: what a browser page does,
// from Node. createGrpcWebTransport uses fetch, which in Node is undici
// speaking HTTP/1.1: gRPC-Web over HTTP/1.1 to the gRPC port.
//
// It adds a note and reads it back (title and body round trip), then calls
// with a bad key and checks the error is UNAUTHENTICATED, with its ErrorInfo
// reason. Prints `ok add <id>`, `ok get`, `ok unauthenticated <reason>` and
// exits 1 with `FAIL <step>: <why>` on standard error at the first failure.
//
// Environment:
//   NOTESD_URL       base URL of the gRPC port, e.g. http://127.0.0.1:50051 (required)
//   NOTESD_API_KEY   a member key (required), sent as `x-api-key`
//   NOTESD_NODE_GEN  interop/setup's WORKDIR/node/gen (required): the generated
//                    ES code; the npm packages are resolved from its node_modules
//                    (WORKDIR/node/node_modules), not from the source tree.
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { randomUUID } from "node:crypto";
import path from "node:path";
import { pathToFileURL } from "node:url";

let step = "setup";

function fail(message) {
  console.error(`FAIL ${step}: ${message}`);
  process.exit(1);
}

function check(condition, message) {
  if (!condition) fail(message);
}

function env(name) {
  const value = process.env[name];
  if (!value) fail(`environment variable ${name} is not set`);
  return value;
}

const genDir = path.resolve(env("NOTESD_NODE_GEN"));
const baseUrl = env("NOTESD_URL");
const apiKey = env("NOTESD_API_KEY");

// Node resolves a bare specifier from the importing file's directory, and
// this file is in the source tree, which has no node_modules. So find the
// package in the node_modules above the generated code (where its own
// imports of @bufbuild/protobuf resolve too, so both get the same copy)
// and import the ES module its package.json exports for `import`.
const lookup = createRequire(path.join(genDir, "index.js"));

function exportTarget(entry) {
  if (typeof entry === "string") return entry;
  if (Array.isArray(entry)) return entry.map(exportTarget).find(Boolean);
  if (entry && typeof entry === "object") {
    for (const condition of ["import", "node", "default"]) {
      const target = condition in entry && exportTarget(entry[condition]);
      if (target) return target;
    }
  }
  return undefined;
}

async function importPackage(specifier) {
  const parts = specifier.split("/");
  const name = specifier.startsWith("@") ? parts.slice(0, 2).join("/") : parts[0];
  const subpath = "." + specifier.slice(name.length);
  const dir = (lookup.resolve.paths(name) ?? [])
    .map((nodeModules) => path.join(nodeModules, name))
    .find((candidate) => existsSync(path.join(candidate, "package.json")));
  if (!dir) fail(`package ${name} not found above ${genDir} (run interop/setup)`);
  const manifest = JSON.parse(readFileSync(path.join(dir, "package.json"), "utf8"));
  const exportsField =
    typeof manifest.exports === "string" || Array.isArray(manifest.exports)
      ? { ".": manifest.exports }
      : manifest.exports ?? {};
  const target = exportTarget(exportsField[subpath]) ?? (subpath === "." ? manifest.module ?? manifest.main : undefined);
  if (!target) fail(`${specifier}: no ES module export`);
  return import(pathToFileURL(path.join(dir, target)).href);
}

async function importGenerated(file) {
  const full = path.join(genDir, file);
  if (!existsSync(full)) fail(`${full} not found (run interop/setup)`);
  return import(pathToFileURL(full).href);
}

const { Code, ConnectError, createClient } = await importPackage("@connectrpc/connect");
const { createGrpcWebTransport } = await importPackage("@connectrpc/connect-web");
const { NotesService } = await importGenerated("notes/v1/notes_pb.js");
const { ErrorInfoSchema } = await importGenerated("google/rpc/error_details_pb.js");

// The key goes in a header of every call, as with any other gRPC client.
function withApiKey(key) {
  return (next) => async (req) => {
    req.header.set("x-api-key", key);
    return await next(req);
  };
}

function notesClient(key) {
  const transport = createGrpcWebTransport({
    baseUrl,
    interceptors: [withApiKey(key)],
    // Every call gets a deadline (sent as grpc-timeout).
    defaultTimeoutMs: 10_000,
  });
  return createClient(NotesService, transport);
}

async function main() {
  const client = notesClient(apiKey);
  const subject = { type: "customer", id: `interop-node-${randomUUID()}` };
  const title = "Call from the browser";
  const text = "Prefers email. Grüße, 你好 ✓ <not html>";

  step = "add";
  const { note } = await client.addNote({
    requestId: randomUUID(),
    note: { subject, title, body: { text } },
  });
  check(note !== undefined && note.id !== "", "the added note has no id");
  check(note.revision === 1n, `revision ${note.revision} after create`);
  check(note.subject?.type === subject.type && note.subject?.id === subject.id, "the subject changed");
  console.log(`ok add ${note.id}`);

  step = "get";
  const got = (await client.getNote({ id: note.id })).note;
  check(got?.id === note.id, `got ${got?.id}`);
  check(got.title === title, `title ${JSON.stringify(got.title)}`);
  check(got.body?.text === text, `body ${JSON.stringify(got.body?.text)}`);
  check(got.body?.html === "", `html ${JSON.stringify(got.body?.html)}`);
  check(got.etag === note.etag && got.revision === 1n, `etag ${got.etag}, revision ${got.revision}`);
  console.log("ok get");

  step = "unauthenticated";
  try {
    await notesClient("not-a-key").getNote({ id: note.id });
    fail("a call with a bad key succeeded");
  } catch (e) {
    const err = ConnectError.from(e);
    check(err.code === Code.Unauthenticated, `expected Unauthenticated, got ${Code[err.code]}: ${err.rawMessage}`);
    const [info] = err.findDetails(ErrorInfoSchema);
    check(info !== undefined, "no google.rpc.ErrorInfo in the error details");
    check(info.domain === "notesd.dev", `ErrorInfo domain ${info.domain}`);
    console.log(`ok unauthenticated ${info.reason}`);
  }
}

try {
  await main();
} catch (e) {
  const err = ConnectError.from(e);
  fail(`${Code[err.code]}: ${err.rawMessage}`);
}
