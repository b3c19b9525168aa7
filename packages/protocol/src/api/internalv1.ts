// Every flotilla.internal.v1 schema file, under one namespace (`internalv1`): calls between
// coordinator replicas. A new file in proto/flotilla/internal/v1 adds its generated module here.
export * from "../gen/flotilla/internal/v1/replica_pb.ts";
