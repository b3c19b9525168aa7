/** Column conversions every sub-store shares. */

// Some drivers hand bigint columns back as strings; every number read goes through these.
export const num = (v: number | string): number => Number(v);
export const numOrNull = (v: number | string | null): number | null => (v === null ? null : Number(v));
