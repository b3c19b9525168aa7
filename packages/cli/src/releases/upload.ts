import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { Transform } from "node:stream";
import {
  ARTIFACTS_PATH,
  pinnedRequest,
  readBody,
  UPLOAD_COMPLETE_HEADER,
  UPLOAD_LENGTH_HEADER,
  UPLOAD_OFFSET_HEADER,
} from "@flotilla/protocol";
import { adminBearer, type AdminTarget } from "../admin/client.ts";

/** sha256 (hex) and size of a file, streamed. */
export async function hashFile(path: string): Promise<{ sha256: string; length: number }> {
  const h = createHash("sha256");
  let length = 0;
  for await (const chunk of createReadStream(path) as AsyncIterable<Buffer>) {
    h.update(chunk);
    length += chunk.length;
  }
  return { sha256: h.digest("hex"), length };
}

function progressBar(stream: NodeJS.WriteStream, total: number) {
  const started = Date.now();
  let last = 0;
  return (done: number, final = false) => {
    const now = Date.now();
    if (!final && now - last < 100) return;
    last = now;
    const width = 30;
    const frac = total === 0 ? 1 : done / total;
    const bar = "#".repeat(Math.round(frac * width)).padEnd(width, ".");
    const rate = done / Math.max(1, (now - started) / 1000);
    stream.write(`\r[${bar}] ${(frac * 100).toFixed(0).padStart(3)}% ${mib(done)}/${mib(total)} MiB ${mib(rate)} MiB/s${final ? "\n" : ""}`);
  };
}

const mib = (n: number) => (n / 1024 / 1024).toFixed(1);

/** The upload's state on the coordinator: complete, or how many bytes it holds. */
async function uploadState(auth: { url: string; pin: string | undefined; token: string }, sha256: string, length: number) {
  const res = await pinnedRequest({
    method: "GET",
    url: `${auth.url}${ARTIFACTS_PATH}${sha256}`,
    pin: auth.pin,
    headers: { authorization: `Bearer ${auth.token}`, [UPLOAD_LENGTH_HEADER]: String(length) },
    timeoutMs: 30_000,
  });
  const body = JSON.parse(await readBody(res)) as { complete?: boolean; offset?: number; error?: string };
  if (res.statusCode !== 200) throw new Error(`coordinator refused the upload: ${body.error ?? res.statusCode}`);
  return { complete: body.complete === true, offset: body.offset ?? 0 };
}

/**
 * Uploads a file to the coordinator's artifact store, resuming where an earlier upload of the
 * same bytes stopped; skips it when the coordinator has it already. A progress bar goes to
 * stderr when it is a terminal, one line per upload otherwise.
 */
export async function uploadArtifact(target: AdminTarget, path: string, log: (line: string) => void): Promise<{ sha256: string; length: number }> {
  const size = (await stat(path)).size;
  const { sha256, length } = await hashFile(path);
  if (length !== size) throw new Error(`${path} changed while it was read`);
  const auth = await adminBearer(target);
  const state = await uploadState(auth, sha256, length);
  if (state.complete) {
    log(`artifact ${sha256} already on the coordinator\n`);
    return { sha256, length };
  }
  log(`uploading ${length} bytes${state.offset > 0 ? `, resuming at byte ${state.offset}` : ""}\n`);
  const tty = process.stderr.isTTY ? progressBar(process.stderr, length) : undefined;
  let done = state.offset;
  const counter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      done += chunk.length;
      tty?.(done);
      cb(null, chunk);
    },
  });
  const body = createReadStream(path, { start: state.offset }).pipe(counter);
  const res = await pinnedRequest({
    method: "PATCH",
    url: `${auth.url}${ARTIFACTS_PATH}${sha256}`,
    pin: auth.pin,
    headers: {
      authorization: `Bearer ${auth.token}`,
      "content-type": "application/octet-stream",
      "content-length": String(length - state.offset),
      [UPLOAD_LENGTH_HEADER]: String(length),
      [UPLOAD_OFFSET_HEADER]: String(state.offset),
      [UPLOAD_COMPLETE_HEADER]: "?1",
    },
    body,
  });
  const answer = JSON.parse(await readBody(res)) as { complete?: boolean; error?: string };
  tty?.(done, true);
  if (res.statusCode !== 201 || !answer.complete) throw new Error(`upload refused: ${answer.error ?? `HTTP ${res.statusCode}`}`);
  return { sha256, length };
}
