// Every flotilla.admin.v1 schema file, under one namespace (`adminv1`). A new file in
// proto/flotilla/admin/v1 adds its generated module here.
export * from "../gen/flotilla/admin/v1/admin_pb.ts";
export * from "../gen/flotilla/admin/v1/nix_pb.ts";
export * from "../gen/flotilla/admin/v1/telemetry_pb.ts";
export * from "../gen/flotilla/admin/v1/tunnel_pb.ts";
export * from "../gen/flotilla/admin/v1/releases_pb.ts";
export * from "../gen/flotilla/admin/v1/rollouts_pb.ts";
