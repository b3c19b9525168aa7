// Every flotilla.agent.v1 schema file, under one namespace (`agentv1`). A new file in
// proto/flotilla/agent/v1 adds its generated module here.
export * from "../gen/flotilla/agent/v1/agent_pb.ts";
export * from "../gen/flotilla/agent/v1/telemetry_pb.ts";
export * from "../gen/flotilla/agent/v1/tunnel_pb.ts";
