/**
 * The edge between the store's errors and the wire: a conflict the store reports (two requests
 * racing for one name) reaches the client as `AlreadyExists`, and a database that is down or
 * restarting as `Unavailable` with retry advice, never as `Unknown`. Plain-HTTP routes
 * get the same mapping from server/http.ts (409).
 */
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { retryAfterHeader } from "@flotilla/protocol";
import { DATABASE_UNAVAILABLE, isDatabaseUnavailable, StoreConflictError } from "../store/errors.ts";

/** The Connect error for a store error; any other error is returned as it is. */
export function fromStoreError(err: unknown): unknown {
  if (err instanceof StoreConflictError) return new ConnectError(err.message, Code.AlreadyExists, undefined, undefined, err);
  if (isDatabaseUnavailable(err)) {
    return new ConnectError(
      DATABASE_UNAVAILABLE.message,
      Code.Unavailable,
      { [retryAfterHeader]: String(DATABASE_UNAVAILABLE.retryMs) },
      undefined,
      err,
    );
  }
  return err;
}

/**
 * Maps store errors thrown by a handler, or by a server stream as it runs, to Connect errors.
 * Put it after the authorization interceptor, so the audit log records the mapped code.
 */
export function storeErrorInterceptor(): Interceptor {
  return (next) => async (req) => {
    let res;
    try {
      res = await next(req);
    } catch (err) {
      throw fromStoreError(err);
    }
    return res.stream ? { ...res, message: mapped(res.message) } : res;
  };
}

async function* mapped<T>(messages: AsyncIterable<T>): AsyncIterable<T> {
  try {
    yield* messages;
  } catch (err) {
    throw fromStoreError(err);
  }
}
