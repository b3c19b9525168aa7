export * from "./agent.ts";
export * as adminv1 from "./api/adminv1.ts";
export * as internalv1 from "./api/internalv1.ts";
export * as healthv1 from "./gen/grpc/health/v1/health_pb.ts";
