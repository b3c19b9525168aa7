/**
 * Splits a byte stream into lines of at most `maxBytes` (a longer line is cut into several),
 * so a process that never writes a newline cannot make the agent buffer without bound. A
 * trailing `\r` is dropped; a multi-byte character cut at the limit shows as U+FFFD.
 */
export class LineSplitter {
  private parts: Buffer[] = [];
  private length = 0;

  constructor(
    private readonly maxBytes: number,
    private readonly emit: (line: string) => void,
  ) {}

  push(chunk: Buffer): void {
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(10, start);
      let piece = chunk.subarray(start, nl === -1 ? chunk.length : nl);
      while (this.length + piece.length > this.maxBytes) {
        const take = this.maxBytes - this.length;
        this.parts.push(piece.subarray(0, take));
        this.length += take;
        this.flush();
        piece = piece.subarray(take);
      }
      if (piece.length > 0) {
        this.parts.push(piece);
        this.length += piece.length;
      }
      if (nl === -1) return;
      this.flush();
      start = nl + 1;
    }
  }

  /** Emits what is left after the stream ended without a final newline. */
  end(): void {
    if (this.length > 0) this.flush();
  }

  private flush(): void {
    const line = Buffer.concat(this.parts).toString("utf8").replace(/\r$/, "");
    this.parts = [];
    this.length = 0;
    this.emit(line);
  }
}
