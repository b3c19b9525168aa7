import { homedir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { environmentHelp, loadCliConfig } from "./config.ts";

describe("the CLI's own options", () => {
  it("takes a flag over its environment variable, and the variable when no flag is given", () => {
    const env = { FLOTILLA_COORDINATOR: "http://env:1", FLOTILLA_ADMIN_KEY: "/env.key", FLOTILLA_ORG: "env-org" };
    const c = loadCliConfig({ coordinator: "http://flag:1", key: "/flag.key" }, env);
    expect(c).toMatchObject({ coordinator: "http://flag:1", keyFile: "/flag.key", org: "env-org" });
  });

  it("reads the token, ssh-agent's socket and the config file from the environment", () => {
    const c = loadCliConfig({}, { FLOTILLA_TOKEN: "tok", SSH_AUTH_SOCK: "/run/agent.sock", FLOTILLA_CONFIG: "/etc/f.toml" });
    expect(c).toMatchObject({ apiToken: "tok", sshAuthSock: "/run/agent.sock", configFile: "/etc/f.toml" });
  });

  it("puts FLOTILLA_HOME under XDG_CONFIG_HOME, else ~/.config, and treats empty variables as unset", () => {
    expect(loadCliConfig({}, { FLOTILLA_HOME: "/h" }).home).toBe("/h");
    expect(loadCliConfig({}, { FLOTILLA_HOME: "", XDG_CONFIG_HOME: "/x" }).home).toBe("/x/flotilla");
    expect(loadCliConfig({}, { XDG_CONFIG_HOME: "" }).home).toBe(join(homedir(), ".config", "flotilla"));
    expect(loadCliConfig({}, { FLOTILLA_TOKEN: "" }).apiToken).toBeUndefined();
  });

  it("documents every variable that has no global flag", () => {
    const help = environmentHelp();
    for (const env of ["FLOTILLA_TOKEN", "FLOTILLA_HOME", "SSH_AUTH_SOCK", "FLOTILLA_CONFIG"]) expect(help).toContain(env);
    expect(help).not.toContain("FLOTILLA_COORDINATOR");
  });
});
