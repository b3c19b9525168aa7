import { Code, ConnectError } from "@connectrpc/connect";
import { EOF, type Frame, type FrameQueue } from "./frame-queue.ts";
import { MAX_CHUNK_BYTES } from "./registry.ts";

/** A tunnel message as both services' schemas shape it: a oneof named `frame`. */
export interface FrameMessage {
  frame: { case: "data"; value: Uint8Array } | { case: "eof" } | { case: string | undefined; value?: unknown };
}

/**
 * Reads one side's messages into `queue` until that side's eof (or the end of its stream,
 * which counts as eof). Awaits room in the queue before reading on, so a slow receiver holds
 * the sender back through HTTP/2 flow control. Throws InvalidArgument for a message that is
 * not data or eof, or a chunk over MAX_CHUNK_BYTES.
 */
export async function pumpInto(
  it: AsyncIterator<FrameMessage>,
  queue: FrameQueue,
  count: (bytes: number) => void,
): Promise<void> {
  for (;;) {
    const r = await it.next();
    const frame = r.done ? ({ case: "eof" } as const) : r.value.frame;
    if (frame.case === "eof") {
      await queue.push(EOF);
      return;
    }
    if (frame.case !== "data" || !(frame.value instanceof Uint8Array)) {
      throw new ConnectError(`unexpected ${frame.case ?? "empty"} frame in an open tunnel`, Code.InvalidArgument);
    }
    if (frame.value.length > MAX_CHUNK_BYTES) {
      throw new ConnectError(`tunnel data frames are at most ${MAX_CHUNK_BYTES} bytes`, Code.InvalidArgument);
    }
    if (frame.value.length === 0) continue;
    count(frame.value.length);
    await queue.push({ kind: "data", data: frame.value });
  }
}

/**
 * Yields `queue`'s frames as messages of the receiving side until eof. A frame counts as held
 * until the message carrying it has been written (the generator resumes after the write).
 */
export async function* drainFrom<T>(queue: FrameQueue, toMessage: (f: Frame) => T): AsyncGenerator<T> {
  for (;;) {
    const frame = await queue.pull();
    yield toMessage(frame);
    queue.release(frame);
    if (frame.kind === "eof") return;
  }
}

/** Runs a pump in the background; a failure aborts the tunnel. Await the result to rethrow it. */
export function background(work: Promise<void>, abort: (err: unknown) => void): Promise<void> {
  const p = work.catch((err: unknown) => {
    abort(err);
    throw err;
  });
  p.catch(() => {}); // observed by whoever awaits it; never an unhandled rejection
  return p;
}

/** Resolves with the first value of `it`, or rejects with DeadlineExceeded after `ms`. */
export async function firstMessage<T>(it: AsyncIterator<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new ConnectError(`no ${what} within ${ms / 1000} s`, Code.DeadlineExceeded)), ms);
  });
  try {
    const r = await Promise.race([it.next(), timeout]);
    if (r.done) throw new ConnectError(`the stream ended before the ${what}`, Code.InvalidArgument);
    return r.value;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Waits for `work`, or rejects with the reason once `signal` aborts: a tunnel that fails after
 * one side's eof ends at once, rather than once the other side sends something more.
 */
export async function unlessAborted(work: Promise<void>, signal: AbortSignal): Promise<void> {
  let onAbort = () => {};
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(signal.reason);
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
  });
  try {
    await Promise.race([work, aborted]);
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
}
