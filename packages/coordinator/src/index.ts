export { startCoordinator, parseHostPort, type Coordinator, type CoordinatorOptions } from "./coordinator.ts";
export { coordinatorOptionSpecs } from "./config.ts";
export { policy, rolePermissions, ruleFor, type Permission } from "./access/policy.ts";
export { openStore, type Store } from "./store/index.ts";
export { rotateCoordinatorKey, describeRotation } from "./identity/key-rotation.ts";
export {
  ArchiveError,
  backupCoordinator,
  describeBackup,
  describeRestore,
  describeVerify,
  restoreCoordinator,
  verified,
  verifyPostgres,
  verifySqlite,
} from "./backup/index.ts";
