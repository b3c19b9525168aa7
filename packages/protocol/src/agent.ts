// The protocol without the admin API's and gRPC health's schemas: what the `flotilla agent`
// process imports (the agent, and the CLI and config code its command loads). Importing the
// package's root instead would load and decode every admin service descriptor into the agent
// (bench/agent.ts measures its resident memory). The root (index.ts) is this plus those.
export * as agentv1 from "./api/agentv1.ts";
export * as commonv1 from "./gen/flotilla/common/v1/common_pb.ts";
export * from "./auth/index.ts";
export * from "./client.ts";
export * from "./config/index.ts";
export * from "./facts.ts";
export * from "./fs.ts";
export * from "./identity/index.ts";
export * from "./log.ts";
export * from "./selector/index.ts";
export * from "./tls/index.ts";
export * from "./version.ts";
export * from "./release.ts";
export * from "./tunnel.ts";
export * from "./tunnel-stream.ts";
export * from "./http-request.ts";
export * from "./raw-get.ts";
export * from "./tuf-key.ts";
export * from "./wakeup.ts";
export * from "./nix-closure.ts";
export * from "./nix-base32.ts";
export * from "./device-move.ts";
export * from "./agent-flags.ts";
