import type { Command } from "commander";
import { adminv1 } from "@flotilla/protocol";
import { serviceClient, type AdminTarget } from "../admin/client.ts";
import { json } from "../output.ts";
import type { Run } from "../run.ts";

/**
 * `flotilla coordinator gc`: garbage collection of the organization's artifacts and NARs that no
 * release needs, on demand (the coordinator also runs it on a schedule). See docs/releases.md.
 */
export function registerGcCommand(program: Command, target: () => AdminTarget, run: Run): void {
  const coordinator = program.commands.find((c) => c.name() === "coordinator") ?? program.command("coordinator");
  coordinator
    .command("gc")
    .description("delete the organization's artifacts and NARs that no release needs, and give their room in its storage quota back")
    .option("--dry-run", "report what would be deleted; delete nothing")
    .option("--json", "print JSON")
    .action((o: { dryRun?: boolean; json?: boolean }) =>
      run(async (out) => {
        const r = await (await serviceClient(target(), adminv1.ReleaseService)).collectGarbage({ dryRun: o.dryRun === true });
        const org = r.organization;
        const report = {
          dryRun: r.dryRun,
          artifacts: Number(org?.artifacts ?? 0),
          nars: Number(org?.nars ?? 0),
          storePaths: Number(org?.storePaths ?? 0),
          bytesFreed: Number(org?.bytes ?? 0),
          filesDeleted: Number(r.filesDeleted),
          bytesDeleted: Number(r.bytesDeleted),
        };
        if (o.json) return out(json(report));
        const verb = r.dryRun ? "would free" : "freed";
        out(
          `${r.dryRun ? "dry run: " : ""}${verb} ${report.bytesFreed} bytes of the organization's storage: ` +
            `${report.artifacts} artifacts, ${report.nars} NARs, ${report.storePaths} store paths\n`,
        );
        out(`${r.dryRun ? "would delete" : "deleted"} ${report.filesDeleted} files (${report.bytesDeleted} bytes) no organization needs from the coordinator's disk\n`);
      }),
    );
}
