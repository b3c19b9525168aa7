import { hostname } from "node:os";
import { describe, expect, it } from "vitest";
import { createLogger } from "@flotilla/protocol";
import { replicaAddress } from "./coordinator.ts";

/** replicaAddress with a logger whose lines are kept. */
function address(config: { internalUrl?: string; listen: string; replicas?: number }, port: number, tls: boolean) {
  const lines: string[] = [];
  const host = config.listen.replace(/:\d+$/, "").replace(/^\[(.*)\]$/, "$1");
  const got = replicaAddress({ replicas: 1, internalUrl: undefined, ...config }, { port }, host, tls, createLogger({}, (l) => lines.push(l)));
  return { got, lines };
}

describe("the address a replica registers for the others", () => {
  it("is --internal-url as given, whatever --listen says", () => {
    expect(address({ listen: "0.0.0.0:7700", internalUrl: "https://10.0.0.5:7800" }, 7700, true)).toEqual({ got: "https://10.0.0.5:7800", lines: [] });
    expect(address({ listen: "[::]:7700", internalUrl: "https://[fd00::5]:7800/" }, 7700, true).got).toBe("https://[fd00::5]:7800");
    expect(address({ listen: "127.0.0.1:7700", internalUrl: "http://127.0.0.1:9000" }, 7700, false).got).toBe("http://127.0.0.1:9000");
  });

  it("under --replicas N is --internal-url's host with the worker's own port", () => {
    expect(address({ listen: "0.0.0.0:7700", internalUrl: "https://10.0.0.5", replicas: 4 }, 41234, true).got).toBe("https://10.0.0.5:41234");
    expect(address({ listen: "[::]:7700", internalUrl: "https://[fd00::5]", replicas: 2 }, 41235, true).got).toBe("https://[fd00::5]:41235");
  });

  it("is the --listen address without it, with a warning on a wildcard address, which becomes the host name", () => {
    expect(address({ listen: "127.0.0.1:7700" }, 7700, false)).toEqual({ got: "http://127.0.0.1:7700", lines: [] });
    const wildcard = address({ listen: "0.0.0.0:7700" }, 7700, true);
    expect(wildcard.got).toBe(`https://${hostname()}:7700`);
    expect(wildcard.lines).toHaveLength(1);
    expect(wildcard.lines[0]).toMatch(/ warn listening on a wildcard address: other replicas will dial this machine's host name; if they cannot resolve or reach it, give --internal-url listen=0\.0\.0\.0:7700 address=https:\/\//);
    expect(address({ listen: "[::]:7700" }, 7700, true).lines).toHaveLength(1);
  });
});
