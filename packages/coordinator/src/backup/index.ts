export { backupCoordinator, describeBackup, describeRestore, restoreCoordinator, type BackupResult, type RestoreResult } from "./backup.ts";
export { describeVerify, verified, verifyPostgres, verifySqlite, type VerifyReport } from "./verify.ts";
export { ArchiveError } from "./tar.ts";
