import { describe, expect, it } from "vitest";
import { UsageError } from "../errors.ts";
import { controlTargets } from "./control.ts";

describe("device restart|stop|start|undeploy arguments", () => {
  it("takes DEVICE NAME, or NAME alone with --selector", () => {
    expect(controlTargets(["web-1", "webapp"], undefined)).toEqual({ device: "web-1", name: "webapp" });
    expect(controlTargets(["webapp"], "site=lab")).toEqual({ name: "webapp" });
  });

  it("refuses any other shape with a usage error", () => {
    expect(() => controlTargets(["webapp"], undefined)).toThrow(new UsageError("give a device and a release name (or --selector and a release name)"));
    expect(() => controlTargets(["a", "b", "c"], undefined)).toThrow(UsageError);
    expect(() => controlTargets(["web-1", "webapp"], "site=lab")).toThrow(new UsageError("with --selector, give the release name only"));
  });
});
