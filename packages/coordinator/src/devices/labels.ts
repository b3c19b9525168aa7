/** Device labels: the key=value pairs selectors match, set by admins and by join tokens. */
import { Code, ConnectError } from "@connectrpc/connect";

/** A label key: letters, digits and . _ / -, starting and ending with a letter or digit. */
export const LABEL_KEY = /^[A-Za-z0-9]([A-Za-z0-9._/-]{0,62}[A-Za-z0-9])?$/;
const LABEL_VALUE = /^[A-Za-z0-9._:+@-]{0,63}$/;
const MAX_LABELS = 64;

/** Checks a label map from the network; throws InvalidArgument naming the bad entry. */
export function validateLabels(labels: Record<string, string>): void {
  const entries = Object.entries(labels);
  if (entries.length > MAX_LABELS) throw new ConnectError(`at most ${MAX_LABELS} labels`, Code.InvalidArgument);
  for (const [k, v] of entries) {
    if (!LABEL_KEY.test(k)) throw new ConnectError(`invalid label key ${JSON.stringify(k)}`, Code.InvalidArgument);
    if (!LABEL_VALUE.test(v)) {
      throw new ConnectError(`invalid value for label ${k}: ${JSON.stringify(v)}`, Code.InvalidArgument);
    }
  }
}
