import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { adminv1, matchesSelector, parseSelector, SelectorError, Wakeup } from "@flotilla/protocol";
import { adminOf } from "../access/principal.ts";
import type { ServiceContext } from "../context.ts";
import { selectorFields } from "../devices/convert.ts";
import type { DeviceRow, LogCursor, LogLineRow } from "../store/index.ts";
import type { FedLine, LogFeed } from "./feed.ts";
import { UNIT_RE } from "./validate.ts";

const MAX_LIMIT = 10_000;
const KEEPALIVE_MS = 15_000;
const MAX_QUEUED = 50_000;

interface Resolved {
  orgId: string;
  /** undefined: every device of the organization. */
  deviceIds: string[] | undefined;
  unit: string;
  since: number;
  grep: string;
  names: Map<string, string>;
}

const bad = (msg: string) => new ConnectError(msg, Code.InvalidArgument);

/** A page token: where the page ended, as base64url JSON. The caller's filter is sent again with it. */
function pageToken(l: LogLineRow): string {
  return Buffer.from(JSON.stringify([l.time, l.deviceId, l.seq])).toString("base64url");
}

function readPageToken(token: string): LogCursor {
  if (!token) return {};
  const fail = () => bad("invalid page token: pass next_page_token as it came");
  if (token.length > 512) throw fail();
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
  } catch {
    throw fail();
  }
  if (!Array.isArray(parsed) || parsed.length !== 3) throw fail();
  const [time, deviceId, seq] = parsed as unknown[];
  if (!Number.isSafeInteger(time) || typeof deviceId !== "string" || deviceId.length > 128 || !Number.isSafeInteger(seq)) throw fail();
  return { time: time as number, deviceId, seq: seq as number };
}

/** The admin TelemetryService: QueryLogs, FollowLogs, GetMetrics, scoped to the caller's organization. */
export function telemetryAdminService(ctx: ServiceContext, feed: LogFeed): Omit<ServiceImpl<typeof adminv1.TelemetryService>, "getRetention" | "setRetention"> {
  const { store } = ctx;

  async function findDevice(orgId: string, ref: string): Promise<DeviceRow> {
    if (!ref || ref.length > 128) throw bad("a device id or name is required");
    const row = (await store.devices.getDevice(orgId, ref)) ?? (await store.devices.getDeviceByName(orgId, ref));
    if (!row) throw new ConnectError(`no device ${JSON.stringify(ref)}`, Code.NotFound);
    return row;
  }

  async function resolve(hctx: HandlerContext, f: adminv1.LogFilter | undefined): Promise<Resolved> {
    const { orgId } = adminOf(hctx);
    const device = f?.device ?? "";
    const selectorText = f?.selector ?? "";
    if (device && selectorText) throw bad("give a device or a selector, not both");
    if (f?.unit && !UNIT_RE.test(f.unit)) throw bad("invalid unit name");
    if ((f?.grep.length ?? 0) > 256) throw bad("--grep text longer than 256 characters");
    const since = Number(f?.sinceUnixMs ?? 0n);
    if (!Number.isSafeInteger(since) || since < 0) throw bad("since out of range");
    const all = await store.devices.listDevices(orgId);
    const names = new Map(all.map((d) => [d.id, d.name]));
    let deviceIds: string[] | undefined;
    if (device) {
      deviceIds = [(await findDevice(orgId, device)).id];
    } else if (selectorText) {
      let selector;
      try {
        selector = parseSelector(selectorText);
      } catch (err) {
        if (err instanceof SelectorError) throw bad(err.message);
        throw err;
      }
      deviceIds = all.filter((d) => matchesSelector(selector, selectorFields(d))).map((d) => d.id);
    }
    return { orgId, deviceIds, unit: f?.unit ?? "", since, grep: f?.grep ?? "", names };
  }

  const toLine = (r: Resolved) => (l: LogLineRow | FedLine) =>
    create(adminv1.LogLineSchema, {
      deviceId: l.deviceId,
      deviceName: "deviceName" in l ? l.deviceName : (r.names.get(l.deviceId) ?? l.deviceId),
      unit: l.unit,
      source: l.source,
      timeUnixMs: BigInt(l.time),
      seq: BigInt(l.seq),
      line: l.line,
    });

  const query = (r: Resolved, limit: number, after?: LogCursor) =>
    store.telemetry.queryLogs(r.orgId, { deviceIds: r.deviceIds, unit: r.unit || undefined, since: r.since || undefined, grep: r.grep || undefined, limit, after });

  function matcher(r: Resolved): (l: FedLine) => boolean {
    const ids = r.deviceIds && new Set(r.deviceIds);
    const grep = r.grep.toLowerCase();
    return (l) => (!ids || ids.has(l.deviceId)) && (!r.unit || l.unit === r.unit) && l.time >= r.since && (!grep || l.line.toLowerCase().includes(grep));
  }

  return {
    async queryLogs(req, hctx) {
      if (req.limit > MAX_LIMIT) throw bad(`limit is at most ${MAX_LIMIT}`);
      const limit = req.limit || 1000;
      const after = req.fromOldest ? readPageToken(req.pageToken) : undefined;
      const r = await resolve(hctx, req.filter);
      // One line more than asked tells whether the answer is whole.
      const rows = await query(r, limit + 1, after);
      const more = rows.length > limit;
      if (!more) return { lines: rows.map(toLine(r)) };
      if (after) {
        const page = rows.slice(0, limit);
        return { lines: page.map(toLine(r)), nextPageToken: pageToken(page.at(-1)!) };
      }
      return { lines: rows.slice(1).map(toLine(r)), more: true };
    },

    async *followLogs(req, hctx) {
      if (req.tail > MAX_LIMIT) throw bad(`tail is at most ${MAX_LIMIT}`);
      const r = await resolve(hctx, req.filter);
      const match = matcher(r);
      let queued: FedLine[] = [];
      const fed = new Wakeup();
      // Subscribe before reading the tail, so no line stored in between is missed.
      let overflow = false;
      const off = feed.subscribe(r.orgId, (lines) => {
        queued.push(...lines.filter(match));
        // A reader that cannot keep up is cut off rather than allowed to grow memory without bound.
        if (queued.length > MAX_QUEUED) overflow = true;
        fed.notify();
      });
      try {
        const seen = new Map<string, number>();
        const tail = req.tail > 0 ? await query(r, req.tail) : [];
        for (const l of tail) seen.set(`${l.deviceId}/${l.stream}`, Math.max(seen.get(`${l.deviceId}/${l.stream}`) ?? 0, l.seq));
        yield { lines: tail.map(toLine(r)) };
        while (!hctx.signal.aborted) {
          if (queued.length === 0) await fed.wait(hctx.signal, KEEPALIVE_MS);
          if (overflow) throw new ConnectError("the follower fell too far behind; follow again", Code.ResourceExhausted);
          const batch = queued.filter((l) => l.seq > (seen.get(`${l.deviceId}/${l.stream}`) ?? 0));
          queued = [];
          if (hctx.signal.aborted) return;
          yield { lines: batch.map(toLine(r)) };
        }
      } finally {
        off();
      }
    },

    async getMetrics(req, hctx) {
      if (req.limit > MAX_LIMIT) throw bad(`limit is at most ${MAX_LIMIT}`);
      const { orgId } = adminOf(hctx);
      const d = await findDevice(orgId, req.device);
      const samples = await store.telemetry.recentMetrics(orgId, d.id, req.limit || 60);
      const dropped = await store.telemetry.dropped(orgId, d.id);
      return {
        deviceId: d.id,
        deviceName: d.name,
        samples: samples.map((s) =>
          create(adminv1.MetricSampleSchema, {
            timeUnixMs: BigInt(s.time),
            values: s.points.map((p) => create(adminv1.MetricValueSchema, p)),
          }),
        ),
        logsDropped: BigInt(dropped.logs ?? 0),
        metricsDropped: BigInt(dropped.metrics ?? 0),
      };
    },
  };
}
