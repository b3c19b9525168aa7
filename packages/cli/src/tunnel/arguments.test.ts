import { describe, expect, it } from "vitest";
import { parseMapping, proxyWord, sshArguments } from "./arguments.ts";

describe("flotilla ssh and port-forward arguments", () => {
  it("runs ssh with this program as ProxyCommand, the device as host key alias, then the user's arguments", () => {
    const args = sshArguments({
      self: ["/usr/bin/node", "/opt/flotilla's/bin/flotilla.js"],
      coordinator: "https://coord:7700",
      org: "ops",
      destination: "root@web-1",
      port: 2222,
      extra: ["-L", "5432:localhost:5432", "sudo", "journalctl", "-f"],
    });
    expect(args).toEqual([
      "-o",
      "ProxyCommand='/usr/bin/node' '/opt/flotilla'\\''s/bin/flotilla.js' '--coordinator' 'https://coord:7700' '--org' 'ops' 'tunnel' 'web-1' '--port' '2222'",
      "-o",
      "HostKeyAlias=web-1",
      "root@web-1",
      "-L",
      "5432:localhost:5432",
      "sudo",
      "journalctl",
      "-f",
    ]);
  });

  it("escapes ssh's % tokens in the ProxyCommand", () => {
    expect(proxyWord("/home/a%b")).toBe("'/home/a%%b'");
  });

  it("reads LOCAL:REMOTE, a lone port, and 0 for any free local port", () => {
    expect(parseMapping("8080:80")).toEqual({ local: 8080, remote: 80 });
    expect(parseMapping("9090")).toEqual({ local: 9090, remote: 9090 });
    expect(parseMapping("0:5432")).toEqual({ local: 0, remote: 5432 });
    expect(() => parseMapping("80:0")).toThrow(/invalid device port/);
    expect(() => parseMapping("a:b")).toThrow(/expected LOCAL:REMOTE/);
  });
});
