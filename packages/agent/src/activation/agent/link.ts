/**
 * The IPC channel between the launcher and the agent it runs: the agent asks, the launcher (the
 * only writer of launcher.json) decides and answers. Messages are plain JSON over Node's IPC.
 */
import type { StagedExecutable } from "./launcher-state.ts";

/** What an agent asks of its launcher. */
export type LauncherRequest =
  /** Hand over to this staged executable: stop me, run it on probation. */
  | { type: "switch"; seq: number; to: StagedExecutable }
  /** I run on probation and reached the coordinator: make me the current executable. */
  | { type: "confirm"; seq: number; id: string };

/** The launcher's answer: `error` says why it refused. */
export interface LauncherReply {
  type: "reply";
  seq: number;
  error?: string;
}

/** The part of a Node process (or ChildProcess) that carries IPC messages. */
export interface IpcChannel {
  send?(message: unknown, callback?: (err: Error | null) => void): boolean;
  on(event: "message", listener: (message: unknown) => void): unknown;
  on(event: "disconnect", listener: () => void): unknown;
  readonly connected?: boolean;
}

/** The agent's end of the channel to its launcher. */
export class LauncherLink {
  private seq = 0;
  private readonly waiting = new Map<number, { resolve(): void; reject(err: Error): void }>();
  private readonly goneController = new AbortController();

  /**
   * @param channel the process's IPC channel (`process` in an agent the launcher started)
   * @param running the id of the executable this process runs (FLOTILLA_AGENT_EXECUTABLE)
   */
  constructor(
    private readonly channel: IpcChannel,
    readonly running: string,
  ) {
    channel.on("message", (m) => {
      const r = m as Partial<LauncherReply>;
      if (r?.type !== "reply" || typeof r.seq !== "number") return;
      const w = this.waiting.get(r.seq);
      this.waiting.delete(r.seq);
      if (typeof r.error === "string") w?.reject(new Error(r.error));
      else w?.resolve();
    });
    channel.on("disconnect", () => this.lost());
    if (channel.connected === false) this.lost();
  }

  /** Aborts when the launcher is gone (it was killed): the agent must stop then, so that no two run. */
  get gone(): AbortSignal {
    return this.goneController.signal;
  }

  private lost(): void {
    for (const w of this.waiting.values()) w.reject(new Error("the launcher is gone"));
    this.waiting.clear();
    this.goneController.abort();
  }

  /** Sends a request; resolves when the launcher agreed, rejects with its reason or when it is gone. */
  request(req: { type: "switch"; to: StagedExecutable } | { type: "confirm"; id: string }): Promise<void> {
    if (this.gone.aborted || !this.channel.send) return Promise.reject(new Error("the launcher is gone"));
    const seq = ++this.seq;
    return new Promise<void>((resolve, reject) => {
      this.waiting.set(seq, { resolve, reject });
      this.channel.send!({ ...req, seq }, (err) => {
        if (!err) return;
        this.waiting.delete(seq);
        reject(err);
      });
    });
  }
}
